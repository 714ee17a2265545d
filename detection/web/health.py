"""What the web process tells of the service: /health (the daemon's or RQ's workers, the queue,
storage, models) and /health/ready (whether the default model can be served now, and why not)."""
from __future__ import annotations

from .. import __version__
from ..daemon_state import read_daemon_state
from ..jobs.errors import QueueUnavailable
from ..jobs.locks import holder_pid
from ..settings import Settings
from .launcher import heartbeat_age
from .service import DetectionService


def worker_status(service: DetectionService) -> dict:
    """/health's ``worker``: RQ's workers (on any host), or the local daemon's."""
    return _rq_workers(service) if service.settings.queue == "rq" else _daemon(service.settings)


def health(service: DetectionService) -> dict:
    """/health: the daemon's (or RQ's) workers, the queue, storage and models."""
    worker = worker_status(service)
    return {"status": "ok", "version": __version__, "worker": worker,
            "queue": {"backend": service.settings.queue, "depth": service.queue.depth(),
                      "max": service.settings.max_queue},
            "storage": {"bytes": service.storage.estimated_bytes,
                        "max_bytes": service.settings.max_storage_bytes},
            "models": {"default": service.settings.default_model,
                       "configured": sorted(service.models),
                       "available": service.installed_models(),
                       "loaded": worker.get("models_loaded", [])}}


def readiness(service: DetectionService) -> dict:
    """Whether the default model can be served now (``ready``), and if not, why."""
    name = service.settings.default_model
    reasons = []
    if not service.models[name].available:
        reasons.append(f"the default model {name} is not installed (run: python "
                       f"mmdetectionl.py download {name})")
    try:
        if (depth := service.queue.depth()) >= service.settings.max_queue:
            reasons.append(f"the queue is full ({depth} jobs)")
        worker = worker_status(service)
    except QueueUnavailable as error:
        reasons.append(str(error))
        worker = {"alive": False}
    if worker.get("unusable"):
        reasons.append(worker["unusable"])
    if service.settings.queue == "rq" and not worker["alive"]:
        reasons.append("no RQ worker is connected to the queue")
    elif not worker["alive"] and not service.settings.spawn_worker:
        reasons.append("no detection daemon runs (spawn_worker = false: start "
                       "mmdetectionl.py worker)")
    return {"ready": not reasons, "reasons": reasons, "default_model": name,
            "worker_alive": worker["alive"],
            "model_loaded": (None if service.settings.queue == "rq"  # RQ workers do not say
                             else name in worker.get("models_loaded", []))}


def _rq_workers(service: DetectionService) -> dict:
    workers = service.queue.workers()
    return {"alive": bool(workers), "workers": workers}


def _daemon(settings: Settings) -> dict:
    """The local daemon: alive by its heartbeat, and what it published of its workers."""
    pid = holder_pid(settings.daemon_lock_file)
    worker = {"alive": False, "pid": pid}
    if pid is not None:
        state = read_daemon_state(settings.daemon_state_file)
        if state is not None and state.pid == pid:
            worker.update(state.health_fields())
        age = heartbeat_age(settings.daemon_lock_file)
        worker["heartbeat_age_seconds"] = round(age, 1)
        worker["alive"] = age <= settings.heartbeat_timeout_seconds
    return worker
