"""Milliseconds per step of a piece of work (a job's ``timings``, an upload's Server-Timing)."""
from __future__ import annotations

import time


class Stopwatch:
    """``lap(name)`` adds the milliseconds since the last lap (or the start) to ``name``."""

    def __init__(self, **laps: float):
        self.laps: dict[str, float] = dict(laps)
        self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + (now - self._clock) * 1000
        self._clock = now
