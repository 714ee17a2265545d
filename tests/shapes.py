"""A small detection dataset made up for fine-tuning tests: coloured circles, squares and
triangles on noisy backgrounds, with COCO-format boxes (seeded: the same every run)."""
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")
COLORS = ((220, 40, 40), (40, 180, 60), (50, 80, 220))


def draw_shape(draw: ImageDraw.ImageDraw, kind: int, x: int, y: int, size: int) -> None:
    box = (x, y, x + size, y + size)
    if kind == 0:
        draw.ellipse(box, fill=COLORS[kind])
    elif kind == 1:
        draw.rectangle(box, fill=COLORS[kind])
    else:
        draw.polygon([(x + size // 2, y), (x, y + size), (x + size, y + size)], fill=COLORS[kind])


def make_dataset(directory: Path, images: int, seed: int = 0, size: int = 320) -> Path:
    """``images`` PNGs and ``annotations.json`` (image paths relative to it) in ``directory``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    entries, annotations = [], []
    for index in range(images):
        background = (rng.integers(0, 255, (size, size, 3)) // 3 + 80).astype(np.uint8)
        image = Image.fromarray(background)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 4))):
            kind, side = int(rng.integers(0, 3)), int(rng.integers(40, 110))
            x, y = int(rng.integers(0, size - side)), int(rng.integers(0, size - side))
            draw_shape(draw, kind, x, y, side)
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                "category_id": kind + 1, "bbox": [x, y, side, side],
                                "area": side * side, "iscrowd": 0})
        name = f"{index:03d}.png"
        image.save(directory / name)
        entries.append({"id": index + 1, "file_name": name, "width": size, "height": size})
    path = directory / "annotations.json"
    path.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": [
        {"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]}))
    return path
