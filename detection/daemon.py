"""One detection daemon at a time: the worker lock, starting the daemon, and running it.

The lock is an ``flock`` on ``uploads/.worker.lock`` holding the worker's pid. The kernel drops it
when the process dies however it dies (kill -9, OOM), so a free lock means no live worker.
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKER_SCRIPT = PROJECT_ROOT / "mmdetectionl.py"
# A daemon just started needs a moment (a Python start-up) to take the lock: don't start another.
STARTUP_GRACE_SECONDS = 3.0


class WorkerAlreadyRunning(RuntimeError):
    pass


class WorkerLock:
    """The worker's lock and pid file; usable as python-daemon's ``pidfile``."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, attempts: int = 20) -> bool:
        """Take the lock (retrying briefly: a web process may be peeking at it)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(attempts):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.025)
        else:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "WorkerLock":
        if not self.acquire():
            raise WorkerAlreadyRunning(f"another worker holds {self.path}")
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def worker_pid(lock_path: Path) -> int | None:
    """The pid of the live worker, or None when no process holds the lock."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        content = os.read(fd, 32).decode().strip()
        return int(content) if content.isdigit() else -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class WorkerLauncher:
    """Used by the web process: start the daemon when no worker holds the lock."""

    def __init__(self, lock_path: Path, config_file: Path | None):
        self.lock_path = lock_path
        self.config_file = config_file
        self._lock = threading.Lock()
        self._started_at = -STARTUP_GRACE_SECONDS
        self._launcher: subprocess.Popen | None = None

    def ensure_running(self) -> int | None:
        """Start the daemon unless one is running or starting; return the live worker's pid."""
        pid = worker_pid(self.lock_path)
        if pid is not None:
            return pid
        with self._lock:
            if self._launcher is not None and self._launcher.poll() is not None:
                self._launcher = None  # reaped: python-daemon's first process exits at once
            if time.monotonic() - self._started_at < STARTUP_GRACE_SECONDS:
                return None
            command = [sys.executable, str(WORKER_SCRIPT)]
            if self.config_file:
                command += ["--config", str(self.config_file)]
            command += ["worker", "--daemon"]
            self._launcher = subprocess.Popen(command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, start_new_session=True)
            self._started_at = time.monotonic()
            log.info("started the detection daemon: %s", " ".join(command))
        return None


def run_daemon(settings) -> None:
    """Detach (python-daemon), take the lock, and run the worker until stopped or idle."""
    import daemon  # python-daemon

    lock = WorkerLock(settings.worker_lock_file)
    log_file = open(settings.worker_log_file, "a", buffering=1)
    context = daemon.DaemonContext(
        working_directory=str(PROJECT_ROOT), umask=0o022, pidfile=lock,
        stdout=log_file, stderr=log_file, files_preserve=[log_file])
    try:
        context.open()
    except WorkerAlreadyRunning:
        return  # another daemon won the race: it will take the jobs
    with context:
        logging.basicConfig(stream=log_file, level=logging.INFO,
                            format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
        try:
            from .worker import Worker
            worker = Worker(settings)
        except Exception as error:  # e.g. a broken install: say so, rather than leave jobs waiting
            log.exception("the worker could not start")
            fail_waiting_jobs(settings, f"the detection worker could not start: "
                                        f"{type(error).__name__}: {error}")
            return
        signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())  # finish the job, then stop

        def still_wanted() -> bool:
            # Let go of the lock before the last look, so an upload that saw it held is not missed.
            lock.release()
            return worker.queue.depth() > 0 and lock.acquire()

        log.info("worker %d started", os.getpid())
        worker.run(still_wanted)
        log.info("worker %d stopping", os.getpid())


def fail_waiting_jobs(settings, reason: str) -> None:
    """End every queued (or abandoned) job as failed with ``reason``; needs the worker lock."""
    from .jobs import SpoolQueue
    queue = SpoolQueue.for_settings(settings)
    queue.recover_abandoned()
    while (job := queue.claim_next()) is not None:
        queue.fail(job, reason)
