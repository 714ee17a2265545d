"""A dataset to and from COCO files on disk (the command line's ``dataset import`` and
``dataset export``): imported files are checked as ``finetune`` checks them, and each image is
decoded and re-encoded as an upload is."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..finetune.dataset import check_dataset
from ..images import decode_image, encode_png
from .store import DatasetStore


def import_coco(store: DatasetStore, name: str, annotations: Path, max_pixels: int) -> int:
    """Add the images of a COCO annotation file (paths relative to it) and their boxes to
    dataset ``name``, created with the file's categories if it does not exist (its new classes
    join an existing one's); how many images were added."""
    dataset = check_dataset(annotations)
    if name not in store.names():
        store.create(name, list(dataset.classes))
    label = {category["id"]: category["name"] for category in dataset.categories}
    boxes: dict[int, list[dict]] = {image["id"]: [] for image in dataset.images}
    for annotation in dataset.annotations:
        x, y, width, height = annotation["bbox"]
        boxes[annotation["image_id"]].append(
            {"label": label[annotation["category_id"]], "box": [x, y, x + width, y + height]})
    for image in dataset.images:
        pixels = decode_image(Path(image["file_name"]).read_bytes(), max_pixels)
        height, width = pixels.shape[:2]
        store.add_image(name, encode_png(pixels), width, height, boxes[image["id"]],
                        add_classes=True, source=None)
    return len(dataset.images)


def export_coco(store: DatasetStore, name: str, directory: Path) -> Path:
    """Dataset ``name`` as ``directory/annotations.json`` and ``directory/images/*.png``; the
    annotation file's path."""
    coco = store.coco(name, lambda image: f"images/{image.id}.png")
    (directory / "images").mkdir(parents=True, exist_ok=True)
    for entry in coco["images"]:
        image_id = Path(entry["file_name"]).stem
        shutil.copyfile(store.image_file(name, image_id), directory / entry["file_name"])
    path = directory / "annotations.json"
    path.write_text(json.dumps(coco, indent=1))
    return path
