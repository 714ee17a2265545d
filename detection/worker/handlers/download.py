"""Download jobs: fetch a zoo model's weights into checkpoints/ (``zoo.download``: hash-checked,
written atomically), reporting the bytes as they come. One download of a model at a time: a
second job for it waits, then finds it installed."""
from __future__ import annotations

import hashlib
import time

from ...jobs.job import Job, Progress
from ...jobs.locks import FileLock
from ...jobs.records import DownloadResult, Outcome
from ...zoo import DownloadError, download
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
        spec.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(spec.checkpoint.with_name(f".{spec.checkpoint.name}.lock"))
        lock.acquire(blocking=True)  # another job downloading it: wait, then find it there
        try:
            if not spec.available:
                for stale in spec.checkpoint.parent.glob(f".{spec.checkpoint.name}.*.tmp"):
                    stale.unlink(missing_ok=True)  # a download killed half way (the lock is ours)
                work.report_progress(job, Progress(0.0, "connecting"))
                download(spec.weights_url, spec.checkpoint, progress=_reporter(job, work))
            work.report_progress(job, Progress(1.0, "checking"))
            size, digest = _measure(spec.checkpoint)
        except DownloadError as error:
            return Outcome.failed(str(error), error)
        finally:
            lock.release()
        return Outcome(result=DownloadResult(
            sid=job.sid, kind=job.kind.value, model=job.model, checkpoint=spec.checkpoint.name,
            bytes=size, sha256=digest,
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


def _measure(path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return path.stat().st_size, digest.hexdigest()
