"""The ``mtcnn`` backend: faces, with facenet-pytorch's MTCNN and the trained weights its wheel
ships (no download). Boxes with their five landmarks (eyes, nose, mouth corners), label "face".

facenet-pytorch pins torch < 2.3, so it is installed without its dependencies; of torchvision
its detection uses only ``batched_nms``, which mmcv has too (torchvision's wheels on PyPI want
torch's CUDA build). While facenet_pytorch is imported, a stand-in offers mmcv's; it is gone
from ``sys.modules`` afterwards, so that nothing else takes it for torchvision.

On the CPU its three networks run channels-last: PyTorch's max pooling on NCHW tensors is slow
there, and MTCNN pools at every scale of its pyramid (640x480, 2 cores: 100 -> 66 ms per photo;
the same faces within 1e-3 px, tested against facenet-pytorch's own ``detect``).
"""
from __future__ import annotations

import sys
import types

import numpy as np

from ...models import ModelSpec
from .base import Detection

STAND_IN = ("torchvision", "torchvision.ops", "torchvision.ops.boxes", "torchvision.transforms",
            "torchvision.transforms.functional")


def _batched_nms(boxes, scores, groups, iou_threshold: float):
    """torchvision's ``batched_nms`` (the kept indices, best first), by mmcv."""
    import torch
    from mmcv.ops import batched_nms
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    return batched_nms(boxes, scores, groups, {"type": "nms", "iou_threshold": iou_threshold})[1]


def _import_mtcnn():
    try:
        import torchvision  # noqa: F401  (where a matching one is installed, it serves)
    except Exception:  # missing, or built for another torch (its ops do not load)
        pass
    else:
        from facenet_pytorch.models.mtcnn import MTCNN
        return MTCNN
    modules = {name: types.ModuleType(name) for name in STAND_IN}
    modules["torchvision.ops.boxes"].batched_nms = _batched_nms
    sys.modules.update(modules)
    try:
        from facenet_pytorch.models.mtcnn import MTCNN
    finally:
        for name in STAND_IN:
            del sys.modules[name]
    return MTCNN


def _channels_last(net):
    """``net`` run on channels-last tensors, as MTCNN calls it (NCHW in, its outputs out)."""
    import torch

    class ChannelsLast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net.to(memory_format=torch.channels_last)

        def forward(self, images):
            return self.net(images.contiguous(memory_format=torch.channels_last))

    return ChannelsLast()


class FaceDetector:
    """MTCNN, as the worker uses every detector: ``detect_batch`` in RGB pixels."""

    runtime = "torch"
    runtime_ms: dict[str, float] = {}  # one runtime: nothing to time

    def __init__(self, spec: ModelSpec, device: str, **_):
        spec.require_checkpoint()  # facenet-pytorch's weights are there
        self.spec = spec
        self.classes = spec.classes
        self.mtcnn = _import_mtcnn()(keep_all=True, device=device)
        if device == "cpu":
            for name in ("pnet", "rnet", "onet"):
                setattr(self.mtcnn, name, _channels_last(getattr(self.mtcnn, name)))

    def detect_batch(self, images_rgb: list[np.ndarray],
                     thresholds: list[float]) -> list[list[Detection]]:
        return [self.detect(image, threshold) for image, threshold in zip(images_rgb, thresholds)]

    def detect(self, image_rgb: np.ndarray, threshold: float) -> list[Detection]:
        import torch
        if min(image_rgb.shape[:2]) < self.mtcnn.min_face_size:  # MTCNN fails on those
            return []
        with torch.inference_mode():
            boxes, scores, points = self.mtcnn.detect(image_rgb, landmarks=True)
        if boxes is None:
            return []
        height, width = image_rgb.shape[:2]
        found = []
        for box, score, landmarks in zip(boxes, scores, points):
            if score < threshold:
                continue
            x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=float))
            found.append(Detection(
                "face", 0, float(score),
                (min(max(x1, 0.0), width), min(max(y1, 0.0), height),
                 min(max(x2, 0.0), width), min(max(y2, 0.0), height)),
                landmarks=tuple((float(x), float(y)) for x, y in np.asarray(landmarks, float))))
        return sorted(found, key=lambda d: -d.score)
