"""The queue on Redis + RQ, as the web process sees it: for workers on other machines.

No shared disk is needed. The upload's bytes travel in Redis (one key per job, bounded by the
upload limit), the job itself is an RQ job whose id is the sid, and the result (detections and the
drawn PNG) comes back as the job's return value. The web process writes ``<sid>.out.png`` and
``<sid>.json`` (or ``<sid>.error.json``) into its own uploads/ the first time anyone asks about a
finished job, so the page's file poll, /status and the DeepStack routes work as with the spool;
then it drops the upload's bytes from Redis. RQ's own machinery does the rest: its registries
track running jobs, its workers' maintenance (under RQ's lock: the web never cleans registries)
retries a job whose worker died (its heartbeat expired) once (``Retry``), then fails it;
``job_timeout`` bounds a job, and results expire after ``retention_hours``.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.results import Result

from ..models import ModelsFile, job_time_limit
from . import (
    DISK_FULL,
    MAX_ATTEMPTS,
    MAX_DETECTIONS,
    DiskFull,
    Job,
    JobState,
    JobStatus,
    QueueFull,
    QueueUnavailable,
    Upload,
    read_final_status,
)
from .atomic import write_atomically
from .layout import JobFiles

QUEUE_NAME = "detection"
KEY_PREFIX = "detection:"
ENQUEUE_LOCK_SECONDS = 10
WAITING = (RQStatus.QUEUED, RQStatus.SCHEDULED, RQStatus.DEFERRED, RQStatus.CREATED)
NEVER = -1  # RQ's TTL for "keep"
UNCLAIMED_UPLOAD_SECONDS = 7 * 24 * 3600  # an upload whose result nobody ever asked for


def upload_key(sid: str) -> str:
    """Where a job's upload waits for its worker."""
    return f"{KEY_PREFIX}upload:{sid}"


def connect(settings) -> Redis:
    return Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=3,
                          health_check_interval=30)


def attempts_of(job: RQJob) -> int:
    """The attempt a job is on (or was on when it ended): its first, or its retry."""
    return MAX_ATTEMPTS - (job.retries_left or 0)


class RQQueue:
    """The web side of the RQ backend (``detection.queue = rq``)."""

    def __init__(self, settings, models_file: ModelsFile | None = None):
        """``models_file``: the caller's reader of models.toml (time limits), if it has one."""
        self.settings = settings
        self.files = JobFiles(settings.uploads_dir)
        self.redis = connect(settings)
        self.rq = Queue(QUEUE_NAME, connection=self.redis)
        self.models_file = models_file or ModelsFile(settings.models_file,
                                                     settings.checkpoints_dir)
        self.retention_seconds = int(settings.retention_hours * 3600) or NEVER

    @contextmanager
    def enqueuing(self, job: Job, upload: Upload) -> Iterator[None]:
        """Queue ``job`` once the block (which stores its PNG) is done."""
        yield
        self.enqueue(job, upload)

    def enqueue(self, job: Job, upload: Upload) -> None:
        """Queue a job, its upload's bytes with it; refuse beyond ``max_queue`` jobs waiting or
        running, counted under a Redis lock so that several web processes never overshoot."""
        try:
            with self.redis.lock(f"{KEY_PREFIX}enqueue", timeout=ENQUEUE_LOCK_SECONDS,
                                 blocking_timeout=ENQUEUE_LOCK_SECONDS):
                depth = self.depth()
                if depth >= self.settings.max_queue:
                    raise QueueFull(depth)
                # RQ's alarm counts whole seconds: at least one
                limit = max(1, math.ceil(job_time_limit(self.models_file.models, job.model,
                                                        self.settings.job_timeout_seconds)))
                with self.redis.pipeline() as pipeline:  # one transaction: job and upload
                    self.rq.enqueue_call(
                        "detection.worker.rq_worker.detect",
                        args=(job.sid, job.model, job.threshold),
                        kwargs={"classes": list(job.classes),
                                "max_detections": job.max_detections},
                        job_id=job.sid, meta={"time_limit": limit},
                        # RQ's alarm allows a model load too; the worker sets it to the limit
                        # once the model is ready.
                        timeout=limit + int(self.settings.model_load_timeout_seconds),
                        result_ttl=self.retention_seconds, failure_ttl=self.retention_seconds,
                        retry=Retry(max=MAX_ATTEMPTS - 1), pipeline=pipeline)
                    pipeline.set(upload_key(job.sid), upload.data, ex=max(
                        self.retention_seconds, UNCLAIMED_UPLOAD_SECONDS))
                    pipeline.execute()
        except RedisError as error:
            raise QueueUnavailable(f"the job queue (Redis) is unavailable: {error}") from None

    def depth(self) -> int:
        """Jobs waiting or running."""
        return self._redis(lambda: self.rq.count
                           + self.rq.started_job_registry.get_job_count(cleanup=False))

    def pending_sids(self) -> set[str]:
        return self._redis(lambda: set(self.rq.get_job_ids())
                           | set(self.rq.started_job_registry.get_job_ids(cleanup=False)))

    def workers(self) -> list[dict]:
        """The live RQ workers of this queue, on any host (for /health)."""
        return self._redis(lambda: [
            {"name": worker.name, "hostname": worker.hostname, "pid": worker.pid,
             "state": str(worker.get_state()), "current_job": worker.get_current_job_id()}
            for worker in Worker.all(queue=self.rq)])

    def is_finished(self, sid: str) -> bool:
        if self.files.is_finished(sid):
            return True
        status = self.status(sid)
        return status is not None and status.state in (JobState.DONE, JobState.FAILED)

    def status(self, sid: str) -> JobStatus | None:
        final = read_final_status(self.files, sid)
        if final is not None:
            return final
        return self._redis(lambda: self._status_in_redis(sid))

    def _status_in_redis(self, sid: str) -> JobStatus | None:
        try:
            rq_job = RQJob.fetch(sid, connection=self.redis)
        except NoSuchJobError:
            if self.files.input(sid).exists():  # accepted here, unknown to Redis: lost there
                self._record(sid, {"sid": sid, "model": None, "threshold": None, "attempts": 0,
                                   "error": "the job was lost by the queue (Redis lost its data "
                                            "or its result expired); upload it again"})
                return read_final_status(self.files, sid)
            return None
        sid_, model, threshold = rq_job.args
        job = Job(sid, model, threshold, 0, attempts_of(rq_job),
                  tuple(rq_job.kwargs.get("classes", ())),
                  rq_job.kwargs.get("max_detections", MAX_DETECTIONS))
        state = rq_job.get_status()
        if state in WAITING:
            position = rq_job.get_position()
            return JobStatus(job, JobState.QUEUED, None if position is None else position + 1)
        if state == RQStatus.STARTED:
            return JobStatus(job, JobState.RUNNING)
        try:
            self._materialise(job, rq_job, state)
        except OSError as error:
            if error.errno in DISK_FULL:
                raise DiskFull("the server's disk is full; the result waits in the queue") from None
            raise
        self.redis.delete(upload_key(sid))  # the result is safe on disk: the bytes are done with
        return read_final_status(self.files, sid)

    def _materialise(self, job: Job, rq_job: RQJob, state: str) -> None:
        """Write a finished job's files into uploads/, durably (as the spool's worker does): the
        drawn PNG, then the JSON that says done (or the failure record)."""
        result = rq_job.latest_result()
        succeeded = result is not None and result.type == Result.Type.SUCCESSFUL
        outcome: Any = result.return_value if succeeded else None
        failure = (result.exc_string if result is not None else None) or ""
        if isinstance(outcome, dict) and "result" in outcome:
            write_atomically(self.files.output(job.sid), outcome["output"], durable=True)
            write_atomically(self.files.result(job.sid), json.dumps(outcome["result"]).encode(),
                             durable=True)
            return
        if isinstance(outcome, dict) and "error" in outcome:
            reason = str(outcome["error"])
        elif "AbandonedJobError" in failure:
            reason = (f"the worker died {job.attempts} times while detecting this image "
                      "(killed, hung, or out of memory)")
        else:  # RQ's own failure: its last line names the exception, without the traceback
            last_line = failure.strip().splitlines()[-1:] or ["no reason recorded"]
            reason = f"the job ended {getattr(state, 'value', state)}: {last_line[0][:300]}"
        self._record(job.sid, {"sid": job.sid, "model": job.model, "threshold": job.threshold,
                               "attempts": job.attempts, "error": reason})

    def _record(self, sid: str, failure: dict) -> None:
        write_atomically(self.files.error(sid), json.dumps(failure).encode(), durable=True)

    def _redis(self, call):
        try:
            return call()
        except RedisError as error:
            raise QueueUnavailable(f"the job queue (Redis) is unavailable: {error}") from None
