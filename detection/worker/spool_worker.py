"""The spool's worker: take the oldest ticket, detect, write results atomically, repeat.

``python -m detection.worker.spool_worker --slot N`` runs it as the supervisor's child
(``supervisor.py``): it holds its slot's lock, reports each step and a heartbeat on a pipe, and
the supervisor enforces time limits and replaces it when it dies or hangs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable

import numpy as np

from .. import __version__
from ..images import limit_decoding, read_png
from ..jobs import Job, JobResult
from ..jobs.atomic import write_atomically
from ..jobs.layout import JobFiles
from ..jobs.spool import SpoolQueue, open_spool
from ..jobs.watch import watch_renames
from ..logs import formatter
from ..memory import tune_malloc
from ..models import ModelsFile
from ..settings import Settings, load_settings
from ..telemetry.metrics import JOB_SECONDS, JOBS, observe_stages
from .inference import ModelCache, detect_image, detect_images, failure_reason
from .reporting import Reporter

log = logging.getLogger(__name__)

IDLE_WAKE_MS = 500


def read_upload(job: Job, files: JobFiles, spool: SpoolQueue | None = None) -> np.ndarray:
    """A job's pixels: the ones the spool has for it, else its stored PNG's."""
    pixels = spool.take_pixels(job.sid) if spool is not None else None
    return read_png(files.input(job.sid)) if pixels is None else pixels


def write_result(job: Job, files: JobFiles, png: bytes, document: JobResult) -> None:
    """``<sid>.out.png``, then ``<sid>.json`` (done). Neither is fsynced yet: the spool does that
    before it drops the job's ticket (SpoolQueue.finish), so that the client hears at once."""
    started = time.perf_counter()
    write_atomically(files.output(job.sid), png)
    document["timings"]["write_ms"] = round((time.perf_counter() - started) * 1000, 1)
    write_atomically(files.result(job.sid), json.dumps(document).encode())


def process(job: Job, files: JobFiles, models: ModelCache) -> JobResult:
    """Detect one stored upload and write its results; return the JSON."""
    started = time.perf_counter()
    pixels = read_upload(job, files)
    png, document = detect_image(job, pixels, models, (time.perf_counter() - started) * 1000)
    write_result(job, files, png, document)
    return document


class Worker:
    """Runs jobs from the spool until ``stop`` is set, telling ``report`` what it is doing.

    Worker ``slot`` holds that slot's lock from its start to its end (see ``jobs.py``). On a GPU
    it takes up to ``gpu_batch_size`` waiting jobs of one model at once, and detects them in one
    batch; on the CPU one at a time (a batch was slower there)."""

    def __init__(self, settings: Settings, slot: int = 0,
                 report: Callable[[dict], None] = lambda event: None):
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
        self.models = ModelCache(ModelsFile(settings.models_file, settings.checkpoints_dir),
                                 settings, slot)
        self.batch_size = settings.gpu_batch_size if self.models.device.startswith("cuda") else 1
        self.stop = threading.Event()
        self.jobs_done = 0

    def run_batch(self, jobs: list[Job]) -> None:
        """Detect ``jobs`` (of one model) together; each ends done, or failed with its reason."""
        started = time.perf_counter()
        tickets = [{"sid": job.sid, "model": job.model, "threshold": job.threshold,
                    "attempts": job.attempts} for job in jobs]
        for job in jobs:
            log.info("claimed %s (model %s, threshold %s, attempt %d)",
                     job.sid, job.model, job.threshold, job.attempts,
                     extra={"sid": job.sid, "event": "claimed", "model": job.model,
                            "attempt": job.attempts, "batch": len(jobs)})
        model = jobs[0].model
        for job in jobs:  # from its upload to now
            waited = max(0, time.time_ns() - job.enqueued_ns) / 1e9
            JOB_SECONDS.labels(model, "queue_wait").observe(waited)
        failures: dict[str, Exception] = {}
        documents: dict[str, JobResult] = {}
        try:
            if model not in self.models.loaded:
                self.report({"event": "loading", "model": model, "jobs": tickets})
                self.models.get(model)
            self.report({"event": "started", "model": model, "jobs": tickets,
                         "state": self.state()})
            ready, pixels, read_ms = [], [], []
            for job in jobs:
                clock = time.perf_counter()
                try:
                    pixels.append(read_upload(job, self.files, self.queue))
                except Exception as error:  # this job fails; the others go on
                    failures[job.sid] = error
                    continue
                ready.append(job)
                read_ms.append((time.perf_counter() - clock) * 1000)
            for job, outcome in zip(ready, self._detect(ready, pixels, read_ms)):
                try:
                    if isinstance(outcome, Exception):
                        raise outcome
                    png, document = outcome
                    write_result(job, self.files, png, document)
                    documents[job.sid] = document
                except Exception as error:
                    failures[job.sid] = error
        except Exception as error:  # the model or the detection: every job of the batch fails
            for job in jobs:
                failures.setdefault(job.sid, error)
        for job in jobs:
            if job.sid in failures:
                reason = failure_reason(failures[job.sid])
                log.error("failed %s: %s", job.sid, reason, exc_info=failures[job.sid],
                          extra={"sid": job.sid, "event": "failed", "reason": reason})
                self.queue.fail(job, reason)
                JOBS.labels(job.model, "failed").inc()
            else:
                self.queue.finish(job)
                log.info("done %s in %.0f ms", job.sid, (time.perf_counter() - started) * 1000,
                         extra={"sid": job.sid, "event": "done", "model": job.model,
                                "timings": documents[job.sid]["timings"],
                                "detections": len(documents[job.sid]["detections"])})
                JOBS.labels(job.model, "done").inc()
                observe_stages(job.model, documents[job.sid]["timings"])
        self.jobs_done += len(jobs)
        self.report({"event": "finished", "sids": [job.sid for job in jobs],
                     "state": self.state()})

    def _detect(self, jobs: list[Job], pixels: list[np.ndarray],
                read_ms: list[float]) -> list[tuple[bytes, JobResult] | Exception]:
        """Each job's PNG and result, in one batch; if the batch fails, job by job, so that one
        image the model cannot take fails alone (its exception in its place)."""
        if not jobs:
            return []
        try:
            return detect_images(jobs, pixels, self.models, read_ms)
        except Exception as error:
            if len(jobs) == 1:
                return [error]
            log.warning("a batch of %d failed (%s: %s): detecting its jobs one by one",
                        len(jobs), type(error).__name__, error)
        outcomes: list[tuple[bytes, JobResult] | Exception] = []
        for job, image, read in zip(jobs, pixels, read_ms):
            try:
                outcomes.append(detect_images([job], [image], self.models, [read])[0])
            except Exception as error:
                outcomes.append(error)
        return outcomes

    def state(self) -> dict:
        """What /health shows of this worker."""
        return {"worker_pid": os.getpid(), "slot": self.queue.slot, "device": self.models.device,
                "gpu": self.models.gpu_name, "version": __version__,
                "models_loaded": sorted(self.models.loaded), "runtimes": self.models.loaded,
                "jobs_done": self.jobs_done}

    def run(self) -> None:
        """Take jobs until stopped; when none waits, sleep until a ticket appears (inotify: the
        watch is set before the first look, so none is missed), or poll where inotify is missing."""
        watch = watch_renames(self.queue.queued_dir)
        try:
            while not self.stop.is_set():
                jobs = self.queue.claim_batch(self.batch_size)
                if jobs:
                    self.run_batch(jobs)
                elif watch is not None:
                    watch.read(timeout=IDLE_WAKE_MS)  # also wakes now and then to see `stop`
                else:
                    self.stop.wait(self.settings.poll_interval_seconds)
        finally:
            if watch is not None:
                watch.close()


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
    tune_malloc(one_heap=False)
    settings = load_settings(arguments.config)
    handler = logging.StreamHandler(sys.stderr)  # the supervisor relays it into its log
    handler.setFormatter(formatter(settings.log_format, relayed=True))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
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
