"""The queue on Redis + RQ, as the web process sees it: for workers on other machines.

No shared disk is needed. A detection's upload bytes travel in Redis (one key per job, bounded
by the upload limit), the job itself is an RQ job whose id is the sid and whose one argument is
the job's fields, and the job's end (``records.Outcome``: a result and its drawing, or why it
failed) comes back as the RQ job's return value. Each lane (``kinds.py``) has its RQ queue, so
that workers can be kept for detections while others take long jobs. ``status`` only reads, Redis included; the
web's ``collect`` step writes a finished job's records into its own uploads/ (so that the page's
file poll, /status and the DeepStack routes work as with the spool), then drops the upload's
bytes from Redis. RQ's own machinery does the rest: its registries track running jobs, its
workers' maintenance (under RQ's lock: the web never cleans registries) retries a job whose
worker died (its heartbeat expired) once (``Retry``), then fails it; ``job_timeout`` bounds a
job, and results expire after ``retention_hours``.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.results import Result

from ..models import ModelsFile
from .errors import DISK_FULL, DiskFull, QueueFull, QueueUnavailable
from .job import MAX_ATTEMPTS, BadJob, Job, JobKind, JobState, JobStatus, Progress
from .kinds import lane_of, max_attempts, time_limit
from .queue import Upload
from .records import JobRecords, Outcome, worker_died

QUEUE_NAMES = {"detect": "detection", "long": "detection-long"}  # lane -> RQ queue
KEY_PREFIX = "detection:"
PERFORM = "detection.worker.rq_worker.perform"  # the RQ job's function, on the worker's side
ENQUEUE_LOCK_SECONDS = 10
WAITING = (RQStatus.QUEUED, RQStatus.SCHEDULED, RQStatus.DEFERRED, RQStatus.CREATED)
NEVER = -1  # RQ's TTL for "keep"
UNCLAIMED_UPLOAD_SECONDS = 7 * 24 * 3600  # an upload whose result nobody ever asked for
LOST = ("the job was lost by the queue (Redis lost its data or its result expired); "
        "upload it again")


def cancel_key(sid: str) -> str:
    """Where a running job's cancellation waits for its worker (the reason)."""
    return f"{KEY_PREFIX}cancel:{sid}"


def upload_key(sid: str) -> str:
    """Where a job's upload waits for its worker."""
    return f"{KEY_PREFIX}upload:{sid}"


def connect(settings) -> Redis:
    return Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=3,
                          health_check_interval=30)


def attempts_of(rq_job: RQJob) -> int:
    """The attempt a job is on (or was on when it ended): its first, or its retry."""
    if rq_job.retries_left is None:  # a kind not retried (kinds.max_attempts)
        return 1
    return MAX_ATTEMPTS - rq_job.retries_left


def job_of(rq_job: RQJob) -> Job:
    """Our job, from the RQ job's argument: its fields, or (queued before kinds) a detection's
    ``sid, model, threshold`` with its options as keywords."""
    args = rq_job.args or ()
    fields = args[0] if len(args) == 1 else (
        {"sid": args[0], "model": args[1], "threshold": args[2], **(rq_job.kwargs or {})}
        if len(args) == 3 else None)
    try:
        return Job.from_fields(fields, attempts_of(rq_job))
    except BadJob:
        return Job.unknown(rq_job.id)


def outcome_of(rq_job: RQJob, job: Job) -> Outcome:
    """How a finished RQ job ended: the worker's outcome, or RQ's own failure."""
    result = rq_job.latest_result()
    if result is not None and result.type == Result.Type.SUCCESSFUL:
        outcome = Outcome.from_wire(result.return_value)
        if outcome is not None:
            return outcome
    if rq_job.get_status() == RQStatus.CANCELED:
        return Outcome.failed(str(rq_job.meta.get("cancelled") or "cancelled"))
    failure = (result.exc_string if result is not None else None) or ""
    if "AbandonedJobError" in failure or "stuck in intermediate queue" in failure:
        return Outcome.failed(worker_died(job.attempts))
    # RQ's own failure: its last line names the exception, without the traceback
    last_line = failure.strip().splitlines()[-1:] or ["no reason recorded"]
    state = rq_job.get_status()
    return Outcome.failed(f"the job ended {getattr(state, 'value', state)}: {last_line[0][:300]}")


class RQQueue:
    """The web side of the RQ backend (``detection.queue = rq``)."""

    def __init__(self, settings, models_file: ModelsFile | None = None):
        """``models_file``: the caller's reader of models.toml (time limits), if it has one."""
        self.settings = settings
        self.records = JobRecords(settings.uploads_dir)
        self.redis = connect(settings)
        self.lanes = {lane: Queue(name, connection=self.redis)
                      for lane, name in QUEUE_NAMES.items()}
        self.models_file = models_file or ModelsFile(settings.models_file,
                                                     settings.checkpoints_dir)
        self.retention_seconds = int(settings.retention_hours * 3600) or NEVER

    @contextmanager
    def enqueuing(self, job: Job, upload: Upload) -> Iterator[None]:
        """Queue ``job`` once the block (which stores its PNG) is done."""
        yield
        self.enqueue(job, upload)

    def enqueue(self, job: Job, upload: Upload | None = None) -> None:
        """Queue a job, a detection's upload bytes with it; refuse beyond ``max_queue`` jobs
        waiting or running, counted under a Redis lock so that several web processes never
        overshoot."""
        # RQ's alarm counts whole seconds: at least one
        limit = max(1, math.ceil(time_limit(job, self.models_file.models, self.settings)))
        # RQ's alarm allows a model load too; the worker sets it to the limit once it is ready.
        load = int(self.settings.model_load_timeout_seconds) \
            if job.kind in (JobKind.DETECT, JobKind.VIDEO, JobKind.BATCH) else 0
        try:
            with self.redis.lock(f"{KEY_PREFIX}enqueue", timeout=ENQUEUE_LOCK_SECONDS,
                                 blocking_timeout=ENQUEUE_LOCK_SECONDS):
                depth = self.depth()
                if depth >= self.settings.max_queue:
                    raise QueueFull(depth)
                with self.redis.pipeline() as pipeline:  # one transaction: job and upload
                    self.lanes[lane_of(job.kind).name].enqueue_call(
                        PERFORM, args=(job.to_fields(),), job_id=job.sid,
                        meta={"time_limit": limit}, timeout=limit + load,
                        result_ttl=self.retention_seconds, failure_ttl=self.retention_seconds,
                        retry=Retry(max=retries) if (retries := max_attempts(job.kind) - 1)
                        else None, pipeline=pipeline)
                    if upload is not None:
                        pipeline.set(upload_key(job.sid), upload.data, ex=max(
                            self.retention_seconds, UNCLAIMED_UPLOAD_SECONDS))
                    pipeline.execute()
        except RedisError as error:
            raise QueueUnavailable(f"the job queue (Redis) is unavailable: {error}") from None

    def depth(self) -> int:
        """Jobs waiting or running, in every lane."""
        return self._redis(lambda: sum(
            queue.count + queue.started_job_registry.get_job_count(cleanup=False)
            for queue in self.lanes.values()))

    def pending_sids(self) -> set[str]:
        return self._redis(lambda: set().union(*(
            set(queue.get_job_ids()) | set(queue.started_job_registry.get_job_ids(cleanup=False))
            for queue in self.lanes.values())))

    def pending_jobs(self, kind: JobKind) -> list[Job]:
        """The queued or running jobs of ``kind``."""
        queue = self.lanes[lane_of(kind).name]

        def look() -> list[Job]:
            ids = queue.get_job_ids() + queue.started_job_registry.get_job_ids(cleanup=False)
            jobs = [job_of(rq_job) for rq_job in RQJob.fetch_many(ids, connection=self.redis)
                    if rq_job is not None]
            return [job for job in jobs if job.kind is kind]
        return self._redis(look)

    def workers(self) -> list[dict]:
        """The live RQ workers of our queues, on any host (for /health)."""
        def look() -> list[dict]:
            ours = {queue.name for queue in self.lanes.values()}
            return [{"name": worker.name, "hostname": worker.hostname, "pid": worker.pid,
                     "state": str(worker.get_state()), "current_job": worker.get_current_job_id(),
                     "queues": worker.queue_names()}
                    for worker in Worker.all(connection=self.redis)
                    if ours & set(worker.queue_names())]
        return self._redis(look)

    def request_cancel(self, job: Job, reason: str) -> None:
        """A queued job fails with ``reason`` (RQ cancels it); a running one's worker is asked
        to stop it (a key of its own: the worker rewrites the job's meta with its progress)."""
        def cancel() -> None:
            # The key first: a worker that takes the job meanwhile looks at it before training.
            self.redis.set(cancel_key(job.sid), reason, ex=max(
                1, math.ceil(time_limit(job, self.models_file.models, self.settings))))
            rq_job = RQJob.fetch(job.sid, connection=self.redis)
            if rq_job.get_status() in WAITING:
                rq_job.meta["cancelled"] = reason
                rq_job.save_meta()
                rq_job.cancel()
        try:
            self._redis(cancel)
        except NoSuchJobError:
            pass  # ended and collected meanwhile

    def is_finished(self, sid: str) -> bool:
        """Done or failed, here or in Redis (reads only)."""
        if self.records.is_finished(sid):
            return True
        status = self.status(sid)
        return status is not None and status.state.finished

    def status(self, sid: str) -> JobStatus | None:
        """The job's status, from its records here, else from Redis; reads only."""
        final = self.records.final_status(sid)
        if final is not None:
            return final
        return self._redis(lambda: self._status_in_redis(sid))

    def _status_in_redis(self, sid: str) -> JobStatus | None:
        try:
            rq_job = RQJob.fetch(sid, connection=self.redis)
        except NoSuchJobError:
            if self.records.has_input(sid):  # accepted here, unknown to Redis: lost there
                return JobStatus(Job.unknown(sid), JobState.FAILED, error=LOST,
                                 needs_collect=True)
            return None
        job = job_of(rq_job)
        state = rq_job.get_status()
        if state in WAITING:
            position = rq_job.get_position()
            return JobStatus(job, JobState.QUEUED, None if position is None else position + 1)
        if state == RQStatus.STARTED:
            progress = rq_job.meta.get("progress")
            return JobStatus(job, JobState.RUNNING, progress=Progress.checked(*progress)
                             if isinstance(progress, (list, tuple)) and len(progress) in (2, 3)
                             else None)
        outcome = outcome_of(rq_job, job)
        if outcome.error is not None:
            return JobStatus(job, JobState.FAILED, error=outcome.error, needs_collect=True)
        return JobStatus(job, JobState.DONE, result=outcome.result, needs_collect=True)

    def collect(self, status: JobStatus) -> JobStatus:
        """Bring a job that finished in Redis into uploads/: its records, written durably (the
        drawing, then the result; or the failure), then the upload's bytes dropped from Redis.
        Returns the job's status as recorded."""
        if not status.needs_collect:
            return status
        sid = status.job.sid
        outcome = self._redis(lambda: self._outcome(sid))
        try:
            self.records.record(status.job, outcome, durable=True)
        except OSError as error:
            if error.errno in DISK_FULL:
                raise DiskFull("the server's disk is full; the result waits in the queue") from None
            raise

        self._redis(lambda: self.redis.delete(upload_key(sid)))  # safe on disk: done with
        return self.records.final_status(sid) or status

    def _outcome(self, sid: str) -> Outcome:
        try:
            rq_job = RQJob.fetch(sid, connection=self.redis)
        except NoSuchJobError:
            return Outcome.failed(LOST)
        return outcome_of(rq_job, job_of(rq_job))

    def _redis(self, call):
        try:
            return call()
        except RedisError as error:
            raise QueueUnavailable(f"the job queue (Redis) is unavailable: {error}") from None
