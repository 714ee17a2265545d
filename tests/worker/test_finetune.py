"""Fine-tuning: your own classes from a COCO JSON, trained for real (YOLOX-Nano from the real
COCO checkpoint, a minute on 2 cores; RTMDet-Ins masks and the other box models from random
weights), then served by the running service by name."""
import io
import json
import os
import re

import numpy as np
import pytest
import requests
from PIL import Image

from detection.finetune import FinetuneError, check_dataset, finetune
from detection.finetune.dataset import training_files
from detection.jobs.locks import FileLock
from detection.settings import load_settings
from tests.random_weights import build_random_checkpoint
from tests.shapes import (
    CATEGORY_IDS,
    CLASSES,
    make_dataset,
    run_finetune,
    shape_mask,
    shapes_photo,
)
from tests.support import SHARED_CHECKPOINT, LiveServer, write_config

CONFIGS = {"rtmdet_tiny": "rtmdet/rtmdet_tiny_8xb32-300e_coco.py",
           "faster_rcnn_r50": "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
           "rtmdet_ins_tiny": "rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py",
           "mask_rcnn_r50": "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return make_dataset(root / "train", 60), make_dataset(root / "val", 20, seed=1)


def test_bad_datasets_are_refused_before_any_training(tmp_path, dataset):
    from pycocotools import mask as coco_mask
    train, _ = dataset
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(FinetuneError, match="not a COCO annotation file"):
        check_dataset(broken)
    document = json.loads(train.read_bytes())
    image, first = document["images"][0], document["annotations"][0]
    larger = coco_mask.encode(np.ones((400, 400), np.uint8, order="F"))  # 400x400, said 320
    category = document["categories"][0]
    boxes = {
        "no categories": {"categories": []},
        "appears twice": {"categories": [*document["categories"], {**category, "id": 99,
                                                                   "name": "CIRCLE"}]},
        "no commas": {"categories": [{**category, "name": "a, b"}]},
        "integer id and a name": {"categories": [{"name": "x"}]},
        "are missing": {"images": [*document["images"], {"id": 999, "file_name": "gone.png",
                                                         "width": 9, "height": 9}]},
        "image id 1 appears twice": {"images": [*document["images"], image]},
        "width and height": {"images": [{**image, "width": "320"}]},
        "is 320x320 pixels": {"images": [{**image, "width": 640}]},
        "no annotations": {"annotations": []},
        "outside its image": {"annotations": [{**first, "bbox": [300, 300, 50, 50]}]},
        "its bbox is": {"annotations": [{**first, "bbox": [1, 2, 3]}]},
        "no category has": {"annotations": [{**first, "category_id": 42}]},
        "no image has": {"annotations": [{**first, "image_id": "1"}]},
        "is not an object": {"annotations": [[1, 2]]},
        "no image has its image_id [1]": {"annotations": [{**first, "image_id": [1]}]},
        "its bbox is ": {"annotations": [{**first, "bbox": [10**400, 2, 3, 4]}]},
        "empty or outside": {"annotations": [{**first, "bbox": [1, 2, 0.5, 9]}]},
        "training reads": {"images": [{**image, "file_name": "shape.gif"}]},
        "not an image Pillow can read": {"images": [{**image, "file_name": "cut.png"}]},
        "(upright)": {"images": [{**image, "file_name": "turned.jpg"}]}}
    masks = {"no segmentation": {**first, "segmentation": []},
             "3 or more": {**first, "segmentation": [[1, 2, 3, 4]]},
             "polygon goes outside": {**first, "segmentation": [[0, 0, 400, 0, 0, 9]]},
             "RLE mask needs": {**first, "segmentation": {"size": [9, 9], "counts": "x"}},
             "RLE counts do not cover": {**first, "segmentation": {
                 "size": [320, 320], "counts": larger["counts"].decode()}},
             "RLE counts do not cover ": {**first, "segmentation": {
                 "size": [320, 320], "counts": [5, 7]}}}
    folder = train.parent
    Image.open(folder / image["file_name"]).save(folder / "shape.gif")
    (folder / "cut.png").write_bytes((folder / image["file_name"]).read_bytes()[:2000])
    turned = Image.open(folder / image["file_name"]).convert("RGB").resize((320, 240))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter: 240x320 upright
    turned.save(folder / "turned.jpg", exif=exif)
    cases = [(words, change, False) for words, change in boxes.items()] + [
        (words, {"annotations": [annotation]}, True) for words, annotation in masks.items()]
    for index, (words, change, need_masks) in enumerate(cases):
        path = train.parent / f"bad-{index}.json"
        path.write_text(json.dumps({**document, **change}))
        with pytest.raises(FinetuneError, match=re.escape(words.strip())):
            check_dataset(path, masks=need_masks)
    checked = check_dataset(train, masks=True)
    assert checked.classes == CLASSES  # the file's order, not its ids' (7, 3, 5)
    assert [a["id"] for a in checked.annotations] == list(range(1, len(document["annotations"])
                                                                + 1))


def test_labels_follow_the_files_category_order_in_training_and_evaluation(tmp_path, dataset):
    """mmdet numbers labels in the order the file lists its categories (ids 7, 3, 5 here): the
    training data gives each shape its class's name, and evaluation scores the truth as 1.0."""
    import torch
    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric
    train, val = dataset
    checked = check_dataset(train)
    train_path, val_path, _ = training_files(checked, check_dataset(val), tmp_path)
    kind_of = {tuple(a["bbox"]): CATEGORY_IDS.index(a["category_id"])
               for a in json.loads(train.read_bytes())["annotations"]}

    def loaded(path):
        data = CocoDataset(data_root=str(tmp_path), ann_file=path.name, data_prefix=dict(img=""),
                           metainfo=dict(classes=checked.classes), pipeline=[])
        return [data.get_data_info(i) for i in range(len(data))]
    for info in loaded(train_path):
        for instance in info["instances"]:
            x1, y1, x2, y2 = instance["bbox"]
            kind = kind_of[(x1, y1, x2 - x1, y2 - y1)]
            assert checked.classes[instance["bbox_label"]] == CLASSES[kind]
    metric = CocoMetric(ann_file=str(val_path), metric="bbox")
    metric.dataset_meta = dict(classes=checked.classes)
    truth = [dict(img_id=info["img_id"], ori_shape=(info["height"], info["width"]),
                  pred_instances=dict(
                      bboxes=torch.tensor([i["bbox"] for i in info["instances"]]),
                      scores=torch.ones(len(info["instances"])),
                      labels=torch.tensor([i["bbox_label"] for i in info["instances"]])))
             for info in loaded(val_path)]
    metric.process({}, truth)
    assert metric.evaluate(len(truth))["coco/bbox_mAP_50"] == 1.0


def test_bad_names_and_bases_are_refused_before_any_training(tmp_path, dataset, fake_checkpoint):
    train, val = dataset
    boxes_only = tmp_path / "boxes.json"
    document = json.loads(train.read_bytes())
    boxes_only.write_text(json.dumps({**document, "images": [
        {**image, "file_name": str(train.parent / image["file_name"])}
        for image in document["images"]], "annotations": [
        {k: v for k, v in a.items() if k != "segmentation"} for a in document["annotations"]]}))
    one_image = tmp_path / "one.json"
    one_image.write_text(json.dumps({**json.loads(boxes_only.read_bytes()), "images": [
        json.loads(boxes_only.read_bytes())["images"][0]], "annotations": [
        a for a in document["annotations"] if a["image_id"] == 1]}))
    reordered = val.parent / "reordered.json"
    reordered.write_text(json.dumps({**json.loads(val.read_bytes()), "categories": list(reversed(
        json.loads(val.read_bytes())["categories"]))}))
    ini = write_config(tmp_path, {"yolox_nano": fake_checkpoint,
                                  "rtmdet_ins_tiny": fake_checkpoint})
    settings = load_settings(ini)
    settings.checkpoints_dir.mkdir()
    registry = settings.models_file.read_bytes()
    cases = {"cannot name a model": ("../escape", "yolox_nano", train, None),
             "exists already": ("rtmdet_tiny", "yolox_nano", train, None),
             "no mmdet model 'nope'": ("mine", "nope", train, None),
             "has no weights": ("mine", "faster_rcnn_r50", train, None),
             "each box needs its polygons": ("mine", "rtmdet_ins_tiny", boxes_only, None),
             "one image cannot be both": ("mine", "yolox_nano", one_image, None),
             "in the same order": ("mine", "yolox_nano", train, reordered)}
    for words, (name, base, annotations, validation) in cases.items():
        with pytest.raises(FinetuneError, match=words):
            finetune(settings, name, base, annotations, validation, epochs=1, image_size=128)
    with pytest.raises(FinetuneError, match="epochs must be 1 to 1000"):
        finetune(settings, "mine", "yolox_nano", train, None, epochs=0, image_size=128)
    with pytest.raises(FinetuneError, match="the seed 0 to 4294967295"):
        finetune(settings, "mine", "yolox_nano", train, None, epochs=1, image_size=128, seed=-1)
    for budget in (0.0, -5.0, float("nan")):
        with pytest.raises(FinetuneError, match="the time budget more than 0 s"):
            finetune(settings, "mine", "yolox_nano", train, None, time_budget=budget)
    with FileLock(settings.checkpoints_dir / ".finetune.lock"):  # another one is running
        with pytest.raises(FinetuneError, match="another fine-tuning is running"):
            finetune(settings, "mine", "yolox_nano", train, None, epochs=1, image_size=128)
    assert settings.models_file.read_bytes() == registry
    assert [p.name for p in settings.checkpoints_dir.iterdir()] == [".finetune.lock"]
    refused = run_finetune(ini, "mine", "yolox_nano", tmp_path / "absent.json")
    assert refused.returncode == 1 and "finetune: " in refused.stderr
    assert "Traceback" not in refused.stderr


def test_registering_writes_toml_the_service_reads_whatever_the_class_names(tmp_path):
    from detection.finetune.training import register
    from detection.models import load_registry
    models = tmp_path / "models.toml"
    models.write_text('[yolox_nano]\nconfig = "yolox/yolox_nano_8xb8-300e_coco.py"')
    models.chmod(0o640)
    (tmp_path / "mine.py").write_text("")
    names = ["caf\u00e9", "\U0001f511 key", 'a "quoted" \\ name', "tab\there"]
    register(models, "mine", {"config": str(tmp_path / "mine.py"), "classes": names,
                              "masks": True, "validation_map50": {"bbox": 0.9, "segm": 0.8},
                              "hint": "fine-tuned"})
    spec = load_registry(models, tmp_path)["mine"]
    assert list(spec.classes) == names and spec.masks
    assert spec.describe()["validation_map50"] == {"bbox": 0.9, "segm": 0.8}
    assert models.stat().st_mode & 0o777 == 0o640  # replaced, with the mode it had


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
        measured = float(outcome.split("bbox mAP@0.5 ")[1].split(",")[0])
        assert measured >= 0.5, outcome
        # The validation curve, printed (the kept one marked) and plotted; AP per class.
        curve = run.stdout[run.stdout.index("validation: epoch"):].splitlines()
        assert sum("<- kept" in line for line in curve) == 1
        assert "AP per class: circle" in run.stdout
        assert "warning:" not in run.stdout
        checkpoints = load_settings(ini).checkpoints_dir
        assert Image.open(checkpoints / "shapes.curve.png").format == "PNG"
        # The running service offers it at once, with its classes and its mAP.
        listed = {m["name"]: m for m in requests.get(server.url + "/models",
                                                     timeout=10).json()["models"]}
        assert listed["shapes"]["classes"] == list(CLASSES) and listed["shapes"]["available"]
        assert listed["shapes"]["validation_map50"] == {"bbox": round(measured, 3)}
        assert f"bbox mAP@0.5 {measured:.2f}" in listed["shapes"]["hint"]
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
        listed = {m["name"]: m for m in requests.get(server.url + "/models",
                                                     timeout=10).json()["models"]}
        assert listed["shape_masks"]["masks"] and listed["shape_masks"]["classes"] == list(CLASSES)
        assert set(listed["shape_masks"]["validation_map50"]) == {"bbox", "segm"}
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
@pytest.mark.parametrize("base_name", ["rtmdet_tiny", "faster_rcnn_r50", "mask_rcnn_r50"])
def test_other_models_fine_tune_and_serve_their_classes(tmp_path, base_name):
    """A short run from random weights: the config each base needs is built, trained, saved and
    loaded by the service's detector with the new classes (learning is the YOLOX and RTMDet-Ins
    tests' job). A time budget spent by the first epoch stops it there, and the weak result
    comes with a warning."""
    from detection.models import load_registry
    from detection.worker.detectors import load_detector
    small = make_dataset(tmp_path / "small", 8, seed=2, size=(320, 240))
    base = build_random_checkpoint(CONFIGS[base_name], tmp_path / "base.pth")
    ini = write_config(tmp_path, {base_name: base})
    # 4:3 photos at 160 px are 160x120: padded to a multiple of 32 for the feature pyramid.
    run = run_finetune(ini, "mine", base_name, small, "--epochs", "2", "--time-budget", "0.001",
                       "--image-size", "160")
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = run.stdout.splitlines()[-1]
    assert "(1 of 2 epochs, the best at 1 kept)" in outcome
    measured = float(outcome.split("bbox mAP@0.5 ")[1].split(",")[0])  # of 2 images: may be 1
    assert ("warning: weak result: bbox mAP@0.5" in run.stdout) == (measured < 0.5)
    settings = load_settings(ini)
    spec = load_registry(settings.models_file, settings.checkpoints_dir)["mine"]
    masks = base_name == "mask_rcnn_r50"
    assert spec.classes == CLASSES and "bbox mAP@0.5" in spec.hint and spec.masks == masks
    served = spec.config.read_text()  # the model and its test pipeline, no training leftovers
    assert "finetune-" not in served and str(small.parent) not in served
    detector = load_detector(spec, "cpu", settings.runtime, settings.onnx_cache_dir)
    for size in ((320, 240), (240, 320)):
        photo = np.zeros((size[1], size[0], 3), np.uint8) + 128
        detections = detector.detect(photo, 0.0)
        assert detections and {d.label for d in detections} <= set(CLASSES)
        assert all((d.mask is not None) == masks for d in detections)
        assert not masks or detections[0].mask.full().shape == photo.shape[:2]
    assert not list(settings.checkpoints_dir.glob("finetune-*"))  # training's own folder


@pytest.mark.slow
def test_the_same_data_and_options_train_the_same_model(tmp_path):
    import torch
    small = make_dataset(tmp_path / "small", 8, seed=2)
    base = build_random_checkpoint(CONFIGS["rtmdet_tiny"], tmp_path / "base.pth")
    ini = write_config(tmp_path, {"rtmdet_tiny": base})
    for name, seed in (("first", "0"), ("second", "0"), ("third", "1")):
        run = run_finetune(ini, name, "rtmdet_tiny", small, "--epochs", "2", "--image-size", "128",
                           "--seed", seed)
        assert run.returncode == 0, run.stderr[-3000:]
    checkpoints = load_settings(ini).checkpoints_dir
    first, second, third = (torch.load(checkpoints / f"{name}.pth", weights_only=True)
                            ["state_dict"] for name in ("first", "second", "third"))
    assert first.keys() == second.keys() == third.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], third[key]) for key in first)  # another seed
    trained = torch.load(base, weights_only=True)["state_dict"]
    assert not torch.equal(first["backbone.stem.0.conv.weight"],
                           trained["backbone.stem.0.conv.weight"])  # it did train


def test_training_sees_only_the_device_the_settings_name(monkeypatch):
    from detection.finetune.training import _choose_device
    for setting, visible, seen in (("cpu", "0,1", ""), ("cuda:1", "2,3", "3"),
                                   ("cuda:1", None, "1"), ("auto", "0", "0")):
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        _choose_device(setting)
        assert os.environ.get("CUDA_VISIBLE_DEVICES") == seen, setting
