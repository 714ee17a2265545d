"""The web side's watch on the daemon: its heartbeat is the lock file's modification time."""
import os
import time
from types import SimpleNamespace

from detection.web import launcher as launcher_module
from detection.web.launcher import DaemonLauncher


def test_silence_is_timed_by_our_clock_not_the_files_date(tmp_path, monkeypatch):
    lock = tmp_path / ".daemon.lock"
    lock.write_text("1")
    launcher = DaemonLauncher(SimpleNamespace(daemon_lock_file=lock, heartbeat_timeout_seconds=3))
    assert not launcher._silent()
    long_ago = time.time() - 3600
    os.utime(lock, (long_ago, long_ago))  # touched now, but the wall clock stepped an hour
    assert not launcher._silent()
    now = time.monotonic()
    monkeypatch.setattr(launcher_module.time, "monotonic", lambda: now + 4)  # then untouched for 4 s
    assert launcher._silent()


def test_at_first_sight_an_old_lock_file_is_silent(tmp_path):
    lock = tmp_path / ".daemon.lock"
    lock.write_text("1")
    long_ago = time.time() - 60
    os.utime(lock, (long_ago, long_ago))
    launcher = DaemonLauncher(SimpleNamespace(daemon_lock_file=lock, heartbeat_timeout_seconds=3))
    assert launcher._silent()


def test_a_process_that_keeps_dying_is_started_later_and_later_and_at_once_after_a_good_life():
    """The one back-off rule of the launcher (daemons) and the supervisor (worker slots)."""
    from detection.backoff import Backoff
    backoff = Backoff(healthy_lifetime=60, max_delay=8)
    assert [backoff.after(lifetime=1) for _ in range(5)] == [1, 2, 4, 8, 8]
    assert backoff.after(lifetime=61) == 0  # lived long enough
    assert backoff.after(lifetime=1) == 1
    assert backoff.after(lifetime=1, healthy=True) == 0  # a clean exit
