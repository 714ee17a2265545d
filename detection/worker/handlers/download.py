"""Download jobs: fetch a zoo model's weights into checkpoints/ (``zoo.install``: checked for
length and hash, written atomically, one download of a file at a time), reporting the bytes as
they come. A second job for the same model waits, then finds it installed."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

from ...jobs.job import Job, Progress
from ...jobs.records import DownloadResult, Outcome
from ...zoo import Downloaded, DownloadError, install
from . import Work

PROGRESS_EVERY_SECONDS = 0.5


class DownloadHandler:
    needs_model = False
    batches = False

    def run(self, jobs: list[Job], work: Work) -> list[Outcome]:
        return [self._download(job, work) for job in jobs]

    def _download(self, job: Job, work: Work) -> Outcome:
        spec = work.models.models_file.models.get(job.model)
        if spec is None:
            return Outcome.failed(f"unknown model {job.model!r}")
        if spec.backend != "mmdet":
            return Outcome.failed(f"model {job.model} has nothing to download: its weights come "
                                  "with its package")
        if not spec.available and not spec.weights_url:
            return Outcome.failed(f"mmdet's zoo publishes no checkpoint for model {job.model}; "
                                  f"put one at {spec.checkpoint}")
        started = time.perf_counter()
        try:
            work.report_progress(job, Progress(0.0, "connecting"))
            fetched = install(spec.weights_url, spec.checkpoint, progress=_reporter(job, work))
            if fetched is None:  # another job (or the command line) installed it meanwhile
                work.report_progress(job, Progress(1.0, "checking what is installed"))
                fetched = _measure(spec.checkpoint)
        except DownloadError as error:
            return Outcome.failed(str(error), error)
        return Outcome(result=DownloadResult(
            sid=job.sid, kind=job.kind.value, model=job.model, checkpoint=spec.checkpoint.name,
            bytes=fetched.bytes, sha256=fetched.sha256,
            timings={"download_ms": round((time.perf_counter() - started) * 1000, 1)}))


def _reporter(job: Job, work: Work):
    """A ``zoo.download`` progress callback that reports at most twice a second."""
    last = [0.0]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_SECONDS and done != total:
            return
        last[0] = now
        megabytes = f"{done / 2**20:.1f}" + (f" of {total / 2**20:.1f} MB" if total else " MB")
        work.report_progress(job, Progress(done / total if total else 0.0,
                                           f"downloading: {megabytes}"))
    return report


def _measure(path: Path) -> Downloaded:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return Downloaded(path, path.stat().st_size, digest.hexdigest())
