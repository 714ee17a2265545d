"""What the web process does with a request, apart from HTTP: accept uploads, report jobs."""
from __future__ import annotations

import json
import logging
import time
from typing import BinaryIO

from . import __version__
from .daemon import WorkerLauncher, worker_pid
from .images import BadImage, decode_image, save_png
from .jobs import SID_PATTERN, Job, JobState, JobStatus, QueueFull, SpoolQueue, new_sid
from .models import ModelSpec, UnknownModel, load_registry
from .settings import Settings

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """A configured model whose checkpoint is not installed on this server."""


class DetectionTimeout(TimeoutError):
    """A synchronous request's job did not finish in time (it goes on; poll its status)."""

    retry_after = 5


class DetectionService:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.models: dict[str, ModelSpec] = load_registry(settings.models_file,
                                                          settings.checkpoints_dir)
        if settings.default_model not in self.models:
            raise UnknownModel(f"the default model {settings.default_model!r} is not in "
                               f"{settings.models_file}")
        self.models[settings.default_model].require_checkpoint()
        for spec in self.models.values():
            if not spec.available:
                log.warning("model %s is unavailable: no checkpoint at %s (run: python "
                            "mmdetectionl.py download %s)", spec.name, spec.checkpoint, spec.name)
        self.queue = SpoolQueue.for_settings(settings)
        self.launcher = WorkerLauncher(settings.worker_lock_file, settings.config_file)
        if self.queue.depth():
            self.ensure_worker()  # jobs left from before a restart

    def ensure_worker(self) -> int | None:
        if not self.settings.spawn_worker:
            return worker_pid(self.settings.worker_lock_file)
        return self.launcher.ensure_running()

    def pick_model(self, name: str | None) -> ModelSpec:
        name = (name or "").strip() or self.settings.default_model
        if name not in self.models:
            raise UnknownModel(f"unknown model {name!r}; choose one of {sorted(self.models)}")
        spec = self.models[name]
        if not spec.available:
            raise ModelUnavailable(f"model {name!r} is not installed on this server (its checkpoint "
                                   f"is missing); installed: {self.installed_models()}")
        return spec

    def installed_models(self) -> list[str]:
        return sorted(name for name, spec in self.models.items() if spec.available)

    def accept_upload(self, stream: BinaryIO, model: ModelSpec, threshold: float) -> str:
        """Decode, store and enqueue an upload; return its new sid."""
        depth = self.queue.depth()
        if depth >= self.settings.max_queue:  # refuse before spending time on decoding
            raise QueueFull(depth)
        if not stream.read(1):
            raise BadImage("the file is empty")
        stream.seek(0)
        image = decode_image(stream, self.settings.max_pixels)
        sid = new_sid()
        save_png(image, self.queue.input_path(sid))
        try:
            self.queue.enqueue(Job.new(sid, model.name, threshold))
        except QueueFull:
            self.queue.input_path(sid).unlink(missing_ok=True)
            raise
        log.info("enqueued %s (%dx%d, model %s, threshold %s)",
                 sid, image.width, image.height, model.name, threshold)
        self.ensure_worker()
        return sid

    def job_status(self, sid: str) -> JobStatus | None:
        if not SID_PATTERN.fullmatch(sid):
            return None
        status = self.queue.status(sid)
        if status is not None and status.state in (JobState.QUEUED, JobState.RUNNING):
            self.ensure_worker()  # a poll revives a dead worker
        return status

    def wait_for(self, sid: str, timeout: float) -> JobStatus | None:
        """The job's status once it is done or failed, or when ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while not self.queue.is_finished(sid) and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.job_status(sid)

    def detect_now(self, sid: str) -> JobStatus:
        """Wait for a synchronous request's job, up to ``settings.sync_timeout_seconds``."""
        status = self.wait_for(sid, self.settings.sync_timeout_seconds)
        if status.state not in (JobState.DONE, JobState.FAILED):
            raise DetectionTimeout(
                f"detection took longer than {self.settings.sync_timeout_seconds:g} s; "
                f"the job goes on: GET /status/{sid}")
        return status

    def health(self) -> dict:
        pid = worker_pid(self.settings.worker_lock_file)
        worker = {"alive": pid is not None, "pid": pid}
        if pid is not None:
            try:
                worker.update(json.loads(self.settings.worker_state_file.read_bytes()))
            except (FileNotFoundError, ValueError):
                pass  # the worker is starting
            worker["pid"] = pid
        return {"status": "ok", "version": __version__, "worker": worker,
                "queue": {"depth": self.queue.depth(), "max": self.settings.max_queue},
                "models": {"default": self.settings.default_model,
                           "configured": sorted(self.models),
                           "available": self.installed_models(),
                           "loaded": worker.get("models_loaded", [])}}
