"""``mmdetectionl.py finetune``: a detector for your own classes, from a COCO-format dataset.

The dataset is checked first (``dataset``); the base model's mmdet config is rebuilt for its
classes and for small data (``config``); mmengine's ``Runner`` trains it and mmdet's
``CocoMetric`` evaluates it; the weights and the config go to ``checkpoints/`` and the model to
models.toml, which the running service reads again when it changes (``training``).
"""
from .dataset import Dataset, FinetuneError, check_dataset
from .training import finetune

__all__ = ["Dataset", "FinetuneError", "check_dataset", "finetune"]
