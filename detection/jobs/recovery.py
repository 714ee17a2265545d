"""When workers die, or cannot start: the spool's jobs they abandoned go back to the queue once and
fail the second time; a job whose end was recorded before its ticket went is finished; and when
no worker can start at all, the waiting jobs fail with the reason.

A running ticket whose slot lock is free was abandoned (a live worker holds its slot's lock): the
daemon's supervisor looks after a worker dies, and a new worker looks at its own slot as it
starts. A result its worker wrote but had not yet made durable counts only in the boot its ticket
was claimed in (``boot.py``).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import boot
from .job import BadJob, Job
from .kinds import max_attempts
from .records import worker_died
from .spool import SpoolQueue
from .tickets import (
    QUEUED_TICKET,
    RUNNING_TICKET,
    kind_in_name,
    queued_name,
    read_ticket,
)


def fail_queued(spool: SpoolQueue, reason: str) -> None:
    """End every queued job as failed with ``reason`` (no worker can do them)."""
    for name in spool.queued_names():
        match = QUEUED_TICKET.fullmatch(name)
        taken = spool.queued_dir / f".{name}.failing"  # hidden: no listing sees it
        try:
            os.rename(spool.queued_dir / name, taken)
        except FileNotFoundError:
            continue  # a worker claimed it
        if match:
            sid = match["sid"]
            spool.pixels.drop(sid)
            if not spool.records.is_finished(sid):
                try:
                    job = read_ticket(taken, sid, int(match["attempts"] or 0))
                except BadJob:
                    job = Job.unknown(sid, kind_in_name(match))
                spool.records.fail(job, reason)
        _discard(taken)


def recover_abandoned(spool: SpoolQueue) -> list[Job]:
    """Requeue (or, on their last attempt, fail) the jobs of workers that died: the running
    tickets whose slot lock no live worker holds."""
    by_slot: dict[int, list[str]] = {}
    for name in spool.running_names():
        match = RUNNING_TICKET.fullmatch(name)
        by_slot.setdefault(int(match["slot"] or 0) if match else 0, []).append(name)
    recovered = []
    for slot, names in sorted(by_slot.items()):
        lock = spool.slot_lock(slot)
        if not lock.acquire(attempts=1):
            continue  # its worker lives: its jobs are its own
        try:
            recovered += [job for name in names if (job := _recover(spool, name))]
        finally:
            lock.release()
    return recovered


def recover_own_slot(spool: SpoolQueue) -> list[Job]:
    """What a new worker does once it holds its slot's lock: the running tickets of its slot
    are an earlier worker's, dead (one that let go of the lock after a recovery looked)."""
    return [job for name in spool.running_names()
            if (match := RUNNING_TICKET.fullmatch(name))
            and int(match["slot"] or 0) == spool.slot and (job := _recover(spool, name))]


def _recover(spool: SpoolQueue, name: str) -> Job | None:
    match = RUNNING_TICKET.fullmatch(name)
    sid = match["sid"] if match else None
    try:
        if sid is None:
            raise BadJob("not a ticket name")
        job = read_ticket(spool.running_dir / name, sid, int(match["attempts"] or 1))
    except BadJob as error:
        spool.set_aside(spool.running_dir / name, sid, str(error))
        return None
    if _ended_for_good(spool, sid, match["boot"]):  # died after its record, before the ticket went
        spool.finish(job)
        return None
    spool.records.clear_progress(sid)  # it starts again, or ends here
    if job.attempts >= max_attempts(job.kind):
        spool.fail(job, worker_died(job.attempts))
    else:
        os.rename(spool.running_dir / name, spool.queued_dir / queued_name(job))
    return job


def _ended_for_good(spool: SpoolQueue, sid: str, claimed_in_boot: str | None) -> bool:
    """Whether a job whose ticket is still running has its end recorded for good. Failures
    are written durably; a result is made durable only before its ticket goes, so one
    written in an earlier boot than this (the boot its ticket was claimed in) may be torn:
    it is forgotten, and the job done again."""
    if spool.records.has_failed(sid):
        return True
    if not spool.records.has_result(sid):
        return False
    if claimed_in_boot == boot.boot_tag():
        return True  # still in the page cache, whole
    spool.records.forget_unsure_result(sid)
    return False


def _discard(path: Path) -> None:
    """Remove a set-aside ticket: a file, or a directory someone made in its place."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
