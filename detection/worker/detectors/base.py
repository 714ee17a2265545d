"""What every detector backend gives the worker: plain detections, and the ``DetectorBackend``
protocol (mmdet's models, MTCNN's faces)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ...models import ModelSpec


@dataclass(frozen=True)
class Detection:
    label: str
    class_id: int
    score: float
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in the input image's pixels
    mask: np.ndarray | None = None  # HxW bool, for instance-segmentation models
    landmarks: tuple[tuple[float, float], ...] | None = None  # (x, y) points, for faces

    def to_json(self) -> dict:
        document = {"label": self.label, "class_id": self.class_id,
                    "score": round(self.score, 4), "bbox": [round(v, 2) for v in self.bbox]}
        if self.mask is not None:
            document["mask"] = _rle(self.mask)
        if self.landmarks is not None:
            document["landmarks"] = [[round(x, 2), round(y, 2)] for x, y in self.landmarks]
        return document


def _rle(mask: np.ndarray) -> dict:
    """COCO run-length encoding, as pycocotools.mask.decode reads it."""
    from pycocotools import mask as coco_mask
    encoded = coco_mask.encode(np.asfortranarray(mask.view(np.uint8)))  # bool is a byte: one copy
    return {"size": list(encoded["size"]), "counts": encoded["counts"].decode("ascii")}


class DetectorBackend(Protocol):
    """A loaded model, as the worker uses every one: load once, detect many times."""

    spec: ModelSpec  # the models.toml table it was loaded from
    classes: tuple[str, ...]  # its labels, in class-id order
    runtime: str  # what runs it: torch, onnxruntime
    runtime_ms: dict[str, float]  # each runtime's time on a probe, where both were timed

    def detect_batch(self, images_rgb: list[np.ndarray],
                     thresholds: list[float]) -> list[list[Detection]]:
        """Each image's detections scoring at least its threshold, best first, in its pixels."""
        ...
