"""The worker with real models from random-weights checkpoints: results, the oracle, failures."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from detection.jobs.job import Job, JobState, new_sid
from detection.jobs.spool import SpoolQueue
from detection.settings import parse_settings
from detection.worker.detectors.runtime_choice import ONE_TORCH_THREAD
from detection.worker.spool_worker import SpoolWorker
from tests.oracle import assert_same_detections
from tests.random_weights import build_random_checkpoint
from tests.support import png_bytes

pytestmark = pytest.mark.slow


@pytest.fixture
def worker(make_config, rtmdet_checkpoint):
    from pyramid.paster import get_appsettings
    ini = make_config({"rtmdet_tiny": rtmdet_checkpoint})
    return SpoolWorker(parse_settings(get_appsettings(str(ini)), str(ini)))


def enqueue_only(queue: SpoolQueue, image: bytes, threshold=0.0, model="rtmdet_tiny") -> Job:
    job = Job.detect(new_sid(), model, threshold, max_detections=1000)  # all: mmdet keeps 300
    queue.records.files.input(job.sid).write_bytes(image)
    queue.enqueue(job)
    return job


def enqueue(queue: SpoolQueue, image: bytes, threshold=0.0, model="rtmdet_tiny") -> Job:
    """Queue a job and claim it, as the worker would."""
    enqueue_only(queue, image, threshold, model)
    return queue.claim_next()


def test_a_job_ends_with_a_drawn_png_and_its_json(worker):
    job = enqueue(worker.queue, png_bytes(size=(500, 375)), threshold=0.0)
    worker.run_jobs([job])
    status = worker.queue.status(job.sid)
    assert status.state is JobState.DONE
    document = json.loads(worker.queue.records.files.result(job.sid).read_bytes())
    assert document["image"] == {"width": 500, "height": 375}
    assert document["model"] == "rtmdet_tiny" and document["threshold"] == 0.0
    detections = document["detections"]
    assert detections, "a random model at threshold 0 still proposes boxes"
    scores = [d["score"] for d in detections]
    assert scores == sorted(scores, reverse=True)
    for d in detections:
        x1, y1, x2, y2 = d["bbox"]
        assert 0 <= x1 <= x2 <= 500 and 0 <= y1 <= y2 <= 375
        assert set(d) == {"label", "class_id", "score", "bbox"}
    assert set(document["timings"]) >= {"inference_ms", "draw_ms", "write_ms"}
    drawn = Image.open(worker.queue.records.files.output(job.sid))
    assert drawn.size == (500, 375)
    assert drawn.tobytes() != Image.open(worker.queue.records.files.input(job.sid)).convert("RGB").tobytes()


def test_the_threshold_filters(worker):
    low = enqueue(worker.queue, png_bytes(), threshold=0.0)
    worker.run_jobs([low])
    scores = [d["score"] for d in worker.queue.status(low.sid).result["detections"]]
    cut = float(np.median(scores))
    high = enqueue(worker.queue, png_bytes(), threshold=cut)
    worker.run_jobs([high])
    kept = worker.queue.status(high.sid).result["detections"]
    assert kept and len(kept) < len(scores) and min(d["score"] for d in kept) >= cut - 1e-4


def test_oracle_detections_equal_mmdet_inference_detector(worker, rtmdet_checkpoint):
    """The service's boxes, in original-image pixels, equal mmdet's own API on the stored PNG."""
    from mmdet.apis import inference_detector, init_detector
    job = enqueue(worker.queue, png_bytes(size=(800, 450), format="JPEG"), threshold=0.05)
    worker.run_jobs([job])
    ours = worker.queue.status(job.sid).result["detections"]
    spec = worker.models.models_file.models["rtmdet_tiny"]
    model = init_detector(str(spec.config), str(rtmdet_checkpoint), device="cpu")
    instances = inference_detector(model, str(worker.queue.records.files.input(job.sid))).pred_instances
    instances = instances[instances.scores >= 0.05]
    instances.bboxes[:, 0::2] = instances.bboxes[:, 0::2].clamp(0, 800)  # the service clips
    instances.bboxes[:, 1::2] = instances.bboxes[:, 1::2].clamp(0, 450)  # to the image
    order = instances.scores.argsort(descending=True, stable=True)
    # Labels by class id, as models.toml names them (checkpoints may spell "baseball_bat").
    theirs = [(spec.classes[int(instances.labels[i])], float(instances.scores[i]),
               instances.bboxes[i].tolist()) for i in order]
    assert len(ours) == len(theirs) > 0
    assert_same_detections(ours, theirs)


def test_a_batch_gives_each_job_what_it_alone_gets_and_a_bad_upload_fails_alone(worker):
    """What a worker on a GPU does (gpu_batch_size), here on the CPU: the waiting jobs of one
    model, oldest first, through one pass of the network."""
    first, second = (png_bytes(size=(480, 360), color=color) for color in ((40, 120, 200),
                                                                           (200, 90, 30)))
    batch = [enqueue_only(worker.queue, first), enqueue_only(worker.queue, b"not a png"),
             enqueue_only(worker.queue, b"other model", model="faster_rcnn_r50"),
             enqueue_only(worker.queue, second)]
    jobs = worker.queue.claim_batch(4)
    assert [job.sid for job in jobs] == [batch[0].sid, batch[1].sid, batch[3].sid]
    model = worker.models.get("rtmdet_tiny").model
    passes, extract_feat = [], model.extract_feat
    model.extract_feat = lambda inputs: passes.append(inputs.shape[0]) or extract_feat(inputs)
    worker.run_jobs(jobs)
    model.extract_feat = extract_feat
    assert passes == [2]  # the two readable images, in one pass of the network
    states = [worker.queue.status(job.sid) for job in jobs]
    assert [s.state for s in states] == [JobState.DONE, JobState.FAILED, JobState.DONE]
    assert "detection failed" in states[1].error
    assert worker.queue.status(batch[2].sid).state is JobState.QUEUED  # left for its own turn
    assert [job.sid for job in worker.queue.claim_batch(4)] == [batch[2].sid]
    for data, together in ((first, states[0]), (second, states[2])):
        alone = enqueue(worker.queue, data, threshold=0.0)
        worker.run_jobs([alone])
        theirs = [(d["label"], d["score"], d["bbox"])
                  for d in worker.queue.status(alone.sid).result["detections"]]
        assert len(together.result["detections"]) == len(theirs) > 0
        assert_same_detections(together.result["detections"], theirs, box_tolerance=0.01)


def test_a_batch_that_fails_is_retried_job_by_job_so_only_the_bad_one_fails(worker,
                                                                           monkeypatch):
    from detection.worker.handlers import detect
    good, bad = (enqueue_only(worker.queue, png_bytes(size=(160 + 40 * i, 120)))
                 for i in range(2))
    real = detect.detect_images

    def fragile(jobs, pixels, models, read_ms):  # fails whenever the bad job is in it
        if any(job.sid == bad.sid for job in jobs):
            raise RuntimeError("this image breaks the model")
        return real(jobs, pixels, models, read_ms)
    monkeypatch.setattr(detect, "detect_images", fragile)
    worker.run_jobs(worker.queue.claim_batch(2))
    assert worker.queue.status(good.sid).state is JobState.DONE
    failed = worker.queue.status(bad.sid)
    assert failed.state is JobState.FAILED and "breaks the model" in failed.error


def test_a_job_gets_only_its_classes_and_at_most_its_count_of_the_best(worker):
    def run(classes=(), max_detections=1000) -> dict:
        job = Job.detect(new_sid(), "rtmdet_tiny", 0.0, classes, max_detections)
        worker.queue.records.files.input(job.sid).write_bytes(png_bytes())
        worker.queue.enqueue(job)
        worker.run_jobs([worker.queue.claim_next()])
        return worker.queue.status(job.sid).result
    everything = run()["detections"]
    label = everything[-1]["label"]
    result = run((label,), 3)
    assert result["classes"] == [label] and result["max_detections"] == 3
    assert result["detections"] == [d for d in everything if d["label"] == label][:3]


def test_a_missing_checkpoint_fails_the_job_naming_the_download_command(worker):
    job = enqueue(worker.queue, png_bytes(), model="faster_rcnn_r50")
    worker.run_jobs([job])
    status = worker.queue.status(job.sid)
    assert status.state is JobState.FAILED
    assert "python mmdetectionl.py download faster_rcnn_r50" in status.error


def test_an_unreadable_stored_image_fails_the_job_with_a_reason(worker):
    job = enqueue(worker.queue, b"this was never a png")
    worker.run_jobs([job])
    status = worker.queue.status(job.sid)
    assert status.state is JobState.FAILED and "detection failed" in status.error
    assert not worker.queue.records.files.output(job.sid).exists()


def test_models_stay_warm_within_the_count_bound_until_their_table_changes(worker):
    cache = worker.models
    cache.max_models = 1
    first = cache.get("rtmdet_tiny")
    assert cache.get("rtmdet_tiny") is first and cache.loaded == {"rtmdet_tiny": "onnxruntime"}
    models_file = cache.settings.models_file
    models_file.write_text(models_file.read_text().replace("fastest", "quickest", 1))
    again = cache.get("rtmdet_tiny")
    assert again is not first and again.spec.hint.startswith("quickest")


def test_instance_masks_are_drawn_and_encoded(make_config, checkpoints_dir, rtmdet_checkpoint):
    from pycocotools import mask as coco_mask
    from pyramid.paster import get_appsettings
    masks = build_random_checkpoint("rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py",
                                    checkpoints_dir / "rtmdet_ins_random.pth")
    ini = make_config({"rtmdet_tiny": rtmdet_checkpoint, "rtmdet_ins_tiny": masks})
    worker = SpoolWorker(parse_settings(get_appsettings(str(ini)), str(ini)))
    job = enqueue(worker.queue, png_bytes(size=(320, 240)), threshold=0.0, model="rtmdet_ins_tiny")
    worker.run_jobs([job])
    detections = worker.queue.status(job.sid).result["detections"]
    assert detections and all("mask" in d for d in detections)
    decoded = coco_mask.decode({"size": detections[0]["mask"]["size"],
                                "counts": detections[0]["mask"]["counts"].encode()})
    assert decoded.shape == (240, 320)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_instance_masks_equal_mmdet_inference_detector_pixel_for_pixel(
        make_config, checkpoints_dir, rtmdet_checkpoint, tmp_path, runtime):
    """The masks thresholded on their logits (no full-size sigmoid) are mmdet's own, on an image
    that its pipeline scales up (both of the head's upsamplings run), also where ONNX Runtime
    runs the network, the mask head's convolutions included."""
    from mmdet.apis import inference_detector, init_detector
    from pyramid.paster import get_appsettings
    from detection.models import load_registry
    from detection.worker.detectors.mmdet_detector import MMDetDetector
    checkpoint = build_random_checkpoint("rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py",
                                         checkpoints_dir / "rtmdet_ins_random.pth")
    ini = make_config({"rtmdet_tiny": rtmdet_checkpoint, "rtmdet_ins_tiny": checkpoint})
    settings = parse_settings(get_appsettings(str(ini)), str(ini))
    spec = load_registry(settings.models_file, settings.checkpoints_dir)["rtmdet_ins_tiny"]
    image = np.asarray(Image.open(io.BytesIO(png_bytes(size=(300, 200)))).convert("RGB"))
    detector = MMDetDetector(spec, "cpu", runtime, cache_dir=tmp_path / "onnx")
    assert detector.runtime == runtime
    ours = detector.detect(image, 0.0)
    model = init_detector(str(spec.config), str(checkpoint), device="cpu")
    theirs = inference_detector(model, image[:, :, ::-1].copy()).pred_instances
    order = theirs.scores.argsort(descending=True, stable=True)
    assert len(ours) == len(theirs) > 0
    for detection, i in zip(ours, order.tolist()):
        mask = detection.mask.full()
        if runtime == "torch":
            assert detection.score == pytest.approx(float(theirs.scores[i]), abs=1e-6)
            assert np.array_equal(mask, theirs.masks[i].numpy())
        else:  # ONNX Runtime's float order: a logit at the threshold may fall either way,
            # and detections of (nearly) equal score may come in another order
            alike = [j for j in order.tolist() if theirs.labels[j] == detection.class_id
                     and abs(float(theirs.scores[j]) - detection.score) <= 1e-4]
            differing = min(np.count_nonzero(mask != theirs.masks[j].numpy()) for j in alike)
            assert differing <= 0.01 * max(np.count_nonzero(mask), 100)


def test_onnxruntime_runs_a_one_stage_detectors_head_too(worker, monkeypatch):
    """RTMDet's head convolutions run in ONNX Runtime with the backbone (none in PyTorch);
    mmdet's post-processing runs once per image, on their outputs."""
    import torch
    detector = worker.models.get("rtmdet_tiny")
    assert detector.runtime == "onnxruntime"
    head, convolutions = detector.model.bbox_head, []
    for module in head.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda *_: convolutions.append(1))
    post_processed, predict_by_feat = [], head.predict_by_feat
    monkeypatch.setattr(head, "predict_by_feat", lambda *outputs, **kwargs: post_processed.append(
        [len(levels) for levels in outputs]) or predict_by_feat(*outputs, **kwargs))
    image = np.asarray(Image.new("RGB", (320, 240), (90, 140, 60)))
    assert detector.detect(image, 0.0)
    assert convolutions == [] and post_processed == [[3, 3]]  # scores, boxes: 3 levels each


def test_a_network_the_exporter_cannot_trace_falls_back_to_pytorch(worker, monkeypatch, tmp_path):
    from detection.worker.detectors import onnx_network
    from detection.worker.detectors.mmdet_detector import MMDetDetector

    def cannot_trace(model, path):
        raise RuntimeError("an operation the exporter does not know")
    monkeypatch.setattr(onnx_network, "_export", cannot_trace)
    spec = worker.models.models_file.models["rtmdet_tiny"]
    detector = MMDetDetector(spec, "cpu", runtime="auto", cache_dir=tmp_path / "onnx")
    assert detector.runtime == "torch"
    assert detector.detect(np.asarray(Image.new("RGB", (320, 240), (90, 140, 60))), 0.0)


def test_a_detection_cancelled_while_it_ran_fails_with_the_reason(worker):
    """Its upload could not be stored after it was queued (``SpoolQueue.enqueuing``): the
    worker, which cannot stop a detection midway, fails it rather than recording it."""
    job = enqueue(worker.queue, png_bytes(size=(200, 150)), threshold=0.3)
    worker.queue.request_cancel(job, "its upload could not be stored")
    worker.run_jobs([job])
    status = worker.queue.status(job.sid)
    assert status.state is JobState.FAILED and "could not be stored" in status.error
    files = worker.queue.records.files
    assert not files.output(job.sid).exists() and not files.result(job.sid).exists()
    assert worker.queue.cancel_requested(job.sid) is None and worker.queue.depth() == 0


def test_an_export_that_fails_the_check_falls_back_to_pytorch(worker, monkeypatch, tmp_path):
    from detection.worker.detectors import onnx_network
    from detection.worker.detectors.mmdet_detector import MMDetDetector
    monkeypatch.setattr(onnx_network, "RELATIVE_TOLERANCE", -1.0)  # nothing can pass
    spec = worker.models.models_file.models["rtmdet_tiny"]
    detector = MMDetDetector(spec, "cpu", runtime="onnxruntime", cache_dir=tmp_path / "onnx")
    assert detector.runtime == "torch"
    image = np.asarray(Image.new("RGB", (320, 240), (90, 140, 60)))
    assert detector.detect(image, 0.0), "the PyTorch model is intact after the export"


@pytest.mark.parametrize("faster", ["torch", "onnxruntime", ONE_TORCH_THREAD])
def test_auto_keeps_the_runtime_timed_faster_here_and_times_once_per_machine(
        worker, monkeypatch, tmp_path, faster):
    """Which runtime is faster depends on the model and the machine: auto times each on the
    whole detection (here with a stand-in clock, so that the choice is the test's), a one-stage
    detector on ONNX Runtime also with one PyTorch thread, and keeps the timings beside the
    export for the next load."""
    import torch
    from detection.worker.detectors import runtime_choice
    from detection.worker.detectors.mmdet_detector import MMDetDetector
    spec = worker.models.models_file.models["rtmdet_tiny"]
    timed = []

    def median_ms(detect, image):  # the real detection runs; its time is the test's
        detect(image)
        timed.append(during.pop())
        candidate = ("torch", "onnxruntime", ONE_TORCH_THREAD)[len(timed) - 1]
        return 100.0 if candidate == faster else 150.0
    monkeypatch.setattr(runtime_choice, "median_ms", median_ms)
    during, detections = [], MMDetDetector._detections  # PyTorch's threads as detect ends
    monkeypatch.setattr(MMDetDetector, "_detections", lambda *args: during.append(
        torch.get_num_threads()) or detections(*args))
    cache = tmp_path / "onnx"
    threads = torch.get_num_threads()
    detector = MMDetDetector(spec, "cpu", runtime="auto", cache_dir=cache)
    assert timed == [threads, threads, 1] and torch.get_num_threads() == threads
    assert detector.runtime == faster
    assert set(detector.runtime_ms) == {"torch", "onnxruntime", ONE_TORCH_THREAD}
    image = np.asarray(Image.new("RGB", (320, 240), (90, 140, 60)))
    assert detector.detect(image, 0.0), "the model chosen detects (its outputs were checked)"
    assert during == [1 if faster == ONE_TORCH_THREAD else threads]
    assert torch.get_num_threads() == threads, "the process's threads are as they were"
    torch_only = MMDetDetector(spec, "cpu", runtime="torch", cache_dir=cache)
    assert torch_only.runtime_ms == {} and torch_only.runtime == "torch"
    again = MMDetDetector(spec, "cpu", runtime="auto", cache_dir=cache)
    assert len(timed) == 3, "timed once on this machine"
    assert again.runtime == faster and again.runtime_ms == detector.runtime_ms


def test_an_idle_worker_is_woken_by_a_new_ticket_not_by_its_poll(make_config, rtmdet_checkpoint):
    import threading
    import time

    from pyramid.paster import get_appsettings
    ini = make_config({"rtmdet_tiny": rtmdet_checkpoint}, poll_interval_seconds=60)
    worker = SpoolWorker(parse_settings(get_appsettings(str(ini)), str(ini)))
    worker.models.get("rtmdet_tiny")
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        time.sleep(0.5)  # idle, waiting
        job = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
        worker.queue.records.files.input(job.sid).write_bytes(png_bytes())
        worker.queue.enqueue(job)
        deadline = time.monotonic() + 20  # a poll would come after 60 s
        while not worker.records.is_finished(job.sid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.queue.status(job.sid).state is JobState.DONE
    finally:
        worker.stop.set()
        runner.join(5)
    assert not runner.is_alive(), "a stopped worker leaves within its idle wake"


def test_a_models_review_rule_keeps_its_uploads_for_a_person_to_correct(make_config,
                                                                        rtmdet_checkpoint):
    from pyramid.paster import get_appsettings
    ini = make_config({"rtmdet_tiny": rtmdet_checkpoint})
    settings = parse_settings(get_appsettings(str(ini)), str(ini))
    models = settings.models_file
    models.write_text(models.read_text().replace("[rtmdet_tiny]\n",
                                                 "[rtmdet_tiny]\nreview = { near = 1.0 }\n", 1))
    worker = SpoolWorker(settings)
    job = enqueue(worker.queue, png_bytes(size=(320, 240)), threshold=0.0)
    worker.run_jobs([job])
    result = worker.queue.status(job.sid).result
    [item] = worker.review.items()
    assert item["sid"] == job.sid and item["detections"] == result["detections"]
    assert item["reasons"][0].endswith("scored under 1.00")
    assert worker.review.image(job.sid).read_bytes() == \
        worker.queue.records.files.input(job.sid).read_bytes()
