"""The detection worker: take the oldest ticket, detect, write results atomically, repeat.

Models are loaded on first use and kept warm, least recently used first out, within a count
and a memory bound.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Callable

import numpy as np
import psutil
from PIL import Image

from . import __version__
from .atomic import write_atomically
from .detector import Detection, Detector, resolve_device
from .drawing import draw_detections
from .images import save_png
from .jobs import Job, JobQueue, SpoolQueue
from .models import ModelSpec, UnknownModel, load_registry
from .settings import Settings

log = logging.getLogger(__name__)


class ModelCache:
    """Loaded detectors by name, evicting the least recently used beyond the bounds."""

    def __init__(self, registry: dict[str, ModelSpec], settings: Settings):
        self.registry = registry
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.max_models = settings.max_loaded_models
        self.max_memory_mb = settings.max_worker_memory_mb
        self._loaded: OrderedDict[str, Detector] = OrderedDict()

    @property
    def loaded(self) -> dict[str, str]:
        """Loaded model names -> the runtime each runs on."""
        return {name: detector.runtime for name, detector in self._loaded.items()}

    def get(self, name: str) -> Detector:
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        if name not in self.registry:
            raise UnknownModel(f"unknown model {name!r}")
        self._evict(keep=self.max_models - 1)
        started = time.perf_counter()
        settings = self.settings
        detector = Detector(self.registry[name], self.device, settings.runtime,
                            settings.onnx_cache_dir, settings.torch_threads)
        self._loaded[name] = detector
        log.info("loaded model %s on %s (%s) in %.1f s", name, self.device, detector.runtime,
                 time.perf_counter() - started)
        self._evict(keep=self.max_models, memory_bound=True)
        return self._loaded[name]

    def _evict(self, keep: int, memory_bound: bool = False) -> None:
        def over_memory() -> bool:
            rss_mb = psutil.Process().memory_info().rss / 2**20
            return memory_bound and len(self._loaded) > 1 and rss_mb > self.max_memory_mb
        while len(self._loaded) > keep or over_memory():
            name, _ = self._loaded.popitem(last=False)
            gc.collect()
            log.info("unloaded model %s", name)


def result_document(job: Job, size: tuple[int, int], detections: list[Detection],
                    timings: dict[str, float]) -> dict:
    """The detections JSON served as ``/uploads/<sid>.json``."""
    return {"sid": job.sid, "model": job.model, "threshold": job.threshold,
            "image": {"width": size[0], "height": size[1]},
            "detections": [d.to_json() for d in detections],
            "timings": {k: round(v, 1) for k, v in timings.items()}}


def process(job: Job, queue: SpoolQueue, models: ModelCache) -> dict:
    """Detect one stored upload; write ``<sid>.out.png`` then ``<sid>.json``; return the JSON."""
    clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = (now - clock) * 1000
        clock = now

    with Image.open(queue.input_path(job.sid)) as stored:
        image = stored.convert("RGB")
    pixels_bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
    lap("read_ms")
    detector = models.get(job.model)
    lap("model_ms")
    detections = detector.detect(pixels_bgr, job.threshold)
    lap("inference_ms")
    drawn = draw_detections(image, detections)
    lap("draw_ms")
    save_png(drawn, queue.output_path(job.sid))
    lap("write_ms")
    document = result_document(job, image.size, detections, timings)
    write_atomically(queue.result_path(job.sid), json.dumps(document).encode())
    return document


def failure_reason(error: Exception) -> str:
    if isinstance(error, (FileNotFoundError, UnknownModel)):
        return str(error)
    return f"detection failed: {type(error).__name__}: {error}"


class Worker:
    """Runs jobs from a queue until stopped, or until idle for ``settings.idle_exit_seconds``."""

    def __init__(self, settings: Settings, queue: JobQueue | None = None):
        import torch
        self.settings = settings
        self.queue = queue or SpoolQueue.for_settings(settings)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        self.models = ModelCache(load_registry(settings.models_file, settings.checkpoints_dir),
                                 settings)
        self.stop = threading.Event()
        self.jobs_done = 0

    def run_one(self, job: Job) -> None:
        log.info("claimed %s (model %s, threshold %s, attempt %d)",
                 job.sid, job.model, job.threshold, job.attempts)
        started = time.perf_counter()
        try:
            process(job, self.queue, self.models)
        except Exception as error:  # any failure ends the job, with its reason
            log.exception("failed %s", job.sid)
            self.queue.fail(job, failure_reason(error))
        else:
            self.queue.finish(job)
            log.info("done %s in %.0f ms", job.sid, (time.perf_counter() - started) * 1000)
        self.jobs_done += 1
        self.write_state()

    def write_state(self) -> None:
        """What /health shows of this worker."""
        state = {"pid": os.getpid(), "device": self.models.device, "version": __version__,
                 "models_loaded": sorted(self.models.loaded), "runtimes": self.models.loaded,
                 "jobs_done": self.jobs_done,
                 "updated": time.time()}
        write_atomically(self.settings.worker_state_file, json.dumps(state).encode())

    def run(self, still_wanted: Callable[[], bool] = lambda: False) -> None:
        """The loop. When idle too long, ask ``still_wanted()`` whether to go on."""
        for job in self.queue.recover_abandoned():
            log.warning("recovered %s, abandoned by a dead worker (attempt %d)",
                        job.sid, job.attempts)
        self.queue.prune(self.settings.retention_hours)
        self.write_state()
        idle_since = time.monotonic()
        while not self.stop.is_set():
            job = self.queue.claim_next()
            if job is not None:
                self.run_one(job)
                idle_since = time.monotonic()
                continue
            idle_for = time.monotonic() - idle_since
            if self.settings.idle_exit_seconds and idle_for > self.settings.idle_exit_seconds:
                if not still_wanted():
                    return
                idle_since = time.monotonic()
            self.stop.wait(self.settings.poll_interval_seconds)
