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

from .. import __version__
from ..images import limit_decoding, read_png
from ..jobs import Job, JobResult
from ..jobs.atomic import write_atomically
from ..jobs.layout import JobFiles
from ..jobs.spool import SpoolQueue, open_spool
from ..jobs.watch import watch_renames
from ..memory import tune_malloc
from ..models import load_registry
from ..settings import Settings, load_settings
from .inference import ModelCache, detect_image, failure_reason
from .reporting import Reporter

log = logging.getLogger(__name__)

IDLE_WAKE_MS = 500


def process(job: Job, files: JobFiles, models: ModelCache,
            spool: SpoolQueue | None = None) -> JobResult:
    """Detect one stored upload (from the pixels the spool has for it, else from its PNG);
    write ``<sid>.out.png`` then ``<sid>.json``; return the JSON."""
    started = time.perf_counter()
    pixels = spool.take_pixels(job.sid) if spool is not None else None
    if pixels is None:
        pixels = read_png(files.input(job.sid))
    png, document = detect_image(job, pixels, models,
                                 read_ms=(time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    # The drawing first: it is in place before the result says done. Neither is fsynced yet:
    # the spool does that before it drops the job's ticket (SpoolQueue.finish).
    write_atomically(files.output(job.sid), png)
    document["timings"]["write_ms"] = round((time.perf_counter() - started) * 1000, 1)
    write_atomically(files.result(job.sid), json.dumps(document).encode())
    return document


class Worker:
    """Runs jobs from the spool until ``stop`` is set, telling ``report`` what it is doing.

    Worker ``slot`` holds that slot's lock from its start to its end (see ``jobs.py``)."""

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
            process(job, self.files, self.models, self.queue)
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
                job = self.queue.claim_next()
                if job is not None:
                    self.run_one(job)
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
