"""What every detector backend gives the worker: plain detections, and the ``DetectorBackend``
protocol (mmdet's models, MTCNN's faces)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ...models import ModelSpec


@dataclass(frozen=True)
class Mask:
    """An instance's pixels in an image of ``height`` x ``width``: ``pixels`` (bool) covers its
    rows from ``top`` and columns from ``left``, and none is set outside them. Drawing and
    encoding read this window only: most masks cover a few per cent of the photo."""
    pixels: np.ndarray
    top: int
    left: int
    height: int
    width: int

    @classmethod
    def within(cls, full: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> Mask:
        """The mask ``full`` (H x W bool) whose rows and columns with a pixel set are ``rows``
        and ``columns`` (H and W bools; a backend computes them for all its masks at once)."""
        ys, xs = np.flatnonzero(rows), np.flatnonzero(columns)
        if not len(ys):
            return cls(full[:0, :0], 0, 0, *full.shape)
        return cls(full[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1], int(ys[0]), int(xs[0]),
                   *full.shape)

    @classmethod
    def of(cls, full: np.ndarray) -> Mask:
        return cls.within(full, full.any(axis=1), full.any(axis=0))

    @property
    def window(self) -> tuple[slice, slice]:
        return (slice(self.top, self.top + self.pixels.shape[0]),
                slice(self.left, self.left + self.pixels.shape[1]))

    def full(self) -> np.ndarray:
        """The whole image's H x W bools."""
        full = np.zeros((self.height, self.width), bool)
        full[self.window] = self.pixels
        return full

    def rle(self) -> dict:
        """COCO's compressed run-length encoding, as ``pycocotools.mask.encode`` gives for the
        whole mask (runs down each column in turn), counted from the window's pixels alone."""
        from pycocotools import mask as coco_mask
        rows = self.pixels.shape[0]
        inside = np.flatnonzero(self.pixels.T)  # column by column, as the runs go
        at = (self.left + inside // max(rows, 1)) * self.height + self.top + inside % max(rows, 1)
        breaks = np.flatnonzero(np.diff(at) != 1)
        starts = at[np.r_[0, breaks + 1]] if len(at) else at
        ends = at[np.r_[breaks, len(at) - 1]] + 1 if len(at) else at
        edges = np.empty(2 * len(starts) + 2, np.int64)  # where each run begins, and the end
        edges[1:-1:2], edges[2:-1:2] = starts, ends
        edges[0], edges[-1] = 0, self.height * self.width
        counts = np.diff(edges)
        if len(counts) > 1 and counts[-1] == 0:  # the last pixel is set: no zeros after it
            counts = counts[:-1]
        encoded = coco_mask.frPyObjects({"size": [self.height, self.width],
                                         "counts": counts.tolist()}, self.height, self.width)
        return {"size": [self.height, self.width], "counts": encoded["counts"].decode("ascii")}


@dataclass(frozen=True)
class Detection:
    label: str
    class_id: int
    score: float
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in the input image's pixels
    mask: Mask | None = None  # for instance-segmentation models
    landmarks: tuple[tuple[float, float], ...] | None = None  # (x, y) points, for faces
    track_id: int | None = None  # in a video, the object it follows across frames

    def to_json(self) -> dict:
        document = {"label": self.label, "class_id": self.class_id,
                    "score": round(self.score, 4), "bbox": [round(v, 2) for v in self.bbox]}
        if self.mask is not None:
            document["mask"] = self.mask.rle()
        if self.landmarks is not None:
            document["landmarks"] = [[round(x, 2), round(y, 2)] for x, y in self.landmarks]
        if self.track_id is not None:
            document["track_id"] = self.track_id
        return document


class DetectorBackend(Protocol):
    """A loaded model, as the worker uses every one: load once, detect many times."""

    spec: ModelSpec  # the models.toml table it was loaded from
    classes: tuple[str, ...]  # its labels, in class-id order
    runtime: str  # what runs it: torch, onnxruntime ("auto" may add: on 1 torch thread)
    runtime_ms: dict[str, float]  # each runtime's time on a probe, where they were timed

    def detect_batch(self, images_rgb: list[np.ndarray],
                     thresholds: list[float]) -> list[list[Detection]]:
        """Each image's detections scoring at least its threshold, best first, in its pixels."""
        ...
