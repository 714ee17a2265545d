"""The detection daemon: ``mmdetectionl.py worker --daemon`` (started by web.py) or ``worker`` in
the foreground. One per uploads/ directory: it holds ``uploads/.daemon.lock``
(``detection/jobs/locks.py``) and runs the supervisor of the spool's workers, or (queue = rq) one
RQ worker.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import threading
import time
from pathlib import Path

from ..jobs.errors import QueueUnavailable
from ..jobs.locks import FileLock, LockHeld
from ..jobs.queue import open_queue
from ..logs import formatter
from ..settings import PROJECT_ROOT

log = logging.getLogger(__name__)

LOG_MAX_BYTES = 10 * 2**20
LOG_BACKUPS = 3


def run_daemon(settings) -> None:
    """Detach (python-daemon), take the lock, and supervise the workers until stopped or idle."""
    import daemon  # python-daemon

    lock = FileLock(settings.daemon_lock_file)
    stderr = open(settings.daemon_stderr_file, "a", buffering=1)
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
            settings.daemon_log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS)
        if settings.queue == "rq":
            work_rq(settings, lock, handler)
        else:
            supervise(settings, lock, handler)


def log_to(handler: logging.Handler, log_format: str) -> None:
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def work_rq(settings, lock: FileLock, handler: logging.Handler) -> None:
    """The daemon with ``queue = rq``: one RQ worker in this process, until idle and unwanted.
    Its heartbeat (the lock file's mtime) beats from the start, model loading included; a worker
    stuck in a job ends itself (see rq_worker.py)."""
    from redis.exceptions import RedisError

    from .rq_worker import run

    log_to(handler, settings.log_format)
    threading.Thread(target=touch_every_second, args=(settings.daemon_lock_file,),
                     name="daemon-heartbeat", daemon=True).start()
    unreachable_since = None
    while True:
        try:
            run(settings, max_idle_seconds=settings.idle_exit_seconds)
        except RedisError as error:  # Redis away: wait for it, holding the lock, a while
            unreachable_since = unreachable_since or time.monotonic()
            away = time.monotonic() - unreachable_since
            if settings.idle_exit_seconds and away > settings.idle_exit_seconds:
                log.error("the job queue (Redis) is unavailable for %.0f s: leaving", away)
                return
            log.error("the job queue (Redis) is unavailable: %s; trying again", error)
            time.sleep(settings.heartbeat_timeout_seconds / 3)
            continue
        unreachable_since = None
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
    from ..telemetry import fold_gone_processes
    from .supervisor import Supervisor

    log_to(handler, settings.log_format)

    def still_wanted() -> bool:
        # Let go of the lock before the last look, so an upload that saw it held is not missed.
        lock.release()
        return supervisor.queue.depth() > 0 and lock.acquire()

    fold_gone_processes(settings.metrics_dir)  # the last daemon's workers: summed up
    supervisor = Supervisor(settings, still_wanted)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop.set())
    supervisor.run()
