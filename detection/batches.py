"""Batches: many images as one job, sent as a zip in the ``image`` field or as several ``image``
parts of ``POST /upload?batch=1``. The web process reads the zip with bounds (``archive``),
checks each image's container as it checks an upload's, and stores them as one zip
(``<sid>.batch.zip``, stored, named in order); the worker decodes each in turn.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterator

from .datasets.archive import ArchiveLimits, read_zip_files
from .image_checks import BadImage
from .images import check_image

ZIP_MAGIC = b"PK\x03\x04"
MAX_NAME_CHARS = 120


class BadBatch(ValueError):
    """A batch that cannot be one: no image, or a file in it that is not one."""


class BatchTooLarge(ValueError):
    """A batch of more images than a batch takes."""


@dataclass(frozen=True)
class BatchLimits:
    images: int
    bytes: int  # its images together, once inflated
    max_pixels: int  # each image's

    @classmethod
    def of(cls, settings) -> "BatchLimits":
        return cls(settings.max_batch_images, settings.max_batch_mb * 2**20, settings.max_pixels)


def is_zip(data: bytes) -> bool:
    return data[:4] == ZIP_MAGIC


def images_of_zip(data: bytes, limits: BatchLimits) -> list[tuple[str, bytes]]:
    """A zip's images, checked (hidden files, such as .DS_Store, left out)."""
    files = read_zip_files(data, ArchiveLimits(limits.bytes, 2 * limits.images + 16))
    return checked_images([(name, content) for name, content in files
                           if not any(part.startswith(".") for part in name.split("/"))],
                          limits)


def checked_images(files: list[tuple[str, bytes]], limits: BatchLimits
                   ) -> list[tuple[str, bytes]]:
    """``files`` as a batch's images: at least one, at most ``limits.images``, each an image
    container within the pixel limit, named by its file name (made unique)."""
    if not files:
        raise BadBatch("the batch has no image")
    if len(files) > limits.images:
        raise BatchTooLarge(f"the batch has {len(files)} files; a batch takes at most "
                            f"{limits.images} images")
    named, seen = [], set()
    for index, (name, content) in enumerate(files, 1):
        base = clean_name(PurePosixPath(name.replace("\\", "/")).name) or f"image{index}"
        if not looks_like_image(content):
            raise BadImage(f"{base[:120]}: not an image (a batch takes JPEG, PNG, WebP, GIF, "
                           "BMP, TIFF, ICO or PPM files)")
        try:
            check_image(content, limits.max_pixels)  # its header, before it is stored
        except BadImage as error:
            raise type(error)(f"{base[:120]}: {error}") from None
        unique, stem, suffix, n = base, PurePosixPath(base).stem, PurePosixPath(base).suffix, 1
        while unique.lower() in seen:
            n += 1
            unique = f"{stem}-{n}{suffix}"
        seen.add(unique.lower())
        named.append((unique, content))
    return named


def clean_name(name: str) -> str:
    """A file name as a batch keeps it: control characters and backslashes replaced, no
    leading dot, at most ``MAX_NAME_CHARS`` characters (it reaches CSV cells, COCO files and
    zip entries)."""
    kept = "".join(c if c.isprintable() and c not in "\\/" else "_" for c in name)
    return kept.lstrip(".")[-MAX_NAME_CHARS:]


def looks_like_image(data: bytes) -> bool:
    """Whether ``data`` begins as one of the image formats uploads take."""
    return (data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM",
                             b"II*\0", b"MM\0*", b"\0\0\1\0"))
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
            or (data[:1] == b"P" and data[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6", b"7")))


def pack(images: list[tuple[str, bytes]]) -> bytes:
    """The batch as it is stored: one zip, its images as sent, in order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as packed:
        for name, content in images:
            packed.writestr(name, content)
    return buffer.getvalue()


def unpack(data: bytes) -> tuple[int, Iterator[tuple[str, bytes]]]:
    """How many images a stored batch holds, and its images in order, each read when it is
    taken."""
    with zipfile.ZipFile(io.BytesIO(data)) as packed:
        count = len(packed.infolist())

    def images() -> Iterator[tuple[str, bytes]]:
        with zipfile.ZipFile(io.BytesIO(data)) as packed:
            for entry in packed.infolist():
                yield entry.filename, packed.read(entry)
    return count, images()
