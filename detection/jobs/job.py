"""A job as web, queues and workers share it: its id, kind, options and state.

A job is of one kind (``JobKind``): ``detect`` finds the objects of an upload, ``download`` fetches
a zoo model's weights, ``train`` fine-tunes a model on a dataset into a new version of a model.
Its fields travel as one flat JSON object (``to_fields`` / ``from_fields``,
as rq's ``Job.to_dict`` / ``Job.restore``): in a spool ticket, in an RQ message, and in the job's
records in uploads/, which add their own fields beside them.
"""
from __future__ import annotations

import math
import re
import secrets
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Mapping, Union

MAX_ATTEMPTS = 2  # a job whose worker died is run once more, then failed
MAX_DETECTIONS = 100  # a detection's default bound on the detections it returns and draws
MAX_TILES = 6  # a tiled detection's grid, at most this many tiles a side
MAX_VIDEO_FPS = 30  # frames a second a video is detected at, at most


def new_sid() -> str:
    """An unguessable job id: 128 random bits as hex."""
    return secrets.token_hex(16)


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED)


class JobKind(str, Enum):
    DETECT = "detect"
    DOWNLOAD = "download"
    TRAIN = "train"
    VIDEO = "video"
    BATCH = "batch"


class BadJob(ValueError):
    """Fields that do not make a job (a torn ticket, a record not ours)."""


@dataclass(frozen=True)
class DetectOptions:
    threshold: float
    classes: tuple[str, ...] = ()  # only these labels (none: all the model's)
    max_detections: int = MAX_DETECTIONS  # the best ones, at most this many
    tiles: int | None = None  # detect on a tiles x tiles grid too (None: as the model says)

    def to_fields(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "classes": list(self.classes),
                "max_detections": self.max_detections, "tiles": self.tiles}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> "DetectOptions":
        classes = fields.get("classes") or ()
        if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
            raise BadJob("its classes are not names")
        threshold, limit = fields.get("threshold"), fields.get("max_detections", MAX_DETECTIONS)
        if (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                or not 0 <= threshold <= 1):  # NaN included
            raise BadJob(f"its threshold is not a number from 0 to 1: {threshold!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise BadJob(f"its max_detections is not a whole number above 0: {limit!r}")
        tiles = fields.get("tiles")
        if tiles is not None and (isinstance(tiles, bool) or not isinstance(tiles, int)
                                  or not 1 <= tiles <= MAX_TILES):
            raise BadJob(f"its tiles is not a whole number from 1 to {MAX_TILES}: {tiles!r}")
        return cls(float(threshold), tuple(classes), limit, tiles)


@dataclass(frozen=True)
class DownloadOptions:
    """A download has no options: the model's table in models.toml says where its weights are."""

    def to_fields(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> "DownloadOptions":
        return cls()


NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a dataset's or a model's name


@dataclass(frozen=True)
class TrainOptions:
    """What a training learns from (``dataset``), what it makes (a new version of model
    ``name``), and its length: ``epochs`` and ``time_budget`` (seconds; 0: no limit), None for
    the schedule's own; ``seed``. The job's model is the one it starts from."""
    dataset: str = ""
    name: str = ""
    epochs: int | None = None
    time_budget: float | None = None
    seed: int = 0

    def to_fields(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "name": self.name, "epochs": self.epochs,
                "time_budget": self.time_budget, "seed": self.seed}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> "TrainOptions":
        dataset, name = fields.get("dataset"), fields.get("name")
        epochs, budget = fields.get("epochs"), fields.get("time_budget")
        seed = fields.get("seed", 0)
        if not all(isinstance(v, str) and NAME.fullmatch(v) for v in (dataset, name)):
            raise BadJob("its dataset or model name is not a name")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)
                                   or not 1 <= epochs <= 1000):
            raise BadJob(f"its epochs is not a whole number from 1 to 1000: {epochs!r}")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                   or not 0 <= budget <= 10**6):  # NaN included
            raise BadJob(f"its time budget is not a number of seconds from 0 (no limit): "
                         f"{budget!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise BadJob(f"its seed is not a whole number from 0 to 4294967295: {seed!r}")
        return cls(dataset, name, epochs, None if budget is None else float(budget), seed)


@dataclass(frozen=True)
class VideoOptions:
    """A video's detections: a detection's options for each frame, the frames a second to
    detect (``fps``), and whether to follow objects across frames (``track``)."""
    threshold: float
    classes: tuple[str, ...] = ()
    max_detections: int = MAX_DETECTIONS
    fps: float = 5.0
    track: bool = True

    def to_fields(self) -> dict[str, Any]:
        return {**DetectOptions(self.threshold, self.classes, self.max_detections).to_fields(),
                "tiles": None, "fps": self.fps, "track": self.track}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> "VideoOptions":
        frame = DetectOptions.from_fields(fields)
        fps, track = fields.get("fps", 5.0), fields.get("track", True)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) \
                or not 0 < fps <= MAX_VIDEO_FPS:
            raise BadJob(f"its fps is not a number above 0, at most {MAX_VIDEO_FPS}: {fps!r}")
        if not isinstance(track, bool):
            raise BadJob(f"its track is not true or false: {track!r}")
        return cls(frame.threshold, frame.classes, frame.max_detections, float(fps), track)


@dataclass(frozen=True)
class BatchOptions:
    """A batch's detections: a detection's options for each of its ``count`` images."""
    threshold: float
    classes: tuple[str, ...] = ()
    max_detections: int = MAX_DETECTIONS
    tiles: int | None = None
    count: int = 0

    def to_fields(self) -> dict[str, Any]:
        return {**DetectOptions(self.threshold, self.classes, self.max_detections,
                                self.tiles).to_fields(), "count": self.count}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> "BatchOptions":
        each = DetectOptions.from_fields(fields)
        count = fields.get("count", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise BadJob(f"its count is not a whole number: {count!r}")
        return cls(each.threshold, each.classes, each.max_detections, each.tiles, count)


Options = Union[DetectOptions, DownloadOptions, TrainOptions, VideoOptions, BatchOptions]
OPTIONS: dict[JobKind, type] = {JobKind.DETECT: DetectOptions, JobKind.DOWNLOAD: DownloadOptions,
                                JobKind.TRAIN: TrainOptions, JobKind.VIDEO: VideoOptions,
                                JobKind.BATCH: BatchOptions}


@dataclass(frozen=True)
class Job:
    sid: str
    kind: JobKind
    model: str  # the model it detects with, or downloads
    options: Options
    enqueued_ns: int = 0
    attempts: int = field(default=0, compare=False)  # kept by the queue, not in the fields

    @classmethod
    def detect(cls, sid: str, model: str, threshold: float, classes: tuple[str, ...] = (),
               max_detections: int = MAX_DETECTIONS, tiles: int | None = None) -> "Job":
        return cls(sid, JobKind.DETECT, model, DetectOptions(threshold, tuple(classes),
                                                             max_detections, tiles),
                   time.time_ns())

    @classmethod
    def video(cls, sid: str, model: str, options: VideoOptions) -> "Job":
        return cls(sid, JobKind.VIDEO, model, options, time.time_ns())

    @classmethod
    def batch(cls, sid: str, model: str, options: BatchOptions) -> "Job":
        return cls(sid, JobKind.BATCH, model, options, time.time_ns())

    @classmethod
    def download(cls, sid: str, model: str) -> "Job":
        return cls(sid, JobKind.DOWNLOAD, model, DownloadOptions(), time.time_ns())

    @classmethod
    def train(cls, sid: str, base: str, options: TrainOptions) -> "Job":
        return cls(sid, JobKind.TRAIN, base, options, time.time_ns())

    def to_fields(self) -> dict[str, Any]:
        """The job as one flat JSON object (its attempts excepted)."""
        return {"sid": self.sid, "kind": self.kind.value, "model": self.model,
                "enqueued_ns": self.enqueued_ns, **self.options.to_fields()}

    @classmethod
    def from_fields(cls, fields: Any, attempts: int = 0) -> "Job":
        """The job of ``to_fields``' object (or of a record that holds its fields), checked:
        ``BadJob`` says what is wrong. Fields without a kind are a detection's (from before
        kinds)."""
        if not isinstance(fields, Mapping):
            raise BadJob("it is not a JSON object")
        try:
            kind = JobKind(fields.get("kind", JobKind.DETECT.value))
        except (ValueError, TypeError):
            raise BadJob(f"unknown job kind {str(fields.get('kind'))[:40]!r}") from None
        sid, model, enqueued = fields.get("sid"), fields.get("model"), fields.get("enqueued_ns", 0)
        if not isinstance(sid, str) or not isinstance(model, str):
            raise BadJob("its sid or model is not a name")
        if isinstance(enqueued, bool) or not isinstance(enqueued, int):
            raise BadJob(f"its enqueued_ns is not a whole number: {enqueued!r}")
        return cls(sid, kind, model, OPTIONS[kind].from_fields(fields), enqueued, attempts)

    @classmethod
    def unknown(cls, sid: str, kind: JobKind = JobKind.DETECT) -> "Job":
        """A job whose fields are lost (its ticket torn): its sid is known, and maybe its kind."""
        if kind in (JobKind.DETECT, JobKind.VIDEO, JobKind.BATCH):
            return cls(sid, kind, "unknown", OPTIONS[kind](0.0))
        return cls(sid, kind, "unknown", OPTIONS[kind]())


@dataclass(frozen=True)
class Progress:
    """How far a long job is: ``fraction`` 0..1, a short ``stage`` text, and ``details``
    (numbers by name: a training's epoch, loss, ETA...; or series of [x, y] pairs to plot)."""
    fraction: float
    stage: str
    details: dict[str, float | list | None] = field(default_factory=dict)

    MAX_STAGE: ClassVar[int] = 120
    MAX_DETAILS: ClassVar[int] = 12
    MAX_SERIES: ClassVar[int] = 256  # pairs in a series

    @classmethod
    def checked(cls, fraction: Any, stage: Any, details: Any = None) -> "Progress | None":
        """A progress from what a record or a message holds; None unless it is one (a finite
        number, clamped to 0..1; a text, cut short; details that are not short names of
        finite numbers, nulls or short series of [x, y] pairs of them are dropped)."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            return None
        if not math.isfinite(fraction) or not isinstance(stage, str):
            return None
        kept = {}
        if isinstance(details, Mapping):
            kept = {key: value for key, value in list(details.items())[:cls.MAX_DETAILS]
                    if isinstance(key, str) and len(key) <= 32 and NAME.fullmatch(key)
                    and (value is None or _finite(value) or cls._is_series(value))}
        return cls(min(1.0, max(0.0, float(fraction))), stage[:cls.MAX_STAGE], kept)

    @classmethod
    def _is_series(cls, value: Any) -> bool:
        return isinstance(value, list) and len(value) <= cls.MAX_SERIES and all(
            isinstance(pair, list) and len(pair) == 2 and all(map(_finite, pair))
            for pair in value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: JobState
    queue_position: int | None = None
    result: dict | None = None  # done: its result record
    error: str | None = None  # failed: why
    progress: Progress | None = None  # running, for kinds that report it
    needs_collect: bool = False  # it ended in the queue (RQ), not yet in uploads/
