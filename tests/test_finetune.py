"""Fine-tuning: your own classes from a COCO JSON, trained for real (YOLOX-Nano from the real
COCO checkpoint, a minute on 2 cores; RTMDet-Ins masks and the other box models from random
weights), then served by the running service by name."""
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from detection.finetune import FinetuneError, check_dataset, finetune
from detection.jobs.locks import FileLock
from detection.settings import load_settings
from tests.random_weights import build_random_checkpoint
from tests.shapes import CLASSES, draw_shape, make_dataset, shape_mask
from tests.support import ROOT, SHARED_CHECKPOINT, LiveServer, write_config

CONFIGS = {"rtmdet_tiny": "rtmdet/rtmdet_tiny_8xb32-300e_coco.py",
           "faster_rcnn_r50": "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
           "rtmdet_ins_tiny": "rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return make_dataset(root / "train", 60), make_dataset(root / "val", 20, seed=1)


def run_finetune(ini, name, base, train, *options):
    return subprocess.run([sys.executable, "mmdetectionl.py", "--config", str(ini), "finetune",
                           name, "--base", base, "--train", str(train), *options],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)


def shapes_photo(kind: int, size: int = 320) -> bytes:
    """One shape (at 100, 90, 100 px wide) on plain grey."""
    image = Image.new("RGB", (size, size), (128, 128, 128))
    draw_shape(ImageDraw.Draw(image), kind, 100, 90, 100)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_datasets_are_refused_before_any_training(tmp_path, dataset):
    train, _ = dataset
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(FinetuneError, match="not a COCO annotation file"):
        check_dataset(broken)
    document = json.loads(train.read_bytes())
    first = document["annotations"][0]
    boxes = {"no categories": {**document, "categories": []},
             "are missing": {**document, "images": [
                 *document["images"], {"id": 999, "file_name": "gone.png", "width": 9,
                                       "height": 9}]},
             "outside its image": {**document, "annotations": [
                 {**first, "bbox": [300, 300, 50, 50]}]}}
    masks = {"no segmentation": {**first, "segmentation": []},
             "3 or more": {**first, "segmentation": [[1, 2, 3, 4]]},
             "polygon goes outside": {**first, "segmentation": [[0, 0, 400, 0, 0, 9]]},
             "RLE mask needs": {**first, "segmentation": {"size": [9, 9], "counts": "x"}}}
    cases = [(words, content, False) for words, content in boxes.items()] + [
        (words, {**document, "annotations": [annotation]}, True)
        for words, annotation in masks.items()]
    for index, (words, content, need_masks) in enumerate(cases):
        path = train.parent / f"bad-{index}.json"
        path.write_text(json.dumps(content))
        with pytest.raises(FinetuneError, match=words):
            check_dataset(path, masks=need_masks)
    assert check_dataset(train, masks=True).classes == CLASSES


def test_bad_names_and_bases_are_refused_before_any_training(tmp_path, dataset, fake_checkpoint):
    train, _ = dataset
    boxes_only = tmp_path / "boxes.json"
    document = json.loads(train.read_bytes())
    boxes_only.write_text(json.dumps({**document, "images": [
        {**image, "file_name": str(train.parent / image["file_name"])}
        for image in document["images"]], "annotations": [
        {k: v for k, v in a.items() if k != "segmentation"} for a in document["annotations"]]}))
    ini = write_config(tmp_path, {"yolox_nano": fake_checkpoint,
                                  "rtmdet_ins_tiny": fake_checkpoint})
    settings = load_settings(ini)
    settings.checkpoints_dir.mkdir()
    registry = settings.models_file.read_bytes()
    cases = {"cannot name a model": ("../escape", "yolox_nano", train),
             "exists already": ("rtmdet_tiny", "yolox_nano", train),
             "no mmdet model 'nope'": ("mine", "nope", train),
             "has no weights": ("mine", "faster_rcnn_r50", train),
             "each box needs its polygons": ("mine", "rtmdet_ins_tiny", boxes_only)}
    for words, (name, base, annotations) in cases.items():
        with pytest.raises(FinetuneError, match=words):
            finetune(settings, name, base, annotations, None, epochs=1, image_size=128)
    with pytest.raises(FinetuneError, match="epochs must be 1 to 1000"):
        finetune(settings, "mine", "yolox_nano", train, None, epochs=0, image_size=128)
    with FileLock(settings.checkpoints_dir / ".finetune.lock"):  # another one is running
        with pytest.raises(FinetuneError, match="another fine-tuning is running"):
            finetune(settings, "mine", "yolox_nano", train, None, epochs=1, image_size=128)
    assert settings.models_file.read_bytes() == registry
    assert [p.name for p in settings.checkpoints_dir.iterdir()] == [".finetune.lock"]
    refused = run_finetune(ini, "mine", "yolox_nano", tmp_path / "absent.json")
    assert refused.returncode == 1 and "finetune: " in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CHECKPOINT.is_file(), reason="the real YOLOX-Nano checkpoint is "
                    "on the development machines only")
def test_a_fine_tuned_model_learns_the_shapes_and_is_served_by_name(tmp_path, dataset):
    train, val = dataset
    ini = write_config(tmp_path, {"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano")
    server = LiveServer(ini).start()
    try:
        assert "shapes" not in requests.get(server.url + "/models", timeout=10).text
        run = run_finetune(ini, "shapes", "yolox_nano", train, "--val", str(val),
                           "--epochs", "20")
        assert run.returncode == 0, run.stderr[-3000:]
        assert "loss_cls" in run.stdout and "eta:" in run.stdout  # progress as it trains
        outcome = run.stdout.splitlines()[-1]
        measured = float(outcome.split("bbox mAP@0.5 ")[1].split()[0])
        assert measured >= 0.5, outcome
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
        again = run_finetune(ini, "shapes", "yolox_nano", train)
        assert again.returncode != 0 and "exists already" in again.stderr
    finally:
        server.stop()
        server.kill_worker()


@pytest.mark.slow
def test_a_fine_tuned_mask_model_draws_and_returns_the_shapes_masks(tmp_path, dataset):
    """RTMDet-Ins from random weights: a short training is enough for masks where the shapes
    are, drawn and returned as COCO RLE by the service."""
    from pycocotools import mask as coco_mask
    train, _ = dataset
    base = build_random_checkpoint(CONFIGS["rtmdet_ins_tiny"], tmp_path / "base.pth")
    ini = write_config(tmp_path, {"rtmdet_ins_tiny": base}, default_model="rtmdet_ins_tiny")
    run = run_finetune(ini, "shape_masks", "rtmdet_ins_tiny", train, "--epochs", "20",
                       "--image-size", "160")  # validation split off the training set
    assert run.returncode == 0, run.stderr[-3000:]
    assert "segm mAP@0.5" in run.stdout.splitlines()[-1]
    server = LiveServer(ini).start()
    try:
        for kind in range(len(CLASSES)):  # labels are the YOLOX test's (too short a run here)
            photo = shapes_photo(kind)
            sid = server.upload(photo, model="shape_masks", threshold="0.2").json()["sid"]
            status = server.wait_until_finished(sid)
            assert status["state"] == "done" and status["detections"], status
            best = status["detections"][0]
            truth = shape_mask(kind, 100, 90, 100, (320, 320))
            found = coco_mask.decode(best["mask"]).astype(bool)
            assert best["label"] in CLASSES
            assert (found & truth).sum() / (found | truth).sum() >= 0.5
            drawn = np.asarray(Image.open(io.BytesIO(requests.get(
                f"{server.url}/uploads/{sid}.out.png", timeout=10).content)).convert("RGB"))
            plain = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
            tinted = np.abs(drawn.astype(int) - plain)[truth & found].sum(axis=1) > 10
            assert tinted.mean() > 0.9  # the mask is drawn over the shape
    finally:
        server.stop()
        server.kill_worker()


@pytest.mark.slow
@pytest.mark.parametrize("base_name", ["rtmdet_tiny", "faster_rcnn_r50"])
def test_other_box_models_fine_tune_and_serve_their_classes(tmp_path, dataset, base_name):
    """A short run from random weights: the config each base needs is built, trained, saved and
    loaded by the service's detector with the new classes (learning is YOLOX's test's job)."""
    from detection.models import load_registry
    from detection.worker.detector import load_detector
    small = make_dataset(tmp_path / "small", 8, seed=2)
    base = build_random_checkpoint(CONFIGS[base_name], tmp_path / "base.pth")
    ini = write_config(tmp_path, {base_name: base})
    run = run_finetune(ini, "mine", base_name, small, "--epochs", "1", "--image-size", "128")
    assert run.returncode == 0, run.stderr[-3000:]
    settings = load_settings(ini)
    spec = load_registry(settings.models_file, settings.checkpoints_dir)["mine"]
    assert spec.classes == CLASSES and "bbox mAP@0.5" in spec.hint
    detector = load_detector(spec, "cpu")
    photo = np.asarray(Image.open(io.BytesIO(shapes_photo(0))).convert("RGB"))
    detections = detector.detect(photo, 0.0)
    assert detections and {d.label for d in detections} <= set(CLASSES)
    assert sorted(p.name for p in settings.checkpoints_dir.iterdir()) == [
        ".finetune.lock", "mine.pth", "mine.py"]  # the training's own folder is gone
