"""Jobs, their states, and the spool that hands them from the web process to the worker.

The spool is a directory of tickets, one JSON file per job, Maildir style: a ticket appears by an
atomic rename into ``queued/`` (named ``<enqueue time ns>-<sid>.json`` so a listing is oldest
first), a worker claims it by renaming it into ``running/``, and it leaves ``running/`` once the
worker has written ``<sid>.json`` (done) or ``<sid>.error.json`` (failed) into uploads/.
A ticket still in ``running/`` when a new worker takes the worker lock was abandoned by a worker
that died: it is queued again once, and fails for good the second time.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from .atomic import write_atomically

SID_PATTERN = re.compile(r"[0-9a-f]{32}")
MAX_ATTEMPTS = 2


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


@dataclass
class Job:
    sid: str
    model: str
    threshold: float
    enqueued_ns: int
    attempts: int = 0

    @classmethod
    def new(cls, sid: str, model: str, threshold: float) -> "Job":
        return cls(sid=sid, model=model, threshold=threshold, enqueued_ns=time.time_ns())

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_file(cls, path: Path) -> "Job":
        return cls(**json.loads(path.read_bytes()))


@dataclass
class JobStatus:
    job: Job
    state: JobState
    queue_position: int | None = None
    result: dict | None = None
    error: str | None = None


class JobQueue(Protocol):
    """The hand-off between web and worker; the spool below is one backend."""

    def enqueue(self, job: Job) -> None: ...
    def status(self, sid: str) -> JobStatus | None: ...
    def depth(self) -> int: ...
    def is_finished(self, sid: str) -> bool: ...
    def claim_next(self) -> Job | None: ...
    def finish(self, job: Job) -> None: ...
    def fail(self, job: Job, reason: str) -> None: ...
    def recover_abandoned(self) -> list[Job]: ...


class SpoolQueue:
    """A job queue kept as files under ``<uploads>/.queue``; results live in ``<uploads>``."""

    @classmethod
    def for_settings(cls, settings) -> "SpoolQueue":
        return cls(settings.uploads_dir, settings.spool_dir, settings.max_queue)

    def __init__(self, uploads_dir: Path, spool_dir: Path, max_queue: int):
        self.uploads_dir = uploads_dir
        self.queued_dir = spool_dir / "queued"
        self.running_dir = spool_dir / "running"
        self.max_queue = max_queue
        self._enqueue_lock = threading.Lock()
        for directory in (uploads_dir, self.queued_dir, self.running_dir):
            directory.mkdir(parents=True, exist_ok=True)

    # Paths of a job's files in uploads/ (the public, polled side).
    def input_path(self, sid: str) -> Path:
        return self.uploads_dir / f"{sid}.png"

    def output_path(self, sid: str) -> Path:
        return self.uploads_dir / f"{sid}.out.png"

    def result_path(self, sid: str) -> Path:
        return self.uploads_dir / f"{sid}.json"

    def error_path(self, sid: str) -> Path:
        return self.uploads_dir / f"{sid}.error.json"

    def _queued_names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.queued_dir) if n.endswith(".json") and n[0] != ".")

    def _running_names(self) -> list[str]:
        return [n for n in os.listdir(self.running_dir) if n.endswith(".json") and n[0] != "."]

    def depth(self) -> int:
        """Jobs waiting or being detected."""
        return len(self._queued_names()) + len(self._running_names())

    def is_finished(self, sid: str) -> bool:
        """Done or failed: two stat calls, cheap enough to ask every few milliseconds."""
        return self.result_path(sid).exists() or self.error_path(sid).exists()

    def enqueue(self, job: Job) -> None:
        with self._enqueue_lock:  # one process's threads never overshoot the bound together
            depth = self.depth()
            if depth >= self.max_queue:
                raise QueueFull(depth)
            write_atomically(self.queued_dir / f"{job.enqueued_ns:020d}-{job.sid}.json",
                             job.to_bytes())

    def status(self, sid: str) -> JobStatus | None:
        # Final states first: a job never leaves them, and the worker writes the result before it
        # drops the running ticket. If the job moves between two looks, look again.
        for _ in range(3):
            try:
                return self._find(sid)
            except FileNotFoundError:
                continue
        return None

    def _find(self, sid: str) -> JobStatus | None:
        if self.result_path(sid).exists():
            result = json.loads(self.result_path(sid).read_bytes())
            job = Job(sid, result["model"], result["threshold"], 0)
            return JobStatus(job, JobState.DONE, result=result)
        if self.error_path(sid).exists():
            failure = json.loads(self.error_path(sid).read_bytes())
            job = Job(sid, failure["model"], failure["threshold"], 0, failure["attempts"])
            return JobStatus(job, JobState.FAILED, error=failure["error"])
        for position, name in enumerate(self._queued_names(), start=1):
            if name.endswith(f"-{sid}.json"):
                return JobStatus(Job.from_file(self.queued_dir / name), JobState.QUEUED, position)
        running = self.running_dir / f"{sid}.json"
        if running.exists():
            return JobStatus(Job.from_file(running), JobState.RUNNING)
        if self.input_path(sid).exists():
            raise FileNotFoundError(sid)  # it moved on while we looked: look again
        return None

    def claim_next(self) -> Job | None:
        """Move the oldest queued ticket into running/ and return its job (None if none wait)."""
        for name in self._queued_names():
            ticket = self.queued_dir / name
            try:
                job = Job.from_file(ticket)
                os.rename(ticket, self.running_dir / f"{job.sid}.json")
            except FileNotFoundError:
                continue  # another worker took it
            job.attempts += 1
            write_atomically(self.running_dir / f"{job.sid}.json", job.to_bytes())
            return job
        return None

    def finish(self, job: Job) -> None:
        """Called once the job's result files are in place."""
        (self.running_dir / f"{job.sid}.json").unlink(missing_ok=True)

    def fail(self, job: Job, reason: str) -> None:
        failure = {"sid": job.sid, "model": job.model, "threshold": job.threshold,
                   "attempts": job.attempts, "error": reason}
        write_atomically(self.error_path(job.sid), json.dumps(failure).encode())
        (self.running_dir / f"{job.sid}.json").unlink(missing_ok=True)

    def recover_abandoned(self) -> list[Job]:
        """Requeue (or, on their last attempt, fail) the jobs a dead worker left in running/.

        Only the holder of the worker lock may call this: then nothing else is running.
        """
        recovered = []
        for name in self._running_names():
            job = Job.from_file(self.running_dir / name)
            if job.attempts >= MAX_ATTEMPTS:
                self.fail(job, f"the worker died {job.attempts} times while detecting this image "
                               "(killed, or out of memory)")
            else:
                write_atomically(self.queued_dir / f"{job.enqueued_ns:020d}-{job.sid}.json",
                                 job.to_bytes())
                (self.running_dir / name).unlink()
            recovered.append(job)
        return recovered

    def prune(self, older_than_hours: float) -> int:
        """Delete the files of finished jobs (done, failed or never queued) older than the limit."""
        if older_than_hours <= 0:
            return 0
        cutoff = time.time() - older_than_hours * 3600
        pending = {n.rsplit("-", 1)[-1][:-5] for n in self._queued_names()}
        pending.update(n[:-5] for n in self._running_names())
        sids = {p.name.split(".", 1)[0] for p in self.uploads_dir.iterdir()}
        removed = 0
        for sid in sids - pending:
            if not SID_PATTERN.fullmatch(sid):
                continue
            files = list(self.uploads_dir.glob(f"{sid}.*"))
            try:
                if all(p.stat().st_mtime < cutoff for p in files):
                    for p in files:
                        p.unlink(missing_ok=True)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
