"""mmengine hooks of a fine-tuning: its time budget, the validation curve it reports, and how
far it is (for a training job's /status)."""
from __future__ import annotations

import logging
import math
import time
from typing import Callable

from mmengine.hooks import Hook

from ..jobs.errors import JobCancelled
from .schedule import MONITOR

log = logging.getLogger(__name__)


def cpu_clock(most_stretch: float = 3.0) -> Callable[[], float]:
    """A budget's clock for a training on the CPU that shares it with detection jobs: this
    process's CPU seconds over its torch threads, from now. About its wall time when it has its
    cores to itself; slower while detections (at a higher priority) take them, so that a busy
    service slows a training down rather than cutting it short; but never slower than the wall
    clock over ``most_stretch``, so that a budget ends within that many times itself."""
    import torch
    threads = max(1, torch.get_num_threads())
    cpu, wall = time.process_time(), time.monotonic()
    return lambda: max((time.process_time() - cpu) / threads,
                       (time.monotonic() - wall) / most_stretch)


class TimeBudget(Hook):
    """Stop training (after the epoch that runs) when another epoch would end past the budget,
    in seconds of ``clock`` (wall time unless told)."""

    priority = "LOW"

    def __init__(self, seconds: float, clock: Callable[[], float] | None = None):
        self.seconds = seconds
        self.clock = clock or time.monotonic
        self.started = 0.0  # when training began (before_train)
        self.spent = False

    def before_train(self, runner) -> None:
        self.started = self.clock()

    def after_train_epoch(self, runner) -> None:
        done = runner.epoch + 1  # the loop counts the epoch after its hooks
        elapsed = self.clock() - self.started
        if elapsed * (done + 1) / done > self.seconds and done < runner.max_epochs:
            log.warning("the time budget (%.0f s) is spent: training stops after epoch %d of %d",
                        self.seconds, done, runner.max_epochs)
            runner.train_loop.stop_training = True
            self.spent = True


class ValidationCurve(Hook):
    """Each validation's epoch and metrics, in order (no metrics: nothing was detected)."""

    priority = "VERY_LOW"

    def __init__(self):
        self.points: list[tuple[int, dict[str, float]]] = []

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.points.append((runner.epoch, {k: float(v) for k, v in (metrics or {}).items()
                                           if isinstance(v, (int, float))}))

    @property
    def last_epoch(self) -> int | None:
        return self.points[-1][0] if self.points else None


class ProgressReport(Hook):
    """Tell ``report(fraction, stage, details)`` how far training is, at most once every
    ``EVERY_SECONDS``: the share of its iterations done, or of its time budget spent (in
    seconds of ``clock``) if more; details: epoch, epochs_planned, iteration, iterations, loss,
    eta_seconds (``epochs`` is the job's own option), and for a plot, ``losses`` (iteration,
    loss; at most ``MAX_POINTS``, thinned evenly) and ``validations`` (epoch, mAP@0.5, from
    ``curve``). As often, ask ``cancelled()`` whether a client stopped it (then raise
    ``JobCancelled``)."""

    priority = "VERY_LOW"
    EVERY_SECONDS = 1.0
    MAX_POINTS = 200

    def __init__(self, report: Callable[[float, str, dict], None], budget: float | None,
                 cancelled: Callable[[], str | None] = lambda: None,
                 clock: Callable[[], float] | None = None,
                 curve: ValidationCurve | None = None):
        self.report = report
        self.budget = budget
        self.cancelled = cancelled
        self.clock = clock or time.monotonic
        self.curve = curve
        self.losses: list[tuple[int, float]] = []
        self.started = self.last = self.budget_started = 0.0

    def before_train(self, runner) -> None:
        self.started = time.monotonic()
        self.budget_started = self.clock()
        self.report(0.0, "training", {"epochs_planned": runner.max_epochs})

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        now = time.monotonic()
        if now - self.last < self.EVERY_SECONDS:
            return
        self.last = now
        if reason := self.cancelled():
            raise JobCancelled(reason)
        elapsed = now - self.started
        done = runner.iter + 1
        fraction = done / runner.max_iters
        if self.budget:
            fraction = max(fraction, (self.clock() - self.budget_started) / self.budget)
        fraction = min(fraction, 0.99)  # the last validation and saving are still to come
        value = outputs.get("loss", math.nan) if outputs else math.nan
        loss = float(value.detach() if hasattr(value, "detach") else value)
        if math.isfinite(loss):
            self.losses.append((done, round(loss, 4)))
            if len(self.losses) > self.MAX_POINTS:
                self.losses = self.losses[::2]
        eta = elapsed / fraction - elapsed
        self.report(fraction, f"epoch {runner.epoch + 1} of {runner.max_epochs}, loss "
                              f"{loss:.3f}, about {eta:.0f} s left",
                    {"epoch": runner.epoch + 1, "epochs_planned": runner.max_epochs,
                     "iteration": done, "iterations": runner.max_iters,
                     "loss": round(loss, 4) if math.isfinite(loss) else None,
                     "eta_seconds": round(eta), "losses": [list(p) for p in self.losses],
                     "validations": [[epoch, round(metrics.get(MONITOR, 0.0), 3)]
                                     for epoch, metrics in (self.curve.points if self.curve
                                                            else ())]})
