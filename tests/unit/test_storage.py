"""uploads/' disk usage and pruning: by age, to a byte budget, stale temp files; linear in files."""
import contextlib
import os
import threading
import time
from pathlib import Path

import pytest

from detection.jobs import storage
from detection.jobs.job import new_sid
from detection.jobs.storage import (
    StorageBudget,
    StorageFull,
    prune_storage,
    scan_storage,
)

NOW = time.time()
HOUR = 3600
DONE = (".png", ".out.png", ".json")
FAILED = (".png", ".error.json")
STORED = (".png",)  # stored, never queued or not yet finished


@pytest.fixture
def uploads(tmp_path):
    directory = tmp_path / "uploads"
    for subdir in ("queued", "running"):
        (directory / ".queue" / subdir).mkdir(parents=True)
    return directory


def touch(path: Path, size: int = 10, age_hours: float = 0.0) -> Path:
    path.write_bytes(b"x" * size)
    mtime = NOW - age_hours * HOUR
    os.utime(path, (mtime, mtime))
    return path


def make_job(uploads: Path, suffixes=DONE, *, age_hours: float = 0.0, size: int = 10,
             sid: str | None = None) -> str:
    sid = sid or new_sid()
    for suffix in suffixes:
        touch(uploads / f"{sid}{suffix}", size, age_hours)
    return sid


def files_of(uploads: Path, sid: str) -> set[str]:
    return {p.name for p in uploads.iterdir() if p.name.startswith(sid)}


def prune(uploads: Path, *, pending=frozenset(), retention_hours=24.0, max_bytes=None, **kw):
    return prune_storage(uploads, pending=set(pending), retention_hours=retention_hours,
                         max_bytes=max_bytes, now=NOW, **kw)


def test_scan_sums_each_jobs_files(uploads):
    done = make_job(uploads, DONE, size=100, age_hours=2)
    touch(uploads / f"{done}.json", 7, age_hours=1)
    failed = make_job(uploads, FAILED, size=5)
    stored = make_job(uploads, STORED, size=3)
    touch(uploads / ".queue" / "queued" / f"{time.time_ns():020d}-{stored}.json")
    touch(uploads / ".daemon.log", 1000)

    scan = scan_storage(uploads)

    assert set(scan.jobs) == {done, failed, stored}
    assert scan.jobs[done].files == {f"{done}.png": 100, f"{done}.out.png": 100, f"{done}.json": 7}
    assert scan.jobs[done].newest_mtime == pytest.approx(NOW - HOUR)
    assert scan.jobs[done].finished and scan.jobs[failed].finished
    assert not scan.jobs[stored].finished
    assert scan.ticket_sids == {stored}
    assert scan.total_bytes == scan.job_bytes == 207 + 10 + 3  # the log is not ours to count


def test_age_pruning_keeps_pending_and_fresh_jobs(uploads):
    expired_done = make_job(uploads, DONE, age_hours=30)
    expired_failed = make_job(uploads, FAILED, age_hours=30)
    old_orphan = make_job(uploads, STORED, age_hours=30)  # stored, then the web process died
    queued_for_long = make_job(uploads, STORED, age_hours=30)
    running_for_long = make_job(uploads, (".png", ".out.png"), age_hours=30)
    ticket_only = make_job(uploads, STORED, age_hours=30)  # the caller's pending set missed it
    touch(uploads / ".queue" / "running" / f"{ticket_only}.1.json")
    fresh_done = make_job(uploads, DONE, age_hours=23)
    fresh_orphan = make_job(uploads, STORED, age_hours=23)

    report = prune(uploads, pending={queued_for_long, running_for_long}, retention_hours=24)

    for sid in (expired_done, expired_failed, old_orphan):
        assert files_of(uploads, sid) == set()
    for sid in (queued_for_long, running_for_long, ticket_only, fresh_done, fresh_orphan):
        assert files_of(uploads, sid)
    assert (report.expired_jobs, report.orphaned_jobs, report.evicted_jobs) == (2, 1, 0)
    assert report.removed_bytes == 30 + 20 + 10 and report.within_budget


def test_retention_zero_keeps_finished_jobs_but_clears_orphans_after_an_hour(uploads):
    ancient = make_job(uploads, DONE, age_hours=10_000)
    old_orphan = make_job(uploads, STORED, age_hours=1.1)
    young_orphan = make_job(uploads, STORED, age_hours=0.9)  # maybe being queued right now

    report = prune(uploads, retention_hours=0)

    assert files_of(uploads, ancient) and files_of(uploads, young_orphan)
    assert not files_of(uploads, old_orphan) and report.orphaned_jobs == 1


def test_budget_removes_the_oldest_finished_jobs_first_and_stops_under_it(uploads):
    by_age = [make_job(uploads, DONE, size=100, age_hours=hours) for hours in (5, 4, 3, 2, 1)]

    report = prune(uploads, retention_hours=0, max_bytes=1000)  # 1500 bytes on disk

    assert [bool(files_of(uploads, sid)) for sid in by_age] == [False, False, True, True, True]
    assert report.evicted_jobs == 2 and report.removed_bytes == 600
    assert report.remaining_bytes == 900 and report.within_budget
    assert scan_storage(uploads).total_bytes == 900


def test_budget_never_touches_pending_jobs_even_when_over_it(uploads):
    pending = {make_job(uploads, STORED, size=300, age_hours=9) for _ in range(3)}
    finished = make_job(uploads, DONE, size=100, age_hours=1)

    report = prune(uploads, pending=pending, retention_hours=0, max_bytes=500)

    assert all(files_of(uploads, sid) for sid in pending) and not files_of(uploads, finished)
    assert report.evicted_jobs == 1 and report.remaining_bytes == 900
    assert not report.within_budget


def test_removed_temp_files_are_swept_and_fresh_ones_kept(uploads):
    sid = new_sid()
    queued, running = uploads / ".queue" / "queued", uploads / ".queue" / "running"
    stale = [touch(uploads / f".{sid}.png.0123abcd.tmp", age_hours=2),
             touch(uploads / ".daemon.json.89abcdef.tmp", age_hours=2),
             touch(queued / f".{time.time_ns():020d}-{sid}.json.a1b2c3d4.tmp", age_hours=2),
             touch(running / f".{sid}.json.deadbeef.tmp", age_hours=2)]
    fresh = [touch(uploads / f".{sid}.out.png.feedf00d.tmp", age_hours=0.5),
             touch(running / f".{sid}.json.00000000.tmp", age_hours=0.5)]

    report = prune(uploads, stale_temp_seconds=HOUR)

    assert not any(p.exists() for p in stale) and all(p.exists() for p in fresh)
    assert report.removed_temp_files == 4 and report.removed_bytes == 40


def test_files_that_are_not_ours_are_never_touched(uploads, tmp_path):
    outside = touch(tmp_path / "precious.png", age_hours=99)
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    outside_temp = touch(outside_dir / ".x.json.0123abcd.tmp", age_hours=99)
    sid = new_sid()
    names = [".gitkeep", "notes.txt", ".daemon.log", ".daemon.log.1", ".daemon.lock",
             ".daemon.json", f"{sid}.txt", f"{sid.upper()}.png", f"{sid}.png.bak",
             f"{sid[:31]}.png", f".{sid}.png.tmp", f".{sid}.png.0123ABCD.tmp", "x.0123abcd.tmp"]
    kept = [touch(uploads / name, age_hours=99) for name in names]
    kept.append(touch(uploads / ".queue" / "queued" / f"{time.time_ns():020d}-{sid}.json",
                      age_hours=99))
    (uploads / f"{new_sid()}.png").mkdir()  # a directory named like a job
    link = uploads / f"{new_sid()}.png"
    link.symlink_to(outside)  # a link named like a job, to a file outside uploads/
    spool_link = uploads / ".queue" / "running"
    os.rmdir(spool_link)
    spool_link.symlink_to(outside_dir)

    report = prune(uploads, retention_hours=0.001, max_bytes=0, stale_temp_seconds=0)

    assert all(p.exists() for p in kept) and link.is_symlink() and outside.exists()
    assert outside_temp.exists() and report.removed_jobs == report.removed_temp_files == 0


def test_a_job_whose_files_vanish_during_the_scan_is_skipped(uploads, monkeypatch):
    gone = make_job(uploads, DONE, age_hours=30)
    half_gone = make_job(uploads, DONE, age_hours=30)  # loses its .json: an old orphan now
    kept = make_job(uploads, DONE, age_hours=30)
    vanishing = [uploads / f"{gone}{s}" for s in DONE] + [uploads / f"{half_gone}.json"]
    real_scandir = os.scandir

    def scandir_then_delete(path):  # listed, then deleted by someone else before we stat them
        with real_scandir(path) as entries:
            listed = list(entries)
        if Path(path) == uploads:
            for p in vanishing:
                p.unlink(missing_ok=True)
        return contextlib.nullcontext(iter(listed))

    monkeypatch.setattr(storage.os, "scandir", scandir_then_delete)
    scan = scan_storage(uploads)
    assert set(scan.jobs) == {half_gone, kept} and not scan.jobs[half_gone].finished
    assert scan.total_bytes == 20 + 30

    report = prune(uploads, retention_hours=24)
    assert (report.expired_jobs, report.orphaned_jobs) == (1, 1)
    assert not files_of(uploads, kept) and not files_of(uploads, half_gone)


def test_files_already_gone_when_pruning_count_as_freed(uploads, monkeypatch):
    sid = make_job(uploads, DONE, age_hours=30)
    before = scan_storage(uploads)
    (uploads / f"{sid}.png").unlink()
    monkeypatch.setattr(storage, "scan_storage", lambda *args: before)

    report = prune(uploads)

    assert report.expired_jobs == 1 and report.removed_bytes == 30 and not files_of(uploads, sid)


def build_jobs(uploads: Path, count: int) -> None:
    """``count`` finished jobs of three one-byte files, oldest first."""
    for i in range(count):
        mtime = NOW - 10 * HOUR + i
        for suffix in DONE:
            path = uploads / f"{i:032x}{suffix}"
            path.write_bytes(b"x")
            os.utime(path, (mtime, mtime))


class CountedEntry:
    """An ``os.DirEntry`` that counts its ``stat`` calls."""

    def __init__(self, entry, counter: list):
        self._entry, self._counter = entry, counter
        self.name, self.path = entry.name, entry.path

    def stat(self, **kwargs):
        self._counter.append(self.name)
        return self._entry.stat(**kwargs)


def test_scan_and_prune_look_at_each_file_once(tmp_path, monkeypatch):
    """Linear in the number of files, counted, not timed: one stat a file, one unlink a file
    deleted (the glob per job this replaced took 38 s for 4000 jobs, growing with their square)."""
    stats, unlinked = [], []
    real_scandir, real_unlink = os.scandir, os.unlink

    @contextlib.contextmanager
    def counted_scandir(directory):
        with real_scandir(directory) as entries:
            yield (CountedEntry(entry, stats) for entry in entries)
    monkeypatch.setattr(storage.os, "scandir", counted_scandir)
    monkeypatch.setattr(storage.os, "unlink", lambda path: unlinked.append(path) or real_unlink(path))
    for jobs in (1000, 4000):
        uploads = tmp_path / str(jobs)
        (uploads / ".queue").mkdir(parents=True)
        build_jobs(uploads, jobs)
        stats.clear(), unlinked.clear()
        report = prune(uploads, retention_hours=0, max_bytes=jobs)  # evicts two thirds
        assert report.evicted_jobs == jobs * 2 // 3 + 1 and report.within_budget
        assert len(stats) == 3 * jobs + 1  # each job's three files, and .queue
        assert len(unlinked) == 3 * report.evicted_jobs
        assert len(os.listdir(uploads)) == 1 + 3 * (jobs - report.evicted_jobs)


def test_a_prune_lists_each_directory_once_whatever_the_number_of_jobs(tmp_path, monkeypatch):
    """The cost that cannot be noise: directory listings, constant in the number of jobs."""
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(storage.os, "scandir", lambda d: listed.append(d) or real_scandir(d))
    monkeypatch.setattr(Path, "glob", lambda *a: pytest.fail("a glob per job"))
    counts = []
    for jobs in (100, 1000):
        uploads = tmp_path / str(jobs)
        (uploads / ".queue").mkdir(parents=True)
        build_jobs(uploads, jobs)
        listed.clear()
        prune(uploads, retention_hours=0, max_bytes=jobs)
        counts.append(len(listed))
    assert counts[0] == counts[1] <= 6


def test_budget_reservations_from_many_threads_never_overshoot(uploads):
    budget = StorageBudget(uploads, max_bytes=1000)
    granted = []

    def upload_many():
        granted.extend(budget.try_reserve(10) for _ in range(20))

    threads = [threading.Thread(target=upload_many) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert granted.count(True) == 100 and budget.estimated_bytes == 1000


def test_budget_counts_the_disk_again_only_after_its_refresh_interval(uploads):
    clock = [0.0]
    budget = StorageBudget(uploads, max_bytes=1000, refresh_seconds=30, clock=lambda: clock[0])
    assert budget.try_reserve(100) and budget.estimated_bytes == 100
    make_job(uploads, DONE, size=200)  # 600 bytes the budget has not seen
    clock[0] = 29
    assert budget.try_reserve(100) and budget.estimated_bytes == 200
    clock[0] = 30
    assert not budget.try_reserve(500) and budget.estimated_bytes == 600


def test_a_full_budget_prunes_once_for_all_waiting_uploads(uploads):
    for hours in range(10, 0, -1):
        make_job(uploads, DONE, size=100, age_hours=hours)  # 3000 bytes, at the budget
    calls = []

    def make_room(target_bytes: int):
        calls.append(target_bytes)
        time.sleep(0.05)  # let the other uploads pile up behind
        return prune(uploads, retention_hours=0, max_bytes=target_bytes)

    budget = StorageBudget(uploads, max_bytes=3000, make_room=make_room)  # low water: 2700
    refused = []

    def upload():
        try:
            budget.reserve(30)
        except StorageFull:
            refused.append(True)

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert calls == [2700] and not refused
    assert scan_storage(uploads).total_bytes == 2700 and budget.estimated_bytes == 2700 + 8 * 30


def test_a_budget_full_of_pending_jobs_refuses_the_upload(uploads):
    pending = {make_job(uploads, STORED, size=600) for _ in range(2)}
    room_made = []

    def make_room(target_bytes: int):
        room_made.append(target_bytes)
        return prune(uploads, pending=pending, retention_hours=0, max_bytes=target_bytes)

    budget = StorageBudget(uploads, max_bytes=1200, make_room=make_room)
    with pytest.raises(StorageFull):
        budget.reserve(1)
    with pytest.raises(StorageFull):
        budget.reserve(5000)  # larger than the whole budget: no point in pruning for it
    assert room_made == [1080] and all(files_of(uploads, sid) for sid in pending)


def test_a_job_whose_callback_is_still_to_go_is_kept_and_one_delivered_is_not(uploads):
    import json
    open_one = make_job(uploads, DONE, size=100, age_hours=30)
    delivered = make_job(uploads, DONE, size=100, age_hours=30)
    for sid, state in ((open_one, "retrying"), (delivered, "delivered")):
        (uploads / f"{sid}.callback.json").write_text(json.dumps({"url": "x", "state": state}))

    report = prune(uploads, retention_hours=24, max_bytes=0)

    assert files_of(uploads, open_one) and not files_of(uploads, delivered)
    assert report.removed_jobs == 1
