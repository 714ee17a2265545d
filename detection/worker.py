"""The detection worker: take the oldest ticket, detect, write results atomically, repeat.

Models are loaded on first use and kept warm, least recently used first out, within a count
and a memory bound. ``python -m detection.worker`` runs it as the supervisor's child
(``detection/supervisor.py``): it reports each step and a heartbeat on a pipe, and the
supervisor enforces time limits and replaces it when it dies or hangs.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from typing import Callable, TypeVar

import numpy as np
import psutil
from PIL import Image

from . import __version__
from .atomic import write_atomically
from .detector import Detection, Detector, resolve_device
from .drawing import draw_detections
from .images import limit_decoding, save_png
from .jobs import ImageSize, Job, JobResult, SpoolQueue, open_spool
from .layout import JobFiles
from .models import ModelSpec, UnknownModel, load_registry
from .reporting import Reporter
from .settings import Settings, load_settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelCache:
    """Loaded detectors by name, evicting the least recently used beyond the bounds."""

    def __init__(self, registry: dict[str, ModelSpec], settings: Settings, slot: int = 0):
        self.registry = registry
        self.settings = settings
        self.device = resolve_device(settings.device, slot)
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
        if name in self._loaded:
            with self._lock:
                self._loaded.move_to_end(name)
            return self._loaded[name]
        if name not in self.registry:
            raise UnknownModel(f"unknown model {name!r}")
        self._evict(keep=self.max_models - 1)
        started = time.perf_counter()
        settings = self.settings
        detector = Detector(self.registry[name], self.device, settings.runtime,
                            settings.onnx_cache_dir, settings.torch_threads)
        with self._lock:
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
            with self._lock:
                name, _ = self._loaded.popitem(last=False)
            gc.collect()
            log.info("unloaded model %s", name)


def result_document(job: Job, size: tuple[int, int], detections: list[Detection],
                    timings: dict[str, float]) -> JobResult:
    """The detections JSON served as ``/uploads/<sid>.json``."""
    return JobResult(sid=job.sid, model=job.model, threshold=job.threshold,
                     image=ImageSize(width=size[0], height=size[1]),
                     detections=[d.to_json() for d in detections],
                     timings={k: round(v, 1) for k, v in timings.items()})


def detect_image(job: Job, image: Image.Image, models: ModelCache,
                 encode: Callable[[Image.Image], T]) -> tuple[T, JobResult]:
    """Detect on ``image``, draw the boxes, and ``encode`` the drawing (into a file, or bytes);
    return what ``encode`` returned and the result document (its timings include reading,
    already in ``job``'s clock when the image came from a file)."""
    clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = (now - clock) * 1000
        clock = now

    pixels_bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
    lap("read_ms")
    detector = models.get(job.model)
    lap("model_ms")
    detections = detector.detect(pixels_bgr, job.threshold)
    lap("inference_ms")
    drawn = draw_detections(image, detections)
    lap("draw_ms")
    encoded = encode(drawn)
    lap("write_ms")
    return encoded, result_document(job, image.size, detections, timings)


def process(job: Job, files: JobFiles, models: ModelCache) -> JobResult:
    """Detect one stored upload; write ``<sid>.out.png`` then ``<sid>.json``; return the JSON."""
    started = time.perf_counter()
    with Image.open(files.input(job.sid)) as stored:
        image = stored.convert("RGB")
    decoded_ms = (time.perf_counter() - started) * 1000
    # The drawing is in place before the result says done.
    _, document = detect_image(job, image, models,
                               lambda drawn: save_png(drawn, files.output(job.sid), durable=True))
    document["timings"]["read_ms"] = round(document["timings"]["read_ms"] + decoded_ms, 1)
    write_atomically(files.result(job.sid), json.dumps(document).encode(), durable=True)
    return document


def failure_reason(error: Exception) -> str:
    if isinstance(error, (FileNotFoundError, UnknownModel)):
        return str(error)
    return f"detection failed: {type(error).__name__}: {error}"


class Worker:
    """Runs jobs from the spool until ``stop`` is set, telling ``report`` what it is doing.

    Worker ``slot`` holds that slot's lock from its start to its end (see ``jobs.py``)."""

    def __init__(self, settings: Settings, slot: int = 0,
                 report: Callable[[dict], None] = lambda event: None):
        import torch
        self.settings = settings
        self.queue: SpoolQueue = open_spool(settings, slot)
        self.slot_lock = self.queue.slot_lock(slot)
        self.slot_lock.acquire(blocking=True)  # a worker of this slot may be finishing its job
        for job in self.queue.recover_own_slot():
            log.warning("recovered %s, left by this slot's previous worker (attempt %d)",
                        job.sid, job.attempts)
        self.files = JobFiles(settings.uploads_dir)
        self.report = report
        limit_decoding(settings.max_pixels)  # the stored PNGs are within it
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        self.models = ModelCache(load_registry(settings.models_file, settings.checkpoints_dir),
                                 settings, slot)
        self.stop = threading.Event()
        self.jobs_done = 0

    def run_one(self, job: Job) -> None:
        log.info("claimed %s (model %s, threshold %s, attempt %d)",
                 job.sid, job.model, job.threshold, job.attempts)
        started = time.perf_counter()
        ticket = {"sid": job.sid, "model": job.model, "threshold": job.threshold,
                  "attempts": job.attempts}
        try:
            if job.model not in self.models.loaded:
                self.report({"event": "loading", **ticket})
                self.models.get(job.model)
            self.report({"event": "started", **ticket, "state": self.state()})
            process(job, self.files, self.models)
        except Exception as error:  # any failure ends the job, with its reason
            log.exception("failed %s", job.sid)
            self.queue.fail(job, failure_reason(error))
        else:
            self.queue.finish(job)
            log.info("done %s in %.0f ms", job.sid, (time.perf_counter() - started) * 1000)
        self.jobs_done += 1
        self.report({"event": "finished", "sid": job.sid, "state": self.state()})

    def state(self) -> dict:
        """What /health shows of this worker."""
        return {"worker_pid": os.getpid(), "slot": self.queue.slot, "device": self.models.device, "version": __version__,
                "models_loaded": sorted(self.models.loaded), "runtimes": self.models.loaded,
                "jobs_done": self.jobs_done}

    def run(self) -> None:
        """Take jobs until stopped."""
        while not self.stop.is_set():
            job = self.queue.claim_next()
            if job is not None:
                self.run_one(job)
            else:
                self.stop.wait(self.settings.poll_interval_seconds)


def main(argv: list[str] | None = None) -> int:
    """The supervisor's child: ``python -m detection.worker --config INI --slot N --report-fd FD
    --parent-pid PID``."""
    parser = argparse.ArgumentParser(description="the detection worker (run by the supervisor)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    arguments = parser.parse_args(argv)
    reporter = Reporter(arguments.report_fd, arguments.parent_pid)  # first: die with the parent
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings(arguments.config)
    workers: list[Worker] = []
    reporter.start_heartbeat(lambda: workers[0].state() if workers else {"starting": True})
    try:
        workers.append(Worker(settings, arguments.slot, report=reporter.send))
    except Exception as error:  # e.g. a broken install: say so (the supervisor fails the jobs)
        log.exception("the worker could not start")
        reason = f"the detection worker could not start: {type(error).__name__}: {error}"
        reporter.send({"event": "unusable", "reason": reason})
        return 3
    worker = workers[0]
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())  # finish the job, then stop
    log.info("worker %d started in slot %d", os.getpid(), arguments.slot)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
