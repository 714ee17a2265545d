"""Loaded models, kept warm by every worker: loaded on first use, least recently used first out,
within a count and a memory bound."""
from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import OrderedDict

import psutil

from ..models import ModelsFile, UnknownModel
from ..settings import Settings
from ..telemetry.metrics import MODEL_LOAD_SECONDS
from .detectors import DetectorBackend, load_detector, resolve_device

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
        self._loaded: OrderedDict[str, DetectorBackend] = OrderedDict()
        self._lock = threading.Lock()  # the heartbeat thread reads what the worker changes

    @property
    def batch_size(self) -> int:
        """Images detected in one pass: ``gpu_batch_size`` on a GPU; one on the CPU, where two
        at once were slower (docs/benchmarks.md)."""
        return self.settings.gpu_batch_size if self.device.startswith("cuda") else 1

    @property
    def loaded(self) -> dict[str, str]:
        """Loaded model names -> the runtime each runs on."""
        with self._lock:
            return {name: detector.runtime for name, detector in self._loaded.items()}

    @property
    def runtime_ms(self) -> dict[str, dict[str, float]]:
        """Loaded model names -> each runtime's time on the probe, where they were timed."""
        with self._lock:
            return {name: detector.runtime_ms for name, detector in self._loaded.items()
                    if detector.runtime_ms}

    def get(self, name: str) -> DetectorBackend:
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
        timed = ", ".join(f"{runtime} {ms:g} ms" for runtime, ms in detector.runtime_ms.items())
        log.info("loaded model %s on %s (%s%s) in %.1f s", name, self.device, detector.runtime,
                 f", the fastest here: {timed} at 640x480" if timed else "",
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
