"""The web side's watch on the daemon: its heartbeat is the lock file's modification time."""
import os
import time
from types import SimpleNamespace

from detection.web import launcher as launcher_module
from detection.web.launcher import WorkerLauncher


def test_silence_is_timed_by_our_clock_not_the_files_date(tmp_path, monkeypatch):
    lock = tmp_path / ".worker.lock"
    lock.write_text("1")
    launcher = WorkerLauncher(SimpleNamespace(worker_lock_file=lock, heartbeat_timeout_seconds=3))
    assert not launcher._silent()
    long_ago = time.time() - 3600
    os.utime(lock, (long_ago, long_ago))  # touched now, but the wall clock stepped an hour
    assert not launcher._silent()
    now = time.monotonic()
    monkeypatch.setattr(launcher_module.time, "monotonic", lambda: now + 4)  # then untouched for 4 s
    assert launcher._silent()


def test_at_first_sight_an_old_lock_file_is_silent(tmp_path):
    lock = tmp_path / ".worker.lock"
    lock.write_text("1")
    long_ago = time.time() - 60
    os.utime(lock, (long_ago, long_ago))
    launcher = WorkerLauncher(SimpleNamespace(worker_lock_file=lock, heartbeat_timeout_seconds=3))
    assert launcher._silent()
