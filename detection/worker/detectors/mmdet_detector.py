"""mmdet's models (models.toml's backend ``mmdet``): reads like ``mmdet.apis`` from the outside,
``init_detector`` once, then ``detect_batch`` many times."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ...models import ModelSpec
from .base import Detection, Mask
from .mask_logits import threshold_mask_logits


def _test_pipeline(cfg):
    """The config's test pipeline, taking arrays (as ``inference_detector`` builds it)."""
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg
    steps = get_test_pipeline_cfg(cfg.copy())
    steps[0].type = "mmdet.LoadImageFromNDArray"
    return Compose(steps)


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """PyTorch on ``count`` threads for a while (None: as it is); its setting is the process's."""
    import torch
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class MMDetDetector:
    """One loaded mmdet model. On the CPU, ``runtime="onnxruntime"`` runs its network (backbone,
    neck, and a one-stage detector's head) with ONNX Runtime, ``"auto"`` only where that is
    faster on this machine (timed as it loads), ``"torch"`` never."""

    def __init__(self, spec: ModelSpec, device: str, runtime: str = "torch",
                 cache_dir: Path | None = None, threads: int = 0):
        from mmdet.apis import init_detector
        self.spec = spec
        self.device = device
        checkpoint = spec.require_checkpoint()
        self.model = init_detector(str(spec.config), str(checkpoint), device=device)
        # Fed RGB, as images are decoded, not BGR (mmdet's order for arrays): the preprocessor's
        # channel swap is turned around, so the network sees what it would from BGR, and the
        # full-size image needs no flipped copy (1280x960: 5 ms). The swap commutes with the
        # test pipelines' resizing and their grey or black padding.
        preprocessor = self.model.data_preprocessor
        preprocessor._channel_conversion = not preprocessor._channel_conversion
        # Labels are models.toml's names (clients ask for classes by them); checkpoints spell
        # some their own way ("traffic_light"), but must count as many.
        named = self.model.dataset_meta["classes"]
        if len(named) != len(spec.classes):
            raise ValueError(f"model {spec.name}'s checkpoint has {len(named)} classes, not the "
                             f"{len(spec.classes)} of models.toml ({', '.join(spec.classes[:3])}, "
                             "...): give it its `classes` there")
        self.classes: tuple[str, ...] = spec.classes
        self.pipeline = _test_pipeline(self.model.cfg)
        threshold_mask_logits(self.model)
        self.runtime = "torch"
        self.runtime_ms: dict[str, float] = {}  # each runtime timed on the probe ("auto")
        self.torch_threads: int | None = None  # PyTorch's threads in detect (None: the process's)
        if runtime != "torch" and device == "cpu" and cache_dir is not None:
            self._choose_runtime(runtime, checkpoint, cache_dir, threads)

    def _choose_runtime(self, runtime: str, checkpoint: Path, cache_dir: Path,
                        threads: int) -> None:
        """ONNX Runtime for the network where its outputs match PyTorch's, and (for ``auto``)
        where it is faster here, timed on the whole detection: with the process's PyTorch
        threads and, for a one-stage detector, with one."""
        from .onnx_network import export_path, onnx_network
        from .runtime_choice import ONE_TORCH_THREAD, median_ms, probe_image, timed_runtimes
        network = onnx_network(self.model, checkpoint, self.spec.config, cache_dir, threads)
        if network is None:
            return
        chosen = "onnxruntime"
        if runtime == "auto":
            candidates = {"torch": None, "onnxruntime": None}  # name -> PyTorch's threads
            if network.structure is not None:
                candidates[ONE_TORCH_THREAD] = 1

            def time_each() -> dict[str, float]:
                image, timings = probe_image(), {}
                for name, torch_threads in candidates.items():
                    if name != "torch":
                        network.attach(self.model)
                    self.torch_threads = torch_threads
                    try:
                        timings[name] = median_ms(lambda x: self.detect(x, 0.3), image)
                    finally:
                        network.detach(self.model)
                        self.torch_threads = None
                return timings
            timings_file = export_path(checkpoint, self.spec.config, cache_dir).with_suffix(
                f".{threads or 'default'}-threads.timings.json")
            self.runtime_ms = timed_runtimes(timings_file, set(candidates), time_each)
            chosen = min(candidates, key=self.runtime_ms.__getitem__)  # ties: the first
            if chosen == "torch":
                return
            self.torch_threads = candidates[chosen]
        network.attach(self.model)
        network.free_pytorch(self.model)
        self.runtime = chosen

    def detect(self, image_rgb: np.ndarray, threshold: float) -> list[Detection]:
        """Detections scoring at least ``threshold``, best first, in ``image_rgb``'s pixels."""
        return self.detect_batch([image_rgb], [threshold])[0]

    def detect_batch(self, images_rgb: list[np.ndarray],
                     thresholds: list[float]) -> list[list[Detection]]:
        """``detect`` for several images in one pass of the network (the data preprocessor pads
        them to the largest, as mmdet's batch inference does): what pays on a GPU. mmdet's
        ``inference_detector`` would run a list one image at a time."""
        import torch
        from mmengine.dataset import pseudo_collate
        with _torch_threads(self.torch_threads), torch.inference_mode():
            batch = pseudo_collate([self.pipeline({"img": image, "img_id": 0})
                                    for image in images_rgb])
            samples = self.model.test_step(batch)
            return [self._detections(sample.pred_instances, image.shape[:2], threshold)
                    for sample, image, threshold in zip(samples, images_rgb, thresholds)]

    def _detections(self, instances, size: tuple[int, int], threshold: float) -> list[Detection]:
        keep = instances.scores >= threshold
        scores = instances.scores[keep].cpu().numpy()
        boxes = instances.bboxes[keep].cpu().numpy()
        height, width = size
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)  # mmdet clips to the padded network input
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        labels = instances.labels[keep].cpu().numpy()
        masks = None
        if "masks" in instances:  # each within its rows and columns, found for all at once
            kept = instances.masks[keep].cpu()
            rows, columns, pixels = kept.any(dim=2).numpy(), kept.any(dim=1).numpy(), kept.numpy()
            masks = [Mask.within(pixels[i], rows[i], columns[i]) for i in range(len(pixels))]
        order = np.argsort(-scores, kind="stable")
        return [Detection(label=self.classes[int(labels[i])], class_id=int(labels[i]),
                          score=float(scores[i]), bbox=tuple(float(v) for v in boxes[i]),
                          mask=None if masks is None else masks[i])
                for i in order]
