"""A taught model's versions: ``NAME@1``, ``NAME@2``... each its weights, its served config and
what made it (the base, the dataset's snapshot, the seed, the held-out scores), kept side by
side; the served ``NAME`` (its table in models.toml, re-read live by web and workers) is the
promoted one. A rollback is a promote of an older version.

    checkpoints/versions/NAME/K.pth, K.py    the version's weights and config
    checkpoints/versions/NAME/K.json         what made it, and its scores
    checkpoints/versions/NAME/.lock          held while a version number is taken
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..jobs.atomic import write_atomically
from ..jobs.job import NAME
from ..jobs.locks import exclusively
from ..models import ModelSpec
from .models_toml import ModelsFileError, replace_table

VERSION = re.compile(r"(?P<name>[A-Za-z0-9_-]{1,64})@(?P<number>[1-9][0-9]{0,5})")
KEPT = 10  # trained versions kept per model (the oldest not served go first)


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
        if not NAME.fullmatch(name):
            raise UnknownVersion(f"no model {name!r:.80}")
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
        """Version ``number`` is trained: what made it, and its scores."""
        write_atomically(self.files(name, number).record,
                         json.dumps({"state": "trained", **info}).encode(), durable=True)
        self.prune(name)

    def forget(self, name: str, number: int) -> None:
        """A version whose training failed (or one pruned): nothing of it is kept."""
        files = self.files(name, number)
        for path in (files.weights, files.config, files.weights.with_suffix(".curve.png"),
                     files.record):
            path.unlink(missing_ok=True)

    def forget_unfinished(self) -> None:
        """Versions a killed training left half made (called while no training runs)."""
        for folder in self.root.glob("*") if self.root.is_dir() else ():
            for number in self.numbers(folder.name):
                try:
                    state = json.loads(self.files(folder.name, number).record.read_bytes())
                except (OSError, ValueError):
                    state = {}
                if state.get("state") != "trained":
                    self.forget(folder.name, number)

    def prune(self, name: str) -> None:
        """Keep the newest ``KEPT`` trained versions and the served one."""
        served = self.served(name)
        trained = [n for n in self.numbers(name) if n != served
                   and self._state(name, n) == "trained"]
        for number in trained[:-KEPT] if len(trained) > KEPT else ():
            self.forget(name, number)

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
        return served_number(tomllib.loads(self.models_file.read_text()).get(name), name)

    def is_taught(self, name: str) -> bool:
        """Whether ``name`` is free, or a model made by teaching (its versions are here)."""
        table = tomllib.loads(self.models_file.read_text()).get(name)
        return table is None or served_number(table, name) is not None

    def promote(self, name: str, number: int, base: ModelSpec | None) -> None:
        """Serve version ``number`` as ``name``: its files and classes (and what it was taught
        from: ``base``, if still configured) replace those of ``name``'s table in models.toml,
        or make one; keys an operator added there stay."""
        files = self.files(name, number)
        info = self.info(name, number)
        if not files.weights.exists() or not files.config.exists():
            raise UnknownVersion(f"version {name}@{number} has no weights on this server")
        try:
            replace_table(self.models_file, name, {
                **served_table(base, info["images"], info["metrics"]),
                "config": str(files.config), "checkpoint": str(files.weights),
                "classes": info["classes"], "version": f"{name}@{number}"},
                may_replace=lambda old: served_number(old, name) is not None)
        except ModelsFileError as error:
            raise NotTaught(f"{error} (model {name!r} was not made by teaching, or "
                            f"{self.models_file.name} is damaged)") from None

    def info(self, name: str, number: int) -> dict:
        """What made a trained version, and its scores."""
        info = self._read(name, number)
        if info.get("state") != "trained":
            raise UnknownVersion(f"no trained version {name}@{number}")
        return info

    def _state(self, name: str, number: int) -> str | None:
        return self._read(name, number).get("state")

    def _read(self, name: str, number: int) -> dict:
        try:
            info = json.loads(self.files(name, number).record.read_bytes())
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}


def served_number(table: object, name: str) -> int | None:
    """The version a models.toml table serves as ``name`` (None: not a taught model's)."""
    version = table.get("version") if isinstance(table, dict) else None
    match = VERSION.fullmatch(version) if isinstance(version, str) else None
    return int(match["number"]) if match and match["name"] == name else None


def served_table(base: ModelSpec | None, images: int, metrics: dict) -> dict:
    """What models.toml says of a promoted version, besides its files and classes."""
    taught = f"taught from {base.name}" if base else "taught"
    return {"hint": f"{taught} on {images} images: bbox mAP@0.5 "
                    f"{metrics['bbox_map50']:.2f} on its dataset's held-out images",
            "validation_map50": {"bbox": metrics["bbox_map50"]},
            **({"timeout_seconds": base.timeout_seconds} if base and base.timeout_seconds
               else {})}
