"""Run a detector's network with ONNX Runtime on the CPU: its backbone and neck and, for a
one-stage detector, its head's convolutions too (YOLOX-Nano at 1280x960: the whole detection
27.6 -> 21.5 ms, the head alone taking 8.9 ms in PyTorch).

mmdet's post-processing stays as it is (``bbox_head.predict_by_feat``, and a two-stage detector's
RPN and RoI heads); the model's ``extract_feat`` (and ``bbox_head.forward``) are replaced, after a
check that ONNX Runtime's outputs match PyTorch's on an input of another shape than the export.
Whether that is faster depends on the model and the machine: ``runtime_choice.py`` times both.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from ...jobs.atomic import atomic_path

log = logging.getLogger(__name__)

# ONNX Runtime fuses and reorders float operations: outputs differ from PyTorch's by ~1e-5
# relative. Anything larger means the export went wrong, and PyTorch stays in charge.
RELATIVE_TOLERANCE = 1e-3
EXPORT_FORMAT = "network-2"  # what an export holds; part of its file name's key

# The head's outputs: a tuple whose items are a tensor or a list of tensors (one per level),
# e.g. YOLOX's (scores, boxes, objectness) lists: each item's list length, None for a tensor.
Structure = tuple[int | None, ...]


def _one_stage(model) -> bool:
    """Whether ``model`` predicts as mmdet's one-stage detectors do: its dense head's forward on
    the features, then ``predict_by_feat``, where the export may take the head in."""
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    from mmdet.models.detectors import SingleStageDetector
    return isinstance(model, SingleStageDetector) \
        and type(model).predict is SingleStageDetector.predict \
        and type(model.bbox_head).predict is BaseDenseHead.predict


def _pytorch_outputs(model, inputs) -> tuple[list, Structure | None]:
    """What the exported network computes, by PyTorch: its outputs, flat, and their structure
    (None: the features alone)."""
    features = model.extract_feat(inputs)
    if not _one_stage(model):
        return list(features), None
    flat, structure = [], []
    for item in model.bbox_head(features):
        structure.append(len(item) if isinstance(item, (list, tuple)) else None)
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    return flat, tuple(structure)


def _export_key(checkpoint: Path, config: Path) -> str:
    import onnxruntime
    import torch
    stat = checkpoint.stat()
    fingerprint = (f"{checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{config.read_text()}"
                   f":{torch.__version__}:{onnxruntime.__version__}:{EXPORT_FORMAT}")
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def _export(model, path: Path) -> None:
    import torch

    class Network(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, inputs):
            return tuple(_pytorch_outputs(self.model, inputs)[0])

    # .eval(): the exporter restores the wrapper's mode afterwards, and a new Module is in training.
    with atomic_path(path) as temp, torch.no_grad():
        torch.onnx.export(Network().eval(), (torch.randn(1, 3, 640, 640),), str(temp),
                          dynamo=False, opset_version=17, input_names=["inputs"],
                          dynamic_axes={"inputs": {0: "batch", 2: "height", 3: "width"}})


class OnnxNetwork:
    """A model's network on ONNX Runtime; ``attach`` makes the model run it, ``detach`` undoes
    that, ``free_pytorch`` then drops what PyTorch no longer runs."""

    def __init__(self, session, structure: Structure | None):
        self.session = session
        self.structure = structure

    def __call__(self, inputs) -> list:
        """The network's outputs for ``inputs`` (a batch, N x 3 x H x W), flat, as tensors."""
        import torch
        outputs = self.session.run(None, {"inputs": inputs.detach().cpu().numpy()})
        return [torch.from_numpy(output) for output in outputs]

    def _head_outputs(self, flat: list) -> tuple:
        """``flat`` in the structure of the head's own outputs."""
        items, start = [], 0
        for length in self.structure:
            items.append(flat[start] if length is None else flat[start:start + length])
            start += 1 if length is None else length
        return tuple(items)

    def attach(self, model) -> None:
        # One-stage: extract_feat hands on the head's outputs, flat, which the head's forward
        # (called by its predict, before predict_by_feat) puts back in shape.
        model.extract_feat = self
        if self.structure is not None:
            model.bbox_head.forward = self._head_outputs

    @staticmethod
    def detach(model) -> None:
        """PyTorch's network again: the classes' own methods."""
        vars(model).pop("extract_feat", None)
        if hasattr(model, "bbox_head"):
            vars(model.bbox_head).pop("forward", None)

    @staticmethod
    def free_pytorch(model) -> None:
        """Drop the backbone's and neck's weights (the head keeps its own, which are small)."""
        import torch
        model.backbone = torch.nn.Identity()
        if getattr(model, "neck", None) is not None:
            model.neck = torch.nn.Identity()


def onnx_network(model, checkpoint: Path, config: Path, cache_dir: Path,
                 threads: int) -> OnnxNetwork | None:
    """``model``'s network on ONNX Runtime (exported once, cached), checked against PyTorch's
    outputs on a batch of another size and shape than the export's; None if it cannot be
    trusted, or exported (an operation the exporter cannot trace, say)."""
    try:
        return _checked_network(model, checkpoint, config, cache_dir, threads)
    except Exception as error:
        log.warning("ONNX Runtime cannot run this model's network (%s); using PyTorch", error)
        return None


def _checked_network(model, checkpoint: Path, config: Path, cache_dir: Path,
                     threads: int) -> OnnxNetwork | None:
    import onnxruntime
    import torch

    cache_dir.mkdir(parents=True, exist_ok=True)
    path = export_path(checkpoint, config, cache_dir)
    if not path.exists():
        _export(model, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    # Spinning threads would keep both cores busy after each run, slowing the PyTorch
    # post-processing that follows (measured: RTMDet-tiny 235 -> 203 ms, YOLOX-Nano 39 -> 33 ms).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    # Two images: a batch (tiles, a GPU's) must not be traced as one image
    check = torch.randn(2, 3, 480, 736, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, structure = _pytorch_outputs(model, check)
    network = OnnxNetwork(session, structure)
    outputs = network(check)
    if len(outputs) != len(expected):
        log.warning("ONNX Runtime gives %d outputs, PyTorch %d; using PyTorch", len(outputs),
                    len(expected))
        return None
    for ours, theirs in zip(outputs, expected):
        if ours.shape != theirs.shape:
            log.warning("ONNX Runtime gives an output of shape %s, PyTorch %s; using PyTorch",
                        tuple(ours.shape), tuple(theirs.shape))
            return None
        difference = float(np.abs(ours.numpy() - theirs.numpy()).max())
        if difference > RELATIVE_TOLERANCE * max(1.0, float(theirs.abs().max())):
            log.warning("ONNX Runtime outputs differ from PyTorch's by %.3g; using PyTorch",
                        difference)
            return None
    return network


def export_path(checkpoint: Path, config: Path, cache_dir: Path) -> Path:
    return cache_dir / f"{checkpoint.stem}-{_export_key(checkpoint, config)}.onnx"
