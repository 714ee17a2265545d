"""Locks held by live processes: an ``flock`` on a file that also names its holder's pid.

The kernel drops an flock when its process dies, however it dies (kill -9, OOM), so a free lock
means no live holder: the daemon's lock (one daemon per uploads/) and each worker's slot lock
(a running job is abandoned only when its worker's slot lock is free) are such locks.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class LockHeld(RuntimeError):
    """Another live process holds the lock."""


class FileLock:
    """An exclusive lock and pid file; usable as python-daemon's ``pidfile``."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, attempts: int = 20, blocking: bool = False) -> bool:
        """Take the lock: at once, after a few brief retries (a web process may be peeking at
        it), or (``blocking``) whenever its holder lets go."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(attempts):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if attempt + 1 < attempts:
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

    def __enter__(self) -> "FileLock":
        if not self.acquire():
            raise LockHeld(f"another process holds {self.path}")
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def holder_pid(path: Path) -> int | None:
    """The pid of the live process holding the lock at ``path``, or None when none does."""
    try:
        fd = os.open(path, os.O_RDONLY)
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


@contextmanager
def exclusively(path: Path) -> Iterator[None]:
    """Hold a blocking flock on ``path`` for a short critical section shared by processes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
