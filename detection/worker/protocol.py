"""What a worker tells its supervisor: typed events, one JSON object per line on a pipe.

The worker sends each step of its work (``Loading`` a model, ``Started`` jobs, ``Finished``
them), ``Unusable`` when it cannot start at all, and, from a thread, a ``Heartbeat`` with its
state every second. A stopped or hung worker falls silent, and the supervisor replaces it; a worker
whose supervisor died exits at once. ``Reporter`` is the worker's end, ``LineReader`` and
``decode`` the supervisor's.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Union

from ..daemon_state import WorkerState
from ..jobs.job import BadJob, Job

HEARTBEAT_SECONDS = 1.0
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Heartbeat:
    """Alive; its state (None while it is starting)."""
    state: WorkerState | None = None


@dataclass(frozen=True)
class Loading:
    """Loading ``model`` for ``jobs`` (bounded by ``model_load_timeout_seconds``)."""
    model: str
    jobs: tuple[Job, ...]


@dataclass(frozen=True)
class Started:
    """Running ``jobs`` (bounded by their time limits, added up)."""
    jobs: tuple[Job, ...]
    state: WorkerState


@dataclass(frozen=True)
class Finished:
    """Each of ``sids`` has its end recorded."""
    sids: tuple[str, ...]
    state: WorkerState


@dataclass(frozen=True)
class Unusable:
    """The worker cannot start at all (a broken install, say), and why."""
    reason: str


Event = Union[Heartbeat, Loading, Started, Finished, Unusable]
NAMES = {Heartbeat: "heartbeat", Loading: "loading", Started: "started", Finished: "finished",
         Unusable: "unusable"}


def _job_fields(job: Job) -> dict:
    return {**job.to_fields(), "attempts": job.attempts}


def encode(event: Event) -> bytes:
    """One line of JSON."""
    document: dict[str, Any] = {"event": NAMES[type(event)]}
    if isinstance(event, (Loading, Started)):
        document["jobs"] = [_job_fields(job) for job in event.jobs]
    if isinstance(event, Loading):
        document["model"] = event.model
    if isinstance(event, Finished):
        document["sids"] = list(event.sids)
    if isinstance(event, Unusable):
        document["reason"] = event.reason
    if isinstance(event, (Heartbeat, Started, Finished)) and event.state is not None:
        document["state"] = asdict(event.state)
    return json.dumps(document).encode() + b"\n"


def decode(line: bytes) -> Event | None:
    """The event on one line; None for anything else (a worker's stray output)."""
    try:
        document = json.loads(line)
        kind = document["event"]
        state = WorkerState.from_json(document.get("state"))
        if kind == "heartbeat":
            return Heartbeat(state)
        if kind == "unusable":
            return Unusable(str(document["reason"]))
        if kind == "finished" and state is not None:
            return Finished(tuple(str(sid) for sid in document["sids"]), state)
        jobs = tuple(Job.from_fields(fields, int(fields["attempts"]))
                     for fields in document["jobs"])
        if kind == "loading":
            return Loading(str(document["model"]), jobs)
        if kind == "started" and state is not None:
            return Started(jobs, state)
    except (ValueError, TypeError, KeyError, BadJob):
        pass
    return None


class Reporter:
    """The worker's end of the pipe (thread-safe)."""

    def __init__(self, fd: int, parent_pid: int):
        self._fd = fd
        self._lock = threading.Lock()
        self._parent = parent_pid
        _die_with_parent()
        if os.getppid() != parent_pid:  # it died before we asked
            os._exit(1)

    def send(self, event: Event) -> None:
        line = encode(event)
        with self._lock:
            try:
                os.write(self._fd, line)
            except BrokenPipeError:
                os._exit(1)  # the supervisor is gone: so are we

    def start_heartbeat(self, state: Callable[[], WorkerState | None]) -> None:
        def beat() -> None:
            while True:
                if os.getppid() != self._parent:
                    os._exit(1)
                try:
                    self.send(Heartbeat(state()))
                except Exception:  # a beat without state beats none: the worker is alive
                    self.send(Heartbeat())
                time.sleep(HEARTBEAT_SECONDS)
        threading.Thread(target=beat, name="heartbeat", daemon=True).start()


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (elsewhere the heartbeat notices)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class LineReader:
    """The supervisor's end of a pipe: complete lines out of whatever ``os.read`` returned."""

    def __init__(self, fd: int):
        self.fd = fd
        self._buffer = b""
        self.closed = False

    def read_lines(self) -> Iterator[bytes]:
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.closed = True
            chunk = b"\n"  # the end: whatever is buffered is the last line
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        yield from (line for line in lines if line)
