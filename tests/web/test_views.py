"""The HTTP contract under WebTest (no worker: accepted jobs stay queued)."""
import json
from pathlib import Path

import pytest

from tests.bombs import bomb_png
from tests.support import png_bytes


def upload(testapp, data: bytes = None, status=202, name="photo.jpg", **fields):
    files = [("image", name, png_bytes() if data is None else data)]
    return testapp.post("/upload", params=fields, upload_files=files, status=status)


def uploads_dir(testapp) -> Path:
    return testapp.app.registry.service.settings.uploads_dir


def stored_files(testapp) -> list[str]:
    return sorted(p.name for p in uploads_dir(testapp).iterdir() if not p.name.startswith("."))


def test_upload_answers_202_with_the_urls_and_stores_a_png(testapp):
    response = upload(testapp)
    body = response.json
    sid = body["sid"]
    assert len(sid) == 32 and set(body) == {"sid", "status_url", "result_url", "json_url"}
    assert body["result_url"].endswith(f"/uploads/{sid}.out.png")
    assert body["json_url"].endswith(f"/uploads/{sid}.json")
    assert response.headers["Location"] == body["status_url"]
    stored = testapp.get(f"/uploads/{sid}.png")
    assert stored.content_type == "image/png" and stored.body.startswith(b"\x89PNG")
    steps = dict(step.split(";dur=") for step in response.headers["Server-Timing"].split(", "))
    assert list(steps) == ["decode", "queue", "encode", "store"]  # the spool's order
    assert all(float(ms) >= 0 for ms in steps.values())


def test_the_sid_never_comes_from_the_file_name(testapp):
    sids = {upload(testapp, name="same.jpg").json["sid"] for _ in range(3)}
    assert len(sids) == 3 and not any("same" in s for s in sids)


def test_classes_and_max_detections_are_taken_in_any_case_and_shown_in_the_status(testapp):
    sid = upload(testapp, classes=" Person,traffic LIGHT ,person,", max_detections="7").json["sid"]
    status = testapp.get(f"/status/{sid}").json
    assert status["classes"] == ["person", "traffic light"] and status["max_detections"] == 7
    everything = testapp.get(f"/status/{upload(testapp).json['sid']}").json
    assert everything["classes"] == [] and everything["max_detections"] == 100


def test_models_list_their_classes(testapp):
    from detection.coco import COCO_CLASSES
    models = testapp.get("/models").json["models"]
    assert all(model["classes"] == list(COCO_CLASSES) for model in models)


def test_status_of_a_queued_job(testapp):
    first = upload(testapp).json["sid"]
    second = upload(testapp, threshold="0.55", model="rtmdet_tiny").json["sid"]
    status = testapp.get(f"/status/{second}").json
    assert status["state"] == "queued" and status["queue_position"] == 2
    assert status["model"] == "rtmdet_tiny" and status["threshold"] == 0.55
    assert testapp.get(f"/status/{first}").json["threshold"] == 0.3  # the default
    assert testapp.get(f"/status/{first}").headers["Cache-Control"].startswith("max-age=0")


def test_results_are_404_until_they_exist(testapp):
    sid = upload(testapp).json["sid"]
    for suffix in (".out.png", ".json"):
        response = testapp.get(f"/uploads/{sid}{suffix}", status=404)
        assert response.json["state"] == "queued" and "not ready" in response.json["error"]


def test_a_failed_job_answers_410_with_its_reason_on_the_result_urls(testapp):
    sid = upload(testapp).json["sid"]
    queue = testapp.app.registry.service.queue
    queue.fail(queue.claim_next(), "the model exploded")
    assert testapp.get(f"/status/{sid}").json["error"] == "the model exploded"
    gone = testapp.get(f"/uploads/{sid}.out.png", status=410).json
    assert gone == {"error": "the job failed: the model exploded", "state": "failed"}
    assert json.loads(testapp.get(f"/uploads/{sid}.error.json").body)["error"] == \
        "the model exploded"


@pytest.mark.parametrize("fields,files,status,message", [
    ({}, [], 400, "file field named 'image'"),
    ({"image": "not a file"}, [], 400, "file field named 'image'"),
    ({}, [("image", "empty.jpg", b"")], 422, "empty"),
    ({}, [("image", "notes.jpg", b"just some text\n" * 50)], 422, "not an image"),
    ({}, [("image", "half.jpg", png_bytes(format="JPEG")[:300])], 422, "corrupt"),
    ({}, [("image", "bomb.png", bomb_png(60_000, 60_000))], 413, "pixels"),
    ({"threshold": "abc"}, None, 400, "threshold"),
    ({"threshold": "1.5"}, None, 400, "threshold"),
    ({"threshold": "-0.1"}, None, 400, "threshold"),
    ({"threshold": "nan"}, None, 400, "threshold"),
    ({"model": "yolo9000"}, None, 400, "unknown model"),
    ({}, [("image", "a.png", png_bytes()), ("image", "b.png", png_bytes())], 400, "once"),
    ({"model": "faster_rcnn_r50"}, None, 400, "not installed"),
    ({"classes": "person,unicorn"}, None, 400, "no class 'unicorn'; its classes: person, bicycle"),
    ({"max_detections": "0"}, None, 400, "max_detections"),
    ({"max_detections": "many"}, None, 400, "max_detections"),
    ({"max_detections": "1001"}, None, 400, "max_detections"),
])
def test_bad_uploads_get_a_clear_json_error_and_store_nothing(testapp, fields, files, status,
                                                              message):
    files = [("image", "ok.png", png_bytes())] if files is None else files
    response = testapp.post("/upload", params=fields, upload_files=files, status=status)
    assert message in response.json["error"]
    assert stored_files(testapp) == []


def test_a_body_over_the_limit_is_413(testapp):
    big = b"\0" * (2 * 1024 * 1024 + 1)
    response = testapp.post("/upload", upload_files=[("image", "big.png", big)], status=413)
    assert "limit" in response.json["error"] and stored_files(testapp) == []


def test_a_non_multipart_body_is_400(testapp):
    response = testapp.post("/upload", params=b'{"image": 1}',
                            content_type="application/json", status=400)
    assert "multipart" in response.json["error"]


def test_a_full_queue_answers_503_with_retry_after(testapp):
    for _ in range(5):
        upload(testapp)
    response = upload(testapp, status=503)
    assert "full" in response.json["error"] and int(response.headers["Retry-After"]) >= 1
    assert len(stored_files(testapp)) == 5


@pytest.mark.parametrize("path", [
    "/status/0123", "/status/" + "g" * 32, "/status/" + "a" * 32, "/status/..",
    "/status/..%2f..%2fetc%2fpasswd", "/uploads/", "/uploads/..%2fsetup.py",
    "/uploads/%2e%2e/%2e%2e/etc/passwd", "/uploads/" + "a" * 32 + ".png",
    "/uploads/.queue", "/uploads/.daemon.log", "/uploads/../configs/production.ini",
    "/static/../web.py", "/static/%2e%2e/web.py", "/nothing-here",
])
def test_unknown_sids_path_tricks_and_listings_are_json_404(testapp, path):
    response = testapp.get(path, status=404)
    assert response.content_type == "application/json" and "error" in response.json


def test_a_method_a_route_does_not_answer_is_405_with_allow(testapp):
    response = testapp.get("/upload", status=405)
    assert response.headers["Allow"] == "POST" and "not allowed" in response.json["error"]
    assert testapp.delete("/status/" + "a" * 32, status=405).headers["Allow"] == "GET, HEAD"


def test_health_and_models(testapp):
    health = testapp.get("/health").json
    assert health["status"] == "ok" and health["worker"] == {"alive": False, "pid": None}
    assert health["queue"] == {"backend": "spool", "depth": 0, "max": 5}
    assert health["models"]["default"] == "rtmdet_tiny"
    assert health["models"]["available"] == ["rtmdet_tiny"]
    models = testapp.get("/models").json
    assert models["default"] == "rtmdet_tiny" and models["default_threshold"] == 0.3
    tiny = next(m for m in models["models"] if m["name"] == "rtmdet_tiny")
    assert tiny["available"] and tiny["box_ap"] and "fastest" in tiny["hint"]
    assert next(m for m in models["models"] if m["name"] == "mask_rcnn_r50")["masks"]


def test_the_page_is_served(testapp):
    page = testapp.get("/")
    assert page.content_type == "text/html" and "<form" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert testapp.get(asset).status_int == 200


def test_status_wait_answers_when_the_time_is_up_and_rejects_bad_values(testapp):
    import time
    sid = upload(testapp).json["sid"]
    started = time.monotonic()
    assert testapp.get(f"/status/{sid}?wait=0.3").json["state"] == "queued"
    assert 0.3 <= time.monotonic() - started < 5
    for bad in ("-1", "61", "soon", "nan"):
        assert "wait" in testapp.get(f"/status/{sid}?wait={bad}", status=400).json["error"]


def test_liveness_answers_and_readiness_says_why_not(testapp):
    assert testapp.get("/health/live").json == {"status": "alive"}
    ready = testapp.get("/health/ready", status=503).json
    assert ready["ready"] is False and "no detection daemon runs" in ready["error"]
    for _ in range(5):
        upload(testapp)
    assert "the queue is full (5 jobs)" in testapp.get("/health/ready", status=503).json["error"]
    service = testapp.app.registry.service
    service.models["rtmdet_tiny"].checkpoint.unlink()
    assert "not installed" in testapp.get("/health/ready", status=503).json["error"]


def test_tiles_are_a_small_grid_and_only_for_models_of_boxes(make_config, fake_checkpoint):
    import webtest

    from tests.support import app_for
    testapp = webtest.TestApp(app_for(make_config(
        {"rtmdet_tiny": fake_checkpoint, "rtmdet_ins_tiny": fake_checkpoint},
        spawn_worker="false")))
    for tiles in ("0", "7", "2.5", "x"):
        error = upload(testapp, status=400, tiles=tiles).json["error"]
        assert "tiles must be a whole number in [1, 6]" in error
    error = upload(testapp, status=400, tiles="2", model="rtmdet_ins_tiny").json["error"]
    assert "tiles work on boxes only" in error
    sid = upload(testapp, tiles="4").json["sid"]
    assert testapp.get(f"/status/{sid}").json["tiles"] == 4
    sid = upload(testapp).json["sid"]
    assert testapp.get(f"/status/{sid}").json["tiles"] is None  # the model's own, once done
    listed = {m["name"]: m["tiles"] for m in testapp.get("/models").json["models"]}
    assert (listed["rtmdet_tiny"], listed["yolox_nano_tiled"]) == (1, 3)
