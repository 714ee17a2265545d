"""A small detection dataset made up for fine-tuning tests: coloured circles, squares and
triangles on noisy backgrounds, with COCO-format boxes and polygon masks (seeded: the same every
run; the shapes do not overlap, so that each mask is the whole shape). Its category ids are not
in the file's order, as a labelling tool may leave them: labels follow the file's order."""
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")
COLORS = ((220, 40, 40), (40, 180, 60), (50, 80, 220))
CATEGORY_IDS = (7, 3, 5)


def outline(kind: int, x: int, y: int, size: int) -> list[tuple[float, float]]:
    """The shape's polygon (a circle as 32 points)."""
    if kind == 0:
        r = size / 2
        return [(x + r + r * math.cos(a), y + r + r * math.sin(a))
                for a in np.linspace(0, 2 * math.pi, 32, endpoint=False)]
    if kind == 1:
        return [(x, y), (x + size, y), (x + size, y + size), (x, y + size)]
    return [(x + size / 2, y), (x + size, y + size), (x, y + size)]


def draw_shape(draw: ImageDraw.ImageDraw, kind: int, x: int, y: int, size: int) -> None:
    draw.polygon(outline(kind, x, y, size), fill=COLORS[kind])


def shape_mask(kind: int, x: int, y: int, size: int, shape: tuple[int, int]) -> np.ndarray:
    """The shape's pixels as a boolean (height, width) array."""
    canvas = Image.new("1", (shape[1], shape[0]))
    ImageDraw.Draw(canvas).polygon(outline(kind, x, y, size), fill=1)
    return np.asarray(canvas, dtype=bool)


def shapes_photo(kind: int, size: int = 320) -> bytes:
    """A PNG of one shape (at 100, 90, 100 px wide) on plain grey."""
    image = Image.new("RGB", (size, size), (128, 128, 128))
    draw_shape(ImageDraw.Draw(image), kind, 100, 90, 100)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run_finetune(ini: Path, name: str, base: str, train: Path,
                 *options: str) -> subprocess.CompletedProcess:
    """``mmdetectionl.py finetune`` as a user runs it, with the settings of ``ini``."""
    root = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "mmdetectionl.py", "--config", str(ini), "finetune",
                           name, "--base", base, "--train", str(train), *options],
                          cwd=root, capture_output=True, text=True, timeout=900)


def area(polygon: list[float]) -> float:
    """A flat [x0, y0, x1, y1, ...] polygon's area (the shoelace formula)."""
    xs, ys = np.array(polygon[0::2]), np.array(polygon[1::2])
    return float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)


def make_dataset(directory: Path, images: int, seed: int = 0,
                 size: tuple[int, int] = (320, 320)) -> Path:
    """``images`` PNGs of ``size`` (width, height) and ``annotations.json`` (image paths
    relative to it) in ``directory``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    entries, annotations = [], []
    width, height = size
    for index in range(images):
        background = (rng.integers(0, 255, (height, width, 3)) // 3 + 80).astype(np.uint8)
        image = Image.fromarray(background)
        draw = ImageDraw.Draw(image)
        placed: list[tuple[int, int, int]] = []
        for _ in range(int(rng.integers(1, 4))):
            kind, side = int(rng.integers(0, 3)), int(rng.integers(40, 110))
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            if any(x < px + ps and px < x + side and y < py + ps and py < y + side
                   for px, py, ps in placed):
                continue  # would overlap a shape drawn already
            placed.append((x, y, side))
            draw_shape(draw, kind, x, y, side)
            polygon = [round(v, 1) for point in outline(kind, x, y, side) for v in point]
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                "category_id": CATEGORY_IDS[kind], "bbox": [x, y, side, side],
                                "area": area(polygon), "iscrowd": 0,
                                "segmentation": [polygon]})
        name = f"{index:03d}.png"
        image.save(directory / name)
        entries.append({"id": index + 1, "file_name": name, "width": width, "height": height})
    path = directory / "annotations.json"
    path.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": [
        {"id": i, "name": name} for i, name in zip(CATEGORY_IDS, CLASSES)]}))
    return path


def save_dataset(url: str, directory: Path, images: int, name: str = "shapes") -> None:
    """``images`` of the shapes saved as dataset ``name`` of the service at ``url``, image by
    image with their boxes, as the page does."""
    import requests
    annotations = json.loads(make_dataset(directory, images).read_bytes())
    names = dict(zip(CATEGORY_IDS, CLASSES))
    requests.post(f"{url}/datasets", json={"name": name, "classes": list(CLASSES)},
                  timeout=30).raise_for_status()
    for entry in annotations["images"]:
        boxes = [{"label": names[a["category_id"]],
                  "box": [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                          a["bbox"][1] + a["bbox"][3]]}
                 for a in annotations["annotations"] if a["image_id"] == entry["id"]]
        saved = requests.post(f"{url}/datasets/{name}/images", files={
            "image": ("shape.png", (directory / entry["file_name"]).read_bytes())},
            data={"annotations": json.dumps(boxes)}, timeout=30)
        assert saved.status_code == 201, saved.text
