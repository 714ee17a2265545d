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


def test_a_daemon_of_an_earlier_version_is_stopped_not_run_beside(tmp_path):
    """It held uploads/.worker.lock; the new one holds .daemon.lock: both on one spool would
    each prune and recover."""
    import subprocess
    import sys

    from detection.jobs.locks import holder_pid
    lock = tmp_path / ".worker.lock"
    old = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(15))\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, str(os.getpid()).encode())\n"
        "time.sleep(60)\n")])
    try:
        deadline = time.monotonic() + 10
        while holder_pid(lock) != old.pid and time.monotonic() < deadline:
            time.sleep(0.01)
        launcher = DaemonLauncher(SimpleNamespace(uploads_dir=tmp_path))
        assert launcher.retire_legacy_daemon() == old.pid
        assert old.wait(10) == 15  # asked to stop (SIGTERM): its workers finish their jobs
    finally:
        old.kill()
    assert DaemonLauncher(SimpleNamespace(uploads_dir=tmp_path)).retire_legacy_daemon() is None



def test_health_lists_a_worker_still_starting_and_the_first_one_at_the_top():
    from detection.daemon_state import DaemonState, WorkerState
    state = DaemonState(pid=10, state="running", version="1", restarts=0, slots=2, unusable=None,
                        workers=[WorkerState(11, 0, starting=True)])
    health = DaemonState.from_json(state.to_json()).health_fields()
    assert health["pid"] == 10 and health["worker_pid"] == 11 and health["starting"]
    assert health["workers"] == [state.to_json()["workers"][0]]
    assert DaemonState(10, "running", "1", 0, 2, None).health_fields()["worker_pid"] is None
