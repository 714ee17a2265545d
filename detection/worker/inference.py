"""Detection on one image, as every worker does it: models loaded on first use and kept warm
(least recently used first out, within a count and a memory bound), detect, draw, and the result
document."""
from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import OrderedDict

import numpy as np
import psutil

from ..images import encode_png
from ..jobs import ImageSize, Job, JobResult
from ..models import ModelsFile, UnknownModel
from ..settings import Settings
from ..stopwatch import Stopwatch
from ..telemetry.metrics import MODEL_LOAD_SECONDS
from .detector import Detection, Detector, load_detector, resolve_device
from .drawing import draw_detections

log = logging.getLogger(__name__)


def threads_per_worker(settings: Settings) -> int:
    """``torch_threads``; when 0, with several workers kept by the daemon, the cores split among
    them (each taking all would oversubscribe: 2 workers on 2 cores did 1.10x one worker's
    images per second, against 1.71x with one thread each: docs/scaling.md); else 0, the
    libraries' choice."""
    if settings.torch_threads or settings.workers <= 1:
        return settings.torch_threads
    return max(1, len(os.sched_getaffinity(0)) // settings.workers)


class ModelCache:
    """Loaded detectors by name, evicting the least recently used beyond the bounds."""

    def __init__(self, models_file: ModelsFile, settings: Settings, slot: int = 0):
        import torch
        self.models_file = models_file
        self.settings = settings
        self.threads = threads_per_worker(settings)
        if self.threads:
            torch.set_num_threads(self.threads)
        self.device = resolve_device(settings.device, slot)
        self.gpu_name = (torch.cuda.get_device_name(self.device)
                         if self.device.startswith("cuda") else None)
        self.max_models = settings.max_loaded_models
        self.max_memory_mb = settings.max_worker_memory_mb
        self._loaded: OrderedDict[str, Detector] = OrderedDict()
        self._lock = threading.Lock()  # the heartbeat thread reads what the worker changes

    @property
    def loaded(self) -> dict[str, str]:
        """Loaded model names -> the runtime each runs on."""
        with self._lock:
            return {name: detector.runtime for name, detector in self._loaded.items()}

    def get(self, name: str) -> Detector:
        models = self.models_file.models  # as models.toml is now (fine-tuned models added)
        if name not in models:
            raise UnknownModel(f"unknown model {name!r}")
        if name in self._loaded:
            with self._lock:
                if self._loaded[name].spec == models[name]:
                    self._loaded.move_to_end(name)
                    return self._loaded[name]
                del self._loaded[name]  # its table has changed since it was loaded
        self._evict(keep=self.max_models - 1)
        started = time.perf_counter()
        settings = self.settings
        detector = load_detector(models[name], self.device, settings.runtime,
                                 settings.onnx_cache_dir, self.threads)
        with self._lock:
            self._loaded[name] = detector
        MODEL_LOAD_SECONDS.labels(name).observe(time.perf_counter() - started)
        log.info("loaded model %s on %s (%s) in %.1f s", name, self.device, detector.runtime,
                 time.perf_counter() - started)
        self._evict(keep=self.max_models, memory_bound=True)
        return self._loaded[name]

    def _evict(self, keep: int, memory_bound: bool = False) -> None:
        def over_memory() -> bool:
            rss_mb = psutil.Process().memory_info().rss / 2**20
            return memory_bound and len(self._loaded) > 1 and rss_mb > self.max_memory_mb
        while len(self._loaded) > keep or over_memory():
            with self._lock:
                name, _ = self._loaded.popitem(last=False)
            gc.collect()
            log.info("unloaded model %s", name)


def result_document(job: Job, device: str, size: tuple[int, int], detections: list[Detection],
                    timings: dict[str, float]) -> JobResult:
    """The detections JSON served as ``/uploads/<sid>.json``."""
    return JobResult(sid=job.sid, model=job.model, threshold=job.threshold,
                     classes=list(job.classes), max_detections=job.max_detections, device=device,
                     image=ImageSize(width=size[0], height=size[1]),
                     detections=[d.to_json() for d in detections],
                     timings={k: round(v, 1) for k, v in timings.items()})


def detect_image(job: Job, pixels: np.ndarray, models: ModelCache,
                 read_ms: float) -> tuple[bytes, JobResult]:
    """Detect on RGB ``pixels`` (which took ``read_ms`` to get), draw the boxes and encode the
    drawing as PNG; return the PNG and the result document."""
    return detect_images([job], [pixels], models, [read_ms])[0]


def detect_images(jobs: list[Job], pixels: list[np.ndarray], models: ModelCache,
                  read_ms: list[float]) -> list[tuple[bytes, JobResult]]:
    """``detect_image`` for jobs of one model, in one batch: each job's ``inference_ms`` is the
    batch's."""
    timings = Stopwatch()
    detector = models.get(jobs[0].model)
    timings.lap("model_ms")
    batch = detector.detect_batch(pixels, [job.threshold for job in jobs])
    timings.lap("inference_ms")
    results = []
    for job, image, detections, read in zip(jobs, pixels, batch, read_ms):
        detections = [d for d in detections if not job.classes or d.label in job.classes]
        detections = detections[:job.max_detections]  # best first
        drawing = Stopwatch(read_ms=read, **timings.laps)
        drawn = draw_detections(image, detections)
        drawing.lap("draw_ms")
        png = encode_png(drawn)
        drawing.lap("encode_ms")
        height, width = image.shape[:2]
        results.append((png, result_document(job, models.device, (width, height), detections,
                                             drawing.laps)))
    return results


def failure_reason(error: Exception) -> str:
    if isinstance(error, (FileNotFoundError, UnknownModel)):
        return str(error)
    return f"detection failed: {type(error).__name__}: {error}"
