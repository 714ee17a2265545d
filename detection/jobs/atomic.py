"""Writes that readers never see half done: write beside the target, then rename over it.

``durable=True`` also survives a power cut: the data is fsynced before the rename, and the
directory after it, so the new name never points at an empty file.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMP_SUFFIX = ".tmp"


def temp_path_for(path: Path) -> Path:
    """A hidden temp name beside ``path``: ``.<name>.<8 hex>.tmp`` (storage sweeps stale ones)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path, durable: bool = False) -> Iterator[Path]:
    """Yield a hidden temp path in ``path``'s directory; rename it to ``path`` if the block succeeds."""
    temp = temp_path_for(path)
    try:
        yield temp
        move_into_place(temp, path, durable)
    finally:
        temp.unlink(missing_ok=True)


def move_into_place(temp: Path, path: Path, durable: bool = False) -> None:
    """Rename the finished file ``temp`` (in ``path``'s directory) to ``path``."""
    if durable:
        fsync_path(temp)
    os.replace(temp, path)
    if durable:
        fsync_path(path.parent)


def write_atomically(path: Path, data: bytes, durable: bool = False) -> None:
    with atomic_path(path, durable) as temp:
        temp.write_bytes(data)
