"""The daemon's worker processes: the slots it keeps (``workers`` for detections, one per GPU by
default, and one for long jobs, used on demand), one ``python -m detection.worker.spool_worker``
child per slot with its report pipe and its output, and when a slot's next worker may start
(``Backoff``)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque

from ..backoff import Backoff
from ..daemon_state import WorkerState
from ..jobs.job import Job
from ..jobs.kinds import DETECT_LANE, LONG_LANE, Lane
from ..settings import PROJECT_ROOT, Settings
from .deadlines import Deadline
from .protocol import LineReader


def gpu_count() -> int:
    """GPUs this process may use, without importing torch: CUDA_VISIBLE_DEVICES, else the
    NVIDIA driver's list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def worker_count(settings: Settings) -> int:
    """Detection workers: ``workers``, where 0 (auto) is one per GPU, else one."""
    return settings.workers or max(1, gpu_count())


def daemon_slots(settings: Settings) -> list["Slot"]:
    """A slot per detection worker, then one for long jobs."""
    count = worker_count(settings)
    return [*(Slot(index, DETECT_LANE) for index in range(count)), Slot(count, LONG_LANE)]


class WorkerProcess:
    """One worker child, its report pipe and its log output, and what the supervisor knows of
    it: its last state, the jobs it is on, and when they must be over."""

    def __init__(self, settings: Settings, slot: int, lane: Lane = DETECT_LANE):
        report_read, report_write = os.pipe()
        command = [sys.executable, "-m", "detection.worker.spool_worker", "--config",
                   str(settings.config_file), "--slot", str(slot), "--lane", lane.name,
                   "--report-fd", str(report_write), "--parent-pid", str(os.getpid())]
        try:
            self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, pass_fds=(report_write,),
                                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT)
        except OSError:
            os.close(report_read)
            raise
        finally:
            os.close(report_write)
        self.pid = self.process.pid
        self.slot = slot
        self.lane = lane
        self.reports = LineReader(report_read)
        self.output = LineReader(self.process.stdout.fileno())
        self.last_output: deque[str] = deque(maxlen=3)  # why it died, if it dies at start
        self.started_at = self.last_report = time.monotonic()
        self.reported = False  # anything heard from it yet
        self.state: WorkerState | None = None  # None until it has started
        self.jobs: tuple[Job, ...] = ()  # the jobs it is on (a batch, on a GPU)
        self.deadline: Deadline | None = None
        self.unusable_reason = ""  # it could not start at all, and said why

    @property
    def lifetime(self) -> float:
        return time.monotonic() - self.started_at

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def close(self) -> None:
        os.close(self.reports.fd)
        self.process.stdout.close()


class Slot:
    """One place for a worker process: its lane, the worker in it, and when to start the next
    one."""

    def __init__(self, index: int, lane: Lane = DETECT_LANE):
        self.index = index
        self.lane = lane
        self.worker: WorkerProcess | None = None
        self.backoff = Backoff()
        self.next_start = 0.0
        self.crashes = 0  # workers in a row that died at start

    def start_later(self, lifetime: float, healthy: bool = False) -> None:
        """When the slot's next worker may start, once one ended after ``lifetime`` seconds."""
        self.next_start = time.monotonic() + self.backoff.after(lifetime, healthy)
