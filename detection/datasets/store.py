"""Datasets the service keeps, for fine-tuning on what its users corrected: a name, a class list
and images with their boxes. One folder per dataset, one file per image, as the spool keeps
jobs: a file appears whole (an atomic rename) or not at all.

    <datasets_dir>/
        <name>/dataset.json        the class list and how many images were ever added
        <name>/images/<id>.png     an image (re-encoded: never the client's bytes)
        <name>/images/<id>.json    its boxes, size, split and source (it exists once this does)
        .locks/<name>, .lock       held while a dataset's, or the folder's, files change (outside
                                   the dataset's folder: a deleted and re-made one is the same)
        .trash-<name>-<hex>/       a deleted dataset, renamed away whole before it is removed

The held-out split is fixed per image when it is added (every ``HELD_OUT_EVERY``-th image added
is held out) and never changes, so that versions trained on a growing dataset are compared on
the same images.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..jobs.atomic import write_atomically
from ..jobs.job import NAME
from ..jobs.locks import exclusively
from .annotations import BadAnnotation, Box, check_classes, parse_boxes

IMAGE_ID = re.compile(r"[0-9a-f]{16}")
HELD_OUT_EVERY = 5  # a fifth of the images: the held-out split
MIN_IMAGES_PER_CLASS = 2  # training images with a box of each class, to train on a dataset
TRASH_PREFIX = ".trash-"
RECORD, IMAGES = "dataset.json", "images"
TRAIN, HELD_OUT = "train", "held_out"


class DatasetNotFound(LookupError):
    pass


class ImageNotFound(LookupError):
    pass


class DatasetExists(ValueError):
    pass


class ImageExists(ValueError):
    """An upload saved to a dataset already (a second copy would count twice)."""


class DatasetFull(ValueError):
    """A limit on datasets, images or classes would be passed."""


class DatasetNotReady(ValueError):
    """A dataset that cannot be trained on yet (too few images of a class, none held out)."""


class DatasetStorageFull(OSError):
    """The datasets' byte budget would be passed."""


@dataclass(frozen=True)
class DatasetLimits:
    datasets: int
    images: int  # per dataset
    classes: int  # per dataset
    total_bytes: int  # every dataset's images together

    @classmethod
    def of(cls, settings) -> DatasetLimits:
        return cls(settings.max_datasets, settings.max_dataset_images,
                   settings.max_dataset_classes, settings.max_datasets_mb * 2**20)


@dataclass(frozen=True)
class DatasetImage:
    id: str
    width: int
    height: int
    boxes: tuple[Box, ...]
    split: str
    added: float
    source: str | None  # the upload's sid it was saved from, if any

    def as_json(self) -> dict:
        return {"id": self.id, "width": self.width, "height": self.height,
                "annotations": [box.as_json() for box in self.boxes], "split": self.split,
                "added": self.added, "source": self.source}

    @classmethod
    def from_json(cls, document: dict) -> DatasetImage:
        return cls(document["id"], document["width"], document["height"],
                   tuple(Box(a["label"], *a["box"]) for a in document["annotations"]),
                   document["split"], document["added"], document["source"])


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BadAnnotation(f"a dataset's name is 1 to 64 letters, digits, _ or -; got "
                            f"{name!r:.80}")
    return name


class DatasetStore:
    def __init__(self, root: Path, limits: DatasetLimits):
        self.root = root
        self.limits = limits
        (root / ".locks").mkdir(parents=True, exist_ok=True)

    def names(self) -> list[str]:
        return sorted(entry.name for entry in os.scandir(self.root)
                      if entry.is_dir(follow_symlinks=False) and NAME.fullmatch(entry.name)
                      and (Path(entry.path) / RECORD).is_file())

    def create(self, name: object, classes: object) -> dict:
        check_name(name)
        classes = check_classes(classes)
        self._check_class_count(len(classes))
        with exclusively(self.root / ".lock"):
            if (self.root / name / RECORD).exists():
                raise DatasetExists(f"a dataset named {name!r} exists already")
            for trash in self.root.glob(f"{TRASH_PREFIX}*"):  # deletions a crash interrupted
                shutil.rmtree(trash, ignore_errors=True)
            if len(self.names()) >= self.limits.datasets:
                raise DatasetFull(f"there are {self.limits.datasets} datasets already, the "
                                  "limit; delete one first")
            folder = self.root / name
            shutil.rmtree(folder, ignore_errors=True)  # a creation a crash interrupted
            (folder / IMAGES).mkdir(parents=True)
            write_atomically(folder / RECORD, json.dumps(
                {"name": name, "classes": list(classes), "added": 0, "bytes": 0,
                 "sources": {}, "created": time.time()}).encode(), durable=True)
        return self.summary(name)

    def delete(self, name: str) -> None:
        folder = self._folder(name)
        trash = self.root / f"{TRASH_PREFIX}{name}-{secrets.token_hex(4)}"
        with exclusively(self.root / ".lock"):
            if not (folder / RECORD).exists():
                raise DatasetNotFound(f"no dataset named {name!r}")
            with exclusively(self._lock(name)):  # after any change under way
                folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)

    def summary(self, name: str) -> dict:
        """Its classes, image count, boxes per class and split sizes."""
        record = self._record(name)
        images = list(self._images(name))
        boxes = Counter(box.label for image in images for box in image.boxes)
        splits = Counter(image.split for image in images)
        return {"name": name, "classes": record["classes"], "images": len(images),
                "boxes": {label: boxes[label] for label in record["classes"]},
                "split": {TRAIN: splits[TRAIN], HELD_OUT: splits[HELD_OUT]},
                "bytes": record["bytes"], "created": record["created"]}

    def images(self, name: str) -> list[DatasetImage]:
        self._record(name)
        return sorted(self._images(name), key=lambda image: (image.added, image.id))

    def add_image(self, name: str, png: bytes, width: int, height: int, annotations: object,
                  add_classes: bool = False, source: str | None = None) -> DatasetImage:
        """Store ``png`` (``width`` x ``height``) with its boxes; new labels join the class list
        when ``add_classes``, else they are refused."""
        boxes = parse_boxes(annotations, width, height)
        folder = self._folder(name)
        # The byte budget spans the datasets: checked and spent under the folder's lock.
        with exclusively(self.root / ".lock"), self._changing(name) as record:
            self._check_room(len(png))
            self.check_room_for(name, 1)
            if source is not None and source in record["sources"]:
                raise ImageExists(f"upload {source} is in dataset {name!r} already (image "
                                  f"{record['sources'][source]}): correct that one (PUT)")
            self._admit_labels(record, boxes, add_classes)
            record["added"] += 1
            record["bytes"] += len(png)
            split = HELD_OUT if record["added"] % HELD_OUT_EVERY == 0 else TRAIN
            image = DatasetImage(secrets.token_hex(8), width, height, tuple(boxes), split,
                                 time.time(), source)
            pixels = folder / IMAGES / f"{image.id}.png"
            write_atomically(pixels, png, durable=True)
            try:
                self._write_image(folder, image)
            except BaseException:
                pixels.unlink(missing_ok=True)
                raise
            if source is not None:
                record["sources"][source] = image.id
        return image

    def check_room_for(self, name: str, count: int) -> None:
        """``count`` more images fit dataset ``name`` (checked again as each is added)."""
        have = len(list(self._image_files(self._folder(name))))
        if have + count > self.limits.images:
            raise DatasetFull(f"dataset {name!r} has {have} images; {count} more would pass "
                              f"its limit of {self.limits.images} (remove some first)")

    def forget_classes(self, name: str, classes: list[str]) -> None:
        """Take ``classes`` off the class list, those no image has a box of (what an import
        that failed had added)."""
        with self._changing(name) as record:
            used = {box.label for image in self._images(name) for box in image.boxes}
            record["classes"] = [c for c in record["classes"] if c not in classes or c in used]

    def image(self, name: str, image_id: str) -> DatasetImage:
        self._record(name)
        return self._read_image(self._folder(name), image_id)

    def image_file(self, name: str, image_id: str) -> Path:
        self.image(name, image_id)
        return self._folder(name) / IMAGES / f"{image_id}.png"

    def set_boxes(self, name: str, image_id: str, annotations: object,
                  add_classes: bool = False) -> DatasetImage:
        """Replace an image's boxes (its split and pixels stay)."""
        folder = self._folder(name)
        with self._changing(name) as record:
            image = self._read_image(folder, image_id)
            boxes = parse_boxes(annotations, image.width, image.height)
            self._admit_labels(record, boxes, add_classes)
            changed = DatasetImage(image.id, image.width, image.height, tuple(boxes),
                                   image.split, image.added, image.source)
            self._write_image(folder, changed)
        return changed

    def remove_image(self, name: str, image_id: str) -> None:
        folder = self._folder(name)
        with self._changing(name) as record:
            image = self._read_image(folder, image_id)
            pixels = folder / IMAGES / f"{image_id}.png"
            size = pixels.stat().st_size if pixels.exists() else 0
            (folder / IMAGES / f"{image_id}.json").unlink()
            pixels.unlink(missing_ok=True)
            record["bytes"] = max(0, record["bytes"] - size)
            record["sources"].pop(image.source, None)

    def require(self, name: str) -> None:
        """``DatasetNotFound`` unless dataset ``name`` exists (one file read)."""
        self._record(name)

    def training_problem(self, name: str) -> str | None:
        """Why dataset ``name`` cannot be trained on yet (None: it can)."""
        classes = self._record(name)["classes"]
        images = self.images(name)
        if not classes:
            return f"dataset {name!r} has no classes"
        counts = dict.fromkeys(classes, 0)
        for image in images:
            if image.split == TRAIN:
                for label in {box.label for box in image.boxes}:
                    counts[label] += 1
        short = [label for label, count in counts.items() if count < MIN_IMAGES_PER_CLASS]
        if short:
            return (f"dataset {name!r} needs at least {MIN_IMAGES_PER_CLASS} training images "
                    f"with a box of each class; too few of: {', '.join(short)} (every "
                    f"{HELD_OUT_EVERY}th image added is held out)")
        if not any(image.split == HELD_OUT and image.boxes for image in images):
            return (f"dataset {name!r} has no held-out image with a box (every "
                    f"{HELD_OUT_EVERY}th image added is held out): add more images")
        return None

    def snapshot(self, name: str, folder: Path) -> tuple[tuple[str, ...], dict[str, Path], str]:
        """Dataset ``name`` as it is now, in ``folder``: its images (hard links, or copies)
        and a COCO file of each split beside them; taken in one look, under its lock, so that
        no change lands halfway. Its classes, the COCO files by split, and a digest of what is
        in them (the same data: the same digest). ``DatasetNotReady`` when it cannot be
        trained on."""
        with self._changing(name):
            problem = self.training_problem(name)
            if problem:
                raise DatasetNotReady(problem)
            classes = tuple(self._record(name)["classes"])
            digest = hashlib.sha256()
            files = {}
            for split in (TRAIN, HELD_OUT):
                coco = self.coco(name, lambda image: f"{image.id}.png", split)
                for entry in coco["images"]:
                    source = self._folder(name) / IMAGES / entry["file_name"]
                    try:
                        os.link(source, folder / entry["file_name"])
                    except OSError:  # another file system
                        shutil.copyfile(source, folder / entry["file_name"])
                    digest.update(source.read_bytes())
                text = json.dumps(coco, sort_keys=True)
                digest.update(text.encode())
                files[split] = folder / f"{split}.json"
                files[split].write_text(text)
        return classes, files, digest.hexdigest()[:12]

    def coco(self, name: str, file_name: Callable[[DatasetImage], str],
             split: str | None = None) -> dict:
        """The dataset (or one split of it) as COCO detection annotations; ``file_name`` names
        each image's file (a URL's path, or a path on disk)."""
        classes = self._record(name)["classes"]
        category = {label: index + 1 for index, label in enumerate(classes)}
        images, annotations = [], []
        for number, image in enumerate(self.images(name), 1):
            if split is not None and image.split != split:
                continue
            images.append({"id": number, "file_name": file_name(image), "width": image.width,
                           "height": image.height})
            for box in image.boxes:
                width, height = box.x2 - box.x1, box.y2 - box.y1
                annotations.append({"id": len(annotations) + 1, "image_id": number,
                                    "category_id": category[box.label],
                                    "bbox": [box.x1, box.y1, width, height],
                                    "area": width * height, "iscrowd": 0})
        return {"images": images, "annotations": annotations,
                "categories": [{"id": i, "name": label} for label, i in category.items()]}

    # --- the files

    def _folder(self, name: str) -> Path:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise DatasetNotFound(f"no dataset named {name!r:.80}")
        return self.root / name

    def _record(self, name: str) -> dict:
        try:
            record = json.loads((self._folder(name) / RECORD).read_bytes())
        except FileNotFoundError:
            raise DatasetNotFound(f"no dataset named {name!r}") from None
        record.setdefault("bytes", 0)
        record.setdefault("sources", {})
        return record

    @contextmanager
    def _changing(self, name: str) -> Iterator[dict]:
        """The dataset's record, rewritten after the block if it changed; one change at a time."""
        folder = self._folder(name)
        self._record(name)  # no lock file for a dataset that never was
        with exclusively(self._lock(name)):
            record = self._record(name)  # raises if it was deleted while we waited
            before = json.dumps(record)
            yield record
            if json.dumps(record) != before:
                write_atomically(folder / RECORD, json.dumps(record).encode(), durable=True)

    def _lock(self, name: str) -> Path:
        self._folder(name)  # a name, not a path
        return self.root / ".locks" / name

    def _image_files(self, folder: Path) -> Iterator[str]:
        """The ids of the images that exist (their JSON does)."""
        for entry in os.scandir(folder / IMAGES):
            stem, dot, suffix = entry.name.partition(".")
            if suffix == "json" and IMAGE_ID.fullmatch(stem):
                yield stem

    def _images(self, name: str) -> Iterator[DatasetImage]:
        folder = self._folder(name)
        for image_id in self._image_files(folder):
            try:
                yield self._read_image(folder, image_id)
            except ImageNotFound:  # removed while we listed
                continue

    def _read_image(self, folder: Path, image_id: str) -> DatasetImage:
        if not isinstance(image_id, str) or not IMAGE_ID.fullmatch(image_id):
            raise ImageNotFound(f"no image {image_id!r:.80} in dataset {folder.name!r}")
        try:
            document = json.loads((folder / IMAGES / f"{image_id}.json").read_bytes())
        except FileNotFoundError:
            raise ImageNotFound(f"no image {image_id!r} in dataset {folder.name!r}") from None
        return DatasetImage.from_json(document)

    def _write_image(self, folder: Path, image: DatasetImage) -> None:
        write_atomically(folder / IMAGES / f"{image.id}.json",
                         json.dumps(image.as_json()).encode(), durable=True)

    def _admit_labels(self, record: dict, boxes: list[Box], add_classes: bool) -> None:
        new = list(dict.fromkeys(box.label for box in boxes if box.label not in
                                 record["classes"]))
        if not new:
            return
        known = {label.casefold(): label for label in record["classes"]}
        differing = [label for label in new if label.casefold() in known]
        if differing or len({label.casefold() for label in new}) != len(new):
            raise BadAnnotation(f"class names differ only in case from others: "
                                f"{', '.join(map(repr, differing or new))} (its classes: "
                                f"{', '.join(record['classes'])}); use one spelling")
        if not add_classes:
            raise BadAnnotation(f"dataset {record['name']!r} has no class "
                                f"{', '.join(map(repr, new))} (its classes: "
                                f"{', '.join(record['classes']) or 'none'}); send "
                                '"add_classes": true to add them')
        self._check_class_count(len(record["classes"]) + len(new))
        record["classes"] += new

    def _check_class_count(self, count: int) -> None:
        if count > self.limits.classes:
            raise DatasetFull(f"a dataset has at most {self.limits.classes} classes; this one "
                              f"would have {count}")

    def _check_room(self, more: int) -> None:
        """Under the folder's lock: the datasets' images and ``more`` bytes fit the budget."""
        used = 0
        for name in self.names():
            try:
                used += self._record(name)["bytes"]
            except DatasetNotFound:  # deleted meanwhile
                continue
        if used + more > self.limits.total_bytes:
            raise DatasetStorageFull(f"the datasets hold {used} bytes; {more} more would pass "
                                     f"their budget of {self.limits.total_bytes}")
