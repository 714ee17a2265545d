"""Detector backends: load a model once, run it many times, return plain detections.

    base.py             Detection (and its Mask), and the DetectorBackend protocol every backend
                        follows
    mmdet_detector.py   mmdet's models (models.toml's backend "mmdet")
    face_detector.py    faces with facenet-pytorch's MTCNN (backend "mtcnn")
    onnx_network.py     an mmdet model's network (backbone, neck, a one-stage head) on ONNX
                        Runtime, on the CPU
"""
from __future__ import annotations

from pathlib import Path

from ...models import ModelSpec
from .base import Detection, DetectorBackend, Mask

__all__ = ["Detection", "DetectorBackend", "Mask", "load_detector", "resolve_device"]


def resolve_device(setting: str, slot: int = 0) -> str:
    """``auto`` picks CUDA when torch sees a GPU (worker ``slot`` i takes GPU i, round robin),
    else the CPU."""
    import torch
    if setting == "auto":
        return f"cuda:{slot % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    return setting


def load_detector(spec: ModelSpec, device: str, runtime: str = "torch",
                  cache_dir: Path | None = None, threads: int = 0) -> DetectorBackend:
    """The detector of ``spec``'s backend, loaded on ``device``."""
    if spec.backend == "mtcnn":
        from .face_detector import FaceDetector
        return FaceDetector(spec, device)
    from .mmdet_detector import MMDetDetector
    return MMDetDetector(spec, device, runtime, cache_dir, threads)
