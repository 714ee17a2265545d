"""What a worker tells its supervisor: one JSON object per line on a pipe.

The worker sends each step of a job (``loading``, ``started``, ``finished``) and, from a thread, a
``heartbeat`` with its state every second. A stopped or hung worker falls silent, and the
supervisor replaces it; a worker whose supervisor died exits at once.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import threading
import time
from typing import Callable, Iterator

HEARTBEAT_SECONDS = 1.0
PR_SET_PDEATHSIG = 1


class Reporter:
    """The worker's end of the pipe (thread-safe)."""

    def __init__(self, fd: int, parent_pid: int):
        self._fd = fd
        self._lock = threading.Lock()
        self._parent = parent_pid
        _die_with_parent()
        if os.getppid() != parent_pid:  # it died before we asked
            os._exit(1)

    def send(self, event: dict) -> None:
        line = json.dumps(event).encode() + b"\n"
        with self._lock:
            try:
                os.write(self._fd, line)
            except BrokenPipeError:
                os._exit(1)  # the supervisor is gone: so are we

    def start_heartbeat(self, state: Callable[[], dict]) -> None:
        def beat() -> None:
            while True:
                if os.getppid() != self._parent:
                    os._exit(1)
                try:
                    self.send({"event": "heartbeat", "state": state()})
                except Exception:  # a beat without state beats none: the worker is alive
                    self.send({"event": "heartbeat"})
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


def parse_event(line: bytes) -> dict | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
