"""Run a detector's backbone and neck, most of its compute, with ONNX Runtime on the CPU.

mmdet's heads and post-processing stay as they are; only ``model.extract_feat`` is replaced, after
a check that ONNX Runtime's features match PyTorch's on an input of another shape than the export.
Whether that is faster depends on the model and the machine: ``runtime_choice.py`` times both.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ...jobs.atomic import atomic_path

log = logging.getLogger(__name__)

# ONNX Runtime fuses and reorders float operations: features differ from PyTorch's by ~1e-5
# relative. Anything larger means the export went wrong, and PyTorch stays in charge.
RELATIVE_TOLERANCE = 1e-3


def _export_key(checkpoint: Path, config: Path) -> str:
    import onnxruntime
    import torch
    stat = checkpoint.stat()
    fingerprint = (f"{checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{config.read_text()}"
                   f":{torch.__version__}:{onnxruntime.__version__}")
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def _export(model, path: Path) -> None:
    import torch

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, inputs):
            return tuple(self.model.extract_feat(inputs))

    # .eval(): the exporter restores the wrapper's mode afterwards, and a new Module is in training.
    with atomic_path(path) as temp, torch.no_grad():
        torch.onnx.export(Features().eval(), (torch.randn(1, 3, 640, 640),), str(temp), dynamo=False,
                          opset_version=17, input_names=["inputs"],
                          dynamic_axes={"inputs": {0: "batch", 2: "height", 3: "width"}})


def onnx_features(model, checkpoint: Path, config: Path, cache_dir: Path,
                  threads: int) -> Callable | None:
    """An ONNX Runtime stand-in for ``model.extract_feat`` (exported once, cached), checked
    against PyTorch's features on an input of another shape than the export's; None if it
    cannot be trusted."""
    import onnxruntime
    import torch

    cache_dir.mkdir(parents=True, exist_ok=True)
    path = export_path(checkpoint, config, cache_dir)
    if not path.exists():
        _export(model, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    # Spinning threads would keep both cores busy after each run, slowing the PyTorch head and
    # post-processing that follow (measured: RTMDet-tiny 235 -> 203 ms, YOLOX-Nano 39 -> 33 ms).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])

    def extract_feat(inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = session.run(None, {"inputs": inputs.detach().cpu().numpy()})
        return tuple(torch.from_numpy(output) for output in outputs)

    check = torch.randn(1, 3, 480, 736, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.extract_feat(check)
    for ours, theirs in zip(extract_feat(check), expected):
        difference = float(np.abs(ours.numpy() - theirs.numpy()).max())
        if difference > RELATIVE_TOLERANCE * max(1.0, float(theirs.abs().max())):
            log.warning("ONNX Runtime features differ from PyTorch's by %.3g; using PyTorch",
                        difference)
            return None
    return extract_feat


def export_path(checkpoint: Path, config: Path, cache_dir: Path) -> Path:
    return cache_dir / f"{checkpoint.stem}-{_export_key(checkpoint, config)}.onnx"


def use_features(model, extract_feat: Callable) -> None:
    """Run ``model``'s backbone and neck with ``extract_feat`` from now on, and free PyTorch's."""
    import torch
    model.extract_feat = extract_feat
    model.backbone = torch.nn.Identity()
    if getattr(model, "neck", None) is not None:
        model.neck = torch.nn.Identity()
