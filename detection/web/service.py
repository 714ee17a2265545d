"""What the web process does with a request, apart from HTTP: accept uploads, report jobs."""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import IO
from contextlib import contextmanager
from dataclasses import dataclass

from ..callbacks.deliverer import Deliverer
from ..callbacks.targets import CallbackPolicy
from ..datasets.archive import ArchiveLimits
from ..datasets.coco_files import import_zip
from ..datasets.review import ReviewList, keep_for_review
from ..datasets.store import DatasetLimits, DatasetStore
from ..images import decode_image, encode_png, limit_decoding, png_size
from ..jobs.errors import DISK_FULL, DiskFull, QueueFull, QueueUnavailable
from ..batches import BatchLimits, checked_images, images_of_zip, pack
from ..jobs.job import BatchOptions, Job, JobKind, JobState, JobStatus, VideoOptions, new_sid
from ..jobs.layout import SID_PATTERN
from ..jobs.queue import Upload, open_queue
from ..jobs.records import JobRecords
from ..jobs.storage import PruneReport, StorageBudget, prune_storage
from ..models import ModelsFile, ModelSpec, UnknownModel
from ..settings import Settings
from ..stopwatch import Stopwatch
from ..telemetry.metrics import JOBS, observe_stages
from ..videos import VideoLimits, probe
from .forms import JobRequest
from .launcher import DaemonLauncher
from .waiting import JobWaiter

log = logging.getLogger(__name__)

DECODE_WAIT_SECONDS = 10.0  # beyond this an upload waiting for a decoding slot gets 503
# Server-Timing's steps -> detection_job_seconds' stages (the worker's are read ... write)
WEB_STAGES = {"decode": "decode", "encode": "encode_input", "store": "store_input",
              "queue": "enqueue"}


class ModelUnavailable(RuntimeError):
    """A configured model whose checkpoint is not installed on this server."""


class DetectionTimeout(TimeoutError):
    """A synchronous request's job did not finish in time (it goes on; poll its status)."""

    retry_after = 5


class ServerBusy(RuntimeError):
    """Every slot for this kind of work (waiting for a result, decoding) is taken; try again."""

    retry_after = 2


class JobGone(LookupError):
    """A job whose files were deleted (storage pruned) before its answer could be read."""


class NothingToDownload(RuntimeError):
    """A model whose weights cannot be downloaded (none published, or they come with a package)."""


@dataclass(frozen=True)
class Accepted:
    """An upload queued as job ``sid``; ``timings``: milliseconds per step of accepting it."""
    sid: str
    timings: dict[str, float]


class DetectionService:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.models_file = ModelsFile(settings.models_file, settings.checkpoints_dir)
        if settings.default_model not in self.models:
            raise UnknownModel(f"the default model {settings.default_model!r} is not in "
                               f"{settings.models_file}")
        self.models[settings.default_model].require_checkpoint()
        for spec in self.models.values():
            if not spec.available:
                log.warning("model %s is unavailable: no checkpoint at %s (run: python "
                            "mmdetectionl.py download %s)", spec.name, spec.checkpoint, spec.name)
        limit_decoding(settings.max_pixels)
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.records = JobRecords(settings.uploads_dir)
        self.queue = open_queue(settings, self.models_file)
        self.launcher = DaemonLauncher(settings)
        self.launcher.retire_legacy_daemon()
        # With RQ, a job ends in Redis, not in uploads/: waiters ask the queue.
        self.datasets = DatasetStore(settings.datasets_dir, DatasetLimits.of(settings))
        self.review = ReviewList.of(settings)
        self.waiter = JobWaiter(settings.uploads_dir, self.is_finished,
                                settings.max_waiting_requests, on_tick=self.ensure_daemon,
                                watch_files=settings.queue == "spool")
        self.callbacks = Deliverer(self.records, CallbackPolicy.of(settings), self.job_status,
                                   self.is_finished)
        self.storage = StorageBudget(settings.uploads_dir, settings.max_storage_bytes,
                                     make_room=self._make_room)
        # Decoding is CPU and memory bound: one image per core at a time bounds both.
        self._decoding = threading.BoundedSemaphore(len(os.sched_getaffinity(0)))
        self._importing = threading.Lock()  # a dataset zip: one at a time
        try:
            if self.queue.depth():
                self.ensure_daemon()  # jobs left from before a restart
        except QueueUnavailable as error:  # Redis down: serve anyway, uploads answer 503
            log.warning("%s", error)
        if settings.queue == "rq":  # no local daemon prunes uploads/ (with the spool, it does)
            threading.Thread(target=self._prune_periodically, name="prune", daemon=True).start()

    @property
    def models(self) -> dict[str, ModelSpec]:
        return self.models_file.models

    def ensure_daemon(self) -> int | None:
        """The live daemon's pid, starting (or replacing a silent) one as needed (where the
        ``spawn_worker`` setting, a public name, allows); best effort: a failure here must not
        fail the request that asked (its job is queued already)."""
        try:
            return self.launcher.ensure_running(start=self.settings.spawn_worker)
        except OSError:
            log.exception("could not start the detection daemon")
            return None

    def pick_model(self, name: str | None) -> ModelSpec:
        name = name or self.settings.default_model
        models = self.models  # one look at models.toml per request
        if name not in models:
            raise UnknownModel(f"unknown model {name!r}; choose one of {sorted(models)}")
        spec = models[name]
        if not spec.available:
            raise ModelUnavailable(f"model {name!r} is not installed on this server (its checkpoint "
                                   f"is missing); installed: {self.installed_models()}")
        return spec

    def installed_models(self) -> list[str]:
        return sorted(name for name, spec in self.models.items() if spec.available)

    def accept_upload(self, data: bytes, job: JobRequest) -> Accepted:
        """Decode, store and enqueue an upload; return its new sid."""
        self._check_room(job)  # before spending time on decoding
        timings = Stopwatch()
        with self._decoding_slot():
            pixels = decode_image(data, self.settings.max_pixels)
            timings.lap("decode")
            # At most the stored PNG and the drawn one, each no bigger than the raw pixels.
            self.storage.reserve(2 * pixels.nbytes)
            sid = self._store(Upload(data, pixels), job, timings)
        height, width = pixels.shape[:2]
        log.info("enqueued %s (%dx%d, model %s, threshold %s)",
                 sid, width, height, job.model.name, job.threshold,
                 extra={"sid": sid, "event": "enqueued", "model": job.model.name,
                        "threshold": job.threshold, "classes": list(job.classes),
                        "width": width, "height": height,
                        "timings": {step: round(ms, 1) for step, ms in timings.laps.items()}})
        self.ensure_daemon()
        JOBS.labels(job.model.name, "accepted").inc()
        observe_stages(job.model.name, {WEB_STAGES[step]: ms for step, ms in timings.laps.items()})
        return Accepted(sid, timings.laps)

    @contextmanager
    def _decoding_slot(self) -> Iterator[None]:
        if not self._decoding.acquire(timeout=DECODE_WAIT_SECONDS):
            raise ServerBusy(f"the server is busy decoding other uploads; try again in "
                             f"{ServerBusy.retry_after} s")
        try:
            yield
        finally:
            self._decoding.release()

    def image_for_dataset(self, data: bytes) -> tuple[bytes, int, int]:
        """An image sent for a dataset as the dataset keeps it: decoded (and turned upright) as
        uploads are, as a PNG; and its width and height."""
        with self._decoding_slot():
            pixels = decode_image(data, self.settings.max_pixels)
            height, width = pixels.shape[:2]
            return encode_png(pixels), width, height

    def import_dataset(self, name: str, body: IO[bytes]) -> int:
        """A client's zip of COCO annotations and images into dataset ``name``, one import at
        a time (each image decoded in turn, as uploads are); how many images were added."""
        if not self._importing.acquire(blocking=False):
            raise ServerBusy("another dataset import is under way; try again when it ends")
        try:
            added = import_zip(self.datasets, name, body, ArchiveLimits.of(self.settings),
                               self.settings.max_pixels)
        finally:
            self._importing.release()
        log.info("imported %d images into dataset %s", added, name,
                 extra={"event": "dataset_import", "dataset": name, "images": added})
        return added

    def stored_upload(self, sid: str) -> tuple[bytes, int, int] | None:
        """The PNG upload ``sid`` was stored as (what its boxes were found in; or its copy kept
        for review), its width and height; None when there is no such upload (or it was
        pruned)."""
        if not SID_PATTERN.fullmatch(sid):
            return None
        kept = self.review.image(sid)
        try:
            png = self.records.files.input(sid).read_bytes()
        except FileNotFoundError:
            if kept is None:
                return None
            png = kept.read_bytes()
        width, height = png_size(png)
        return png, width, height

    def accept_video(self, data: bytes, request: JobRequest, fps: float | None,
                     track: bool) -> Accepted:
        """Probe, store and enqueue a video upload (a job of the long lane); its new sid."""
        self._check_room(request)
        timings = Stopwatch()
        options = VideoOptions(request.threshold, request.classes, request.max_detections,
                               fps or self.settings.video_fps, track)
        with self._decoding_slot():
            info = probe(data, VideoLimits.of(self.settings), options.fps)
        timings.lap("probe")
        self.storage.reserve(3 * len(data))  # the upload, its drawing and its detections
        job = Job.video(new_sid(), request.model.name, options)
        self._queue_stored(job, request, data, self.records.store_video, timings)
        log.info("enqueued %s (a video: %dx%d, %s s, model %s)", job.sid, info.width,
                 info.height, info.seconds, request.model.name,
                 extra={"sid": job.sid, "event": "enqueued", "kind": job.kind.value,
                        "model": request.model.name, "video": info.to_json()})
        return Accepted(job.sid, timings.laps)

    def accept_batch(self, images: list[tuple[str, bytes]] | bytes,
                     request: JobRequest) -> Accepted:
        """Check, store and enqueue a batch: several images (file name, bytes), or a zip of
        them (a job of the long lane); its new sid."""
        self._check_room(request)
        timings = Stopwatch()
        limits = BatchLimits.of(self.settings)
        with self._decoding_slot():
            images = images_of_zip(images, limits) if isinstance(images, bytes) \
                else checked_images(images, limits)
            packed = pack(images)
        timings.lap("check")
        self.storage.reserve(4 * len(packed))  # the images, their drawings, COCO and CSV
        job = Job.batch(new_sid(), request.model.name, BatchOptions(
            request.threshold, request.classes, request.max_detections, request.tiles,
            len(images)))
        self._queue_stored(job, request, packed, self.records.store_batch, timings)
        log.info("enqueued %s (a batch of %d images, model %s)", job.sid, len(images),
                 request.model.name, extra={"sid": job.sid, "event": "enqueued",
                                            "kind": job.kind.value, "images": len(images),
                                            "model": request.model.name})
        return Accepted(job.sid, timings.laps)

    def _check_room(self, request: JobRequest) -> None:
        """Refuse an upload before decoding it: a full queue, a callback not allowed."""
        depth = self.queue.depth()
        if depth >= self.settings.max_queue:
            raise QueueFull(depth)
        if request.callback_url:
            self.callbacks.check(request.callback_url)

    def _queue_stored(self, job: Job, request: JobRequest, data: bytes, store,
                      timings: Stopwatch) -> None:
        """Store a long upload's bytes (``store``) and queue its job; on any failure, neither."""
        try:
            if request.callback_url:
                self.callbacks.register(job.sid, request.callback_url)
            store(job.sid, data)
            timings.lap("store")
            self.queue.enqueue(job, Upload(data, None))  # (RQ: its bytes travel with it)
            timings.lap("queue")
        except BaseException as error:
            self.records.discard_input(job.sid)
            self.callbacks.discard(job.sid)
            if isinstance(error, OSError) and error.errno in DISK_FULL:
                raise DiskFull("the server's disk is full; try again later") from None
            raise
        if request.callback_url:
            self.callbacks.follow(job.sid)
        self.ensure_daemon()

    def _store(self, upload: Upload, request: JobRequest, timings: Stopwatch) -> str:
        """Save the image and queue its job; on any failure, neither (or the job is cancelled:
        ``JobQueue.enqueuing``)."""
        sid = new_sid()
        job = Job.detect(sid, request.model.name, request.threshold, request.classes,
                         request.max_detections, request.tiles)
        try:
            if request.callback_url:
                self.callbacks.register(sid, request.callback_url)
            with self.queue.enqueuing(job, upload):
                timings.lap("queue")  # the spool's, before the block; others' after it
                png = encode_png(upload.pixels)
                timings.lap("encode")
                self.records.store_input(sid, png)
                timings.lap("store")
            timings.lap("queue")
        except BaseException as error:
            self.records.discard_input(sid)
            self.callbacks.discard(sid)
            if isinstance(error, OSError) and error.errno in DISK_FULL:
                raise DiskFull("the server's disk is full; try again later") from None
            raise
        if request.callback_url:
            self.callbacks.follow(sid)
        return sid

    def _make_room(self, target_bytes: int) -> PruneReport:
        return prune_storage(self.settings.uploads_dir, pending=self.queue.pending_sids(),
                             retention_hours=self.settings.retention_hours,
                             max_bytes=target_bytes)

    def _prune_periodically(self) -> None:
        while True:
            time.sleep(self.settings.prune_interval_seconds)
            try:
                self._make_room(self.settings.max_storage_bytes)
            except Exception:  # a failed pass (Redis down, say) must not end the next ones
                log.exception("pruning storage failed")

    def request_download(self, spec: ModelSpec) -> str | None:
        """Queue a job that downloads ``spec``'s weights (or follow the one queued already); its
        sid, or None when the model is installed."""
        if spec.available:
            return None
        if not spec.downloadable:
            raise NothingToDownload(
                f"model {spec.name!r} has no weights to download (mmdet's zoo publishes none "
                f"for its config): put its checkpoint at {spec.checkpoint}"
                if spec.backend == "mmdet" else
                f"model {spec.name!r} comes with its package: run the install command")
        pending = [job for job in self.queue.pending_jobs(JobKind.DOWNLOAD)
                   if job.model == spec.name]
        if pending:  # one download of a model at a time: a second ask follows the first
            return pending[0].sid
        job = Job.download(new_sid(), spec.name)
        self.enqueue_long_job(job, f"download of model {spec.name}")
        return job.sid

    def enqueue_long_job(self, job: Job, what: str, callback_url: str | None = None) -> None:
        """Queue a job that has no upload (a download, a training) and see that a daemon
        will run it; ``what`` it is, for the log; ``callback_url`` hears of its end."""
        try:
            if callback_url:
                self.callbacks.register(job.sid, callback_url)
            self.queue.enqueue(job)
        except BaseException as error:
            self.callbacks.discard(job.sid)
            if isinstance(error, OSError) and error.errno in DISK_FULL:
                raise DiskFull("the server's disk is full; try again later") from None
            raise
        if callback_url:
            self.callbacks.follow(job.sid)
        log.info("enqueued %s (%s)", job.sid, what, extra={
            "sid": job.sid, "event": "enqueued", "kind": job.kind.value, "model": job.model})
        self.ensure_daemon()

    def job_status(self, sid: str) -> JobStatus | None:
        """The job's status; a job that ended in the queue but not yet here (RQ) is collected
        into uploads/ first, the one step of a status read that writes."""
        if not SID_PATTERN.fullmatch(sid):
            return None
        status = self.queue.status(sid)
        if status is None:
            return None
        if status.state.finished:
            if not status.needs_collect:
                return status
            collected = self.queue.collect(status)  # RQ: its end recorded here, now
            if collected.state is JobState.DONE and collected.job.kind is JobKind.DETECT:
                keep_for_review(self.review, self.models.get(collected.job.model),
                                collected.result, self.records.input_path(sid))
            return collected
        self.ensure_daemon()  # a poll revives a dead daemon
        return status

    def is_finished(self, sid: str) -> bool:
        """Done or failed (reads only: a waiter asks often)."""
        return self.queue.is_finished(sid)

    def wait_for(self, sid: str, timeout: float) -> JobStatus | None:
        """The job's status once it is done or failed, or when ``timeout`` seconds have passed;
        at once when too many requests wait already."""
        with self.waiter.slot() as granted:
            if granted:
                self.waiter.wait(sid, timeout)
        return self.job_status(sid)

    def detect_now(self, data: bytes, job: JobRequest) -> JobStatus:
        """Accept an upload and wait for its result, up to ``settings.sync_timeout_seconds``."""
        with self.waiter.slot() as granted:
            if not granted:
                raise ServerBusy(f"{self.settings.max_waiting_requests} requests are waiting "
                                 f"for results already; try again in {ServerBusy.retry_after} s")
            sid = self.accept_upload(data, job).sid
            if not self.waiter.wait(sid, self.settings.sync_timeout_seconds):
                raise DetectionTimeout(
                    f"detection took longer than {self.settings.sync_timeout_seconds:g} s; "
                    f"the job goes on: GET /status/{sid}")
        status = self.job_status(sid)
        if status is None:
            raise JobGone(f"job {sid} finished but its files are gone (pruned)")
        return status


def includeme(config) -> None:
    """The app's one service, built from ``registry.detection_settings``; views and the security
    policy reach it as ``request.service``."""
    from pyramid.events import NewRequest
    from pyramid.request import Request, apply_request_extensions

    from .views import status_body

    service = DetectionService(config.registry.detection_settings)
    config.registry.service = service
    config.add_request_method(lambda request: request.registry.service, "service", reify=True)

    def describe(job_status: JobStatus) -> dict:
        """/status's answer, outside a request (what a callback posts)."""
        request = Request.blank("/")
        request.registry = config.registry
        apply_request_extensions(request)
        return status_body(request, job_status)

    service.callbacks.describe = describe
    # Deliveries a stopped web process left open go on once this one serves: web.py resumes
    # them when its port is bound; under another server, the first request does.
    config.add_subscriber(lambda event: service.callbacks.resume(), NewRequest)
