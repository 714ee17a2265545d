"""The spool: the queue as files, handing jobs from web processes to the workers of one machine.

The spool is a directory of tickets, one JSON file per job, Maildir style. A ticket appears by an
atomic, fsynced rename into ``queued/`` as ``<enqueue time ns>-<sid>.<attempts>.json`` (a listing
is oldest first); web processes add them one at a time (an flock on ``enqueue.lock``), so the
bound holds across processes. A worker claims a ticket by renaming it into ``running/`` as
``<sid>.<attempts + 1>.w<slot>.json``: the claim and the count of attempts are one rename, so the
count is right before any work starts, even on a full disk. The ticket leaves ``running/`` once the
worker has written ``<sid>.json`` (done) or ``<sid>.error.json`` (failed) into uploads/.
Each worker holds its slot's lock (``workers/<slot>.lock``) while it lives, so a running ticket
whose slot lock is free was abandoned by a worker that died: it is queued again once, and fails
for good the second time; the jobs of live workers are left alone. A running ticket's name also
tags the boot it was claimed in (``.b<boot tag>``, ``boot.py``): a result its worker wrote but
had not yet made durable counts only in that same boot. A ticket that cannot be read
(a power cut can leave an empty file) is set aside in ``damaged/`` and its job failed with the
reason.

Beside its ticket a job may have its decoded pixels (``pixels/<sid>.npy``), so that the worker
need not decode ``<sid>.png`` again (1280x960: 0.3 ms to load against 14 ms to decode). They are a
shortcut, not the record: not fsynced (so, named ``<sid>.<boot tag>.npy``, trusted only in the
boot that wrote them), written only while the waiting ones fit a byte budget, and a job without
them is read from its PNG.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import (
    DISK_FULL,
    MAX_ATTEMPTS,
    MAX_DETECTIONS,
    Job,
    JobState,
    JobStatus,
    QueueFull,
    Upload,
    read_final_status,
)
from .atomic import atomic_path, fsync_path, write_atomically
from . import boot
from .boot import TAG_PATTERN
from .layout import JobFiles
from .locks import FileLock, exclusively

QUEUED_TICKET = re.compile(r"(?P<ns>\d{20})-(?P<sid>[0-9a-f]{32})(?:\.(?P<attempts>\d+))?\.json")
RUNNING_TICKET = re.compile(r"(?P<sid>[0-9a-f]{32})(?:\.(?P<attempts>\d+))?(?:\.w(?P<slot>\d+))?"
                            rf"(?:\.b(?P<boot>{TAG_PATTERN}))?\.json")
PIXELS_FILE = re.compile(rf"(?P<sid>[0-9a-f]{{32}})\.(?P<boot>{TAG_PATTERN})\.npy")
MAX_PIXELS_BYTES = 256 * 2**20  # decoded pixels waiting for workers (1280x960: 3.5 MiB each)


class TicketDamaged(ValueError):
    """A ticket file that does not hold a job (torn by a power cut, or not ours)."""


def read_ticket(path: Path, sid: str, attempts: int) -> Job:
    """The job in a ticket file, or ``TicketDamaged`` saying what is wrong with it."""
    try:
        fields = json.loads(path.read_bytes())
        job = Job(sid=fields["sid"], model=fields["model"], threshold=float(fields["threshold"]),
                  enqueued_ns=int(fields["enqueued_ns"]), attempts=attempts,
                  classes=tuple(fields.get("classes", ())),
                  max_detections=int(fields.get("max_detections", MAX_DETECTIONS)))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as error:
        raise TicketDamaged(f"its ticket is damaged ({type(error).__name__}: {error})") from None
    if job.sid != sid or not isinstance(job.model, str):
        raise TicketDamaged("its ticket does not match its name")
    if not all(isinstance(name, str) for name in job.classes):
        raise TicketDamaged("its ticket's classes are not names")
    return job


def make_durable(files: JobFiles, sid: str) -> None:
    """fsync a job's drawing and result, and their directory."""
    for path in (files.output(sid), files.result(sid)):
        try:
            fsync_path(path)
        except FileNotFoundError:
            continue
    fsync_path(files.uploads_dir)


class SpoolQueue:
    """A job queue kept as files under ``<uploads>/.queue``; results live in ``<uploads>``.

    A worker's queue has its ``slot``; it must hold ``slot_lock(slot)`` while it claims jobs."""

    def __init__(self, uploads_dir: Path, spool_dir: Path, max_queue: int, slot: int = 0,
                 max_pixels_bytes: int = MAX_PIXELS_BYTES):
        self.files = JobFiles(uploads_dir)
        self.queued_dir = spool_dir / "queued"
        self.running_dir = spool_dir / "running"
        self.damaged_dir = spool_dir / "damaged"
        self.workers_dir = spool_dir / "workers"
        self.pixels_dir = spool_dir / "pixels"
        self.enqueue_lock_file = spool_dir / "enqueue.lock"
        self.max_queue = max_queue
        self.max_pixels_bytes = max_pixels_bytes
        self.slot = slot
        self._enqueue_lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None  # writes pixels (web processes only)
        for directory in (uploads_dir, self.queued_dir, self.running_dir, self.damaged_dir,
                          self.workers_dir, self.pixels_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def slot_lock(self, slot: int) -> FileLock:
        """The lock a live worker of ``slot`` holds."""
        return FileLock(self.workers_dir / f"{slot}.lock")

    def _queued_names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.queued_dir) if n.endswith(".json") and n[0] != ".")

    def _running_names(self) -> list[str]:
        return [n for n in os.listdir(self.running_dir) if n.endswith(".json") and n[0] != "."]

    def depth(self) -> int:
        """Jobs waiting or being detected."""
        return len(self._queued_names()) + len(self._running_names())

    def pending_sids(self) -> set[str]:
        """The jobs queued or running (their files must stay)."""
        sids = {m["sid"] for n in self._queued_names() if (m := QUEUED_TICKET.fullmatch(n))}
        return sids | {m["sid"] for n in self._running_names() if (m := RUNNING_TICKET.fullmatch(n))}

    def is_finished(self, sid: str) -> bool:
        return self.files.is_finished(sid)

    @contextmanager
    def enqueuing(self, job: Job, upload: Upload) -> Iterator[None]:
        """Queue ``job`` once the block (which stores its PNG) is done, its pixels with it:
        they are written meanwhile, on another thread (the writes overlap: 1920x1080, 6 ms).
        If the block fails, nothing is queued and the pixels go."""
        with self._enqueue_lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(len(os.sched_getaffinity(0)),
                                                  thread_name_prefix="pixels")
        pixels = self._writer.submit(self._leave_pixels, job.sid, upload.pixels)
        try:
            yield
        except BaseException:
            if (written := pixels.result()) is not None:
                written.unlink(missing_ok=True)
            raise
        self._enqueue(job, pixels.result())

    def enqueue(self, job: Job, upload: Upload | None = None) -> None:
        """Queue a job whose upload is stored (the disk is shared), with the upload's pixels
        while they fit (else its worker reads the PNG)."""
        self._enqueue(job, self._leave_pixels(job.sid, upload.pixels) if upload else None)

    def _enqueue(self, job: Job, pixels: Path | None) -> None:
        try:
            # Neither one process's threads nor several web processes overshoot the bound.
            with self._enqueue_lock, exclusively(self.enqueue_lock_file):
                depth = self.depth()
                if depth >= self.max_queue:
                    raise QueueFull(depth)
                write_atomically(self._queued_ticket(job), job.to_bytes(), durable=True)
        except BaseException:
            if pixels is not None:
                pixels.unlink(missing_ok=True)
            raise

    def _pixels_file(self, sid: str) -> Path:
        return self.pixels_dir / f"{sid}.{boot.boot_tag()}.npy"

    def _leave_pixels(self, sid: str, pixels: np.ndarray) -> Path | None:
        """Write a job's pixels for its worker, unless the waiting ones fill the budget (read
        without a lock: uploads at the same moment may overshoot it by their own pixels)."""
        path = self._pixels_file(sid)
        try:
            if self._pixels_bytes() + pixels.nbytes > self.max_pixels_bytes:
                return None
            with atomic_path(path) as temp, open(temp, "wb") as f:
                np.save(f, pixels, allow_pickle=False)
        except OSError:  # a full disk, say: the worker reads the PNG instead
            return None
        return path

    def _pixels_bytes(self) -> int:
        total = 0
        with os.scandir(self.pixels_dir) as entries:
            for entry in entries:
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
        return total

    def take_pixels(self, sid: str) -> np.ndarray | None:
        """The pixels the web process left for a job in this boot, if it did and they can be
        trusted (not fsynced: in an earlier boot, a power cut may have torn them)."""
        try:
            pixels = np.load(self._pixels_file(sid), allow_pickle=False)
        except (OSError, ValueError, EOFError):  # EOFError: an empty file
            return None
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            return None
        return pixels

    def _queued_ticket(self, job: Job) -> Path:
        return self.queued_dir / f"{job.enqueued_ns:020d}-{job.sid}.{job.attempts}.json"

    def _running_tickets(self, sid: str) -> list[Path]:
        return [self.running_dir / name for name in self._running_names()
                if name.startswith(sid)]

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
        final = read_final_status(self.files, sid)
        if final is not None:
            return final
        for position, name in enumerate(self._queued_names(), start=1):
            match = QUEUED_TICKET.fullmatch(name)
            if match and match["sid"] == sid:
                try:
                    job = read_ticket(self.queued_dir / name, sid, int(match["attempts"] or 0))
                except TicketDamaged as error:
                    self._set_aside(self.queued_dir / name, sid, str(error))
                    raise FileNotFoundError(sid) from None  # now failed: look again
                return JobStatus(job, JobState.QUEUED, position)
        for name in self._running_names():
            match = RUNNING_TICKET.fullmatch(name)
            if match and match["sid"] == sid:
                job = Job(sid, "unknown", 0.0, 0, int(match["attempts"] or 1))
                try:
                    job = read_ticket(self.running_dir / name, sid, job.attempts)
                except TicketDamaged:
                    pass  # the worker sets it aside; meanwhile it is running
                return JobStatus(job, JobState.RUNNING)
        if self.files.input(sid).exists():
            raise FileNotFoundError(sid)  # it moved on while we looked: look again
        return None

    def claim_next(self) -> Job | None:
        """Move the oldest queued ticket into running/ and return its job (None if none wait)."""
        for name in self._queued_names():
            if job := self._claim(name):
                return job
        return None

    def claim_batch(self, limit: int) -> list[Job]:
        """The oldest queued job and, up to ``limit`` jobs in all, the next ones of its model
        (looking at most ``4 * limit`` tickets ahead): a GPU detects them in one batch."""
        first = self.claim_next()
        if first is None:
            return []
        batch = [first]
        for name in self._queued_names()[:4 * limit] if limit > 1 else ():
            if (match := QUEUED_TICKET.fullmatch(name)) is None:
                continue
            try:
                model = read_ticket(self.queued_dir / name, match["sid"], 0).model
            except (TicketDamaged, FileNotFoundError):
                continue  # damaged (claim_next sets it aside), or another worker took it
            if model == first.model and (job := self._claim(name)):
                batch.append(job)
                if len(batch) == limit:
                    break
        return batch

    def _claim(self, name: str) -> Job | None:
        """Move a queued ticket into running/ and return its job (None if another worker took
        it first, or it is damaged: then it is set aside, its job failed)."""
        match = QUEUED_TICKET.fullmatch(name)
        if match is None:
            self._set_aside(self.queued_dir / name, None, "not a ticket name")
            return None
        attempts = int(match["attempts"] or 0) + 1
        running = self.running_dir / f"{match['sid']}.{attempts}.w{self.slot}.b{boot.boot_tag()}.json"
        try:
            os.rename(self.queued_dir / name, running)
        except FileNotFoundError:
            return None  # another worker took it
        try:
            return read_ticket(running, match["sid"], attempts)
        except TicketDamaged as error:
            self._set_aside(running, match["sid"], str(error))
            return None

    def finish(self, job: Job) -> None:
        """Called once the job's result files are in place: makes them durable (the worker
        writes them without waiting for the disk, so that the client hears at once), then drops
        the job's pixels and ticket."""
        make_durable(self.files, job.sid)
        self._pixels_file(job.sid).unlink(missing_ok=True)
        for ticket in self._running_tickets(job.sid):
            ticket.unlink(missing_ok=True)
        fsync_path(self.running_dir)  # gone for good: a power cut does not bring it back

    def fail(self, job: Job, reason: str) -> None:
        self._record_failure(job.sid, {"sid": job.sid, "model": job.model,
                                       "threshold": job.threshold, "attempts": job.attempts,
                                       "error": reason})
        self.finish(job)

    def _record_failure(self, sid: str, failure: dict) -> None:
        data = json.dumps(failure).encode()
        try:
            write_atomically(self.files.error(sid), data, durable=True)
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            # A full disk: the failed job's own files make room for its small failure record.
            self.files.output(sid).unlink(missing_ok=True)
            self.files.input(sid).unlink(missing_ok=True)
            write_atomically(self.files.error(sid), data, durable=True)

    def _set_aside(self, ticket: Path, sid: str | None, reason: str) -> None:
        """Move a damaged ticket into damaged/ (kept for a look) and fail its job with the reason."""
        try:
            os.rename(ticket, self.damaged_dir / f"{time.time_ns()}-{ticket.name}")
        except FileNotFoundError:
            return  # someone else set it aside
        if sid is not None:
            self._pixels_file(sid).unlink(missing_ok=True)
        if sid is not None and not self.is_finished(sid):
            self._record_failure(sid, {"sid": sid, "model": None, "threshold": None,
                                       "attempts": 0,
                                       "error": f"the job was lost: {reason}; upload it again"})

    def fail_queued(self, reason: str) -> None:
        """End every queued job as failed with ``reason`` (no worker can do them)."""
        for name in self._queued_names():
            match = QUEUED_TICKET.fullmatch(name)
            taken = self.queued_dir / f".{name}.failing"  # hidden: no listing sees it
            try:
                os.rename(self.queued_dir / name, taken)
            except FileNotFoundError:
                continue  # a worker claimed it
            if match:
                self._pixels_file(match["sid"]).unlink(missing_ok=True)
            if match and not self.is_finished(match["sid"]):
                self._record_failure(match["sid"], {"sid": match["sid"], "model": None,
                                                    "threshold": None, "attempts": 0,
                                                    "error": reason})
            taken.unlink()

    def recover_abandoned(self) -> list[Job]:
        """Requeue (or, on their last attempt, fail) the jobs of workers that died: the running
        tickets whose slot lock no live worker holds."""
        by_slot: dict[int, list[str]] = {}
        for name in self._running_names():
            match = RUNNING_TICKET.fullmatch(name)
            by_slot.setdefault(int(match["slot"] or 0) if match else 0, []).append(name)
        recovered = []
        for slot, names in sorted(by_slot.items()):
            lock = self.slot_lock(slot)
            if not lock.acquire(attempts=1):
                continue  # its worker lives: its jobs are its own
            try:
                recovered += [job for name in names if (job := self._recover(name))]
            finally:
                lock.release()
        return recovered

    def recover_own_slot(self) -> list[Job]:
        """What a new worker does once it holds its slot's lock: the running tickets of its slot
        are an earlier worker's, dead (one that let go of the lock after a recovery looked)."""
        return [job for name in self._running_names()
                if (match := RUNNING_TICKET.fullmatch(name))
                and int(match["slot"] or 0) == self.slot and (job := self._recover(name))]

    def _recover(self, name: str) -> Job | None:
        match = RUNNING_TICKET.fullmatch(name)
        sid = match["sid"] if match else None
        try:
            if sid is None:
                raise TicketDamaged("not a ticket name")
            job = read_ticket(self.running_dir / name, sid, int(match["attempts"] or 1))
        except TicketDamaged as error:
            self._set_aside(self.running_dir / name, sid, str(error))
            return None
        if self._finished_for_good(sid, match["boot"]):  # died after its result, before the ticket went
            self.finish(job)
            return None
        if job.attempts >= MAX_ATTEMPTS:
            self.fail(job, f"the worker died {job.attempts} times while detecting this image "
                           "(killed, hung, or out of memory)")
        else:
            os.rename(self.running_dir / name, self._queued_ticket(job))
        return job


    def _finished_for_good(self, sid: str, claimed_in_boot: str | None) -> bool:
        """Whether a job whose ticket is still running has its result (or failure) for good.
        A result is made durable only before its ticket goes: one written in an earlier boot
        than this (the boot its ticket was claimed in) may be torn, so it is deleted, and the
        job done again."""
        if self.files.error(sid).exists():  # failures are written durably
            return True
        if not self.files.result(sid).exists():
            return False
        if claimed_in_boot == boot.boot_tag():
            return True  # still in the page cache, whole
        for path in (self.files.output(sid), self.files.result(sid)):
            path.unlink(missing_ok=True)
        return False


def open_spool(settings, slot: int = 0) -> SpoolQueue:
    """The spool in uploads/.queue (as the worker of ``slot`` sees it)."""
    budget = settings.max_storage_bytes
    return SpoolQueue(settings.uploads_dir, settings.spool_dir, settings.max_queue, slot,
                      MAX_PIXELS_BYTES if budget is None else min(MAX_PIXELS_BYTES, budget // 8))
