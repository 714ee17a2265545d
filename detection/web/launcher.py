"""The web process's side of the detection daemon: start one when no live one holds the lock,
and kill one that falls silent.

The daemon (``detection/worker/daemon.py``) holds ``uploads/.daemon.lock``
(``detection/jobs/locks.py``): a free lock means no live daemon. Its heartbeat is the lock
file's modification time; its state is in ``uploads/.daemon.json`` (``daemon_state.py``).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..backoff import Backoff
from ..daemon_state import read_daemon_state
from ..jobs.locks import holder_pid
from ..jobs.queue import open_queue
from ..settings import PROJECT_ROOT

log = logging.getLogger(__name__)

DETECTION_SCRIPT = PROJECT_ROOT / "mmdetectionl.py"
LEGACY_LOCK = ".worker.lock"  # the daemon's lock before it was named a daemon (1.0)
# A daemon just started needs a moment (a Python start-up) to take the lock: don't start another.
STARTUP_GRACE_SECONDS = 3.0


class DaemonLauncher:
    """Used by the web process: start the daemon when no live one holds the lock.

    A daemon that falls silent (its lock file untouched for ``heartbeat_timeout_seconds``:
    stopped or hung) is killed with its workers, also one web did not start (systemd restarts
    that one); one that keeps dying is started again less and less often (``Backoff``), and a
    start put off is retried by a timer, so that a queued job does not wait for the next request.
    """

    def __init__(self, settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._started_at = -STARTUP_GRACE_SECONDS
        self._backoff = Backoff()
        self._retry: threading.Timer | None = None
        self._touch = (0.0, 0.0)  # the lock file's last mtime, and when (monotonic) it was touched
        self._looked_at = -float("inf")

    def ensure_running(self, start: bool = True) -> int | None:
        """Start the daemon (if ``start``) unless one is running or starting; return the live
        daemon's pid."""
        pid = holder_pid(self.settings.daemon_lock_file)
        if pid is not None and not self._silent():
            return pid
        with self._lock:
            if pid is not None:
                self._kill(pid)
            if not start:
                return None
            wait = STARTUP_GRACE_SECONDS + self._backoff.delay - (time.monotonic()
                                                                  - self._started_at)
            if wait > 0:
                self._retry_in(wait)
                return None
            self._note_last_end()
            self._start()
        return None

    def retire_legacy_daemon(self) -> int | None:
        """Stop a daemon of an earlier version (it holds ``uploads/.worker.lock``) rather than run
        beside it on the same spool: SIGTERM, so that its workers finish their jobs. Its pid."""
        pid = holder_pid(self.settings.uploads_dir / LEGACY_LOCK)
        if pid is None or pid <= 0:  # none, or one that has not yet written its pid
            return None
        log.warning("a detection daemon of an earlier version (pid %d) runs here: stopping it",
                    pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        return pid

    def _start(self) -> None:
        command = [sys.executable, str(DETECTION_SCRIPT)]
        if self.settings.config_file:
            command += ["--config", str(self.settings.config_file)]
        command += ["worker", "--daemon"]
        launcher = subprocess.Popen(command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, start_new_session=True)
        # python-daemon's first process exits once the daemon has forked: reap it.
        threading.Thread(target=launcher.wait, daemon=True).start()
        self._started_at = time.monotonic()
        log.info("started the detection daemon: %s", " ".join(command))

    def _retry_in(self, seconds: float) -> None:
        if self._retry is None or not self._retry.is_alive():
            self._retry = threading.Timer(seconds, self._retry_if_needed)
            self._retry.daemon = True
            self._retry.start()

    def _retry_if_needed(self) -> None:
        try:
            if open_queue(self.settings).depth():
                self.ensure_running()
        except Exception:  # e.g. Redis down; the next upload or poll tries again
            log.exception("could not start the detection daemon")

    def _note_last_end(self) -> None:
        """Back off while daemons keep dying soon after their start (not after a clean exit)."""
        state = read_daemon_state(self.settings.daemon_state_file)
        self._backoff.after(time.monotonic() - self._started_at,
                            healthy=state is not None and state.stopped)

    def _silent(self) -> bool:
        """No touch of the lock file for the heartbeat timeout. A touch is dated by the file's
        age, but never before our previous look (monotonic): a step of the wall clock cannot make
        a healthy daemon look silent."""
        try:
            mtime = self.settings.daemon_lock_file.stat().st_mtime
        except FileNotFoundError:
            return False
        now = time.monotonic()
        if mtime != self._touch[0]:
            age = max(0.0, time.time() - mtime)
            self._touch = (mtime, max(self._looked_at, now - age))
        self._looked_at = now
        return now - self._touch[1] > self.settings.heartbeat_timeout_seconds

    def _kill(self, pid: int) -> None:
        if pid <= 0:  # a holder that has not yet written its pid: never signal "-1" (everyone)
            return
        log.error("the detection daemon %d sent no heartbeat for %g s (stopped or hung): "
                  "killing it and its workers", pid, self.settings.heartbeat_timeout_seconds)
        try:
            # A daemon is a session leader: its process group holds its workers too.
            os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while holder_pid(self.settings.daemon_lock_file) == pid and time.monotonic() < deadline:
            time.sleep(0.02)


def heartbeat_age(lock_path: Path) -> float:
    """Seconds since the daemon last touched its lock file (it does twice a second)."""
    try:
        return max(0.0, time.time() - lock_path.stat().st_mtime)
    except FileNotFoundError:
        return 0.0
