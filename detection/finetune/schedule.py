"""How long a fine-tuning trains, from the size of its dataset: a number of iterations (batches),
not of epochs, as mmdet's and mmyolo's small-dataset configs count, validated a few times along
the way, the best validation kept, stopped early when it stops improving or when its time
budget is spent. Tuned on ``bench/synthetic.py``'s suite (docs/finetuning.md)."""
from __future__ import annotations

import math
from dataclasses import dataclass

BATCH_SIZE = 8
MIN_ITERATIONS = 400  # 50 images: 7 batches an epoch, 58 epochs
MIN_EPOCHS, MAX_EPOCHS = 12, 300
VALIDATIONS = 10  # about this many over a run that is not stopped early
PATIENCE = 4  # validations in a row without a better mAP@0.5 stop it
MIN_GAIN = 0.005  # in mAP@0.5: less is not better
MONITOR = "coco/bbox_mAP_50"
DEFAULT_TIME_BUDGET = 240.0  # seconds of training: ~50 images end in about 5 minutes on 2 cores


@dataclass(frozen=True)
class Schedule:
    epochs: int
    validate_every: int  # epochs
    time_budget: float | None  # seconds of training (validations included); None: no limit

    @classmethod
    def plan(cls, images: int, epochs: int | None = None,
             time_budget: float | None = None) -> Schedule:
        """For ``images`` training images: ``epochs`` if given, else enough epochs for
        ``MIN_ITERATIONS`` batches."""
        if epochs is None:
            per_epoch = math.ceil(images / BATCH_SIZE)
            epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(MIN_ITERATIONS / per_epoch)))
        return cls(epochs, max(1, round(epochs / VALIDATIONS)), time_budget)
