"""The spool: the queue as files, handing jobs from web processes to the workers of one machine.

The spool is a directory of tickets, one JSON file per job (its fields), Maildir style
(``tickets.py`` names them). A ticket appears by an atomic, fsynced rename into ``queued/``, named
for its enqueue time (a listing is oldest first), its attempts and its kind; web processes add
them one at a time (an flock on ``enqueue.lock``), so the bound holds across processes. A worker
claims a ticket of its lane's kinds by renaming it into ``running/``: the claim and the count of
attempts are one rename, so the count is right before any work starts, even on a full disk. The
ticket leaves ``running/`` once the job's end is recorded in uploads/ (``records.py``).

Each worker holds its slot's lock (``workers/<slot>.lock``) while it lives, so a running ticket
whose slot lock is free was abandoned by a worker that died (``recovery.py`` takes it back). A
ticket that cannot be read (a power cut can leave an empty file) is set aside in ``damaged/`` by
the worker that meets it, and its job failed with the reason.

Beside its ticket a detection may have its decoded pixels (``pixels.py``).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from . import boot
from .atomic import fsync_path, write_atomically
from .errors import QueueFull
from .job import BadJob, Job, JobKind, JobState, JobStatus
from .kinds import REPORTS_PROGRESS
from .locks import FileLock, exclusively
from .pixels import MAX_PIXELS_BYTES, PixelHandoff
from .queue import Upload
from .records import JobRecords
from .tickets import (
    QUEUED_TICKET,
    RUNNING_TICKET,
    kind_in_name,
    queued_name,
    read_ticket,
    running_name,
    write_fields,
)


class SpoolQueue:
    """A job queue kept as files under ``<uploads>/.queue``; the jobs' records live in
    ``<uploads>``. A worker's queue has its ``slot``; it must hold ``slot_lock(slot)`` while it
    claims jobs."""

    def __init__(self, uploads_dir: Path, spool_dir: Path, max_queue: int, slot: int = 0,
                 max_pixels_bytes: int = MAX_PIXELS_BYTES):
        self.records = JobRecords(uploads_dir)
        self.queued_dir = spool_dir / "queued"
        self.running_dir = spool_dir / "running"
        self.damaged_dir = spool_dir / "damaged"
        self.workers_dir = spool_dir / "workers"
        self.cancel_dir = spool_dir / "cancel"  # <sid>: the reason a running job is to stop
        self.enqueue_lock_file = spool_dir / "enqueue.lock"
        self.max_queue = max_queue
        self.slot = slot
        self._enqueue_lock = threading.Lock()
        for directory in (uploads_dir, self.queued_dir, self.running_dir, self.damaged_dir,
                          self.workers_dir, self.cancel_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.pixels = PixelHandoff(spool_dir / "pixels", max_pixels_bytes)

    def slot_lock(self, slot: int) -> FileLock:
        """The lock a live worker of ``slot`` holds."""
        return FileLock(self.workers_dir / f"{slot}.lock")

    def queued_names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.queued_dir) if n.endswith(".json") and n[0] != ".")

    def running_names(self) -> list[str]:
        return [n for n in os.listdir(self.running_dir) if n.endswith(".json") and n[0] != "."]

    def depth(self) -> int:
        """Jobs waiting or running."""
        return len(self.queued_names()) + len(self.running_names())

    def pending_sids(self) -> set[str]:
        """The jobs queued or running (their files must stay)."""
        sids = {m["sid"] for n in self.queued_names() if (m := QUEUED_TICKET.fullmatch(n))}
        return sids | {m["sid"] for n in self.running_names() if (m := RUNNING_TICKET.fullmatch(n))}

    # --- web processes: queueing -----------------------------------------------------------
    @contextmanager
    def enqueuing(self, job: Job, upload: Upload) -> Iterator[None]:
        """Queue ``job`` around the block that stores its PNG.

        With its pixels left for a worker, the job is queued before the block, so that a worker
        runs it while the PNG is encoded and written (YOLOX-Nano at 1280x960: the result 5 to
        10 ms sooner); if the block fails, the job is withdrawn, or cancelled if a worker has
        it already (it fails: its client hears of the failure, never of the job), and its
        pixels go. Without them (over their budget, or a full disk), the worker reads the PNG:
        the job is queued once the block is done, and not if it fails.
        """
        pixels = self.pixels.leave(job.sid, upload.pixels)
        if pixels is None:
            yield
            self._enqueue(job, None)
            return
        self._enqueue(job, pixels)
        try:
            yield
        except BaseException:
            with suppress(OSError):  # the store's error is the one to tell
                self.pixels.drop(job.sid)  # a worker yet to take them would look for the PNG
                if not self._withdraw(job):  # a worker has it: it fails the job
                    self.request_cancel(job, "its upload could not be stored")
            raise

    def _withdraw(self, job: Job) -> bool:
        """Take a queued job's ticket back, as if it had never been queued; False if a worker
        claimed it first (a claim and this are each one atomic step: one of them wins)."""
        if (name := self._queued_name(job.sid)) is None:
            return False
        try:
            (self.queued_dir / name).unlink()
        except FileNotFoundError:
            return False
        fsync_path(self.queued_dir)  # gone for good, as a claimed one is
        return True

    def _queued_name(self, sid: str) -> str | None:
        """The name of job ``sid``'s ticket in queued/, if it is there."""
        return next((name for name in self.queued_names()
                     if (match := QUEUED_TICKET.fullmatch(name)) and match["sid"] == sid), None)

    def enqueue(self, job: Job, upload: Upload | None = None) -> None:
        """Queue a job (a detection's upload stored already: the disk is shared), with the
        upload's pixels while they fit (else its worker reads the PNG)."""
        self._enqueue(job, self.pixels.leave(job.sid, upload.pixels)
                      if upload is not None and upload.pixels is not None else None)

    def _enqueue(self, job: Job, pixels: Path | None) -> None:
        try:
            # Neither one process's threads nor several web processes overshoot the bound.
            with self._enqueue_lock, exclusively(self.enqueue_lock_file):
                depth = self.depth()
                if depth >= self.max_queue:
                    raise QueueFull(depth)
                write_atomically(self.queued_dir / queued_name(job), write_fields(job),
                                 durable=True)
        except BaseException:
            if pixels is not None:
                pixels.unlink(missing_ok=True)
            raise

    def _running_tickets(self, sid: str) -> list[Path]:
        return [self.running_dir / name for name in self.running_names()
                if name.startswith(sid)]

    # --- anyone: reading -------------------------------------------------------------------
    def status(self, sid: str) -> JobStatus | None:
        """The job's status; reads only. Final states first: a job never leaves them, and a
        worker records a job's end before its ticket goes. If the job moves between two looks,
        look again."""
        for _ in range(3):
            try:
                return self._find(sid)
            except FileNotFoundError:
                continue
        return None

    def collect(self, status: JobStatus) -> JobStatus:
        """Nothing to bring in: the spool's workers record each job's end themselves."""
        return status

    def _find(self, sid: str) -> JobStatus | None:
        final = self.records.final_status(sid)
        if final is not None:
            return final
        for position, name in enumerate(self.queued_names(), start=1):
            match = QUEUED_TICKET.fullmatch(name)
            if match and match["sid"] == sid:
                try:
                    job = read_ticket(self.queued_dir / name, sid, int(match["attempts"] or 0))
                except BadJob as error:  # the worker that meets it fails the job for this
                    return JobStatus(Job.unknown(sid), JobState.FAILED, error=lost(str(error)))
                return JobStatus(job, JobState.QUEUED, position)
        for name in self.running_names():
            match = RUNNING_TICKET.fullmatch(name)
            if match and match["sid"] == sid:
                try:
                    job = read_ticket(self.running_dir / name, sid, int(match["attempts"] or 1))
                except BadJob:  # its worker sets it aside; meanwhile it is running
                    job = Job.unknown(sid)
                progress = (self.records.progress(sid) if job.kind in REPORTS_PROGRESS
                            else None)
                return JobStatus(job, JobState.RUNNING, progress=progress)
        if self.records.is_finished(sid) or self.records.has_input(sid) or (
                sid in self.pending_sids()):
            raise FileNotFoundError(sid)  # it moved on while we looked: look again
        return None

    def is_finished(self, sid: str) -> bool:
        """Done or failed (the spool's workers record every end in uploads/)."""
        return self.records.is_finished(sid)

    def waiting(self, kinds: Collection[JobKind]) -> bool:
        """Whether a job of one of ``kinds`` waits (read from the tickets' names)."""
        return any((match := QUEUED_TICKET.fullmatch(name)) and kind_in_name(match) in kinds
                   for name in self.queued_names())

    def pending_jobs(self, kind: JobKind) -> list[Job]:
        """The queued or running jobs of ``kind`` (their tickets read)."""
        found = []
        for directory, pattern in ((self.queued_dir, QUEUED_TICKET),
                                   (self.running_dir, RUNNING_TICKET)):
            for name in os.listdir(directory):
                match = pattern.fullmatch(name)
                if match is None or (pattern is QUEUED_TICKET and kind_in_name(match) is not kind):
                    continue
                try:
                    job = read_ticket(directory / name, match["sid"], 0)
                except (BadJob, FileNotFoundError):
                    continue
                if job.kind is kind:
                    found.append(job)
        return found

    def request_cancel(self, job: Job, reason: str) -> None:
        """A queued job fails at once with ``reason`` (taken from the queue as a worker takes
        one); a running one's worker is asked to stop it (``cancel_requested``). The request
        is left first, so that a worker taking the job meanwhile sees it."""
        marker = self.cancel_dir / job.sid
        write_atomically(marker, reason.encode())
        if (name := self._queued_name(job.sid)) and (claimed := self._claim(name)):
            self.fail(claimed, reason)  # (finish drops the marker)
            return
        if not self._running_tickets(job.sid):  # it ended meanwhile
            marker.unlink(missing_ok=True)

    def cancel_requested(self, sid: str) -> str | None:
        """Why a running job is to stop, if a client asked (a worker looks now and then)."""
        try:
            return (self.cancel_dir / sid).read_text()[:300]
        except FileNotFoundError:
            return None

    # --- workers: claiming and ending ------------------------------------------------------
    def claim_next(self, kinds: Collection[JobKind] = tuple(JobKind)) -> Job | None:
        """Move the oldest queued ticket of ``kinds`` into running/ and return its job (None if
        none waits)."""
        for name in self.queued_names():
            match = QUEUED_TICKET.fullmatch(name)
            if match is not None and kind_in_name(match) not in kinds:
                continue  # another lane's
            if job := self._claim(name):
                return job
        return None

    def claim_like(self, first: Job, limit: int) -> list[Job]:
        """Up to ``limit`` more queued jobs of ``first``'s kind and model (looking at most
        ``4 * limit`` tickets ahead): a GPU detects them in one batch."""
        more = []
        for name in self.queued_names()[:4 * limit] if limit > 0 else ():
            match = QUEUED_TICKET.fullmatch(name)
            if match is None or kind_in_name(match) is not first.kind:
                continue
            try:
                job = read_ticket(self.queued_dir / name, match["sid"], 0)
            except (BadJob, FileNotFoundError):
                continue  # damaged (claim_next sets it aside), or another worker took it
            if job.model == first.model and (job := self._claim(name)):
                more.append(job)
                if len(more) == limit:
                    break
        return more

    def claim_batch(self, limit: int, kinds: Collection[JobKind] = tuple(JobKind)) -> list[Job]:
        """The oldest queued job of ``kinds`` and up to ``limit - 1`` more like it."""
        first = self.claim_next(kinds)
        return [] if first is None else [first, *self.claim_like(first, limit - 1)]

    def _claim(self, name: str) -> Job | None:
        """Move a queued ticket into running/ and return its job (None if another worker took
        it first, or it is damaged: then it is set aside, its job failed)."""
        match = QUEUED_TICKET.fullmatch(name)
        if match is None:
            self.set_aside(self.queued_dir / name, None, "not a ticket name")
            return None
        attempts = int(match["attempts"] or 0) + 1
        running = self.running_dir / running_name(match["sid"], attempts, self.slot,
                                                  boot.boot_tag())
        try:
            os.rename(self.queued_dir / name, running)
        except FileNotFoundError:
            return None  # another worker took it
        try:
            return read_ticket(running, match["sid"], attempts)
        except BadJob as error:
            self.set_aside(running, match["sid"], str(error))
            return None

    def finish(self, job: Job) -> None:
        """Called once the job's end is recorded: makes it durable (a worker writes results
        without waiting for the disk, so that the client hears at once), then drops the job's
        pixels and ticket."""
        self.records.make_durable(job.sid)
        self.pixels.drop(job.sid)
        for ticket in self._running_tickets(job.sid):
            ticket.unlink(missing_ok=True)
        # After the ticket: a cancel asked meanwhile sees the job ended, and drops its own
        (self.cancel_dir / job.sid).unlink(missing_ok=True)
        fsync_path(self.running_dir)  # gone for good: a power cut does not bring it back

    def fail(self, job: Job, reason: str) -> None:
        self.records.fail(job, reason)
        self.finish(job)

    def set_aside(self, ticket: Path, sid: str | None, reason: str) -> None:
        """Move a damaged ticket into damaged/ (kept for a look); fail its job with the reason."""
        try:
            os.rename(ticket, self.damaged_dir / f"{time.time_ns()}-{ticket.name}")
        except FileNotFoundError:
            return  # someone else set it aside
        if sid is not None:
            self.pixels.drop(sid)
            if not self.records.is_finished(sid):
                self.records.fail(Job.unknown(sid), lost(reason))


def lost(reason: str) -> str:
    """Why a job whose ticket is damaged failed."""
    return f"the job was lost: {reason}; upload it again"


def open_spool(settings, slot: int = 0) -> SpoolQueue:
    """The spool in uploads/.queue (as the worker of ``slot`` sees it)."""
    budget = settings.max_storage_bytes
    return SpoolQueue(settings.uploads_dir, settings.spool_dir, settings.max_queue, slot,
                      MAX_PIXELS_BYTES if budget is None else min(MAX_PIXELS_BYTES, budget // 8))
