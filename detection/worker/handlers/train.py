"""Training jobs: a new version ``NAME@K`` of a taught model, fine-tuned from the job's model on
a snapshot of a dataset (``finetune.train_model``), reporting its epoch, loss and ETA; then it
and the served version are scored on the dataset's held-out images, and it is promoted when
``auto_promote`` is on, it scores better and its training gave no warning (weak, or cut short).
It trains beside detection jobs at a lower priority; its time budget counts the CPU it got.
Nothing served changes unless it is promoted; a training that fails leaves no version.

The snapshot is taken when the job starts, under the dataset's lock (``DatasetStore.snapshot``):
a dataset changed while it trains changes nothing. Both versions are scored by the same
``evaluate`` on the same images.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from ...datasets.store import (
    HELD_OUT,
    TRAIN,
    DatasetLimits,
    DatasetNotFound,
    DatasetNotReady,
    DatasetStore,
)
from ...finetune.dataset import FinetuneError
from ...finetune.schedule import DEFAULT_TIME_BUDGET
from ...finetune.training import WORK_PREFIX, evaluate, one_at_a_time, train_model
from ...finetune.versions import NotTaught, UnknownVersion, Versions
from ...jobs.errors import JobCancelled
from ...jobs.job import Job, Progress
from ...jobs.records import Outcome, TrainResult
from ...settings import Settings
from . import Work


class TrainHandler:
    needs_model = False
    batches = False

    def run(self, jobs: list[Job], work: Work) -> list[Outcome]:
        return [self._train(job, work) for job in jobs]

    def _train(self, job: Job, work: Work) -> Outcome:
        settings: Settings = work.models.settings
        options = job.options
        versions = Versions(settings.checkpoints_dir, settings.models_file)
        base = work.models.models_file.models.get(job.model)
        if base is None or base.backend != "mmdet" or not base.available or base.masks:
            return Outcome.failed(f"the base model {job.model!r} is not an installed mmdet "
                                  "model of boxes (datasets hold boxes, not masks)")
        if not versions.is_taught(options.name):
            return Outcome.failed(f"model {options.name!r} exists and was not made by teaching; "
                                  "choose another name")
        started = time.perf_counter()
        try:
            with one_at_a_time(settings):
                snapshot = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}snapshot-",
                                                 dir=settings.checkpoints_dir))
                try:
                    return self._train_on(job, work, settings, versions, base, snapshot, started)
                finally:
                    shutil.rmtree(snapshot, ignore_errors=True)
        except FinetuneError as error:
            return Outcome.failed(str(error), error)
        except JobCancelled as reason:
            return Outcome.failed(f"{reason}; the served model is unchanged")

    def _train_on(self, job: Job, work: Work, settings: Settings, versions: Versions, base,
                  snapshot: Path, started: float) -> Outcome:
        options = job.options
        work.report_progress(job, Progress(0.0, f"taking a snapshot of dataset {options.dataset}"))
        store = DatasetStore(settings.datasets_dir, DatasetLimits.of(settings))
        try:
            classes, files, digest = store.snapshot(options.dataset, snapshot)
        except (DatasetNotFound, DatasetNotReady) as error:
            raise FinetuneError(str(error)) from None
        if reason := work.cancelled(job):
            raise JobCancelled(reason)
        number = versions.new_number(options.name)
        made = versions.files(options.name, number)
        version = f"{options.name}@{number}"
        held_out = files[HELD_OUT]
        try:
            trained = train_model(
                settings, version, base, files[TRAIN], held_out, made.weights, made.config,
                options.epochs, seed=options.seed, time_budget=training_budget(options),
                progress=lambda fraction, stage, details: work.report_progress(
                    job, Progress(fraction, stage, details)),
                cancelled=lambda: work.cancelled(job), shared=True)
            # Both scored the same way on the same images: the saved weights, as served (the
            # training's own number is its best validation, which chose the weights).
            work.report_progress(job, Progress(0.99, "scoring it and the served version"))
            metrics = evaluate(settings, made.config, made.weights, held_out, trained.classes)
            served = self._served_scores(settings, versions, options.name, trained.classes,
                                         held_out)
            versions.record(options.name, number, {
                "base": base.name, "dataset": options.dataset, "snapshot": digest,
                "seed": options.seed, "classes": list(trained.classes),
                "images": trained.images, "epochs": list(trained.epochs), "metrics": metrics,
                "curve": [list(point) for point in trained.curve], "warning": trained.warning,
                "served_then": served, "created": time.time(), "job": job.sid})
        except BaseException:
            versions.forget(options.name, number)
            raise
        warning = trained.warning  # weak, or cut short: promoted by hand only
        promoted = settings.auto_promote and not warning and self._better(
            versions, options.name, metrics, served)
        if promoted:
            try:
                versions.promote(options.name, number, base)
            except (NotTaught, UnknownVersion) as error:  # changed by hand meanwhile
                promoted, warning = False, f"not promoted: {error}"
        return Outcome(result=TrainResult(
            sid=job.sid, kind=job.kind.value, model=job.model, version=version, metrics=metrics,
            served=served, promoted=promoted, warning=warning,
            timings={"train_ms": round(trained.seconds * 1000, 1),
                     "total_ms": round((time.perf_counter() - started) * 1000, 1)}))

    @staticmethod
    def _better(versions: Versions, name: str, metrics: dict, served: dict | None) -> bool:
        """Whether to serve the new version (auto_promote): none is served yet, or it scores
        better than the served one; never when they cannot be compared (other classes)."""
        if served is None:
            return versions.served(name) is None
        return metrics["bbox_map50"] > served["bbox_map50"]

    @staticmethod
    def _served_scores(settings: Settings, versions: Versions, name: str,
                       classes: tuple[str, ...], held_out: Path) -> dict | None:
        """The served version's scores on the same held-out images (None: none is served, or
        it knows other classes)."""
        number = versions.served(name)
        if number is None:
            return None
        info = versions.info(name, number)
        if tuple(info.get("classes", ())) != classes:
            return None
        files = versions.files(name, number)
        return {"version": f"{name}@{number}",
                **evaluate(settings, files.config, files.weights, held_out, classes)}


def training_budget(options) -> float | None:
    """A training's time budget: the default when none was given, none when 0."""
    if options.time_budget is None:
        return DEFAULT_TIME_BUDGET
    return options.time_budget or None
