"""Training as a job of the long lane, run by a spool worker: a dataset's snapshot fine-tuned
(the real YOLOX-Nano COCO checkpoint, a few epochs on 2 cores) into version NAME@1, progress
reported as it goes, promoted through the API; a second version scored against the served one
on the same held-out images and promoted by ``auto_promote`` only if better; a dataset that
cannot be trained on, or a version lost to a failure, leaves nothing served changed."""
import json
import shutil

import pytest
import webtest

from detection.datasets.store import DatasetLimits, DatasetStore
from detection.jobs.job import Job, JobState, TrainOptions, new_sid
from detection.jobs.kinds import LONG_LANE
from detection.models import load_registry
from detection.settings import load_settings
from detection.worker.spool_worker import SpoolWorker
from tests.shapes import CATEGORY_IDS, CLASSES, make_dataset
from tests.support import SHARED_CHECKPOINT, app_for, write_config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SHARED_CHECKPOINT.is_file(),
                                 reason="needs the real YOLOX-Nano checkpoint in ../shared")]


def fill_dataset(settings, directory, images: int) -> DatasetStore:
    """The tests' shapes as dataset ``shapes`` of the service."""
    annotations = json.loads(make_dataset(directory, images).read_bytes())
    store = DatasetStore(settings.datasets_dir, DatasetLimits.of(settings))
    store.create("shapes", list(CLASSES))
    names = dict(zip(CATEGORY_IDS, CLASSES))
    for entry in annotations["images"]:
        boxes = [{"label": names[a["category_id"]],
                  "box": [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                          a["bbox"][1] + a["bbox"][3]]}
                 for a in annotations["annotations"] if a["image_id"] == entry["id"]]
        store.add_image("shapes", (directory / entry["file_name"]).read_bytes(),
                        entry["width"], entry["height"], boxes)
    return store


def run_training(ini, **options) -> tuple[dict, list]:
    """Queue a training of dataset ``shapes`` into model ``shapes`` and run it in a long-lane
    worker; its status and the progress it reported."""
    settings = load_settings(ini)
    worker = SpoolWorker(settings, lane=LONG_LANE)
    reported = []
    write_progress = worker.records.write_progress
    worker.records.write_progress = lambda sid, p: (reported.append(p), write_progress(sid, p))
    job = Job.train(new_sid(), "yolox_nano", TrainOptions("shapes", "shapes", **options))
    worker.queue.enqueue(job)
    worker.run_jobs([worker.queue.claim_next(LONG_LANE.kinds)])
    status = worker.queue.status(job.sid)
    worker.slot_lock.release()
    return status, reported


def test_a_training_job_makes_a_version_that_is_served_once_promoted(tmp_path):
    ini = write_config(tmp_path, {"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano",
                       spawn_worker="false")
    settings = load_settings(ini)
    fill_dataset(settings, tmp_path / "shapes", 20)
    models_before = settings.models_file.read_text()
    status, reported = run_training(ini, epochs=4, time_budget=120)
    assert status.state is JobState.DONE, status.error
    result = status.result
    assert result["version"] == "shapes@1" and result["served"] is None
    assert result["promoted"] is False and 0 <= result["metrics"]["bbox_map50"] <= 1
    json.dumps(result, allow_nan=False)  # a class with no held-out box scores None, not nan
    assert settings.models_file.read_text() == models_before, "nothing served changes"
    trained = [p for p in reported if "epoch" in p.details]
    assert trained, "the training said how far it was"
    fractions = [p.fraction for p in trained]
    assert fractions == sorted(fractions) and fractions[-1] <= 0.99
    assert {"epoch", "epochs_planned", "loss", "eta_seconds"} <= set(trained[-1].details)

    app = webtest.TestApp(app_for(ini))
    versions = app.get("/models/shapes").json["versions"]
    assert [(v["version"], v["served"]) for v in versions] == [("shapes@1", False)]
    assert versions[0]["dataset"] == "shapes" and versions[0]["base"] == "yolox_nano"
    app.post_json("/models/shapes/promote", {"version": 2}, status=404)
    promoted = app.post_json("/models/shapes/promote", {"version": 1}).json
    assert promoted["served"] == "shapes@1" and promoted["versions"][0]["served"] is True
    spec = load_registry(settings.models_file, settings.checkpoints_dir)["shapes"]
    assert spec.classes == CLASSES and spec.checkpoint.is_file()
    assert "shapes" in [m["name"] for m in app.get("/models").json["models"]]

    # A second version is scored against the served one on the same held-out images, and
    # auto_promote serves it only if it does better.
    ini.write_text(ini.read_text().replace("[app:main]",
                                           "[app:main]\ndetection.auto_promote = true"))
    status, _ = run_training(ini, epochs=1, time_budget=60, seed=1)
    assert status.state is JobState.DONE, status.error
    second = status.result
    assert second["version"] == "shapes@2" and second["served"]["version"] == "shapes@1"
    better = second["metrics"]["bbox_map50"] > second["served"]["bbox_map50"]
    promoted = better and not second["warning"]  # a weak or cut-short one: by hand only
    assert second["promoted"] is promoted
    served = app.get("/models/shapes").json["versions"]
    assert [v["served"] for v in served] == [not promoted, promoted]


def test_a_running_training_cancelled_by_a_client_stops_and_leaves_no_version(tmp_path):
    ini = write_config(tmp_path, {"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano",
                       spawn_worker="false")
    settings = load_settings(ini)
    fill_dataset(settings, tmp_path / "shapes", 10)
    worker = SpoolWorker(settings, lane=LONG_LANE)
    job = Job.train(new_sid(), "yolox_nano", TrainOptions("shapes", "shapes", time_budget=300))
    worker.queue.enqueue(job)
    write_progress = worker.records.write_progress

    def cancel_once_training(sid, progress):  # a client's DELETE, as the first epoch runs
        write_progress(sid, progress)
        if "epoch" in progress.details:
            worker.queue.request_cancel(job, "cancelled by DELETE /training/" + sid)
    worker.records.write_progress = cancel_once_training
    worker.run_jobs([worker.queue.claim_next(LONG_LANE.kinds)])
    worker.slot_lock.release()
    status = worker.queue.status(job.sid)
    assert status.state is JobState.FAILED and status.error.startswith("cancelled by DELETE")
    versions = settings.checkpoints_dir / "versions" / "shapes"
    assert not list(versions.glob("*.json")) and not list(versions.glob("*.pth"))
    assert not (settings.spool_dir / "cancel" / job.sid).exists()
    assert "shapes" not in load_registry(settings.models_file, settings.checkpoints_dir)


def test_a_dataset_that_cannot_be_trained_on_fails_the_job_and_leaves_no_version(tmp_path):
    ini = write_config(tmp_path, {"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano",
                       spawn_worker="false")
    settings = load_settings(ini)
    store = fill_dataset(settings, tmp_path / "shapes", 4)  # no held-out image yet
    assert store.summary("shapes")["split"]["held_out"] == 0
    status, _ = run_training(ini, epochs=1)
    assert status.state is JobState.FAILED and "held-out image" in status.error
    assert not (settings.checkpoints_dir / "versions" / "shapes").exists() or not list(
        (settings.checkpoints_dir / "versions" / "shapes").glob("*.pth"))
    assert "shapes" not in load_registry(settings.models_file, settings.checkpoints_dir)


def test_the_command_line_imports_trains_promotes_and_exports(tmp_path):
    import subprocess
    import sys

    from tests.support import ROOT
    ini = write_config(tmp_path, {"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano")

    def command(*arguments) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "mmdetectionl.py", "--config", str(ini),
                               *arguments], cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
    annotations = make_dataset(tmp_path / "shapes", 10)
    imported = command("dataset", "import", "shapes", str(annotations))
    assert imported.returncode == 0, imported.stderr
    assert "10 images added" in imported.stdout
    assert "shapes" in command("dataset", "list").stdout
    assert command("dataset", "import", "shapes").returncode == 2  # no path
    trained = command("train", "shapes", "--dataset", "shapes", "--base", "yolox_nano",
                      "--epochs", "1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads(trained.stdout)["version"] == "shapes@1"
    assert "epoch 1 of 1" in trained.stderr
    assert command("promote", "shapes", "2").returncode == 1
    promoted = command("promote", "shapes", "1")
    assert promoted.returncode == 0 and "serving shapes@1" in promoted.stdout
    settings = load_settings(ini)
    assert "shapes" in load_registry(settings.models_file, settings.checkpoints_dir)
    exported = command("dataset", "export", "shapes", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    archive = shutil.make_archive(str(tmp_path / "shapes"), "zip", tmp_path / "out")
    again = command("dataset", "import", "copy", archive)  # the export, zipped, comes back
    assert again.returncode == 0 and "copy: 10 images added" in again.stdout, again.stderr
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    original = json.loads(annotations.read_text())
    assert len(coco["images"]) == 10 and len(coco["annotations"]) == len(
        original["annotations"])
    assert all((tmp_path / "out" / image["file_name"]).is_file() for image in coco["images"])


def test_a_write_refused_while_weights_are_saved_fails_the_run_and_leaves_nothing(tmp_path):
    """The kernel refuses to write any file past 1.5 MB (RLIMIT_FSIZE, in a worker process of
    its own), as a disk that fills up refuses writes: the first weights saved (~7 MB) fail,
    the job fails with the reason, and no version, no half-written file and no change to
    models.toml is left."""
    import subprocess
    import sys

    from tests.support import ROOT
    ini = write_config(tmp_path, {"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano",
                       spawn_worker="false")
    settings = load_settings(ini)
    fill_dataset(settings, tmp_path / "shapes", 5)
    models_before = settings.models_file.read_text()
    script = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write: an error, not a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))
from tests.worker.test_training_jobs import run_training
status, _ = run_training({str(ini)!r}, epochs=1, time_budget=60)
print(status.state.value, status.error)
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    state, reason = run.stdout.strip().splitlines()[-1].split(" ", 1)
    assert state == "failed" and "the train failed" in reason, reason
    assert "File too large" in reason or "write" in reason, reason
    assert settings.models_file.read_text() == models_before
    left = sorted(p.relative_to(settings.checkpoints_dir)
                  for p in settings.checkpoints_dir.rglob("*") if p.is_file())
    assert all(path.name.startswith(".") and path.name.endswith(".lock") for path in left), left
