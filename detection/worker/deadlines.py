"""When a worker's current step must be over, and what its jobs' failure says if it is not: a
model's load is bounded by ``model_load_timeout_seconds``, jobs by their kinds' time limits
(a batch by its jobs' limits added up)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..jobs.job import Job
from ..jobs.kinds import over_time, time_limit
from ..models import ModelSpec


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic()
    reason: str  # why the jobs fail when it passes

    def passed(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) > self.at


def loading_deadline(model: str, settings) -> Deadline:
    seconds = settings.model_load_timeout_seconds
    return Deadline(time.monotonic() + seconds,
                    f"loading model {model} took longer than {seconds:g} s")


def work_deadline(jobs: tuple[Job, ...], models: dict[str, ModelSpec], settings) -> Deadline:
    limits = [time_limit(job, models, settings) for job in jobs]
    return Deadline(time.monotonic() + sum(limits),
                    f"{over_time(jobs[0], limits[0])}; the worker was replaced")
