"""Draw detections (boxes, labels with scores, masks) onto an image with Pillow."""
from __future__ import annotations

import colorsys
import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .detector import Detection

MASK_OPACITY = 0.45


@functools.lru_cache(maxsize=None)
def class_color(class_id: int) -> tuple[int, int, int]:
    """A bright colour per class, spread around the hue circle by the golden ratio."""
    hue = (class_id * 0.618033988749895) % 1.0
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 0.95))


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=4096)
def _label_mask(text: str, size: int) -> np.ndarray:
    """The text rendered once as coverage (0-255): crowded scenes repeat labels ("person 0.93")."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font)
    coverage = np.asarray(mask)
    coverage.flags.writeable = False  # shared by every drawing that uses it
    return coverage


def draw_detections(pixels: np.ndarray, detections: list[Detection]) -> np.ndarray:
    """A copy of RGB ``pixels`` with every detection drawn; the best-scoring ones end on top.

    Drawn with numpy on one copy of the pixels (Pillow only renders the label texts, once)."""
    canvas = np.array(pixels)
    for detection in reversed([d for d in detections if d.mask is not None]):
        color = np.array(class_color(detection.class_id), dtype=np.float32)
        region = detection.mask
        canvas[region] = canvas[region] * (1 - MASK_OPACITY) + color * MASK_OPACITY
    height, width = canvas.shape[:2]
    line_width = max(2, round(min(width, height) / 300))
    font_size = max(12, round(min(width, height) / 40))
    labels, placed = [], []
    for detection in detections:  # best first: they get the best label places
        mask = _label_mask(f"{detection.label} {detection.score:.2f}", font_size)
        size = (mask.shape[1] + 2 * line_width, mask.shape[0] + 2 * line_width)
        rectangle = _label_place(detection.bbox, size, placed, width)
        placed.append(rectangle)
        labels.append((rectangle, mask))
    for detection, (rectangle, mask) in reversed(list(zip(detections, labels))):
        color = class_color(detection.class_id)
        _outline(canvas, detection.bbox, color, line_width)
        _fill(canvas, rectangle, color)
        _darken(canvas, mask, int(rectangle[0]) + line_width, int(rectangle[1]) + line_width)
    return canvas


def _fill(canvas: np.ndarray, box, color) -> None:
    """Paint the pixels from (x1, y1) to (x2, y2), both included (as Pillow's rectangles),
    within the canvas."""
    height, width = canvas.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box)
    canvas[max(y1, 0):max(min(y2 + 1, height), 0), max(x1, 0):max(min(x2 + 1, width), 0)] = color


def _outline(canvas: np.ndarray, box, color, line_width: int) -> None:
    """A rectangle's outline, ``line_width`` pixels thick, inside the box."""
    x1, y1, x2, y2 = (int(v) for v in box)
    inset = line_width - 1
    for edge in ((x1, y1, x2, y1 + inset), (x1, y2 - inset, x2, y2),
                 (x1, y1, x1 + inset, y2), (x2 - inset, y1, x2, y2)):
        _fill(canvas, edge, color)


def _darken(canvas: np.ndarray, coverage: np.ndarray, x: int, y: int) -> None:
    """Lay black text (its ``coverage``) on the canvas at (x, y), clipped to the canvas."""
    height, width = canvas.shape[:2]
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + coverage.shape[0], height), min(x + coverage.shape[1], width)
    if top >= bottom or left >= right:
        return
    region = canvas[top:bottom, left:right]
    alpha = coverage[top - y:bottom - y, left - x:right - x, None].astype(np.uint16)
    region[:] = (region * (255 - alpha) + 127) // 255


def _label_place(bbox, size, placed, image_width) -> tuple[float, float, float, float]:
    """Above the box, else inside its top, else below it: the first place no better label has.
    Labels of boxes at the right edge shift left to stay in the picture."""
    x1, y1, _, y2 = bbox
    width, height = size
    x1 = max(0, min(x1, image_width - width))
    candidates = [(x1, y1 - height), (x1, y1), (x1, y2)]
    rectangles = [(x, max(0, y), x + width, max(0, y) + height) for x, y in candidates]
    for rectangle in rectangles:
        if not any(_overlap(rectangle, other) for other in placed):
            return rectangle
    return rectangles[0]


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
