"""How much disk uploads/ holds, and pruning it: by age, to a byte budget, and of stale temp files.

One ``os.scandir`` pass over uploads/ (plus the small spool directories) and one ``lstat`` per
file, so the cost is linear in the number of files. Only names that are a job's files
(``layout.py``: ``<sid>.png``, ``.out.png``, ``.json``, ``.error.json``, ``.progress.json``),
temp files left by :mod:`detection.jobs.atomic` (``.<name>.<8 hex>.tmp``) and the spool's pixels
of jobs without a ticket or of an earlier boot are ever counted or deleted; everything else
(``.daemon.lock``, ``.daemon.log*``, ``.gitkeep``, the spool's tickets) is left alone. Symbolic
links are neither followed nor deleted.

The daemon calls :func:`prune_storage` every minute; the web process keeps a
:class:`StorageBudget`, which prunes once when an upload does not fit and raises
:class:`StorageFull` (507) when it still does not.
"""
from __future__ import annotations

import heapq
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import boot
from .atomic import TEMP_SUFFIX
from .layout import FILE_NAME, FINISHED
from .records import JobRecords
from .pixels import PIXELS_FILE
from .tickets import QUEUED_TICKET, RUNNING_TICKET

logger = logging.getLogger(__name__)

# atomic.temp_path_for's names: ".<target name>.<8 hex>.tmp"
TEMP_FILE_PATTERN = re.compile(rf"\..+\.[0-9a-f]{{8}}{re.escape(TEMP_SUFFIX)}")
SPOOL_TICKETS = {"queued": QUEUED_TICKET, "running": RUNNING_TICKET}  # spool subdir -> names
# A job stored but never queued (the web process died between the two) is deleted no sooner than
# this, whatever retention_hours says: it covers the moment between storing and queueing, and a
# caller's pending set that missed a ticket moving between queued/ and running/.
ORPHAN_GRACE_SECONDS = 3600.0


@dataclass(slots=True)
class StoredJob:
    """One job's files in uploads/ as a scan found them."""
    sid: str
    files: dict[str, int] = field(default_factory=dict)  # name -> bytes
    total_bytes: int = 0
    newest_mtime: float = 0.0
    finished: bool = False


@dataclass(frozen=True, slots=True)
class TempFile:
    path: Path
    size: int
    mtime: float
    from_earlier_boot: bool = False  # spool pixels no worker may trust: stale at once


@dataclass(slots=True)
class StorageScan:
    """What uploads/ holds: the jobs' files by sid, temp files, and sids with a spool ticket."""
    jobs: dict[str, StoredJob]
    temp_files: list[TempFile]
    ticket_sids: set[str]
    job_bytes: int
    temp_bytes: int

    @property
    def total_bytes(self) -> int:
        """The bytes a prune can act on: jobs' files and temp files (not logs, not tickets)."""
        return self.job_bytes + self.temp_bytes


@dataclass(slots=True)
class PruneReport:
    expired_jobs: int = 0       # finished, older than retention_hours
    orphaned_jobs: int = 0      # stored but neither finished nor queued, older than the grace
    evicted_jobs: int = 0       # finished, deleted oldest first to get under max_bytes
    removed_temp_files: int = 0  # older than stale_temp_seconds, or pixels of an earlier boot
    removed_bytes: int = 0
    remaining_bytes: int = 0
    max_bytes: int | None = None

    @property
    def removed_jobs(self) -> int:
        return self.expired_jobs + self.orphaned_jobs + self.evicted_jobs

    @property
    def within_budget(self) -> bool:
        return self.max_bytes is None or self.remaining_bytes <= self.max_bytes


class StorageFull(RuntimeError):
    """uploads/ is at its byte budget and pruning finished jobs freed too little (HTTP 507)."""

    def __init__(self, needed_bytes: int, max_bytes: int):
        self.needed_bytes, self.max_bytes = needed_bytes, max_bytes
        super().__init__("the server has no room for more images right now; try again later")


def _regular_files(directory: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(name, lstat) of the regular files in ``directory``; ones that vanish are skipped."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    yield entry.name, info
    except FileNotFoundError:
        return


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _scan_spool(spool_dir: Path, temp_files: list[TempFile]) -> set[str]:
    """The sids that hold a ticket; collects the spool's temp files on the way."""
    sids: set[str] = set()
    if not _is_real_dir(spool_dir):
        return sids
    # queued/ twice: a ticket claimed (queued -> running) or requeued (running -> queued) while
    # we look is then seen in one of the listings.
    for listing, subdir in enumerate(("queued", "running", "queued")):
        directory, ticket = spool_dir / subdir, SPOOL_TICKETS[subdir]
        if not _is_real_dir(directory):
            continue
        for name, info in _regular_files(directory):
            if match := ticket.fullmatch(name):
                sids.add(match["sid"])
            elif listing < len(SPOOL_TICKETS) and TEMP_FILE_PATTERN.fullmatch(name):
                temp_files.append(TempFile(directory / name, info.st_size, info.st_mtime))
    # Pixels whose job has no ticket (its web process died before queueing it) go as temp files,
    # and those of an earlier boot at once (no worker takes them: they may be torn).
    this_boot = boot.boot_tag()
    for name, info in _regular_files(spool_dir / "pixels"):
        match = PIXELS_FILE.fullmatch(name)
        if (match and match["sid"] not in sids) or TEMP_FILE_PATTERN.fullmatch(name) or (
                match and match["boot"] != this_boot):
            temp_files.append(TempFile(spool_dir / "pixels" / name, info.st_size, info.st_mtime,
                                       from_earlier_boot=bool(match) and match["boot"] != this_boot))
    return sids


def scan_storage(uploads_dir: Path, spool_dir: Path | None = None) -> StorageScan:
    """Walk uploads/ once (and the spool, default ``uploads/.queue``) and sum up what it holds."""
    temp_files: list[TempFile] = []
    # The spool before uploads/: a job not seen holding a ticket had written its result first.
    ticket_sids = _scan_spool(spool_dir or uploads_dir / ".queue", temp_files)
    jobs: dict[str, StoredJob] = {}
    job_bytes = 0
    for name, info in _regular_files(uploads_dir):
        if name[0] == ".":
            if TEMP_FILE_PATTERN.fullmatch(name):
                temp_files.append(TempFile(uploads_dir / name, info.st_size, info.st_mtime))
            continue
        match = FILE_NAME.fullmatch(name)
        if match is None:
            continue
        sid = match[1]
        job = jobs.get(sid)
        if job is None:
            job = jobs[sid] = StoredJob(sid)
        job.files[name] = info.st_size
        job.total_bytes += info.st_size
        job.newest_mtime = max(job.newest_mtime, info.st_mtime)
        job.finished = job.finished or match[2] in FINISHED
        job_bytes += info.st_size
    return StorageScan(jobs, temp_files, ticket_sids, job_bytes,
                       sum(t.size for t in temp_files))


def _unlink(path: Path) -> bool:
    """Delete one file; True once it is gone (already gone counts), False if it could not be."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:  # housekeeping must not stop the daemon or web: say so, go on
        logger.warning("could not delete %s: %s", path, error)
        return False
    return True


def _delete_job(uploads_dir: Path, job: StoredJob) -> int:
    """Delete a job's files, the done/failed marker last; returns the bytes gone."""
    # If we die half way the job still reads as finished, and the next prune completes it.
    names = sorted(job.files, key=lambda name: name.endswith(FINISHED))
    return sum(job.files[name] for name in names if _unlink(uploads_dir / name))


def prune_storage(uploads_dir: Path, *, pending: Collection[str], retention_hours: float,
                  max_bytes: int | None, stale_temp_seconds: float = 3600.0,
                  now: float | None = None, spool_dir: Path | None = None) -> PruneReport:
    """Delete expired and orphaned jobs, then the oldest finished ones until under ``max_bytes``.

    ``pending``: sids queued or running, never touched (sids holding a spool ticket are spared
    too). ``retention_hours`` 0 keeps finished jobs until the budget needs room. A job neither
    finished nor pending goes after ``max(retention_hours, 1 h)``; temp files after
    ``stale_temp_seconds``. ``max_bytes`` None: no budget.
    """
    now = time.time() if now is None else now
    scan = scan_storage(uploads_dir, spool_dir)
    records = JobRecords(uploads_dir)
    protected = scan.ticket_sids.union(pending, (  # and jobs whose callbacks are still to go
        sid for sid, job in scan.jobs.items()
        if records.files.callback(sid).name in job.files and records.callback_is_open(sid)))
    report = PruneReport(max_bytes=max_bytes, remaining_bytes=scan.total_bytes)

    def remove(job: StoredJob) -> None:
        gone = _delete_job(uploads_dir, job)
        report.removed_bytes += gone
        report.remaining_bytes -= gone

    retention = retention_hours * 3600
    orphan_grace = max(retention, ORPHAN_GRACE_SECONDS)
    survivors: list[tuple[float, str]] = []  # finished jobs the budget may still take
    for job in scan.jobs.values():
        if job.sid in protected:
            continue
        age = now - job.newest_mtime
        if job.finished and retention > 0 and age > retention:
            remove(job)
            report.expired_jobs += 1
        elif not job.finished and age > orphan_grace:
            remove(job)
            report.orphaned_jobs += 1
        elif job.finished:
            survivors.append((job.newest_mtime, job.sid))

    for temp in scan.temp_files:
        stale = temp.from_earlier_boot or now - temp.mtime > stale_temp_seconds
        if stale and _unlink(temp.path):
            report.removed_temp_files += 1
            report.removed_bytes += temp.size
            report.remaining_bytes -= temp.size

    if max_bytes is not None and report.remaining_bytes > max_bytes:
        heapq.heapify(survivors)  # O(n), then O(log n) per job evicted
        while survivors and report.remaining_bytes > max_bytes:
            remove(scan.jobs[heapq.heappop(survivors)[1]])
            report.evicted_jobs += 1

    if report.removed_jobs or report.removed_temp_files:
        logger.info("pruned uploads: %d expired, %d orphaned, %d evicted jobs, %d temp files; "
                    "%d bytes freed, %d left", report.expired_jobs, report.orphaned_jobs,
                    report.evicted_jobs, report.removed_temp_files, report.removed_bytes,
                    report.remaining_bytes)
    if not report.within_budget:
        logger.warning("uploads holds %d bytes, over its budget of %d: the rest is queued, "
                       "running or too young to delete",
                       report.remaining_bytes, max_bytes)
    return report


class StorageBudget:
    """The web process's running estimate of uploads/' size, so that no upload needs a scan.

    The estimate is a scan's total, taken again at most every ``refresh_seconds``, plus every
    reservation since (reserve what an upload will add: its PNG, the drawn PNG, the JSON).
    When an upload does not fit, ``make_room(target_bytes)`` (a :func:`prune_storage` call with
    ``max_bytes=target_bytes``) prunes down to ``low_water`` of the budget, so the next uploads
    fit without pruning again. Thread-safe: waitress runs views in many threads.
    """

    def __init__(self, uploads_dir: Path, max_bytes: int | None, *,
                 make_room: Callable[[int], PruneReport] | None = None,
                 refresh_seconds: float = 30.0, low_water: float = 0.9,
                 clock: Callable[[], float] = time.monotonic):
        self.uploads_dir = uploads_dir
        self.max_bytes = max_bytes
        self.refresh_seconds = refresh_seconds
        self.low_water = low_water
        self._make_room = make_room
        self._clock = clock
        self._lock = threading.Lock()        # guards the numbers below
        self._room_lock = threading.Lock()   # one make_room at a time
        self._estimate = 0
        self._reserved_total = 0             # every reservation ever: what came in during a count
        self._counted_at: float | None = None

    @property
    def estimated_bytes(self) -> int:
        with self._lock:
            return self._estimate

    def try_reserve(self, nbytes: int) -> bool:
        """Count ``nbytes`` in if they fit the budget (True), else change nothing (False)."""
        if self.max_bytes is None:
            return True
        with self._lock:
            if self._counted_at is None or self._clock() - self._counted_at >= self.refresh_seconds:
                self._count(scan_storage(self.uploads_dir).total_bytes, self._reserved_total)
            if self._estimate + nbytes > self.max_bytes:
                return False
            self._estimate += nbytes
            self._reserved_total += nbytes
            return True

    def reserve(self, nbytes: int) -> None:
        """Count ``nbytes`` in, making room once if needed; raise StorageFull if there is none."""
        if self.try_reserve(nbytes):
            return
        if self._make_room is not None and nbytes <= self.max_bytes:
            with self._room_lock:
                if self.try_reserve(nbytes):  # another upload made room while this one waited
                    return
                with self._lock:
                    reserved_before = self._reserved_total
                target = min(self.max_bytes - nbytes, int(self.max_bytes * self.low_water))
                report = self._make_room(target)
                with self._lock:
                    self._count(report.remaining_bytes, reserved_before)
                if self.try_reserve(nbytes):
                    return
        raise StorageFull(nbytes, self.max_bytes)

    def _count(self, counted_bytes: int, reserved_before: int) -> None:
        """Take a fresh count (the caller holds the lock), plus what was reserved since it began."""
        self._estimate = counted_bytes + (self._reserved_total - reserved_before)
        self._counted_at = self._clock()
