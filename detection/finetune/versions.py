"""A taught model's versions: ``NAME@1``, ``NAME@2``... each its weights, its served config and
what made it (the base, the dataset's snapshot, the seed, the held-out scores), kept side by
side; the served ``NAME`` (its table in models.toml, re-read live by web and workers) is the
promoted one. A rollback is a promote of an older version.

    checkpoints/versions/NAME/K.pth, K.py    the version's weights and config
    checkpoints/versions/NAME/K.json         what made it, and its scores
    checkpoints/versions/NAME/.lock          held while a version number is taken or promoted
"""
from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..jobs.atomic import atomic_path, write_atomically
from ..jobs.locks import exclusively

VERSION = re.compile(r"(?P<name>[A-Za-z0-9_-]{1,64})@(?P<number>[1-9][0-9]{0,5})")
TABLE_HEADER = re.compile(r"^\[(?P<name>[^\]]+)\]\s*$", re.MULTILINE)


class UnknownVersion(LookupError):
    pass


class NotTaught(ValueError):
    """A name that belongs to a model not made by teaching (a zoo model, or one fine-tuned
    from the command line): its table is not ours to replace."""


@dataclass(frozen=True)
class VersionFiles:
    weights: Path
    config: Path
    record: Path


class Versions:
    def __init__(self, checkpoints_dir: Path, models_file: Path):
        self.root = checkpoints_dir / "versions"
        self.models_file = models_file

    def files(self, name: str, number: int) -> VersionFiles:
        folder = self.root / name
        return VersionFiles(folder / f"{number}.pth", folder / f"{number}.py",
                            folder / f"{number}.json")

    def new_number(self, name: str) -> int:
        """The next version's number, taken (its record holds ``{"state": "training"}``
        until ``record`` replaces it)."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        with exclusively(folder / ".lock"):
            number = max(self.numbers(name), default=0) + 1
            write_atomically(self.files(name, number).record,
                             json.dumps({"state": "training"}).encode(), durable=True)
        return number

    def numbers(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit())

    def record(self, name: str, number: int, info: dict) -> None:
        write_atomically(self.files(name, number).record,
                         json.dumps({"state": "trained", **info}).encode(), durable=True)

    def forget(self, name: str, number: int) -> None:
        """A version whose training failed: nothing of it is kept."""
        files = self.files(name, number)
        for path in (files.weights, files.config, files.record):
            path.unlink(missing_ok=True)

    def describe(self, name: str) -> list[dict]:
        """Each trained version: its number, what made it, its scores, and whether it is the
        one served."""
        served = self.served(name)
        versions = []
        for number in self.numbers(name):
            try:
                info = json.loads(self.files(name, number).record.read_bytes())
            except (OSError, ValueError):
                continue
            if info.get("state") == "trained":
                versions.append({"version": f"{name}@{number}", "number": number,
                                 "served": number == served,
                                 **{k: v for k, v in info.items() if k != "state"}})
        return versions

    def served(self, name: str) -> int | None:
        """The number of the version models.toml serves as ``name``, if it serves one."""
        table = tomllib.loads(self.models_file.read_text()).get(name)
        if not isinstance(table, dict):
            return None
        version = table.get("version")
        match = VERSION.fullmatch(version) if isinstance(version, str) else None
        return int(match["number"]) if match and match["name"] == name else None

    def is_taught(self, name: str) -> bool:
        """Whether ``name`` is free, or a model made by teaching (its versions are here)."""
        table = tomllib.loads(self.models_file.read_text()).get(name)
        return table is None or self.served(name) is not None

    def promote(self, name: str, number: int, table: dict) -> None:
        """Serve version ``number`` as ``name``: its table (``table``, with the version's
        files) replaces ``name``'s in models.toml, or is added."""
        files = self.files(name, number)
        info = self._trained(name, number)
        if not files.weights.exists() or not files.config.exists():
            raise UnknownVersion(f"version {name}@{number} has no weights on this server")
        if not self.is_taught(name):
            raise NotTaught(f"model {name!r} was not made by teaching: its table in "
                            f"{self.models_file.name} is left alone")
        with exclusively(self.root / name / ".lock"):
            replace_table(self.models_file, name, {
                **table, "config": str(files.config), "checkpoint": str(files.weights),
                "classes": info["classes"], "version": f"{name}@{number}"})

    def _trained(self, name: str, number: int) -> dict:
        try:
            info = json.loads(self.files(name, number).record.read_bytes())
        except (OSError, ValueError):
            info = {}
        if info.get("state") != "trained":
            raise UnknownVersion(f"no trained version {name}@{number}")
        return info


def served_table(base, images: int, metrics: dict) -> dict:
    """What models.toml says of a promoted version, besides its files and classes."""
    return {"hint": f"taught from {base.name} on {images} images: bbox mAP@0.5 "
                    f"{metrics['bbox_map50']:.2f} on its dataset's held-out images",
            "validation_map50": {"bbox": metrics["bbox_map50"]},
            **({"timeout_seconds": base.timeout_seconds} if base.timeout_seconds else {})}


def replace_table(models_file: Path, name: str, table: dict) -> None:
    """``[name]`` in models.toml, replaced (or added) atomically: values as TOML (a JSON
    string, number or boolean is one; a dict an inline table). Other tables, and comments, stay
    as they are."""
    lines = [f"[{name}]"]
    for key, value in table.items():
        if isinstance(value, dict):
            value = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
        else:
            value = json.dumps(value, ensure_ascii=False)
        lines.append(f"{key} = {value}")
    block = "\n".join(lines) + "\n"
    current = models_file.read_text()
    headers = list(TABLE_HEADER.finditer(current))
    start = next((i for i, h in enumerate(headers) if h["name"].strip() == name), None)
    if start is None:
        text = current.rstrip("\n") + "\n\n" + block
    else:
        end = headers[start + 1].start() if start + 1 < len(headers) else len(current)
        text = current[:headers[start].start()] + block + ("\n" if end < len(current) else "") \
            + current[end:]
    tomllib.loads(text)  # what the service will read: never leave it a file it cannot
    with atomic_path(models_file, durable=True) as temp:
        temp.write_text(text)
        os.chmod(temp, models_file.stat().st_mode & 0o7777)  # as the operator set it
