"""mmengine hooks of a fine-tuning: its time budget, and the validation curve it reports."""
from __future__ import annotations

import logging
import time

from mmengine.hooks import Hook

log = logging.getLogger(__name__)


class TimeBudget(Hook):
    """Stop training (after the epoch that runs) when another epoch would end past the budget."""

    priority = "LOW"

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = 0.0  # when training began (before_train)
        self.spent = False

    def before_train(self, runner) -> None:
        self.started = time.monotonic()

    def after_train_epoch(self, runner) -> None:
        done = runner.epoch + 1  # the loop counts the epoch after its hooks
        elapsed = time.monotonic() - self.started
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
