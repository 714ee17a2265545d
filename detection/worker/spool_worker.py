"""The spool's worker: claim the oldest ticket, run it with its kind's handler, record its end,
repeat.

``python -m detection.worker.spool_worker --slot N`` runs it as the daemon's child
(``supervisor.py``): it holds its slot's lock, reports each step and a heartbeat on a pipe
(``protocol.py``), and the supervisor enforces time limits and replaces it when it dies or hangs.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable

import numpy as np

from .. import __version__
from ..daemon_state import WorkerState
from ..datasets.review import STORED_PNG_WAIT_SECONDS, ReviewList, keep_for_review
from ..images import limit_decoding, read_png
from ..jobs.job import Job, JobKind, Progress
from ..jobs.kinds import DETECT_LANE, LANES, Lane
from ..jobs.records import Outcome
from ..jobs.recovery import recover_own_slot
from ..jobs.spool import SpoolQueue, open_spool
from ..jobs.watch import watch_renames
from ..logs import formatter
from ..memory import tune_malloc
from ..models import ModelsFile
from ..settings import Settings, load_settings
from ..telemetry.metrics import JOB_SECONDS, JOBS, observe_stages
from .handlers import Work, failure_reason, handler_for
from .model_cache import ModelCache
from .protocol import Event, Finished, Loading, Reporter, Started, Unusable

log = logging.getLogger(__name__)

IDLE_WAKE_MS = 500


class SpoolWorker:
    """Runs jobs of its lane's kinds from the spool until ``stop`` is set, telling ``report``
    what it is doing.

    Worker ``slot`` holds that slot's lock from its start to its end (see ``spool.py``). On a
    GPU it takes up to ``gpu_batch_size`` waiting detections of one model at once, and detects
    them in one batch; on the CPU one at a time (a batch was slower there). A worker of a lane
    used on demand leaves once no job of its lane has waited for ``long_lane_idle_seconds``."""

    def __init__(self, settings: Settings, slot: int = 0,
                 report: Callable[[Event], None] = lambda event: None, lane: Lane = DETECT_LANE):
        self.settings = settings
        self.lane = lane
        self.queue: SpoolQueue = open_spool(settings, slot)
        self.records = self.queue.records
        self.slot_lock = self.queue.slot_lock(slot)
        self.slot_lock.acquire(blocking=True)  # a worker of this slot may be finishing its job
        for job in recover_own_slot(self.queue):
            log.warning("recovered %s, left by this slot's previous worker (attempt %d)",
                        job.sid, job.attempts)
        self.report = report
        limit_decoding(settings.max_pixels)  # the stored PNGs are within it
        self.models = ModelCache(ModelsFile(settings.models_file, settings.checkpoints_dir),
                                 settings, slot)
        self.review = ReviewList.of(settings)
        self.work = Work(self.models, self.read_input, self.report_progress,
                         lambda job: self.queue.cancel_requested(job.sid),
                         self.records.raw_input)
        self.stop = threading.Event()
        self.jobs_done = 0

    def report_progress(self, job: Job, progress: Progress) -> None:
        """Progress is a hint: a full disk loses one, never the job."""
        try:
            self.records.write_progress(job.sid, progress)
        except OSError as error:
            log.warning("could not record the progress of %s: %s", job.sid, error)

    def claim(self) -> list[Job]:
        """The oldest job of this lane, and on a GPU more like it when its kind batches."""
        first = self.queue.claim_next(self.lane.kinds)
        if first is None:
            return []
        if self.models.batch_size > 1 and handler_for(first.kind).batches:
            return [first, *self.queue.claim_like(first, self.models.batch_size - 1)]
        return [first]

    def read_input(self, job: Job) -> np.ndarray:
        """A detection's pixels: the ones the web process left for it, else its stored PNG's."""
        pixels = self.queue.pixels.take(job.sid)
        return read_png(self.records.input_path(job.sid)) if pixels is None else pixels

    def run_jobs(self, jobs: list[Job]) -> None:
        """Run ``jobs`` (of one kind and model) together; each ends done, or failed with its
        reason."""
        started = time.perf_counter()
        for job in jobs:
            log.info("claimed %s (%s, model %s, attempt %d)", job.sid, job.kind.value, job.model,
                     job.attempts, extra={"sid": job.sid, "event": "claimed", "kind": job.kind.value,
                                          "model": job.model, "attempt": job.attempts,
                                          "batch": len(jobs)})
            if job.kind is JobKind.DETECT:  # from its upload to now
                JOB_SECONDS.labels(job.model, "queue_wait").observe(
                    max(0, time.time_ns() - job.enqueued_ns) / 1e9)
        handler = handler_for(jobs[0].kind)
        try:
            if handler.needs_model and jobs[0].model not in self.models.loaded:
                self.report(Loading(jobs[0].model, tuple(jobs)))
                self.models.get(jobs[0].model)
            self.report(Started(tuple(jobs), self.state()))
            outcomes = handler.run(jobs, self.work)
        except Exception as error:  # the model itself: every job fails
            outcomes = [Outcome.failed(failure_reason(error, job.kind), error) for job in jobs]
        for job, outcome in zip(jobs, outcomes):
            self._record(job, outcome, started)
        self.jobs_done += len(jobs)
        self.report(Finished(tuple(job.sid for job in jobs), self.state()))

    def _record(self, job: Job, outcome: Outcome, started: float) -> None:
        # A detection cannot stop midway: cancelled while it ran (its upload could not be
        # stored, say: ``SpoolQueue.enqueuing``), it fails instead of being recorded.
        if (outcome.error is None and job.kind is JobKind.DETECT
                and (reason := self.queue.cancel_requested(job.sid))):
            outcome.discard_files()
            outcome = Outcome.failed(reason)
        if outcome.error is None:
            try:
                self._record_done(job, outcome)
            except Exception as error:  # e.g. a full disk
                outcome = Outcome.failed(failure_reason(error, job.kind), error)
        if outcome.error is not None:
            log.error("failed %s: %s", job.sid, outcome.error, exc_info=outcome.cause,
                      extra={"sid": job.sid, "event": "failed", "reason": outcome.error})
            self.queue.fail(job, outcome.error)
            if job.kind is JobKind.DETECT:
                JOBS.labels(job.model, "failed").inc()
            return
        self.queue.finish(job)
        timings = outcome.result.get("timings", {})
        log.info("done %s in %.0f ms", job.sid, (time.perf_counter() - started) * 1000,
                 extra={"sid": job.sid, "event": "done", "kind": job.kind.value,
                        "model": job.model, "timings": timings,
                        "detections": len(outcome.result.get("detections", ()))})
        if job.kind is JobKind.DETECT:
            JOBS.labels(job.model, "done").inc()
            observe_stages(job.model, timings)
            # After the job's end: the review may wait for a PNG its web process still stores
            keep_for_review(self.review, self.models.models_file.models.get(job.model),
                            outcome.result, self.records.input_path(job.sid),
                            wait_seconds=STORED_PNG_WAIT_SECONDS)

    def _record_done(self, job: Job, outcome: Outcome) -> None:
        """The drawing, then the result (neither fsynced yet: ``SpoolQueue.finish`` does that
        before it drops the ticket, so that the client hears at once)."""
        if outcome.output is not None:
            started = time.perf_counter()
            self.records.write_output(job.sid, outcome.output)
            outcome.result["timings"]["write_ms"] = round((time.perf_counter() - started) * 1000, 1)
        self.records.write_files(job.sid, outcome.files)
        self.records.write_result(job.sid, outcome.result)

    def state(self) -> WorkerState:
        """What /health shows of this worker."""
        return WorkerState(worker_pid=os.getpid(), slot=self.queue.slot, lane=self.lane.name,
                           device=self.models.device, gpu=self.models.gpu_name,
                           version=__version__, models_loaded=sorted(self.models.loaded),
                           runtimes=self.models.loaded, runtime_ms=self.models.runtime_ms,
                           jobs_done=self.jobs_done)

    def run(self) -> None:
        """Take jobs until stopped; when none waits, sleep until a ticket appears (inotify: the
        watch is set before the first look, so none is missed), or poll where inotify is missing."""
        watch = watch_renames(self.queue.queued_dir)
        idle_since = time.monotonic()
        try:
            while not self.stop.is_set():
                jobs = self.claim()
                if jobs:
                    self.run_jobs(jobs)
                    idle_since = time.monotonic()
                elif (self.lane.on_demand and time.monotonic() - idle_since
                      > self.settings.long_lane_idle_seconds):
                    log.info("no %s job waits: leaving", self.lane.name)
                    return
                elif watch is not None:
                    watch.read(timeout=IDLE_WAKE_MS)  # also wakes now and then to see `stop`
                else:
                    self.stop.wait(self.settings.poll_interval_seconds)
        finally:
            if watch is not None:
                watch.close()


def main(argv: list[str] | None = None) -> int:
    """The daemon's child: ``python -m detection.worker.spool_worker --config INI --slot N
    --report-fd FD --parent-pid PID``."""
    parser = argparse.ArgumentParser(description="a worker of the detection daemon")
    parser.add_argument("--config", required=True)
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--lane", choices=sorted(LANES), default=DETECT_LANE.name)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    arguments = parser.parse_args(argv)
    reporter = Reporter(arguments.report_fd, arguments.parent_pid)  # first: die with the parent
    os.nice(LANES[arguments.lane].niceness)  # before any thread: each inherits it
    tune_malloc(one_heap=False)
    settings = load_settings(arguments.config)
    handler = logging.StreamHandler(sys.stderr)  # the supervisor relays it into its log
    handler.setFormatter(formatter(settings.log_format, relayed=True))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    workers: list[SpoolWorker] = []
    reporter.start_heartbeat(lambda: workers[0].state() if workers else None)
    try:
        workers.append(SpoolWorker(settings, arguments.slot, report=reporter.send,
                                   lane=LANES[arguments.lane]))
    except Exception as error:  # e.g. a broken install: say so (the supervisor fails the jobs)
        log.exception("the worker could not start")
        reporter.send(Unusable(f"the detection worker could not start: "
                               f"{type(error).__name__}: {error}"))
        return 3
    worker = workers[0]
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())  # finish the job, then stop
    log.info("worker %d started in slot %d (%s)", os.getpid(), arguments.slot, arguments.lane)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
