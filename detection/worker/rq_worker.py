"""The worker on Redis + RQ: ``python mmdetectionl.py --config INI worker`` on any machine that
can reach Redis (``detection.queue = rq``). It runs every kind of job with the kinds' handlers,
as the spool's workers do.

It is an RQ ``SimpleWorker``: jobs run in its own process, so its models stay loaded (no fork,
no model load per job). A thread beats while a job runs, so RQ sees a worker that dies (kill -9,
out of memory) within ``heartbeat_timeout_seconds``; RQ then retries the job once, elsewhere.
(A worker that dies between taking a job and starting it leaves it in RQ's intermediate
queue, which RQ's maintenance retries after a minute: ``LaneQueue``.) A job past its time
limit is failed by an alarm (SIGALRM, as RQ's own); one stuck where no alarm reaches (inside a
native call) ends the process, so that its job is treated as abandoned.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from redis.exceptions import RedisError
from rq import Queue, SimpleWorker, get_current_job
from rq.exceptions import DequeueTimeout
from rq.results import Result
from rq.timeouts import JobTimeoutException
from rq.utils import as_text
from rq.worker import WorkerStatus

from ..images import decode_image, limit_decoding
from ..jobs.job import MAX_DETECTIONS, Job, JobKind, Progress
from ..jobs.kinds import LANES, over_time
from ..jobs.records import Outcome
from ..jobs.rq_queue import QUEUE_NAMES, attempts_of, cancel_key, connect, upload_key
from ..memory import tune_malloc
from ..models import ModelsFile
from ..settings import Settings
from ..telemetry.metrics import JOB_SECONDS, JOBS, observe_stages
from .handlers import Work, failure_reason, handler_for
from .model_cache import ModelCache

log = logging.getLogger(__name__)

LANE_POLL_SECONDS = 1.0  # how often a worker waiting on its first lane looks at the others

_models: ModelCache | None = None  # this process's warm models (RQJobWorker sets them)


def perform(fields: dict) -> dict:
    """The RQ job: run the job of ``fields`` with its kind's handler; return its outcome as
    ``records.Outcome.to_wire`` (a failure is an outcome too: RQ would retry a job that raised,
    and only a dead worker's job is retried).

    Its time limit (the RQ job's ``meta["time_limit"]``) counts from when its model is loaded:
    RQ's alarm, set for a model load plus the limit, is set again then."""
    rq_job = get_current_job()
    done = rq_job.latest_result()
    if done is not None and done.type == Result.Type.SUCCESSFUL:
        return done.return_value  # run again after it finished (e.g. requeued by two cleanups)
    job = Job.from_fields(fields, attempts_of(rq_job))
    limit = int(rq_job.meta.get("time_limit") or rq_job.timeout)
    log.info("claimed %s (%s, model %s, attempt %d)", job.sid, job.kind.value, job.model,
             job.attempts, extra={"sid": job.sid, "event": "claimed", "kind": job.kind.value,
                                  "model": job.model, "attempt": job.attempts})
    if job.kind is JobKind.DETECT and rq_job.enqueued_at is not None:
        waited = datetime.now(timezone.utc) - rq_job.enqueued_at.replace(tzinfo=timezone.utc)
        JOB_SECONDS.labels(job.model, "queue_wait").observe(max(0.0, waited.total_seconds()))
    handler = handler_for(job.kind)
    work = Work(_models, read_input=lambda job: _read_upload(rq_job, job),
                report_progress=lambda job, progress: _save_progress(rq_job, progress),
                cancelled=lambda job: _cancel_requested(rq_job, job),
                read_bytes=lambda job: _upload_bytes(rq_job, job))
    try:
        if handler.needs_model:
            _models.get(job.model)
        with alarm_after(limit):  # the time limit counts from here
            [outcome] = handler.run([job], work)
    except (JobTimeoutException, OverTime):
        outcome = Outcome.failed(over_time(job, limit))
    except Exception as error:  # any failure ends the job, with its reason
        outcome = Outcome.failed(failure_reason(error, job.kind), error)
    if outcome.error is not None:
        log.error("failed %s: %s", job.sid, outcome.error, exc_info=outcome.cause,
                  extra={"sid": job.sid, "event": "failed", "reason": outcome.error})
        if job.kind is JobKind.DETECT:
            JOBS.labels(job.model, "failed").inc()
        return outcome.to_wire()
    wire = outcome.to_wire()
    if "error" in wire:  # its files could not be read back
        log.error("failed %s: %s", job.sid, wire["error"],
                  extra={"sid": job.sid, "event": "failed", "reason": wire["error"]})
        return wire
    timings = outcome.result.get("timings", {})
    if job.kind is JobKind.DETECT:
        JOBS.labels(job.model, "done").inc()
        observe_stages(job.model, timings)
    log.info("done %s", job.sid, extra={"sid": job.sid, "event": "done", "kind": job.kind.value,
                                        "model": job.model, "timings": timings,
                                        "detections": len(outcome.result.get("detections", ()))})
    return wire


class OverTime(BaseException):
    """A job's time limit passed (a BaseException: a handler's ``except Exception`` that fails
    one job of a batch alone must not take it for that job's failure)."""


@contextmanager
def alarm_after(seconds: int) -> Iterator[None]:
    """Raise ``OverTime`` in this (the main) thread after ``seconds``: SIGALRM, as RQ's own
    alarm, whose handler is put back after."""
    def over(signum, frame):
        raise OverTime()
    previous = signal.signal(signal.SIGALRM, over)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class UploadExpired(FileNotFoundError):
    """The upload's bytes left Redis before a worker took the job."""


def _read_upload(rq_job, job: Job):
    return decode_image(_upload_bytes(rq_job, job), _models.settings.max_pixels)


def _upload_bytes(rq_job, job: Job) -> bytes:
    upload = rq_job.connection.get(upload_key(job.sid))
    if upload is None:
        raise UploadExpired("the upload expired from the queue before a worker took it")
    return upload


def _cancel_requested(rq_job, job: Job) -> str | None:
    """Why a client cancelled the running job, if it did (a Redis blip: not now)."""
    try:
        reason = rq_job.connection.get(cancel_key(job.sid))
    except RedisError:
        return None
    return None if reason is None else reason.decode(errors="replace")[:300]


def _save_progress(rq_job, progress: Progress) -> None:
    """Progress is a hint: a Redis blip loses one, never the job."""
    rq_job.meta["progress"] = [progress.fraction, progress.stage, progress.details]
    try:
        rq_job.save_meta()
    except RedisError:
        log.warning("could not save the progress of %s", rq_job.id, exc_info=True)


def detect(sid: str, model: str, threshold: float, classes: list[str] = (),
           max_detections: int = MAX_DETECTIONS) -> dict:
    """The RQ job function of detections queued before job kinds (still in Redis after an
    upgrade)."""
    return perform({"sid": sid, "model": model, "threshold": threshold,
                    "classes": list(classes), "max_detections": max_detections})


class LaneQueue(Queue):
    """RQ's queue, taken lane by lane through RQ's intermediate queue.

    RQ moves a job into its intermediate queue as it takes it (LMOVE) only for a worker on one
    queue; from several it pops the job (BLPOP), so a worker killed between taking a job and
    starting it loses the job: "queued" forever, in no list. Here every lane is taken with
    LMOVE, in order; a wait blocks on the first lane (detections are taken at once) and looks
    at the others every ``LANE_POLL_SECONDS``. RQ's maintenance then retries such a job."""

    @classmethod
    def dequeue_any(cls, queues, timeout, connection, job_class=None, serializer=None,
                    death_penalty_class=None):
        queues = list(queues)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            taken = cls._take(queues, deadline, connection)
            if taken is None:
                if deadline is None:
                    return None
                raise DequeueTimeout(timeout, [queue.key for queue in queues])
            # RQ's own step after taking (pinned rq: see requirements.txt)
            found = cls._fetch_dequeued_job(connection, *taken, job_class=job_class,
                                            serializer=serializer,
                                            death_penalty_class=death_penalty_class)
            if found is not None:  # else its job is gone: RQ's maintenance drops the id
                return found

    @staticmethod
    def _take(queues: list[Queue], deadline: float | None, connection) -> tuple[str, str] | None:
        """(queue key, job id) of the first job in the lanes, moved into its queue's
        intermediate queue; waiting until ``deadline`` (None: not waiting)."""
        while True:
            for queue in queues:
                job_id = connection.lmove(queue.key, queue.intermediate_queue_key)
                if job_id is not None:
                    return queue.key, as_text(job_id)
            wait = 0 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                return None
            first = queues[0]
            job_id = connection.blmove(first.key, first.intermediate_queue_key,
                                       min(wait, LANE_POLL_SECONDS))
            if job_id is not None:
                return first.key, as_text(job_id)


class RQJobWorker(SimpleWorker):
    """An RQ worker that keeps the models loaded and beats while a job runs."""

    def __init__(self, settings: Settings, leave_after_unreachable: float = 0,
                 lanes: tuple[str, ...] = tuple(QUEUE_NAMES)):
        """``leave_after_unreachable``: seconds without Redis after which an idle worker ends
        (0: it waits for Redis forever, as RQ's workers do); ``lanes``: the queues it takes jobs
        from, the first first (detections before long jobs, by default)."""
        global _models
        heartbeat = max(1, int(settings.heartbeat_timeout_seconds))
        # An idle worker wakes every ``heartbeat`` s (RQ waits worker_ttl - 15 s for a job) to
        # run RQ's maintenance: that is what requeues the jobs of workers that died.
        super().__init__([QUEUE_NAMES[lane] for lane in lanes], connection=connect(settings),
                         worker_ttl=heartbeat + 15,
                         maintenance_interval=heartbeat, queue_class=LaneQueue)
        self.settings = settings
        limit_decoding(settings.max_pixels)
        _models = ModelCache(ModelsFile(settings.models_file, settings.checkpoints_dir),
                             settings)
        _models.get(settings.default_model)  # warm before the first job
        self.leave_after_unreachable = leave_after_unreachable
        self._unreachable_since: float | None = None
        self._running: tuple | None = None  # (job, execution, started) while a job runs
        threading.Thread(target=self._beat, name="heartbeat", daemon=True).start()

    def prepare_job_execution(self, job, remove_from_intermediate_queue: bool = False) -> None:
        # RQ leaves the id in the intermediate queue when the worker has several queues (it
        # popped the job there); LaneQueue took it through it from each lane
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        return max(1, int(self.settings.heartbeat_timeout_seconds))

    def execute_job(self, job, queue) -> None:
        execution = self.prepare_execution(job)
        self._running = (job, execution, time.monotonic())
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._running = None
        self.set_state(WorkerStatus.IDLE)

    def _beat(self) -> None:
        interval = self.settings.heartbeat_timeout_seconds / 3
        while True:
            time.sleep(interval)
            try:
                self._beat_once()
            except Exception:  # a beat lost must not end the beating
                log.exception("heartbeat failed")

    def _beat_once(self) -> None:
        if self.leave_after_unreachable:
            self._leave_if_redis_stays_away()
        running = self._running
        if running is None:
            return
        job, execution, started = running
        overdue = (job.timeout or 0) + self.settings.heartbeat_timeout_seconds
        if time.monotonic() - started > overdue:
            log.error("job %s is stuck past its time limit: ending this worker", job.id)
            os.kill(os.getpid(), signal.SIGKILL)
        self.maintain_heartbeats(job, execution)

    def _leave_if_redis_stays_away(self) -> None:
        try:
            self.connection.ping()
        except RedisError:
            now = time.monotonic()
            self._unreachable_since = self._unreachable_since or now
            away = now - self._unreachable_since
            if self._running is None and away > self.leave_after_unreachable:
                log.error("the job queue (Redis) is unavailable for %.0f s: leaving", away)
                os._exit(0)  # RQ's loop would retry forever; nothing of this worker needs saving
        else:
            self._unreachable_since = None


def run(settings: Settings, max_idle_seconds: float = 0,
        lanes: tuple[str, ...] = tuple(QUEUE_NAMES)) -> None:
    """Work until stopped (SIGTERM: after the current job), or idle ``max_idle_seconds`` (then
    also when Redis stays unreachable that long: RQ itself would retry forever), on ``lanes``."""
    tune_malloc(one_heap=False)
    os.nice(min(LANES[lane].niceness for lane in lanes))  # a worker of long jobs only: lower
    worker = RQJobWorker(settings, leave_after_unreachable=max_idle_seconds, lanes=lanes)
    worker.work(max_idle_time=int(max_idle_seconds) or None, logging_level="INFO")
