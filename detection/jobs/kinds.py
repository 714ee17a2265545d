"""What differs between kinds of job, outside the worker's handlers: how long one may run, what
its time limit's failure says, whether it reports progress, and what of its result /status shows.
"""
from __future__ import annotations

from ..models import ModelSpec, job_time_limit
from .job import Job, JobKind

# The result fields /status shows beside the job's own (the rest is in <sid>.json).
STATUS_FIELDS = {JobKind.DETECT: ("image", "detections", "timings"),
                 JobKind.DOWNLOAD: ("checkpoint", "bytes", "sha256", "timings")}
# Kinds that take long enough to say how far they are (a detection takes a fraction of a second).
REPORTS_PROGRESS = {JobKind.DOWNLOAD}


def time_limit(job: Job, models: dict[str, ModelSpec], settings) -> float:
    """How long ``job`` may run once its worker is ready for it (a model loaded, if it needs
    one): a detection its model's ``timeout_seconds``, else ``job_timeout_seconds``; a download
    ``download_timeout_seconds``."""
    if job.kind is JobKind.DOWNLOAD:
        return settings.download_timeout_seconds
    return job_time_limit(models, job.model, settings.job_timeout_seconds)


def over_time(job: Job, limit: float) -> str:
    """Why a job past its time limit failed."""
    if job.kind is JobKind.DOWNLOAD:
        return f"downloading model {job.model} took longer than {limit:g} s, the time limit"
    return f"detection took longer than {limit:g} s, the time limit for model {job.model}"
