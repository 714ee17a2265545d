"""A wide shot with small, far objects whose boxes are known: real photos' objects (a person, a
bird, a dog, a horse), each cut out with some of its surroundings and shrunk to a few dozen
pixels, pasted on a large, plain-textured field. Each object's box is the one a model found in
its own photo, shrunk and moved with it: recall at IoU 0.5 is then measured against it."""
from __future__ import annotations

import numpy as np
from PIL import Image

from tests.support import SHARED_PHOTOS

# (photo, the object's label): each photo's best box of that label is the object
OBJECTS = (("grace_hopper.jpg", "person"), ("eagle.jpg", "bird"), ("dog.jpg", "dog"),
           ("person.jpg", "horse"), ("person.jpg", "person"), ("dog.jpg", "bicycle"))
SIZE = (2400, 1600)
OBJECT_PIXELS = 128  # each object's height (or width, if wider) in the wide shot
MARGIN = 0.4  # of the object's size, kept around it from its photo


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def wide_shot(best_box, copies: int = 2, seed: int = 0):
    """The image (H x W x 3 uint8) and its objects ``[(label, box)]``; ``best_box(rgb, label)``
    gives an object's box in its photo (the plain model's)."""
    rng = np.random.default_rng(seed)
    width, height = SIZE
    field = rng.normal(120, 12, (height // 8, width // 8, 3)).clip(0, 255).astype(np.uint8)
    canvas = Image.fromarray(field).resize(SIZE, Image.BILINEAR)
    truth = []
    cells = [(x, y) for y in range(3) for x in range(4)]  # a 4 x 3 layout, one object a cell
    for index, (x_cell, y_cell) in enumerate(cells[:len(OBJECTS) * copies]):
        photo, label = OBJECTS[index % len(OBJECTS)]
        rgb = np.asarray(Image.open(SHARED_PHOTOS / photo).convert("RGB"))
        x1, y1, x2, y2 = best_box(rgb, label)
        margin = MARGIN * max(x2 - x1, y2 - y1)
        crop = (max(0, int(x1 - margin)), max(0, int(y1 - margin)),
                min(rgb.shape[1], int(x2 + margin)), min(rgb.shape[0], int(y2 + margin)))
        scale = OBJECT_PIXELS / max(x2 - x1, y2 - y1)
        piece = Image.fromarray(rgb[crop[1]:crop[3], crop[0]:crop[2]])
        piece = piece.resize((max(1, round(piece.width * scale)),
                              max(1, round(piece.height * scale))), Image.LANCZOS)
        left = int(x_cell * width / 4 + rng.uniform(0.2, 0.6) * (width / 4 - piece.width))
        top = int(y_cell * height / 3 + rng.uniform(0.2, 0.6) * (height / 3 - piece.height))
        canvas.paste(piece, (left, top))
        truth.append((label, ((x1 - crop[0]) * scale + left, (y1 - crop[1]) * scale + top,
                              (x2 - crop[0]) * scale + left, (y2 - crop[1]) * scale + top)))
    return np.asarray(canvas), truth


def recall(truth, detections) -> float:
    """Of the objects, the share found: a detection of its label over it at IoU >= 0.5."""
    found = sum(any(d["label"] == label and iou(d["bbox"], box) >= 0.5 for d in detections)
                for label, box in truth)
    return found / len(truth)
