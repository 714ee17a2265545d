"""The model registry: names -> mmdet config, checkpoint and a hint, read from ``models.toml``.

Nothing here imports torch or mmdet, so the web process stays small.
"""
from __future__ import annotations

import importlib.util
import logging
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import tomllib

from . import zoo
from .coco import COCO_CLASSES
from .datasets.review import ReviewRule
from .jobs.job import MAX_TILES

log = logging.getLogger(__name__)


class UnknownModel(LookupError):
    """A model name that the registry does not offer."""


class MissingCheckpoint(FileNotFoundError):
    """A configured model whose checkpoint file is not on disk."""

    def __init__(self, model: "ModelSpec"):
        remedy = (f"run: python mmdetectionl.py download {model.name}" if model.backend == "mmdet"
                  else "its weights come with facenet-pytorch: run the install command")
        super().__init__(f"model {model.name!r} has no checkpoint at {model.checkpoint}; {remedy}")
        self.model = model


PLAIN_FILE_NAME = re.compile(r"[\w.-]+\.pth")

# How a model is loaded (models.toml's ``backend``): an mmdet config and checkpoint, or
# facenet-pytorch's MTCNN face detector with the weights its wheel ships.
BACKENDS = ("mmdet", "mtcnn")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: Path | None  # mmdet's
    checkpoint: Path  # a file (mmdet), or the directory of shipped weights (mtcnn)
    weights_url: str | None
    hint: str
    box_ap: float | None
    mask_ap: float | None
    timeout_seconds: float | None = None  # a job's time limit, if not the settings' one
    classes: tuple[str, ...] = COCO_CLASSES  # the labels it detects, in class-id order
    backend: str = "mmdet"
    masks: bool = False  # instance segmentation: each detection has a mask
    validation_map50: dict[str, float] | None = None  # a fine-tuned model's: bbox, segm
    review: ReviewRule | None = None  # which of its uploads are kept for a person to correct
    tiles: int = 1  # detect also on a tiles x tiles grid of the image (small objects): 1, not

    @property
    def available(self) -> bool:
        return self.checkpoint.is_file() if self.backend == "mmdet" else self.checkpoint.is_dir()

    @property
    def downloadable(self) -> bool:
        """Whether its weights can be downloaded (mmdet's zoo, or models.toml's weights_url)."""
        return self.backend == "mmdet" and self.weights_url is not None

    def require_checkpoint(self) -> Path:
        if not self.available:
            raise MissingCheckpoint(self)
        return self.checkpoint

    def describe(self) -> dict:
        """The model as the API lists it."""
        return {"name": self.name, "hint": self.hint, "box_ap": self.box_ap,
                "mask_ap": self.mask_ap, "masks": self.masks, "available": self.available,
                "classes": list(self.classes), "validation_map50": self.validation_map50,
                "downloadable": self.downloadable, "tiles": self.tiles,
                "trainable": self.backend == "mmdet" and not self.masks}  # a teaching's base


def mmdet_configs_dir() -> Path:
    """Where mmdet's wheel keeps its bundled configs (found without importing mmdet)."""
    spec = importlib.util.find_spec("mmdet")
    if spec is None or spec.origin is None:
        raise RuntimeError("mmdet is not installed; run the install command from README.md")
    return Path(spec.origin).parent / ".mim" / "configs"


def _resolve_config(raw: str, base: Path) -> Path:
    for candidate in (base / raw, mmdet_configs_dir() / raw):
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"model config {raw!r} is neither under {base} nor in mmdet's configs")


def _facenet_weights() -> Path:
    """Where facenet-pytorch keeps MTCNN's trained weights (found without importing it)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or spec.origin is None:
        return Path("facenet_pytorch (not installed)")
    return Path(spec.origin).parent / "data"


def load_registry(models_file: Path, checkpoints_dir: Path) -> dict[str, ModelSpec]:
    """Read every model of ``models_file``, filling URL, AP and checkpoint from mmdet's metafiles."""
    with open(models_file, "rb") as f:
        tables = tomllib.load(f)
    registry = {}
    for name, table in tables.items():
        backend = table.get("backend", "mmdet")
        if backend not in BACKENDS:
            raise ValueError(f"model {name}: unknown backend {backend!r}; one of {BACKENDS}")
        if backend == "mtcnn":
            registry[name] = ModelSpec(
                name=name, config=None, checkpoint=_facenet_weights(), weights_url=None,
                hint=table.get("hint", ""), box_ap=None, mask_ap=None, backend=backend,
                timeout_seconds=float(table["timeout_seconds"]) if "timeout_seconds" in table
                else None, classes=("face",), tiles=_tiles(name, table, masks=False))
            continue
        config = _resolve_config(table["config"], models_file.parent)
        entry = zoo.find_metafile_entry(config, mmdet_configs_dir())
        url = table.get("weights_url") or (entry.weights_url if entry else None)
        if url is not None and not str(url).startswith(("https://", "http://")):
            raise ValueError(f"model {name}: weights_url must be an http(s) URL, got {url!r}")
        if "checkpoint" in table:
            checkpoint = (models_file.parent / Path(table["checkpoint"]).expanduser()).resolve()
        else:
            published = zoo.file_name(url) if url else ""
            # The URL names the file, if it names a plain *.pth (not "..", not "get?f=x.pth").
            plain = PLAIN_FILE_NAME.fullmatch(published) and not published.startswith(".")
            checkpoint = checkpoints_dir / (published if plain else f"{name}.pth")
        registry[name] = ModelSpec(
            name=name, config=config, checkpoint=checkpoint, weights_url=url,
            hint=table.get("hint", ""), box_ap=entry.box_ap if entry else None,
            mask_ap=entry.mask_ap if entry else None,
            timeout_seconds=float(table["timeout_seconds"]) if "timeout_seconds" in table else None,
            classes=tuple(str(c) for c in table.get("classes", COCO_CLASSES)),
            masks=bool(table.get("masks", entry is not None and entry.mask_ap is not None)),
            validation_map50={kind: float(value) for kind, value in
                              table["validation_map50"].items()}
            if "validation_map50" in table else None,
            review=_review_rule(name, table.get("review")))
        registry[name] = replace(registry[name], tiles=_tiles(name, table, registry[name].masks))
    return registry


def _tiles(name: str, table: dict, masks: bool) -> int:
    tiles = table.get("tiles", 1)
    if isinstance(tiles, bool) or not isinstance(tiles, int) or not 1 <= tiles <= MAX_TILES:
        raise ValueError(f"model {name}: tiles must be a whole number from 1 to {MAX_TILES}")
    if tiles > 1 and masks:
        raise ValueError(f"model {name}: tiles work on boxes, not on masks")
    return tiles


def _review_rule(name: str, table: object) -> ReviewRule | None:
    try:
        return ReviewRule.of(table)
    except ValueError as error:
        raise ValueError(f"model {name}: {error}") from None


class ModelsFile:
    """The models of models.toml, read again when the file changes (a fine-tuned model is added
    while the service runs); a file that cannot be read keeps the last good models."""

    def __init__(self, path: Path, checkpoints_dir: Path) -> None:
        self.path = path
        self.checkpoints_dir = checkpoints_dir
        self._lock = threading.Lock()  # one reader of a change (web asks from many threads)
        self._stamp = self._current_stamp()
        self._models = load_registry(path, checkpoints_dir)  # unreadable at start: a setup error

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            status = self.path.stat()
        except OSError:
            return None
        return status.st_mtime_ns, status.st_ino, status.st_size

    @property
    def models(self) -> dict[str, ModelSpec]:
        if self._current_stamp() in (None, self._stamp):
            return self._models
        with self._lock:
            stamp = self._current_stamp()
            if stamp not in (None, self._stamp):
                self._stamp = stamp  # once per change, even when it cannot be read
                try:
                    models = load_registry(self.path, self.checkpoints_dir)
                    if not models:
                        raise ValueError("it has no models (caught while being written?)")
                    self._models = models
                except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
                    log.warning("cannot read %s again, keeping its last models: %s", self.path,
                                error)
        return self._models


def job_time_limit(registry: dict[str, ModelSpec], model: str, default_seconds: float) -> float:
    """How long a job of ``model`` may run: its ``timeout_seconds`` in models.toml, else the
    ``job_timeout_seconds`` setting."""
    spec = registry.get(model)
    return spec.timeout_seconds if spec is not None and spec.timeout_seconds else default_seconds
