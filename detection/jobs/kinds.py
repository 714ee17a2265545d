"""What differs between kinds of job, outside the worker's handlers: the lane its workers take it
from, how long one may run, what its time limit's failure says, whether it reports progress, and
what of its result /status shows.

Lanes keep detections flowing while long jobs run: the daemon's detection slots take only
detections; long jobs (downloads, trainings) have a slot of their own, started when one waits
and gone when none does, so that one runs at a time on a host; RQ has a queue per lane.
"""
from __future__ import annotations

from typing import NamedTuple

from ..models import ModelSpec, job_time_limit
from .job import MAX_ATTEMPTS, Job, JobKind


class Lane(NamedTuple):
    name: str
    kinds: frozenset[JobKind]
    on_demand: bool  # its worker starts when a job waits, and leaves when none does
    niceness: int = 0  # its workers' CPU priority (higher: lower), so that detections go first


DETECT_LANE = Lane("detect", frozenset({JobKind.DETECT}), on_demand=False)
LONG_LANE = Lane("long", frozenset({JobKind.DOWNLOAD, JobKind.TRAIN, JobKind.VIDEO,
                                   JobKind.BATCH}),
                 on_demand=True, niceness=10)
LANES = {lane.name: lane for lane in (DETECT_LANE, LONG_LANE)}


def lane_of(kind: JobKind) -> Lane:
    return next(lane for lane in LANES.values() if kind in lane.kinds)


# The result fields /status shows beside the job's own (the rest is in <sid>.json).
STATUS_FIELDS = {JobKind.DETECT: ("image", "detections", "tiles", "timings"),
                 JobKind.DOWNLOAD: ("checkpoint", "bytes", "sha256", "timings"),
                 JobKind.TRAIN: ("version", "metrics", "served", "promoted", "warning",
                                 "timings"),
                 JobKind.VIDEO: ("video", "frames", "counts", "tracks", "tracks_total", "timings"),
                 JobKind.BATCH: ("images", "counts", "failed", "timings")}
# Kinds that take long enough to say how far they are (a detection takes a fraction of a second).
REPORTS_PROGRESS = {JobKind.DOWNLOAD, JobKind.TRAIN, JobKind.VIDEO, JobKind.BATCH}


def max_attempts(kind: JobKind) -> int:
    """How many times a job runs whose worker dies: a training that far along is not started
    again (it fails with the reason; the served model is as it was)."""
    return 1 if kind is JobKind.TRAIN else MAX_ATTEMPTS


def time_limit(job: Job, models: dict[str, ModelSpec], settings) -> float:
    """How long ``job`` may run once its worker is ready for it (a model loaded, if it needs
    one): a detection its model's ``timeout_seconds``, else ``job_timeout_seconds``; a download
    ``download_timeout_seconds``; a training ``training_timeout_seconds``."""
    if job.kind is JobKind.DOWNLOAD:
        return settings.download_timeout_seconds
    if job.kind is JobKind.TRAIN:
        return settings.training_timeout_seconds
    if job.kind is JobKind.VIDEO:
        return settings.video_timeout_seconds
    if job.kind is JobKind.BATCH:
        return settings.batch_timeout_seconds
    spec = models.get(job.model)
    grid = job.options.tiles or (spec.tiles if spec is not None else 1)
    # A tiled detection runs the model on the whole image and on each tile
    return job_time_limit(models, job.model, settings.job_timeout_seconds) * (
        grid * grid + 1 if grid > 1 else 1)


def over_time(job: Job, limit: float) -> str:
    """Why a job past its time limit failed."""
    if job.kind is JobKind.DOWNLOAD:
        return f"downloading model {job.model} took longer than {limit:g} s, the time limit"
    if job.kind is JobKind.TRAIN:
        return (f"training {job.options.name} took longer than {limit:g} s, the time limit "
                "(training_timeout_seconds); the served model is unchanged")
    if job.kind is JobKind.VIDEO:
        return f"the video took longer than {limit:g} s, the time limit (video_timeout_seconds)"
    if job.kind is JobKind.BATCH:
        return f"the batch took longer than {limit:g} s, the time limit (batch_timeout_seconds)"
    return f"detection took longer than {limit:g} s, the time limit for model {job.model}"
