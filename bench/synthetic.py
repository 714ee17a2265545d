"""Synthetic detection datasets unlike the tests' shapes, for tuning fine-tuning's defaults on
data the project was not made on: shapes told apart by their outline only (random colours,
sizes and turns), on textured, photographic or mixed backgrounds, 2-5 classes, small and large
objects, boxes that may touch. Seeded: the same files every run."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PHOTOS = Path(__file__).resolve().parent.parent.parent / "shared" / "photos"


@dataclass(frozen=True)
class Suite:
    """One dataset of the suite."""
    classes: tuple[str, ...]
    train: int
    val: int
    size: int  # square images, pixels
    sides: tuple[int, int]  # an object's size range, pixels
    per_image: tuple[int, int]
    background: str  # "texture", "photo" or "mixed"
    touching: bool = False


SUITE = {
    "textured-2": Suite(("star", "ring"), 50, 15, 320, (40, 120), (1, 3), "texture"),
    "photo-3": Suite(("cross", "hexagon", "arrow"), 40, 15, 320, (40, 140), (1, 3), "photo"),
    "small-4": Suite(("star", "cross", "diamond", "ring"), 80, 20, 416, (16, 40), (2, 6),
                     "texture"),
    "touching-3": Suite(("hexagon", "diamond", "star"), 60, 20, 320, (50, 110), (2, 4),
                        "mixed", touching=True),
    "many-5": Suite(("star", "ring", "cross", "hexagon", "arrow"), 200, 40, 320, (30, 130),
                    (1, 4), "mixed"),
    "few-2": Suite(("arrow", "diamond"), 30, 12, 320, (50, 130), (1, 2), "photo"),
}


def outline(kind: str, cx: float, cy: float, side: float, turn: float) -> list[tuple]:
    """The shape's polygon, ``side`` pixels across, turned by ``turn`` radians."""
    r = side / 2
    if kind == "star":
        points = [(r * (1 if i % 2 == 0 else 0.42), i * math.pi / 5) for i in range(10)]
    elif kind == "hexagon":
        points = [(r, i * math.pi / 3) for i in range(6)]
    elif kind == "diamond":
        points = [(r, 0), (r * 0.55, math.pi / 2), (r, math.pi), (r * 0.55, 3 * math.pi / 2)]
    elif kind == "cross":
        a = r * 0.35
        corners = [(a, r), (a, a), (r, a), (r, -a), (a, -a), (a, -r), (-a, -r), (-a, -a),
                   (-r, -a), (-r, a), (-a, a), (-a, r)]
        points = [(math.hypot(x, y), math.atan2(y, x)) for x, y in corners]
    elif kind == "arrow":
        corners = [(r, 0), (0, r * 0.8), (0, r * 0.3), (-r, r * 0.3), (-r, -r * 0.3),
                   (0, -r * 0.3), (0, -r * 0.8)]
        points = [(math.hypot(x, y), math.atan2(y, x)) for x, y in corners]
    else:
        raise ValueError(kind)
    return [(cx + d * math.cos(a + turn), cy + d * math.sin(a + turn)) for d, a in points]


def draw_object(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, side: float,
                turn: float, colour: tuple) -> tuple[float, float, float, float]:
    """Draw one object; its box (x1, y1, x2, y2)."""
    if kind == "ring":
        r = side / 2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=max(2, int(r / 3)))
        return cx - r, cy - r, cx + r, cy + r
    polygon = outline(kind, cx, cy, side, turn)
    draw.polygon(polygon, fill=colour)
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    return min(xs), min(ys), max(xs), max(ys)


def background(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    if kind == "mixed":
        kind = str(rng.choice(["texture", "photo"]))
    photos = sorted(PHOTOS.glob("*.jpg")) if kind == "photo" else []
    if photos:
        photo = Image.open(photos[int(rng.integers(len(photos)))]).convert("RGB")
        scale = size / min(photo.size) * rng.uniform(1, 2)
        photo = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1))
        x = int(rng.integers(0, photo.width - size + 1))
        y = int(rng.integers(0, photo.height - size + 1))
        return photo.crop((x, y, x + size, y + size))
    base = rng.integers(40, 215, 3)
    noise = rng.normal(0, rng.uniform(10, 45), (size // 8, size // 8, 3))
    texture = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).resize(
        (size, size), Image.BICUBIC)
    pixels = np.asarray(texture, dtype=np.float32)
    period = rng.uniform(6, 30)
    stripes = np.sin(np.arange(size) / period * 2 * math.pi)[None, :, None] * rng.uniform(0, 35)
    if rng.random() < 0.5:
        stripes = stripes.transpose(1, 0, 2)
    pixels = pixels + stripes + rng.normal(0, 12, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 10))):  # distractor blobs: no class of their own
        x, y, r = rng.integers(0, size, 2), None, rng.integers(5, size // 6)
        draw.ellipse((x[0] - r, x[1] - r, x[0] + r, x[1] + r),
                     fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return image.filter(ImageFilter.GaussianBlur(1.5))


def make_split(suite: Suite, directory: Path, images: int, seed: int) -> Path:
    """``images`` JPEGs and a COCO ``annotations.json`` in ``directory``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    entries, annotations = [], []
    for index in range(images):
        image = background(suite.background, suite.size, rng)
        draw = ImageDraw.Draw(image)
        boxes: list[tuple] = []
        for _ in range(int(rng.integers(suite.per_image[0], suite.per_image[1] + 1))):
            for _attempt in range(30):
                side = float(rng.uniform(*suite.sides))
                cx, cy = rng.uniform(side / 2 + 2, suite.size - side / 2 - 2, 2)
                gap = -side * 0.1 if suite.touching else 4  # touching: may overlap a little
                if all(cx + side / 2 + gap < b[0] or cx - side / 2 - gap > b[2]
                       or cy + side / 2 + gap < b[1] or cy - side / 2 - gap > b[3]
                       for b in boxes):
                    break
            else:
                continue
            label = int(rng.integers(len(suite.classes)))
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            box = draw_object(draw, suite.classes[label], cx, cy, side,
                              float(rng.uniform(0, 2 * math.pi)), colour)
            boxes.append(box)
            x1, y1, x2, y2 = (max(0.0, min(float(suite.size), v)) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                "category_id": label + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        name = f"{index:04d}.jpg"
        image.save(directory / name, quality=90)
        entries.append({"id": index + 1, "file_name": name, "width": suite.size,
                        "height": suite.size})
    path = directory / "annotations.json"
    path.write_text(json.dumps({
        "images": entries, "annotations": annotations,
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(suite.classes)]}))
    return path


def make_suite_dataset(name: str, directory: Path) -> tuple[Path, Path]:
    """The training and validation annotation files of the suite's dataset ``name``."""
    suite = SUITE[name]
    seed = sum(map(ord, name))
    return (make_split(suite, directory / "train", suite.train, seed),
            make_split(suite, directory / "val", suite.val, seed + 1))


def clear_photo(name: str) -> tuple[bytes, str]:
    """A new image with one clear object of the suite's first class (as a user would try a
    model on): its PNG and the class."""
    import io
    suite = SUITE[name]
    image = Image.new("RGB", (suite.size, suite.size), (200, 200, 200))
    side = float(np.clip(suite.size * 0.3, *suite.sides))
    draw_object(ImageDraw.Draw(image), suite.classes[0], suite.size / 2, suite.size / 2, side,
                0.3, (30, 60, 160))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), suite.classes[0]
