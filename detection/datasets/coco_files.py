"""A dataset to and from COCO files: on disk (the command line's ``dataset import`` and
``dataset export``) or a client's zip (``POST /datasets/NAME/import``). Imported files are
checked as ``finetune`` checks them, and each image is decoded and re-encoded as an upload is."""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO

from PIL import Image, UnidentifiedImageError

from ..finetune.dataset import TRAINABLE_FORMATS, FinetuneError, check_dataset
from ..image_checks import check_container
from ..images import BadImage, ImageTooLarge, decode_image, encode_png
from ..jobs.errors import DISK_FULL
from .annotations import BadAnnotation, parse_boxes
from .archive import CHUNK, ArchiveLimits, ArchiveTooLarge, unpack_dataset_zip
from .store import DatasetFull, DatasetStorageFull, DatasetStore, check_name

IMPORT_PREFIX = ".import-"  # beside the datasets: a zip unpacked while it is imported
STALE_IMPORT_SECONDS = 3600


def import_coco(store: DatasetStore, name: str, annotations: Path, max_pixels: int,
                confined: bool = False) -> int:
    """Add the images of a COCO annotation file (paths relative to it) and their boxes to
    dataset ``name``, created with the file's categories if it does not exist (its new classes
    join an existing one's); how many images were added. All of them or none: every box is
    checked before the first image is added, and what an import that fails added is taken out
    again (its images, the classes it brought, the dataset if it made it). ``confined``: a
    client's file, whose images must lie in its folder, and whose errors name no server path."""
    folder = annotations.parent
    try:
        if confined:
            _check_confined(annotations, store.limits.images, max_pixels)
        dataset = check_dataset(annotations)
    except FinetuneError as error:
        message = str(error).replace(f"{folder}{os.sep}", "") if confined else str(error)
        raise BadAnnotation(message) from None
    label = {category["id"]: category["name"] for category in dataset.categories}
    boxes: dict[int, list[dict]] = {image["id"]: [] for image in dataset.images}
    for annotation in dataset.annotations:
        x, y, width, height = annotation["bbox"]
        boxes[annotation["image_id"]].append(
            {"label": label[annotation["category_id"]], "box": [x, y, x + width, y + height]})
    for image in dataset.images:  # as the store will check them, before anything is added
        try:
            parse_boxes(boxes[image["id"]], image["width"], image["height"])
        except BadAnnotation as error:
            shown = _shown(Path(image["file_name"]), folder, confined)
            raise BadAnnotation(f"{shown}: {error}") from None
    created = name not in store.names()
    if created:
        store.create(name, list(dataset.classes))
    new_classes = [c for c in dataset.classes if c not in store.summary(name)["classes"]]
    added = []
    try:
        store.check_room_for(name, len(dataset.images))
        for image in dataset.images:
            path = Path(image["file_name"])
            try:
                pixels = decode_image(path.read_bytes(), max_pixels)
            except (BadImage, ImageTooLarge) as error:
                raise type(error)(f"{_shown(path, folder, confined)}: {error}") from None
            height, width = pixels.shape[:2]
            added.append(store.add_image(name, encode_png(pixels), width, height,
                                         boxes[image["id"]], add_classes=True, source=None).id)
    except BaseException:
        if created:
            store.delete(name)
        else:
            for image_id in added:
                store.remove_image(name, image_id)
            store.forget_classes(name, new_classes)
        raise
    return len(added)


def import_zip(store: DatasetStore, name: str, body: IO[bytes], limits: ArchiveLimits,
               max_pixels: int) -> int:
    """A client's zip (``body``, read to at most ``limits.bytes``) imported into dataset
    ``name`` as ``import_coco`` does, unpacked beside the datasets and removed after; how many
    images were added."""
    check_name(name)  # before a byte is read
    for stale in store.root.glob(f"{IMPORT_PREFIX}*"):  # imports a crash interrupted
        try:
            if time.time() - stale.stat().st_mtime > STALE_IMPORT_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
        except FileNotFoundError:  # removed by another import meanwhile
            continue
    work = Path(tempfile.mkdtemp(prefix=IMPORT_PREFIX, dir=store.root))
    try:
        archive = work / "upload.zip"
        _save_bounded(body, archive, limits.bytes)
        with open(archive, "rb") as source:
            annotations = unpack_dataset_zip(source, work / "files", limits)
        archive.unlink()
        return import_coco(store, name, annotations, max_pixels, confined=True)
    except OSError as error:
        if error.errno in DISK_FULL:
            raise DatasetStorageFull("the server's disk is full; the import was not kept") \
                from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _save_bounded(body: IO[bytes], path: Path, limit: int) -> None:
    """``body`` into ``path``; ``ArchiveTooLarge`` as soon as it passes ``limit`` bytes (a
    chunked body declares no length)."""
    written = 0
    with open(path, "wb") as sink:
        while chunk := body.read(CHUNK):
            written += len(chunk)
            if written > limit:
                raise ArchiveTooLarge(f"the zip is over {limit} bytes, the import's limit")
            sink.write(chunk)


def _shown(image: Path, folder: Path, confined: bool) -> str:
    """An image's file in an error: for a client's file, its path in the zip only."""
    if not confined:
        return str(image)
    try:
        return str(image.relative_to(folder.resolve()))
    except ValueError:
        return image.name


def _check_confined(annotations: Path, max_images: int, max_pixels: int) -> None:
    """What a client's annotation file names, checked before anything decodes it: at most
    ``max_images`` images, each file named once, in the file's folder (``../`` or an absolute
    path would read the server's files), and a container of a format training reads that
    costs no more to decode than its pixels (``check_container``, as uploads are checked)."""
    try:
        images = json.loads(annotations.read_bytes()).get("images")
    except (ValueError, AttributeError, RecursionError):
        return  # not a COCO file: check_dataset says why
    if not isinstance(images, list):
        return
    if len(images) > max_images:
        raise DatasetFull(f"the annotation file lists {len(images)} images; a dataset holds "
                          f"at most {max_images}")
    folder = annotations.parent.resolve()
    seen = set()
    for image in images:
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if not isinstance(file_name, str):
            continue  # check_dataset says why
        path = (folder / file_name).resolve() if "\0" not in file_name else None
        if path is None or not path.is_relative_to(folder):
            raise BadAnnotation(f"image file_name {file_name!r:.120} is outside the zip's "
                                "folder; name images by their path in the zip")
        if path in seen:
            raise BadAnnotation(f"image file_name {file_name!r:.120} is named twice; an image "
                                "is added once")
        seen.add(path)
        if path.is_file():  # (a missing one: check_dataset lists them)
            data = path.read_bytes()
            try:
                check_container(data, max_pixels)
                Image.open(io.BytesIO(data), formats=TRAINABLE_FORMATS).close()
            except UnidentifiedImageError:
                raise BadImage(f"{file_name}: not an image training reads (it reads "
                               f"{', '.join(TRAINABLE_FORMATS)})") from None
            except (BadImage, OSError, ValueError, Image.DecompressionBombError,
                    Image.DecompressionBombWarning) as error:
                raise BadImage(f"{file_name}: not an image training reads ({error})") from None


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
