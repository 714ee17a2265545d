"""The detection daemon's state file (``uploads/.daemon.json``), typed: written by the daemon's
supervisor, read by the web process for /health and /health/ready.

The daemon's own fields, and one ``WorkerState`` per worker process it keeps (each worker reports
its own; the supervisor adds the jobs it is on). /health's ``worker`` object keeps its public
shape (``health_fields``): the daemon's fields, the first worker's beside them, and ``workers``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .jobs.atomic import write_atomically


@dataclass(frozen=True)
class WorkerState:
    """What a worker process reports of itself (a worker still starting has said nothing yet:
    the supervisor knows its pid and slot)."""
    worker_pid: int
    slot: int
    lane: str = "detect"
    starting: bool = False
    device: str | None = None
    gpu: str | None = None
    version: str = ""
    models_loaded: list[str] = field(default_factory=list)
    runtimes: dict[str, str] = field(default_factory=dict)  # model -> what runs it (base.py)
    runtime_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> timings
    jobs_done: int = 0
    current_jobs: list[str] = field(default_factory=list)  # sids; the supervisor fills it in

    @classmethod
    def from_json(cls, document: Any) -> "WorkerState | None":
        """The state in a report or a state file; None when it is not one."""
        if not isinstance(document, dict):
            return None
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in document.items() if k in known})
        except TypeError:
            return None


@dataclass(frozen=True)
class DaemonState:
    pid: int
    state: str  # running | stopped
    version: str
    restarts: int  # worker processes replaced since the daemon started
    slots: int
    unusable: str | None  # why workers cannot start (until one does)
    workers: list[WorkerState] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        return self.state == "stopped"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, document: Any) -> "DaemonState | None":
        if not isinstance(document, dict):
            return None
        workers = [WorkerState.from_json(w) for w in document.get("workers") or ()]
        known = {f.name for f in fields(cls)} - {"workers"}
        try:
            return cls(**{k: v for k, v in document.items() if k in known},
                       workers=[w for w in workers if w is not None])
        except TypeError:
            return None

    def health_fields(self) -> dict:
        """/health's ``worker`` object: the daemon's fields, the first worker's beside them
        (``worker_pid`` None while none runs), and every worker under ``workers``."""
        workers = [asdict(worker) for worker in self.workers]
        document = {**self.to_json(), "worker_pid": None, **(workers[0] if workers else {})}
        document["workers"] = workers
        return document


def with_jobs(state: WorkerState, sids: list[str]) -> WorkerState:
    return replace(state, current_jobs=list(sids))


def write_daemon_state(path: Path, state: DaemonState) -> None:
    write_atomically(path, json.dumps(state.to_json()).encode())


def read_daemon_state(path: Path) -> DaemonState | None:
    """The daemon's state file, or None if absent or unreadable."""
    try:
        return DaemonState.from_json(json.loads(path.read_bytes()))
    except (OSError, ValueError):
        return None
