"""What a job is, shared by web and worker: its id, states, records and errors, the queue
interface the web process uses (``JobQueue``), and the factory that picks a backend.

    layout.py     where a job's files are in uploads/ (the public contract)
    spool.py      the queue as files in uploads/.queue (one machine; the default)
    rq_queue.py   the queue on Redis + RQ (workers on any host)
    storage.py    pruning uploads/ and the web's byte budget
    atomic.py, locks.py   atomic writes, and locks held by live processes
"""
from __future__ import annotations

import errno
import json
import secrets
import time
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, ContextManager, Protocol, TypedDict

import numpy as np

from .layout import JobFiles

if TYPE_CHECKING:
    from ..models import ModelsFile

MAX_ATTEMPTS = 2
MAX_DETECTIONS = 100  # a job's default bound on the detections it returns and draws


def new_sid() -> str:
    """An unguessable job id: 128 random bits as hex."""
    return secrets.token_hex(16)


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class QueueFull(RuntimeError):
    """The queue holds as many jobs as it may; try again after ``retry_after`` seconds."""

    def __init__(self, depth: int):
        self.retry_after = max(1, min(60, depth // 10))  # a rough time for the queue to move
        super().__init__(f"the detection queue is full ({depth} jobs); "
                         f"try again in {self.retry_after} s")


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class QueueUnavailable(RuntimeError):
    """The queue's store (Redis) cannot be reached; try again later."""

    retry_after = 5


class DiskFull(OSError):
    """The disk itself is full (not just the storage budget): nothing more can be stored."""



@dataclass
class Job:
    sid: str
    model: str
    threshold: float
    enqueued_ns: int
    attempts: int = 0  # kept in the ticket's name, not in its content
    classes: tuple[str, ...] = ()  # only these labels (none: all the model's)
    max_detections: int = MAX_DETECTIONS  # the best ones, at most this many

    @classmethod
    def new(cls, sid: str, model: str, threshold: float, classes: tuple[str, ...] = (),
            max_detections: int = MAX_DETECTIONS) -> "Job":
        return cls(sid=sid, model=model, threshold=threshold, enqueued_ns=time.time_ns(),
                   classes=classes, max_detections=max_detections)

    def to_bytes(self) -> bytes:
        return json.dumps({"sid": self.sid, "model": self.model, "threshold": self.threshold,
                           "enqueued_ns": self.enqueued_ns, "classes": list(self.classes),
                           "max_detections": self.max_detections}).encode()


@dataclass(frozen=True)
class Upload:
    """An accepted upload as the web process hands it to a queue: the bytes as sent, and the
    pixels it decoded from them (upright RGB, the same as ``<sid>.png`` holds)."""
    data: bytes
    pixels: np.ndarray


class ImageSize(TypedDict):
    width: int
    height: int


class JobResult(TypedDict):
    """A done job's ``<sid>.json``: what the worker writes, /status and DeepStack answer from."""
    sid: str
    model: str
    threshold: float
    classes: list[str]  # the labels asked for ([]: all)
    max_detections: int
    device: str  # where it ran: cpu, cuda:0...
    image: ImageSize
    detections: list[dict]  # Detection.to_json()'s shape
    timings: dict[str, float]


@dataclass
class JobStatus:
    job: Job
    state: JobState
    queue_position: int | None = None
    result: JobResult | None = None
    error: str | None = None


class JobQueue(Protocol):
    """What the web process needs of a queue backend: the spool here, or RQ (``rq_queue.py``).

    ``with queue.enqueuing(job, upload): <store it as <sid>.png>`` queues the job once the
    block is done (a backend without a shared disk sends the upload's bytes with the job, bounded
    by the upload limit; the spool hands its pixels to a worker on the same machine, written
    while the block runs, so that the worker need not decode the PNG); ``status`` and
    ``is_finished`` leave a finished job's files in uploads/."""

    def enqueuing(self, job: Job, upload: Upload) -> ContextManager[None]: ...
    def status(self, sid: str) -> JobStatus | None: ...
    def depth(self) -> int: ...
    def pending_sids(self) -> set[str]: ...
    def is_finished(self, sid: str) -> bool: ...



def read_final_status(files: JobFiles, sid: str) -> JobStatus | None:
    """A done or failed job's status, from its files in uploads/ (None if it has none)."""
    for path, state in ((files.result(sid), JobState.DONE), (files.error(sid), JobState.FAILED)):
        try:
            document = json.loads(path.read_bytes())
            job = Job(sid, str(document.get("model") or "unknown"),
                      float(document.get("threshold") or 0.0), 0,
                      int(document.get("attempts") or 0),
                      tuple(str(c) for c in document.get("classes") or ()),
                      int(document.get("max_detections") or MAX_DETECTIONS))
        except FileNotFoundError:
            continue
        except (ValueError, TypeError, AttributeError):
            return JobStatus(Job(sid, "unknown", 0.0, 0), JobState.FAILED,
                             error=f"the job's {path.name} is damaged on disk")
        if state is JobState.DONE:
            return JobStatus(job, state, result=document)
        return JobStatus(job, state, error=str(document.get("error")))
    return None


def open_queue(settings, models_file: ModelsFile | None = None) -> JobQueue:
    """The job queue the settings name: the spool in uploads/.queue, or RQ on Redis (which
    reads the models' time limits with ``models_file`` when given one)."""
    if settings.queue == "rq":
        from .rq_queue import RQQueue
        return RQQueue(settings, models_file)
    from .spool import open_spool
    return open_spool(settings)


