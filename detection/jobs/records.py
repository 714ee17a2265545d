"""A job's records in uploads/: the only code that writes and reads them (``layout.py`` names
them). Queues move tickets or messages; workers and the web record a job's input, progress and
end here.

A job ends with one record: ``<sid>.json`` (done: its result) or ``<sid>.error.json`` (failed:
why), written atomically; a detection writes its drawing ``<sid>.out.png`` first. The worker of
the spool writes a result without waiting for the disk, and ``make_durable`` fsyncs it before the
job's ticket goes; failures are written durably at once.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from .atomic import TEMP_SUFFIX, fsync_path, move_into_place, write_atomically
from .errors import DISK_FULL
from .job import BadJob, Job, JobKind, JobState, JobStatus, Progress
from .layout import (
    BATCH_OUTPUT,
    CALLBACK,
    COCO,
    CSV,
    FILE_NAME,
    FRAMES,
    VIDEO_OUTPUT,
    JobFiles,
)

log = logging.getLogger(__name__)


class ImageSize(TypedDict):
    width: int
    height: int


class JobResult(TypedDict):
    """A done detection's ``<sid>.json``: what /status and DeepStack answer from."""
    sid: str
    kind: str
    model: str
    threshold: float
    classes: list[str]  # the labels asked for ([]: all)
    max_detections: int
    tiles: int  # the grid of tiles it was detected on too (1: none)
    device: str  # where it ran: cpu, cuda:0...
    image: ImageSize
    detections: list[dict]  # Detection.to_json()'s shape
    timings: dict[str, float]


class DownloadResult(TypedDict):
    """A done download's ``<sid>.json``."""
    sid: str
    kind: str
    model: str
    checkpoint: str  # the file name under checkpoints/
    bytes: int
    sha256: str
    timings: dict[str, float]


class TrainResult(TypedDict):
    """A done training's ``<sid>.json``: the version it made, its scores on the dataset's
    held-out images, the served version's on the same images (None: none served, or other
    classes), and whether it was promoted."""
    sid: str
    kind: str
    model: str
    version: str  # NAME@K
    metrics: dict[str, float]
    served: dict | None
    promoted: bool
    warning: str | None
    timings: dict[str, float]


class JobFailure(TypedDict, total=False):
    """A failed job's ``<sid>.error.json``: its fields (a detection's options too), its attempts
    and why it failed."""
    sid: str
    kind: str
    model: str
    threshold: float
    classes: list[str]
    max_detections: int
    attempts: int
    error: str


OPEN_CALLBACK_STATES = ("waiting", "retrying")  # a callback not yet delivered, nor given up
# The files an outcome may carry besides its drawing: a video's, a batch's
OUTCOME_FILES = (VIDEO_OUTPUT, FRAMES, BATCH_OUTPUT, COCO, CSV)

# What a done record of each kind must hold, and of which type (else it reads as damaged).
RESULT_SHAPES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "detect": {"detections": list, "timings": dict, "image": dict},
    "download": {"checkpoint": str, "bytes": int, "sha256": str, "timings": dict},
    "train": {"version": str, "metrics": dict, "timings": dict},
    "video": {"video": dict, "frames": int, "counts": dict, "tracks": list, "timings": dict},
    "batch": {"images": list, "counts": dict, "failed": list, "timings": dict},
}


def worker_died(attempts: int) -> str:
    """Why a job fails whose workers died on each of its attempts."""
    return (f"the worker died {attempts} times while running this job "
            "(killed, hung, or out of memory)")


@dataclass(frozen=True)
class Outcome:
    """How a job ended, as a worker hands it on: its result (and a detection's drawing), or why
    it failed (``cause``: the exception, for the log; it does not travel)."""
    result: dict | None = None
    output: bytes | None = None
    # More of its files, by suffix (a video's, a batch's): their bytes, or a finished
    # temporary file in the uploads folder (``OutputFiles``), moved into place as it is.
    files: dict[str, bytes | Path] | None = None
    error: str | None = None
    cause: BaseException | None = None

    @classmethod
    def failed(cls, reason: str, cause: BaseException | None = None) -> "Outcome":
        return cls(error=reason, cause=cause)

    def to_wire(self) -> dict[str, Any]:
        """As an RQ job's return value: once, since its temporary files are read in and
        removed; a file that cannot be read fails the job (and the others are removed)."""
        if self.error is not None:
            return {"error": self.error}
        try:
            files = {suffix: _taken(data) for suffix, data in (self.files or {}).items()}
        except (OSError, MemoryError) as error:
            self.discard_files()
            return {"error": f"its results could not be read back: {error}"}
        return {"result": self.result, "output": self.output, "files": files or None}

    def discard_files(self) -> None:
        """Remove its temporary files (those not moved into place)."""
        for data in (self.files or {}).values():
            if isinstance(data, Path):
                data.unlink(missing_ok=True)

    @classmethod
    def from_wire(cls, value: Any) -> "Outcome | None":
        """An RQ job's return value, or None when it is not one."""
        if isinstance(value, dict) and isinstance(value.get("result"), dict):
            output, files = value.get("output"), value.get("files")
            files = {suffix: data for suffix, data in files.items()
                     if suffix in OUTCOME_FILES and isinstance(data, bytes)} \
                if isinstance(files, dict) else None
            return cls(result=value["result"], output=output if isinstance(output, bytes) else None,
                       files=files or None)
        if isinstance(value, dict) and "error" in value:
            return cls.failed(str(value["error"]))
        return None


def _taken(data: bytes | Path) -> bytes:
    """A file's bytes; a temporary file is read and removed."""
    if isinstance(data, bytes):
        return data
    try:
        return data.read_bytes()
    finally:
        data.unlink(missing_ok=True)


class JobRecords:
    """The records of the jobs under one uploads directory."""

    def __init__(self, uploads_dir: Path):
        self.uploads_dir = uploads_dir
        self.files = JobFiles(uploads_dir)

    def public_file(self, name: str) -> Path | None:
        """The path of a job's file by its public name (``<sid>.out.png``...), None if the name
        is not one, or the file a symbolic link (whoever planted it, it is not a record)."""
        if not FILE_NAME.fullmatch(name):
            return None
        path = self.uploads_dir / name
        return None if path.is_symlink() else path

    # --- writing ---------------------------------------------------------------------------
    def store_input(self, sid: str, png: bytes) -> None:
        """An accepted upload, as PNG (the web process; not yet durable: the ticket is)."""
        write_atomically(self.files.input(sid), png)

    def store_video(self, sid: str, data: bytes) -> None:
        """An accepted video upload, as sent."""
        write_atomically(self.files.video_input(sid), data)

    def store_batch(self, sid: str, data: bytes) -> None:
        """An accepted batch: its images in one stored zip."""
        write_atomically(self.files.batch_input(sid), data)

    def raw_input(self, job: Job) -> bytes:
        """A video's or a batch's upload, as stored."""
        path = self.files.video_input(job.sid) if job.kind is JobKind.VIDEO \
            else self.files.batch_input(job.sid)
        return path.read_bytes()

    def discard_input(self, sid: str) -> None:
        """An upload whose job was not queued after all (or was withdrawn)."""
        for path in (self.files.input(sid), self.files.video_input(sid),
                     self.files.batch_input(sid)):
            path.unlink(missing_ok=True)

    def write_output(self, sid: str, png: bytes, durable: bool = False) -> None:
        write_atomically(self.files.output(sid), png, durable=durable)

    def write_files(self, sid: str, files: dict[str, bytes | Path] | None,
                    durable: bool = False) -> None:
        """An outcome's other files (a video's or a batch's), before its result; temporary
        files not moved into place (a write failed first) are removed."""
        try:
            for suffix, data in (files or {}).items():
                if suffix not in OUTCOME_FILES:
                    continue
                if isinstance(data, Path):
                    move_into_place(data, self.uploads_dir / f"{sid}{suffix}", durable)
                else:
                    write_atomically(self.uploads_dir / f"{sid}{suffix}", data, durable=durable)
        finally:
            for data in (files or {}).values():
                if isinstance(data, Path):
                    data.unlink(missing_ok=True)

    def write_result(self, sid: str, result: dict, durable: bool = False) -> None:
        """The job is done (write its output first: the poll that sees this finds it)."""
        write_atomically(self.files.result(sid), json.dumps(result).encode(), durable=durable)
        self.files.progress(sid).unlink(missing_ok=True)

    def write_progress(self, sid: str, progress: Progress) -> None:
        """How far a running job is (never durable: a hint for whoever polls)."""
        write_atomically(self.files.progress(sid), json.dumps(
            {"progress": round(progress.fraction, 4), "stage": progress.stage,
             "details": progress.details}).encode())

    def write_callback(self, sid: str, delivery: dict, durable: bool = False) -> None:
        """Where a job's callback goes and how its delivery went (the web's ``Deliverer``)."""
        write_atomically(self.files.callback(sid), json.dumps(delivery).encode(),
                         durable=durable)

    def discard_callback(self, sid: str) -> None:
        """The callback of a job that was not queued after all."""
        self.files.callback(sid).unlink(missing_ok=True)

    def callback(self, sid: str) -> dict | None:
        """A job's callback delivery record, if it has one that reads."""
        try:
            document = json.loads(self.files.callback(sid).read_bytes())
        except (OSError, ValueError, RecursionError):
            return None
        return document if isinstance(document, dict) else None

    def callback_is_open(self, sid: str) -> bool:
        """Whether job ``sid``'s callback is still to be delivered (its files must stay)."""
        return (self.callback(sid) or {}).get("state") in OPEN_CALLBACK_STATES

    def finished_at(self, sid: str) -> float | None:
        """When the job ended (its result or failure was written), if it has."""
        for path in (self.files.result(sid), self.files.error(sid)):
            try:
                return path.stat().st_mtime
            except OSError:
                continue
        return None

    def callback_sids(self) -> list[str]:
        """The jobs that have a callback record."""
        return [path.name.removesuffix(CALLBACK) for path in self.uploads_dir.glob(f"*{CALLBACK}")
                if FILE_NAME.fullmatch(path.name)]

    def clear_progress(self, sid: str) -> None:
        """A job that starts again starts from nothing."""
        self.files.progress(sid).unlink(missing_ok=True)

    def record(self, job: Job, outcome: Outcome, durable: bool = False) -> None:
        """A job's end: its output and result, or its failure."""
        if outcome.error is not None:
            self.fail(job, outcome.error)
            return
        if outcome.output is not None:
            self.write_output(job.sid, outcome.output, durable)
        self.write_files(job.sid, outcome.files, durable)
        self.write_result(job.sid, outcome.result, durable)

    def fail(self, job: Job, reason: str) -> None:
        """The job failed, for ``reason``: recorded durably. On a full disk the job's own files
        make room for this small record."""
        fields = job.to_fields()
        del fields["enqueued_ns"]
        failure = JobFailure(**fields, attempts=job.attempts, error=reason)
        data = json.dumps(failure).encode()
        # Before the record: whoever sees it sees the job's end, with nothing of its run left
        self.files.progress(job.sid).unlink(missing_ok=True)
        for suffix in OUTCOME_FILES:  # a result half-written when it failed is no result
            (self.uploads_dir / f"{job.sid}{suffix}").unlink(missing_ok=True)
        for temporary in self.uploads_dir.glob(f".{job.sid}.*{TEMP_SUFFIX}"):  # being written
            temporary.unlink(missing_ok=True)
        try:
            write_atomically(self.files.error(job.sid), data, durable=True)
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            for path in (self.files.output(job.sid), self.files.input(job.sid),
                         self.files.video_input(job.sid), self.files.batch_input(job.sid)):
                path.unlink(missing_ok=True)
            write_atomically(self.files.error(job.sid), data, durable=True)

    def make_durable(self, sid: str) -> None:
        """fsync a job's output and result, and their directory."""
        for path in self._outputs(sid):
            try:
                fsync_path(path)
            except FileNotFoundError:
                continue
        fsync_path(self.uploads_dir)

    def forget_unsure_result(self, sid: str) -> None:
        """Delete a result that may be torn (written in an earlier boot, never made durable)."""
        for path in self._outputs(sid):
            path.unlink(missing_ok=True)

    def _outputs(self, sid: str) -> list[Path]:
        """What a done job wrote: its drawing, other files (those there), and its result."""
        others = [self.uploads_dir / f"{sid}{suffix}" for suffix in OUTCOME_FILES]
        return [self.files.output(sid), *(path for path in others if path.exists()),
                self.files.result(sid)]

    # --- reading ---------------------------------------------------------------------------
    def has_input(self, sid: str) -> bool:
        return any(path.exists() for path in (self.files.input(sid), self.files.video_input(sid),
                                              self.files.batch_input(sid)))

    def input_path(self, sid: str) -> Path:
        return self.files.input(sid)

    def is_finished(self, sid: str) -> bool:
        """Done or failed: two stat calls."""
        return self.files.result(sid).exists() or self.files.error(sid).exists()

    def has_failed(self, sid: str) -> bool:
        return self.files.error(sid).exists()

    def has_result(self, sid: str) -> bool:
        return self.files.result(sid).exists()

    def final_status(self, sid: str) -> JobStatus | None:
        """A done or failed job's status, from its record (None if it has none)."""
        for path, state in ((self.files.result(sid), JobState.DONE),
                            (self.files.error(sid), JobState.FAILED)):
            try:
                document = json.loads(path.read_bytes())
            except FileNotFoundError:
                continue
            except (OSError, ValueError, RecursionError):  # a directory, not JSON, a JSON bomb
                document = None
            if not isinstance(document, dict) or (
                    state is JobState.DONE and not _has_its_shape(document)):
                return JobStatus(Job.unknown(sid, _kind_of(document)), JobState.FAILED,
                                 error=f"the job's {path.name} is damaged on disk")
            job = self._job_of(sid, document)
            if state is JobState.DONE:
                return JobStatus(job, state, result=document)
            return JobStatus(job, state, error=str(document.get("error"))[:2000])
        return None

    def progress(self, sid: str) -> Progress | None:
        """What a running job last said of its progress, if anything."""
        try:
            document = json.loads(self.files.progress(sid).read_bytes())
            return Progress.checked(document["progress"], document["stage"],
                                    document.get("details"))
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None

    @staticmethod
    def _job_of(sid: str, document: dict) -> Job:
        """The job whose fields a record repeats (a job lost before its fields were known has
        none: it is ``Job.unknown``, of the kind the record names if it names one)."""
        attempts = document.get("attempts")
        try:
            return Job.from_fields({**document, "sid": sid},
                                   attempts if isinstance(attempts, int) else 0)
        except BadJob:
            return Job.unknown(sid, _kind_of(document))


def _kind_of(document) -> JobKind:
    try:
        return JobKind(document.get("kind", JobKind.DETECT.value))
    except (AttributeError, TypeError, ValueError):
        return JobKind.DETECT


def _has_its_shape(result: dict) -> bool:
    """Whether a done record holds what its kind's answers read from it (a record damaged or
    planted on disk must read as a failure, not break a view)."""
    shape = RESULT_SHAPES.get(str(result.get("kind", JobKind.DETECT.value)))
    if shape is None or not all(isinstance(result.get(key), kind)
                                and not isinstance(result.get(key), bool)
                                for key, kind in shape.items()):
        return False
    if not all(_is_number(ms) for ms in result["timings"].values()):
        return False
    return "detections" not in shape or all(_is_detection(d) for d in result["detections"])


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_detection(detection) -> bool:
    return (isinstance(detection, dict) and isinstance(detection.get("label"), str)
            and _is_number(detection.get("score"))
            and isinstance(bbox := detection.get("bbox"), list) and len(bbox) == 4
            and all(_is_number(v) for v in bbox))
