"""Batches through the live service with the real YOLOX-Nano: a zip of real photos is one job
with progress whose COCO results, CSV and drawings agree with single uploads of the same
photos; several image parts of ?batch=1 are one job too; an image that cannot be decoded
fails alone, named."""
import csv
import io
import zipfile

import pytest
import requests

from tests.support import SHARED_CHECKPOINT, SHARED_PHOTOS, LiveServer, write_config

pytestmark = [
    pytest.mark.slow, pytest.mark.real_weights,
    pytest.mark.skipif(not SHARED_CHECKPOINT.is_file(),
                       reason=f"the real YOLOX-Nano checkpoint is not at {SHARED_CHECKPOINT}"),
]
PHOTOS = ("dog.jpg", "eagle.jpg", "person.jpg", "grace_hopper.jpg")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ini = write_config(tmp_path_factory.mktemp("batches"), {"yolox_nano": SHARED_CHECKPOINT},
                       default_model="yolox_nano", max_upload_bytes=8_000_000)
    live = LiveServer(ini).start()
    yield live
    live.stop()
    live.kill_worker()


def zipped(files) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_of_photos_is_one_job_whose_results_match_single_uploads(server):
    files = [(f"photos/{name}", (SHARED_PHOTOS / name).read_bytes()) for name in PHOTOS]
    accepted = requests.post(server.url + "/upload", files={"image": ("p.zip", zipped(files))},
                             data={"threshold": "0.5"}, timeout=30).json()
    status = server.wait_until_finished(accepted["sid"])
    assert (status["kind"], status["state"], status["failed"]) == ("batch", "done", [])
    assert [image["file_name"] for image in status["images"]] == list(PHOTOS)
    coco = requests.get(server.url + status["coco_url"], timeout=10).json()
    assert [image["file_name"] for image in coco["images"]] == list(PHOTOS)
    assert coco["categories"][16]["name"] == "dog"
    rows = list(csv.DictReader(io.StringIO(requests.get(server.url + status["csv_url"],
                                                        timeout=10).text)))
    assert len(rows) == len(coco["annotations"]) == sum(status["counts"].values())
    for image_id, name in enumerate(PHOTOS, 1):  # each as its own upload would find it
        single = server.wait_until_finished(server.upload(
            (SHARED_PHOTOS / name).read_bytes(), threshold="0.5").json()["sid"])
        found = [a for a in coco["annotations"] if a["image_id"] == image_id]
        assert [(coco["categories"][a["category_id"]]["name"], a["score"]) for a in found] == [
            (d["label"], d["score"]) for d in single["detections"]]
        for a, d in zip(found, single["detections"]):
            x1, y1, x2, y2 = d["bbox"]
            assert a["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.02)
    drawn = zipfile.ZipFile(io.BytesIO(requests.get(server.url + status["result_url"],
                                                    timeout=10).content))
    assert [n.split("_", 1)[0] for n in drawn.namelist()] == ["0001", "0002", "0003", "0004"]
    assert all(drawn.read(n)[:3] == b"\xff\xd8\xff" for n in drawn.namelist())  # JPEGs


def test_image_parts_are_one_batch_and_an_image_that_cannot_decode_fails_alone(server):
    truncated = (SHARED_PHOTOS / "dog.jpg").read_bytes()[:20000]  # its header whole
    parts = [("image", ("=cmd.jpg", (SHARED_PHOTOS / "eagle.jpg").read_bytes())),
             ("image", ("dog.jpg", truncated))]
    accepted = requests.post(server.url + "/upload?batch=1", files=parts, timeout=30).json()
    status = server.wait_until_finished(accepted["sid"])
    assert status["state"] == "done" and status["counts"].get("bird") == 1
    assert [f["file_name"] for f in status["failed"]] == ["dog.jpg"]
    rows = requests.get(server.url + status["csv_url"], timeout=10).text.splitlines()
    assert rows[1].startswith("'=cmd.jpg,bird,")  # shown as text, never run as a formula
    assert "truncated" in status["failed"][0]["error"] or "image" in status["failed"][0]["error"]
