"""Why a job could not be accepted or recorded: the errors queues and records raise, which the
web turns into 503 (try again later) and 507 (no room)."""
from __future__ import annotations

import errno

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class QueueFull(RuntimeError):
    """The queue holds as many jobs as it may; try again after ``retry_after`` seconds."""

    def __init__(self, depth: int):
        self.retry_after = max(1, min(60, depth // 10))  # a rough time for the queue to move
        super().__init__(f"the job queue is full ({depth} jobs); "
                         f"try again in {self.retry_after} s")


class QueueUnavailable(RuntimeError):
    """The queue's store (Redis) cannot be reached; try again later."""

    retry_after = 5


class DiskFull(OSError):
    """The disk itself is full (not just the storage budget): nothing more can be stored."""


class JobCancelled(Exception):
    """A client cancelled the job while it ran; the message is why (its handler stops at the
    next point it looks, and the job fails with it)."""
