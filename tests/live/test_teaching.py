"""Teaching the live service through its HTTP API only, as a user's script would: a dataset of
the tests' shapes (saved image by image), a training from the real YOLOX-Nano COCO checkpoint as
a job whose progress moves, the version compared and promoted, then the taught model found by
the DeepStack route in an image it was not trained on; and a training whose worker is killed
ends failed with the reason, leaving nothing served changed."""
import json
import signal
import time

import psutil
import pytest
import requests

from tests.oracle import iou
from tests.shapes import CATEGORY_IDS, CLASSES, make_dataset, save_dataset
from tests.support import SHARED_CHECKPOINT

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SHARED_CHECKPOINT.is_file(),
                                 reason="needs the real YOLOX-Nano checkpoint in ../shared")]


def start_training(server, **options) -> str:
    accepted = requests.post(f"{server.url}/training", json={
        "dataset": "shapes", "base": "yolox_nano", "name": "shapes", **options}, timeout=30)
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["status_url"]


def test_a_model_is_taught_compared_promoted_and_served_through_the_api(live_server, tmp_path):
    server = live_server({"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano")
    save_dataset(server.url, tmp_path / "shapes", 60)
    status_url = server.url + start_training(server, time_budget=150)
    seen, plotted, deadline = [], [], time.monotonic() + 600
    while time.monotonic() < deadline:
        status = requests.get(status_url, timeout=30).json()
        if status["state"] in ("done", "failed"):
            break
        if "epoch" in status:
            seen.append((status["progress"], status["epoch"], status["loss"],
                         status["eta_seconds"], status["epochs_planned"]))
            plotted.append((status["losses"], status["validations"]))
        time.sleep(1)
    assert status["state"] == "done", status
    assert len(seen) >= 3 and seen[-1][0] > seen[0][0] and seen[-1][1] >= seen[0][1]
    losses, validations = plotted[-1]  # what the page plots: [iteration, loss], [epoch, mAP@0.5]
    assert len(losses) > len(plotted[0][0]) and all(len(pair) == 2 for pair in losses)
    assert [i for i, _ in losses] == sorted(i for i, _ in losses) and validations
    assert status["version"] == "shapes@1" and status["served"] is None
    assert status["promoted"] is False and status["progress"] == 1.0
    unpromoted = requests.post(f"{server.url}/v1/vision/custom/shapes", files={"image": (
        "a.png", (tmp_path / "shapes" / "000.png").read_bytes())}, timeout=60)
    assert unpromoted.status_code == 404, "not served before it is promoted"
    promoted = requests.post(f"{server.url}/models/shapes/promote", json={"version": 1},
                             timeout=30)
    assert promoted.status_code == 200 and promoted.json()["served"] == "shapes@1"

    unseen = json.loads(make_dataset(tmp_path / "unseen", 3, seed=5).read_bytes())
    names = dict(zip(CATEGORY_IDS, CLASSES))
    found = 0
    for entry in unseen["images"]:
        answer = requests.post(f"{server.url}/v1/vision/custom/shapes", files={"image": (
            "a.png", (tmp_path / "unseen" / entry["file_name"]).read_bytes())},
            data={"min_confidence": "0.1"}, timeout=120).json()
        assert answer["success"] is True, answer
        for truth in (a for a in unseen["annotations"] if a["image_id"] == entry["id"]):
            x, y, w, h = truth["bbox"]
            found += any(p["label"] == names[truth["category_id"]] and iou(
                [p["x_min"], p["y_min"], p["x_max"], p["y_max"]], [x, y, x + w, y + h]) > 0.5
                for p in answer["predictions"])
    assert found >= 1, "the taught model finds shapes it was not trained on"


def test_a_training_whose_worker_is_killed_fails_with_the_reason_and_changes_nothing(
        live_server, tmp_path):
    server = live_server({"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano")
    save_dataset(server.url, tmp_path / "shapes", 12)
    models_before = server.models_file.read_text()
    status_url = server.url + start_training(server, time_budget=300)
    deadline = time.monotonic() + 300
    while "epoch" not in (status := requests.get(status_url, timeout=30).json()):
        assert status["state"] in ("queued", "running") and time.monotonic() < deadline, status
        time.sleep(0.5)
    trainers = [p for p in psutil.Process(server.worker_pid()).children()
                if "long" in p.cmdline()]
    assert len(trainers) == 1
    trainers[0].send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 120
    while (status := requests.get(status_url, timeout=30).json())["state"] == "running":
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert status["state"] == "failed" and "worker died" in status["error"], status
    assert server.models_file.read_text() == models_before
    assert requests.get(f"{server.url}/models/shapes", timeout=30).status_code == 404
    detected = server.upload((tmp_path / "shapes" / "000.png").read_bytes(), threshold="0.3")
    assert server.wait_until_finished(detected.json()["sid"])["state"] == "done"
