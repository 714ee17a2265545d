"""What the web process does to teach a model: check and queue a training of a dataset (a job
of the long lane: one at a time per host, detections served meanwhile), and promote one of a
taught model's versions to be the one served (models.toml, re-read live)."""
from __future__ import annotations

import logging

from ..finetune.versions import NotTaught, Versions
from ..jobs.job import NAME, BadJob, Job, JobKind, JobStatus, TrainOptions, new_sid
from .forms import BadParameter

log = logging.getLogger(__name__)

MAX_PENDING_TRAININGS = 4  # each may run an hour: detections must not queue behind many


class CannotTrain(ValueError):
    """The dataset or the names asked for cannot make a training now (the message says why)."""


class CannotCancel(ValueError):
    """A training that has ended."""


class UnknownTraining(LookupError):
    pass


def versions_of(service) -> Versions:
    return Versions(service.settings.checkpoints_dir, service.settings.models_file)


def queue_training(service, options: TrainOptions, base: str,
                   callback_url: str | None = None) -> Job:
    """A training job of ``options`` from model ``base``, checked and queued (``callback_url``
    hears of its end)."""
    spec = service.models.get(base)
    if spec is None or spec.backend != "mmdet" or spec.masks:
        bases = sorted(n for n, s in service.models.items() if s.backend == "mmdet"
                       and not s.masks)
        raise CannotTrain(f"no mmdet model of boxes {base!r} to start from (datasets hold "
                          f"boxes, not masks); choose one of {bases}")
    if not spec.available:
        raise CannotTrain(f"the base model {base!r} is not installed (POST "
                          f"/models/{base}/download)")
    if not versions_of(service).is_taught(options.name):
        raise CannotTrain(f"model {options.name!r} exists and was not made by teaching; "
                          "choose another name")
    limit = service.settings.training_timeout_seconds
    if options.time_budget is not None and not options.time_budget < limit:
        raise BadParameter(f"time_budget must be under training_timeout_seconds ({limit:g} s), "
                           "the time a training may take")
    problem = service.datasets.training_problem(options.dataset)
    if problem:
        raise CannotTrain(problem)
    pending = service.queue.pending_jobs(JobKind.TRAIN)
    if any(job.options.name == options.name for job in pending):
        raise CannotTrain(f"a training of {options.name!r} is queued or running already: "
                          "cancel it (DELETE /training/SID) or wait for it")
    if len(pending) >= MAX_PENDING_TRAININGS:
        raise CannotTrain(f"{len(pending)} trainings are queued or running already (one runs "
                          "at a time); try again when one has ended")
    if callback_url:
        service.callbacks.check(callback_url)
    job = Job.train(new_sid(), base, options)
    service.enqueue_long_job(job, f"training {options.name} from {base} on dataset "
                                  f"{options.dataset}", callback_url)
    return job


def cancel_training(service, sid: str) -> JobStatus:
    """Stop training ``sid``: a queued one fails at once, a running one at its next look (its
    status says ``cancelling`` meanwhile); its status."""
    status = service.job_status(sid)
    if status is None or status.job.kind is not JobKind.TRAIN:
        raise UnknownTraining(f"no training with id {sid!r:.80}")
    if status.state.finished:
        raise CannotCancel(f"training {sid} has ended ({status.state.value}): nothing to cancel")
    service.queue.request_cancel(status.job, f"cancelled by DELETE /training/{sid}")
    log.info("cancelling %s", sid, extra={"sid": sid, "event": "cancelling"})
    return service.job_status(sid) or status


def training_options(body: dict) -> tuple[TrainOptions, str]:
    """``{"dataset", "base", "name", "epochs", "time_budget", "seed"}`` as a training's options
    and its base model, or a ``BadParameter`` that says which field is wrong."""
    for key in ("dataset", "base", "name"):
        if not isinstance(body.get(key), str) or not NAME.fullmatch(body[key]):
            raise BadParameter(f"{key} must be a name: 1 to 64 letters, digits, _ or -")
    fields = {"dataset": body["dataset"], "name": body["name"],
              "epochs": body.get("epochs"), "time_budget": body.get("time_budget"),
              "seed": body.get("seed", 0)}
    try:
        return TrainOptions.from_fields(fields), body["base"]
    except BadJob as error:
        raise BadParameter(str(error).replace("its ", "the ", 1)) from None


def promote(service, name: str, number: int) -> None:
    """Serve version ``number`` of taught model ``name`` as ``name``."""
    versions = versions_of(service)
    base = service.models.get(versions.info(name, number).get("base", ""))
    try:
        versions.promote(name, number, base)
    except NotTaught as error:
        raise CannotTrain(str(error)) from None
    log.info("promoted %s@%d", name, number, extra={"event": "promoted", "model": name})
