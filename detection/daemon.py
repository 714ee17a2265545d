"""One detection daemon at a time: starting the daemon, and running it.

The daemon (the supervisor of the worker processes) holds ``uploads/.worker.lock``
(``detection/locks.py``): a free lock means no live daemon.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .jobs import QueueUnavailable, open_queue
from .locks import FileLock, LockHeld, holder_pid

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKER_SCRIPT = PROJECT_ROOT / "mmdetectionl.py"
# A daemon just started needs a moment (a Python start-up) to take the lock: don't start another.
STARTUP_GRACE_SECONDS = 3.0
HEALTHY_LIFETIME_SECONDS = 60.0
MAX_RESTART_DELAY_SECONDS = 60.0
LOG_MAX_BYTES = 10 * 2**20
LOG_BACKUPS = 3


class WorkerLauncher:
    """Used by the web process: start the daemon when no live one holds the lock.

    A daemon that falls silent (its lock file untouched for ``heartbeat_timeout_seconds``:
    stopped or hung) is killed with its worker, also one web did not start (systemd restarts
    that one); one that keeps dying is started again less and less often, and a start put off
    is retried by a timer, so that a queued job does not wait for the next request.
    """

    def __init__(self, settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._started_at = -STARTUP_GRACE_SECONDS
        self._restart_delay = 0.0
        self._retry: threading.Timer | None = None
        self._touch = (0.0, 0.0)  # the lock file's last mtime, and when (monotonic) it was touched
        self._looked_at = -float("inf")

    def ensure_running(self, start: bool = True) -> int | None:
        """Start the daemon (if ``start``) unless one is running or starting; return the live
        daemon's pid."""
        pid = holder_pid(self.settings.worker_lock_file)
        if pid is not None and not self._silent():
            return pid
        with self._lock:
            if pid is not None:
                self._kill(pid)
            if not start:
                return None
            wait = STARTUP_GRACE_SECONDS + self._restart_delay - (time.monotonic()
                                                                  - self._started_at)
            if wait > 0:
                self._retry_in(wait)
                return None
            self._restart_delay = self._next_delay()
            self._start()
        return None

    def _start(self) -> None:
        command = [sys.executable, str(WORKER_SCRIPT)]
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

    def _next_delay(self) -> float:
        """Back off while daemons keep dying soon after their start (but not after a clean exit)."""
        state = read_worker_state(self.settings.worker_state_file)
        since_start = time.monotonic() - self._started_at
        if state.get("state") == "stopped" or since_start > HEALTHY_LIFETIME_SECONDS:
            return 0.0
        return min(MAX_RESTART_DELAY_SECONDS, max(1.0, 2 * self._restart_delay))

    def _silent(self) -> bool:
        """No touch of the lock file for the heartbeat timeout. A touch is dated by the file's
        age, but never before our previous look (monotonic): a step of the wall clock cannot make
        a healthy daemon look silent."""
        try:
            mtime = self.settings.worker_lock_file.stat().st_mtime
        except FileNotFoundError:
            return False
        now = time.monotonic()
        if mtime != self._touch[0]:
            age = max(0.0, time.time() - mtime)
            self._touch = (mtime, max(self._looked_at, now - age))
        self._looked_at = now
        return now - self._touch[1] > self.settings.heartbeat_timeout_seconds

    def _kill(self, pid: int) -> None:
        log.error("the detection daemon %d sent no heartbeat for %g s (stopped or hung): "
                  "killing it and its worker", pid, self.settings.heartbeat_timeout_seconds)
        try:
            # A daemon is a session leader: its process group holds its worker too.
            os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while holder_pid(self.settings.worker_lock_file) == pid and time.monotonic() < deadline:
            time.sleep(0.02)


def heartbeat_age(lock_path: Path) -> float:
    """Seconds since the daemon last touched its lock file (it does twice a second)."""
    try:
        return max(0.0, time.time() - lock_path.stat().st_mtime)
    except FileNotFoundError:
        return 0.0


def read_worker_state(path: Path) -> dict:
    """``uploads/.worker.json`` as written by the supervisor ({} if absent or unreadable)."""
    try:
        state = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def run_daemon(settings) -> None:
    """Detach (python-daemon), take the lock, and supervise the worker until stopped or idle."""
    import daemon  # python-daemon

    lock = FileLock(settings.worker_lock_file)
    stderr = open(settings.worker_stderr_file, "a", buffering=1)
    if stderr.tell() > LOG_MAX_BYTES:  # what logging cannot catch (a crash): kept, bounded
        stderr.truncate(0)
    context = daemon.DaemonContext(
        working_directory=str(PROJECT_ROOT), umask=0o022, pidfile=lock,
        stdout=stderr, stderr=stderr, files_preserve=[stderr])
    try:
        context.open()
    except LockHeld:
        return  # another daemon won the race: it will take the jobs
    with context:
        handler = logging.handlers.RotatingFileHandler(
            settings.worker_log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS)
        if settings.queue == "rq":
            work_rq(settings, lock, handler)
        else:
            supervise(settings, lock, handler)


def log_to(handler: logging.Handler) -> None:
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def work_rq(settings, lock: FileLock, handler: logging.Handler) -> None:
    """The daemon with ``queue = rq``: one RQ worker in this process, until idle and unwanted.
    Its heartbeat (the lock file's mtime) beats from the start, model loading included; a worker
    stuck in a job ends itself (see rq_worker.py)."""
    from redis.exceptions import RedisError

    from .rq_worker import run

    log_to(handler)
    threading.Thread(target=touch_every_second, args=(settings.worker_lock_file,),
                     name="daemon-heartbeat", daemon=True).start()
    while True:
        try:
            run(settings, max_idle_seconds=settings.idle_exit_seconds)
        except RedisError as error:  # Redis away: wait for it, holding the lock
            log.error("the job queue (Redis) is unavailable: %s; trying again", error)
            time.sleep(settings.heartbeat_timeout_seconds / 3)
            continue
        lock.release()  # as in supervise(): let go before the last look
        try:
            wanted = open_queue(settings).depth() > 0
        except QueueUnavailable:
            wanted = False
        if not (wanted and lock.acquire()):
            return


def touch_every_second(path: Path) -> None:
    while True:
        try:
            os.utime(path)
        except OSError:
            pass  # gone with uploads/: web will start another daemon
        time.sleep(1.0)


def supervise(settings, lock: FileLock, handler: logging.Handler) -> None:
    """Run the supervisor (in the foreground, or in the daemon), logging to ``handler``."""
    from .supervisor import Supervisor

    log_to(handler)

    def still_wanted() -> bool:
        # Let go of the lock before the last look, so an upload that saw it held is not missed.
        lock.release()
        return supervisor.queue.depth() > 0 and lock.acquire()

    supervisor = Supervisor(settings, still_wanted)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop.set())
    supervisor.run()
