"""Fine-tuning: your own classes from a COCO JSON, trained for real (YOLOX-Nano from the real
COCO checkpoint, a minute on 2 cores), then served by the running service by name."""
import io
import json
import subprocess
import sys

import pytest
import requests
from PIL import Image, ImageDraw

from detection.finetune import DatasetError, check_dataset
from tests.shapes import CLASSES, draw_shape, make_dataset
from tests.support import ROOT, SHARED_CHECKPOINT, LiveServer, write_config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return make_dataset(root / "train", 60), make_dataset(root / "val", 20, seed=1)


def test_bad_datasets_are_refused_before_any_training(tmp_path, dataset):
    train, _ = dataset
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DatasetError, match="not a COCO annotation file"):
        check_dataset(broken)
    document = json.loads(train.read_bytes())
    cases = {"no categories": {**document, "categories": []},
             "are missing": {**document, "images": [
                 *document["images"], {"id": 999, "file_name": "gone.png", "width": 9,
                                       "height": 9}]},
             "outside its image": {**document, "annotations": [
                 {**document["annotations"][0], "bbox": [300, 300, 50, 50]}]}}
    for words, content in cases.items():
        path = train.parent / f"bad-{len(words)}.json"
        path.write_text(json.dumps(content))
        with pytest.raises(DatasetError, match=words):
            check_dataset(path)
    assert check_dataset(train).classes == CLASSES


def shapes_photo(kind: int) -> bytes:
    image = Image.new("RGB", (320, 320), (128, 128, 128))
    draw_shape(ImageDraw.Draw(image), kind, 100, 90, 100)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CHECKPOINT.is_file(), reason="the real YOLOX-Nano checkpoint is "
                    "on the development machines only")
def test_a_fine_tuned_model_learns_the_shapes_and_is_served_by_name(tmp_path, dataset):
    train, val = dataset
    ini = write_config(tmp_path, {"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano")
    (tmp_path / "checkpoints").mkdir()
    server = LiveServer(ini).start()
    try:
        assert "shapes" not in requests.get(server.url + "/models", timeout=10).text
        run = subprocess.run([sys.executable, "mmdetectionl.py", "--config", str(ini),
                              "finetune", "shapes", "--base", "yolox_nano", "--train", str(train),
                              "--val", str(val), "--epochs", "20"],
                             cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        measured = float(run.stdout.split("bbox mAP@0.5 ")[1].split()[0])
        assert measured >= 0.5, run.stdout
        # The running service offers it at once, with its classes and its mAP.
        listed = {m["name"]: m for m in requests.get(server.url + "/models",
                                                     timeout=10).json()["models"]}
        assert listed["shapes"]["classes"] == list(CLASSES) and listed["shapes"]["available"]
        assert f"{measured:.2f}" in listed["shapes"]["hint"]
        for kind, label in enumerate(CLASSES):
            sid = server.upload(shapes_photo(kind), model="shapes", threshold="0.3").json()["sid"]
            status = server.wait_until_finished(sid)
            assert status["state"] == "done" and status["detections"], status
            assert status["detections"][0]["label"] == label
        answer = requests.post(server.url + "/v1/vision/custom/shapes",
                               files={"image": shapes_photo(1)}, timeout=60).json()
        assert answer["success"] and answer["predictions"][0]["label"] == "square"
        again = subprocess.run([sys.executable, "mmdetectionl.py", "--config", str(ini),
                                "finetune", "shapes", "--base", "yolox_nano", "--train",
                                str(train)], cwd=ROOT, capture_output=True, text=True)
        assert again.returncode != 0 and "exists already" in again.stderr
    finally:
        server.stop()
        server.kill_worker()
