"""A COCO-format annotation file, checked and normalised before any training: each problem is
reported with the entry it is in, and what training reads is a clean copy (absolute image paths,
annotation ids renumbered, ``area`` and ``iscrowd`` filled in)."""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

TRAINABLE_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")  # what mmcv's OpenCV decodes


class FinetuneError(ValueError):
    """Fine-tuning cannot start (bad dataset, name or base model); the message says why."""


@dataclass(frozen=True)
class Dataset:
    """A checked annotation file."""
    categories: list[dict]  # in the file's order, which is mmdet's label order
    images: list[dict]  # file_name made absolute
    annotations: list[dict]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(category["name"] for category in self.categories)


def check_dataset(path: Path, masks: bool = False) -> Dataset:
    """Read and check a COCO annotation file: categories with unique names, images on disk
    (relative to the file) of the size it says, boxes inside their images, and with ``masks``
    a polygon or RLE segmentation for each box."""
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise FinetuneError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:
        raise FinetuneError(f"{path} is not a COCO annotation file ({type(error).__name__}: "
                            f"{error})") from None
    except RecursionError:
        raise FinetuneError(f"{path} is not a COCO annotation file (JSON nested too deep)") \
            from None
    if not isinstance(document, dict):
        raise FinetuneError(f"{path} is not a COCO annotation file (not a JSON object)")
    categories = _categories(document.get("categories"), path)
    images = _images(document.get("images"), path)
    ids = {category["id"] for category in categories}
    raw = document.get("annotations")
    if not isinstance(raw, list) or not raw:
        raise FinetuneError(f"{path} has no annotations")
    annotations = [_annotation(entry, number, images, ids, masks, path)
                   for number, entry in enumerate(raw, start=1)]
    return Dataset(categories, list(images.values()), annotations)


def _categories(raw, path: Path) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise FinetuneError(f"{path} has no categories")
    seen_ids, seen_names = set(), set()
    for entry in raw:
        if not isinstance(entry, dict) or not _is_int(entry.get("id")) \
                or not isinstance(entry.get("name"), str):
            raise FinetuneError(f"{path}: a category needs an integer id and a name, not "
                                f"{_show(entry)}")
        name = entry["name"]
        if not name or name != name.strip() or "," in name or not name.isprintable():
            raise FinetuneError(f"{path}: category name {name!r}: a name is printable text, "
                                "with no commas and no spaces at its ends")
        if entry["id"] in seen_ids or name.lower() in seen_names:
            raise FinetuneError(f"{path}: category {name!r} (id {entry['id']}): its id or name "
                                "(in any case) appears twice")
        seen_ids.add(entry["id"])
        seen_names.add(name.lower())
    return [{"id": entry["id"], "name": entry["name"]} for entry in raw]


def _images(raw, path: Path) -> dict[int, dict]:
    if not isinstance(raw, list) or not raw:
        raise FinetuneError(f"{path} has no images")
    images, missing = {}, []
    for entry in raw:
        if not isinstance(entry, dict) or not _is_int(entry.get("id")) \
                or not isinstance(entry.get("file_name"), str) \
                or not all(_is_int(entry.get(key)) and entry[key] > 0
                           for key in ("width", "height")):
            raise FinetuneError(f"{path}: an image needs an integer id, a file_name, and its "
                                f"width and height in pixels, not {_show(entry)}")
        if entry["id"] in images:
            raise FinetuneError(f"{path}: image id {entry['id']} appears twice")
        file = path.parent / entry["file_name"]
        if not file.is_file():
            missing.append(entry["file_name"])
            continue
        width, height = _pixel_size(file)
        if (entry["width"], entry["height"]) != (width, height):
            raise FinetuneError(f"{file} is {width}x{height} pixels (upright); {path} says "
                                f"{entry['width']}x{entry['height']}")
        images[entry["id"]] = {key: entry[key] for key in ("id", "width", "height")} | {
            "file_name": str(file.resolve())}
    if missing:
        raise FinetuneError(f"{len(missing)} images of {path} are missing (relative to its "
                            f"folder), e.g. {missing[0]}")
    return images


def _pixel_size(file: Path) -> tuple[int, int]:
    """An image file's width and height as training sees it (turned upright, as EXIF says),
    once it has decoded whole."""
    try:
        with Image.open(file) as image:
            kind = image.format
            image.load()
            turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
            size = image.size[::-1] if turned else image.size
    except (OSError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:  # (the service makes the warning an error)
        raise FinetuneError(f"{file} is not an image Pillow can read ({error})") from None
    if kind not in TRAINABLE_FORMATS:
        raise FinetuneError(f"{file} is {kind}; training reads {', '.join(TRAINABLE_FORMATS)}")
    return size


def _annotation(entry, number: int, images: dict[int, dict], category_ids: set[int],
                masks: bool, path: Path) -> dict:
    where = f"annotation {number} of {path}"
    if not isinstance(entry, dict):
        raise FinetuneError(f"{where} is not an object: {_show(entry)}")
    image = images.get(entry.get("image_id")) if _is_int(entry.get("image_id")) else None
    if image is None:
        raise FinetuneError(f"{where}: no image has its image_id {_show(entry.get('image_id'))}")
    if not _is_int(entry.get("category_id")) or entry["category_id"] not in category_ids:
        raise FinetuneError(f"{where}: no category has its category_id "
                            f"{_show(entry.get('category_id'))}")
    box = entry.get("bbox")
    if not isinstance(box, list) or len(box) != 4 or not all(map(_is_number, box)):
        raise FinetuneError(f"{where}: its bbox is [x, y, width, height], not {_show(box)}")
    x, y, width, height = box
    if width < 1 or height < 1 or x < 0 or y < 0 or x + width > image["width"] + 1 \
            or y + height > image["height"] + 1:  # (mmdet drops boxes under a pixel unsaid)
        raise FinetuneError(f"{where}: its box {tuple(box)} is empty or outside its image")
    area = entry.get("area")
    clean = {"id": number, "image_id": image["id"], "category_id": entry["category_id"],
             "bbox": box, "iscrowd": 1 if entry.get("iscrowd") else 0,
             "area": area if _is_number(area) and area > 0 else width * height}
    if masks:
        problem = _segmentation_problem(entry.get("segmentation"), image)
        if problem:
            raise FinetuneError(f"{where}: {problem} (the base model learns masks: each box "
                                "needs its polygons or RLE)")
        clean["segmentation"] = entry["segmentation"]
    return clean


def _segmentation_problem(segmentation: list | dict | None, image: dict) -> str | None:
    """What is wrong with a COCO segmentation (polygons or RLE) of ``image``, if anything."""
    if isinstance(segmentation, dict):  # RLE
        if segmentation.get("size") != [image["height"], image["width"]] \
                or not isinstance(segmentation.get("counts"), (str, list)):
            return "its RLE mask needs counts and the image's size [height, width]"
        counts = _rle_counts(segmentation)
        if counts is None or min(counts, default=0) < 0 \
                or sum(counts) != image["height"] * image["width"]:
            return "its RLE counts do not cover the image's pixels"
        return None
    if not isinstance(segmentation, list) or not segmentation:
        return "it has no segmentation"
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2 \
                or not all(map(_is_number, polygon)):
            return "a polygon needs 3 or more x, y points"
        if min(polygon) < 0 or max(polygon[0::2]) > image["width"] + 1 \
                or max(polygon[1::2]) > image["height"] + 1:
            return "a polygon goes outside its image"
    return None


def _rle_counts(rle: dict) -> list[int] | None:
    """An RLE mask's run lengths, or None when its counts are not COCO's (a list of numbers, or
    the compressed text pycocotools writes, read here as its C code does, with bounds)."""
    if isinstance(rle["counts"], list):
        return rle["counts"] if all(map(_is_int, rle["counts"])) else None
    counts, text, at = [], rle["counts"], 0
    while at < len(text):
        value = shift = 0
        while True:
            if at == len(text) or not 0 <= ord(text[at]) - 48 < 64:
                return None
            digit = ord(text[at]) - 48
            value |= (digit & 0x1F) << shift
            at, shift = at + 1, shift + 5
            if not digit & 0x20:
                if digit & 0x10:
                    value |= -1 << shift
                break
        counts.append(value + counts[-2] if len(counts) > 2 else value)
    return counts


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    try:
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
    except OverflowError:  # an integer too big for a float
        return False


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def training_files(train: Dataset, val: Dataset | None, directory: Path,
                   share: float = 0.25) -> tuple[Path, Path, int]:
    """The clean annotation files training reads, in ``directory``: for validation ``val``, or
    ``share`` of the training images split off (seeded, so that runs compare); and how many
    images are trained on."""
    if val is not None:
        if val.classes != train.classes:
            raise FinetuneError("the validation set needs the training set's categories, in the "
                                f"same order: {', '.join(train.classes)}")
        parts = (train, train.images), (val, val.images)
    else:
        if len(train.images) < 2:
            raise FinetuneError("one image cannot be both trained on and validated on: give "
                                "more, or a validation set (--val)")
        images = sorted(train.images, key=lambda image: image["id"])
        random.Random(0).shuffle(images)
        cut = max(1, round(len(images) * share))
        parts = (train, images[cut:]), (train, images[:cut])
    paths = (directory / "train.json", directory / "val.json")
    for path, (dataset, images) in zip(paths, parts):
        ids = {image["id"] for image in images}
        path.write_text(json.dumps({
            "categories": dataset.categories, "images": images,
            "annotations": [a for a in dataset.annotations if a["image_id"] in ids]}))
    return paths[0], paths[1], len(parts[0][1])
