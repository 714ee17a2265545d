"""Video and batch jobs in the worker, with a real mmdet model (random weights): several frames or
images of one size in one pass of the network, as a GPU worker takes them (``gpu_batch_size``),
give what one at a time gives; their result files are written as they come, beside where they
go (records.py moves them into place: tests/unit/test_records.py)."""
import json

import pytest

from detection.batches import pack
from detection.jobs.job import BatchOptions, Job, VideoOptions, new_sid
from detection.jobs.layout import BATCH_OUTPUT, COCO, FRAMES, VIDEO_OUTPUT
from detection.settings import parse_settings
from detection.worker.handlers import handler_for
from detection.worker.model_cache import ModelCache
from detection.worker.spool_worker import SpoolWorker
from tests.clips import panned_photo
from tests.oracle import assert_same_detections
from tests.support import SHARED_PHOTOS, png_bytes

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED_PHOTOS.is_dir(),
                                                   reason="../shared/photos is missing")]


@pytest.fixture
def worker(make_config, rtmdet_checkpoint):
    from pyramid.paster import get_appsettings
    ini = make_config({"rtmdet_tiny": rtmdet_checkpoint})
    return SpoolWorker(parse_settings(get_appsettings(str(ini)), str(ini)))


def run(worker: SpoolWorker, job: Job, batch_size: int, monkeypatch) -> tuple[dict, dict, list]:
    """The job's result and files (read, then removed), and the sizes of the network's passes."""
    monkeypatch.setattr(ModelCache, "batch_size", batch_size)
    model = worker.models.get("rtmdet_tiny").model
    passes, extract_feat = [], model.extract_feat
    model.extract_feat = lambda inputs: passes.append(inputs.shape[0]) or extract_feat(inputs)
    try:
        [outcome] = handler_for(job.kind).run([job], worker.work)
    finally:
        model.extract_feat = extract_feat
    assert outcome.error is None, outcome.error
    files = {}
    for suffix, data in outcome.files.items():
        files[suffix] = data if isinstance(data, bytes) else data.read_bytes()
        if not isinstance(data, bytes):
            assert data.parent == worker.records.uploads_dir and data.name.startswith(
                f".{job.sid}{suffix}.")  # a temporary file beside where it goes
            data.unlink()
    return outcome.result, files, passes


def boxes(detections: list[dict]) -> list:
    return [(d["label"], d["score"], d["bbox"]) for d in detections]


def test_a_videos_frames_detected_several_at_a_time_are_those_detected_one_by_one(
        worker, monkeypatch):
    job = Job.video(new_sid(), "rtmdet_tiny", VideoOptions(0.05, fps=5, track=False))
    worker.records.store_video(job.sid, panned_photo(size=(320, 192), seconds=2, fps=10))
    alone, files_alone, passes_alone = run(worker, job, 1, monkeypatch)
    together, files_together, passes_together = run(worker, job, 4, monkeypatch)
    assert passes_alone == [1] * 10 and passes_together == [4, 4, 2]
    assert together["frames"] == alone["frames"] == 10
    frames = [[json.loads(line) for line in files[FRAMES].splitlines()]
              for files in (files_alone, files_together)]
    assert [f["time"] for f in frames[0]] == [f["time"] for f in frames[1]]
    assert sum(len(f["detections"]) for f in frames[0]) > 0
    for one, several in zip(*frames):
        assert len(one["detections"]) == len(several["detections"])
        assert_same_detections(several["detections"], boxes(one["detections"]),
                               box_tolerance=0.01)
    assert files_together[VIDEO_OUTPUT][4:8] == b"ftyp"


def test_a_batchs_images_detected_several_at_a_time_are_those_detected_one_by_one(
        worker, monkeypatch):
    images = [(f"{i}.png", png_bytes(size=(240, 160), color=(40 * i, 120, 200)))
              for i in range(5)] + [("broken.png", b"\x89PNG\r\n\x1a\n broken")]
    images.insert(2, ("dog.jpg", (SHARED_PHOTOS / "dog.jpg").read_bytes()))
    job = Job.batch(new_sid(), "rtmdet_tiny", BatchOptions(0.05, count=len(images)))
    worker.records.store_batch(job.sid, pack(images))
    alone, files_alone, passes_alone = run(worker, job, 1, monkeypatch)
    together, files_together, passes_together = run(worker, job, 4, monkeypatch)
    # Four at a time: the three of one size in one pass, the dog alone; then two (the broken
    # one fails alone)
    assert passes_alone == [1] * 6 and passes_together == [3, 1, 2]
    assert together["failed"] == alone["failed"] and together["failed"][0]["file_name"] == \
        "broken.png"
    assert [i["file_name"] for i in together["images"]] == [name for name, _ in images][:-1]
    coco = [json.loads(files[COCO]) for files in (files_alone, files_together)]
    assert coco[0]["images"] == coco[1]["images"] and coco[0]["annotations"]
    for image in coco[0]["images"]:
        alone_here, together_here = ([{"label": a["category_id"], "score": a["score"],
                                       "bbox": a["bbox"]} for a in document["annotations"]
                                      if a["image_id"] == image["id"]] for document in coco)
        assert len(alone_here) == len(together_here)
        assert_same_detections(together_here, boxes(alone_here), box_tolerance=0.01)
    assert files_together[BATCH_OUTPUT][:4] == b"PK\x03\x04"
