"""What a worker does with each kind of job: one handler a kind, the same for the spool's workers
and RQ's. A worker claims jobs, reports them started, asks the kind's handler to run them and
records each job's ``Outcome``; the handler knows nothing of queues or records.

    detect.py     objects on an upload: the result and the drawing
    download.py   a zoo model's weights, with progress
    train.py      a new version of a taught model, from a dataset, with progress
    video.py      objects in a video's frames, followed across them, with progress
    batch.py      objects in many images, as COCO results, a CSV and a zip of drawings
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ...jobs.job import Job, JobKind, Progress
from ...jobs.records import Outcome
from ...models import UnknownModel
from ...videos import BadVideo, VideoTooLarge
from ..model_cache import ModelCache


@dataclass(frozen=True)
class Work:
    """What a handler is given besides its jobs."""
    models: ModelCache
    read_input: Callable[[Job], np.ndarray]  # a detection's upload, decoded to RGB pixels
    report_progress: Callable[[Job, Progress], None] = lambda job, progress: None
    cancelled: Callable[[Job], str | None] = lambda job: None  # why a client stopped it, if so
    read_bytes: Callable[[Job], bytes] = lambda job: b""  # a video's or a batch's upload


class Handler(Protocol):
    needs_model: bool  # its jobs' model is loaded first (a load is bounded on its own)
    batches: bool  # several jobs of one model may run in one go (on a GPU)

    def run(self, jobs: list[Job], work: Work) -> list[Outcome]:
        """Each job's outcome, in order; a job that fails fails alone where it can."""
        ...


def failure_reason(error: Exception, kind: JobKind = JobKind.DETECT) -> str:
    """Why a job failed, in a line, for an exception of its work (no server paths in it)."""
    if isinstance(error, UnknownModel):
        return str(error)
    if isinstance(error, FileNotFoundError):
        gone = Path(error.filename).name if error.filename else None
        return f"{gone} is gone (pruned or deleted)" if gone else str(error)
    if isinstance(error, (BadVideo, VideoTooLarge)):
        return f"the video cannot be detected: {error}"
    what = "detection" if kind is JobKind.DETECT else f"the {kind.value}"
    return f"{what} failed: {type(error).__name__}: {error}"


def handler_for(kind: JobKind) -> Handler:
    from .detect import DetectHandler
    from .download import DownloadHandler
    from .train import TrainHandler
    from .batch import BatchHandler
    from .video import VideoHandler
    return {JobKind.DETECT: DetectHandler, JobKind.DOWNLOAD: DownloadHandler,
            JobKind.TRAIN: TrainHandler, JobKind.VIDEO: VideoHandler,
            JobKind.BATCH: BatchHandler}[kind]()
