"""The queue as the web process uses it (``JobQueue``), and the factory that picks a backend:
the spool (``spool.py``, one machine, the default) or RQ on Redis (``rq_queue.py``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ContextManager, Protocol

import numpy as np

from .job import Job, JobKind, JobStatus

if TYPE_CHECKING:
    from ..models import ModelsFile


@dataclass(frozen=True)
class Upload:
    """An accepted upload as the web process hands it to a queue: the bytes as sent, and the
    pixels it decoded from them (upright RGB, the same as ``<sid>.png`` holds; a video: none)."""
    data: bytes
    pixels: np.ndarray | None


class JobQueue(Protocol):
    """What the web process needs of a queue backend.

    ``with queue.enqueuing(job, upload): <store it as <sid>.png>`` queues a detection (a
    backend without a shared disk sends the upload's bytes with the job, once the block is done;
    the spool hands its pixels to a worker on the same machine, before the block, and withdraws
    or fails the job if the block fails); ``enqueue(job)`` queues a job without an upload.
    ``status`` only reads; ``collect`` is the named step that brings a job finished elsewhere
    (RQ) into uploads/ (the spool's workers record their jobs themselves); ``is_finished`` is
    cheap (a waiter asks often)."""

    def enqueuing(self, job: Job, upload: Upload) -> ContextManager[None]: ...
    def enqueue(self, job: Job) -> None: ...
    def status(self, sid: str) -> JobStatus | None: ...
    def is_finished(self, sid: str) -> bool: ...
    def collect(self, status: JobStatus) -> JobStatus: ...
    def depth(self) -> int: ...
    def pending_sids(self) -> set[str]: ...
    def pending_jobs(self, kind: JobKind) -> list[Job]: ...
    def request_cancel(self, job: Job, reason: str) -> None: ...


def open_queue(settings, models_file: ModelsFile | None = None) -> JobQueue:
    """The job queue the settings name: the spool in uploads/.queue, or RQ on Redis (which
    reads the models' time limits with ``models_file`` when given one)."""
    if settings.queue == "rq":
        from .rq_queue import RQQueue
        return RQQueue(settings, models_file)
    from .spool import open_spool
    return open_spool(settings)
