"""Training jobs: a new version ``NAME@K`` of a taught model, fine-tuned from the job's model on
a snapshot of a dataset (``finetune.train_model``), reporting its epoch, loss and ETA; then it
and the served version are scored on the dataset's held-out images, and it is promoted when
``auto_promote`` is on and it scores better. Nothing served changes unless it is promoted; a
training that fails leaves no version.

The snapshot is taken when the job starts: the dataset's images as they are then (hard links, or
copies), and COCO files of its two splits; a dataset changed while it trains changes nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ...datasets.store import HELD_OUT, TRAIN, DatasetLimits, DatasetStore
from ...finetune.dataset import FinetuneError
from ...finetune.schedule import DEFAULT_TIME_BUDGET
from ...finetune.training import WORK_PREFIX, evaluate, one_at_a_time, train_model
from ...finetune.versions import Versions, served_table
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
        if base is None or base.backend != "mmdet" or not base.available:
            return Outcome.failed(f"the base model {job.model!r} is not an installed mmdet model")
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
        classes, train, held_out, digest = take_snapshot(store, options.dataset, snapshot)
        if reason := work.cancelled(job):
            raise JobCancelled(reason)
        number = versions.new_number(options.name)
        files = versions.files(options.name, number)
        version = f"{options.name}@{number}"
        try:
            trained = train_model(
                settings, version, base, train, held_out, files.weights, files.config,
                options.epochs, seed=options.seed,
                time_budget=options.time_budget or DEFAULT_TIME_BUDGET,
                progress=lambda fraction, stage, details: work.report_progress(
                    job, Progress(fraction, stage, details)),
                cancelled=lambda: work.cancelled(job))
            work.report_progress(job, Progress(0.99, "scoring the served version"))
            metrics = {"bbox_map50": trained.map50["bbox"], "bbox_map": trained.map,
                       "per_class": {c: round(ap, 3) for c, ap in trained.per_class.items()}}
            served = self._served_scores(settings, versions, options.name, classes, held_out)
            versions.record(options.name, number, {
                "base": base.name, "dataset": options.dataset, "snapshot": digest,
                "seed": options.seed, "classes": list(classes), "images": trained.images,
                "epochs": list(trained.epochs), "metrics": metrics, "served_then": served,
                "created": time.time(), "job": job.sid})
        except BaseException:
            versions.forget(options.name, number)
            raise
        promoted = settings.auto_promote and (
            served is None or metrics["bbox_map50"] > served["bbox_map50"])
        if promoted:
            versions.promote(options.name, number, served_table(base, trained.images, metrics))
        return Outcome(result=TrainResult(
            sid=job.sid, kind=job.kind.value, model=job.model, version=version, metrics=metrics,
            served=served, promoted=promoted, warning=trained.warning,
            timings={"train_ms": round(trained.seconds * 1000, 1),
                     "total_ms": round((time.perf_counter() - started) * 1000, 1)}))

    @staticmethod
    def _served_scores(settings: Settings, versions: Versions, name: str,
                       classes: tuple[str, ...], held_out: Path) -> dict | None:
        """The served version's scores on the same held-out images (None: none is served, or
        it knows other classes)."""
        number = versions.served(name)
        if number is None:
            return None
        info = json.loads(versions.files(name, number).record.read_bytes())
        if tuple(info.get("classes", ())) != classes:
            return None
        files = versions.files(name, number)
        return {"version": f"{name}@{number}",
                **evaluate(settings, files.config, files.weights, held_out, classes)}


def take_snapshot(store: DatasetStore, name: str,
                  folder: Path) -> tuple[tuple[str, ...], Path, Path, str]:
    """The dataset's classes, its training and held-out COCO files in ``folder`` (the images
    beside them), and a digest of both."""
    problem = store.training_problem(name)
    if problem:
        raise FinetuneError(problem)
    classes = tuple(store.summary(name)["classes"])
    digest = hashlib.sha256()
    paths = []
    for split in (TRAIN, HELD_OUT):
        coco = store.coco(name, lambda image: str(folder / f"{image.id}.png"), split)
        for entry in coco["images"]:
            copy = Path(entry["file_name"])
            source = store.image_file(name, copy.stem)
            try:
                os.link(source, copy)
            except OSError:  # another file system
                shutil.copyfile(source, copy)
        text = json.dumps(coco, sort_keys=True)
        digest.update(text.encode())
        path = folder / f"{split}.json"
        path.write_text(text)
        paths.append(path)
    return classes, paths[0], paths[1], digest.hexdigest()[:12]
