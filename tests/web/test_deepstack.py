"""The DeepStack-compatible API and API keys: contract, filtering, keys on and off, timeouts."""
import pytest
import requests
import webtest

from detection.web.routes import ROUTES
from tests.support import app_for, png_bytes


def deepstack(url: str, data: bytes, path="/v1/vision/detection", files=None, **fields):
    files = files if files is not None else {"image": ("photo.jpg", data, "image/jpeg")}
    return requests.post(url + path, files=files, data=fields, timeout=60)


@pytest.mark.slow
def test_predictions_match_the_jobs_json_rounded(live_server):
    server = live_server()
    response = deepstack(server.url, png_bytes(size=(480, 360)), min_confidence="0.0")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and isinstance(body["duration"], int) and body["predictions"]
    document = requests.get(f"{server.url}/uploads/{body['sid']}.json", timeout=10).json()
    assert requests.get(f"{server.url}/status/{body['sid']}", timeout=10).json()["state"] == "done"
    assert len(body["predictions"]) == len(document["detections"])
    # CodeProject.AI's fields, which its clients (Blue Iris, Agent DVR) read
    labels = ", ".join(dict.fromkeys(p["label"] for p in body["predictions"]))
    assert body["code"] == 200 and body["count"] == len(body["predictions"])
    assert body["message"] == f"Found {labels}" and body["command"] == "detect"
    assert body["moduleName"] == "MMDetection rtmdet_tiny" and body["moduleId"] == "mmdetection"
    assert body["executionProvider"] == "CPU" and body["canUseGPU"] is False
    assert body["inferenceMs"] == round(document["timings"]["inference_ms"])
    assert body["inferenceMs"] <= body["processMs"] <= body["analysisRoundTripMs"]
    assert body["timestampUTC"].endswith(" GMT") and body["processedBy"]
    for prediction, detection in zip(body["predictions"], document["detections"]):
        assert set(prediction) == {"label", "confidence", "x_min", "y_min", "x_max", "y_max"}
        assert prediction["label"] == detection["label"]
        assert prediction["confidence"] == detection["score"]
        box = [prediction[k] for k in ("x_min", "y_min", "x_max", "y_max")]
        assert all(isinstance(v, int) for v in box)
        assert box == [round(v) for v in detection["bbox"]]


@pytest.mark.slow
def test_min_confidence_filters_and_defaults_to_0_4(live_server):
    server = live_server()
    image = png_bytes(size=(400, 300))
    everything = deepstack(server.url, image, min_confidence="0").json()["predictions"]
    scores = sorted(p["confidence"] for p in everything)
    cut = scores[len(scores) // 2]
    kept = deepstack(server.url, image, min_confidence=str(cut)).json()["predictions"]
    assert 0 < len(kept) < len(everything) and all(p["confidence"] >= cut for p in kept)
    default = deepstack(server.url, image).json()
    assert requests.get(f"{server.url}/status/{default['sid']}").json()["threshold"] == 0.4


@pytest.mark.slow
def test_classes_and_max_detections_apply_to_deepstack_calls(live_server):
    server = live_server()
    image = png_bytes(size=(400, 300))
    everything = deepstack(server.url, image, min_confidence="0",
                           max_detections="1000").json()["predictions"]
    label = everything[0]["label"]
    only = deepstack(server.url, image, min_confidence="0", max_detections="1000",
                     classes=label).json()["predictions"]
    assert only == [p for p in everything if p["label"] == label]
    two = deepstack(server.url, image, min_confidence="0", max_detections="2").json()
    assert two["predictions"] == everything[:2]


@pytest.mark.slow
def test_an_image_without_file_name_or_content_type(live_server):
    server = live_server()
    bare = {"image": (None, png_bytes(format="JPEG"))}  # what some NVR clients send
    response = requests.post(server.url + "/v1/vision/detection", files=bare, timeout=60)
    assert response.status_code == 200 and response.json()["success"] is True


@pytest.mark.slow
def test_custom_model_route(live_server):
    server = live_server()
    ok = deepstack(server.url, png_bytes(), path="/v1/vision/custom/rtmdet_tiny")
    assert ok.status_code == 200 and ok.json()["success"]
    missing = deepstack(server.url, png_bytes(), path="/v1/vision/custom/yolo9000")
    assert missing.status_code == 404
    assert missing.json() == {"success": False, "error": missing.json()["error"], "code": 404}
    assert "unknown model" in missing.json()["error"]


@pytest.fixture
def deepstack_app(make_config, fake_checkpoint):
    """No worker: jobs never finish, so a synchronous request times out."""
    ini = make_config({"rtmdet_tiny": fake_checkpoint}, spawn_worker="false", max_queue=2,
                      sync_timeout_seconds=0.3)
    return webtest.TestApp(app_for(ini))


def post(app, status, files=None, path="/v1/vision/detection", **fields):
    files = [("image", "a.png", png_bytes())] if files is None else files
    return app.post(path, params=fields, upload_files=files, status=status)


@pytest.mark.parametrize("fields,files,status,words", [
    ({}, [], 400, "file field named 'image'"),
    ({}, [("image", "t.txt", b"text, not a picture" * 9)], 422, "not an image"),
    ({"min_confidence": "high"}, None, 400, "min_confidence"),
    ({"min_confidence": "2"}, None, 400, "min_confidence"),
    ({"classes": "unicorn"}, None, 400, "no class 'unicorn'"),
])
def test_deepstack_errors_say_success_false(deepstack_app, fields, files, status, words):
    body = post(deepstack_app, status, files, **fields).json
    assert body["success"] is False and words in body["error"]


def test_a_timeout_is_503_with_retry_after_and_the_job_goes_on(deepstack_app):
    response = post(deepstack_app, 503)
    assert response.json["success"] is False and "longer than" in response.json["error"]
    assert int(response.headers["Retry-After"]) >= 1
    sid = response.json["error"].rsplit("/", 1)[1]
    assert deepstack_app.get(f"/status/{sid}").json["state"] == "queued"


def test_a_full_queue_is_503_with_retry_after(deepstack_app):
    post(deepstack_app, 503)
    post(deepstack_app, 503)  # two jobs wait: the queue (2) is full
    full = post(deepstack_app, 503)
    assert "full" in full.json["error"] and full.headers["Retry-After"]


@pytest.fixture
def keyed_app(make_config, fake_checkpoint):
    ini = make_config({"rtmdet_tiny": fake_checkpoint}, spawn_worker="false",
                      api_keys="first-key, second-key", sync_timeout_seconds=0.2)
    return webtest.TestApp(app_for(ini))


def test_with_keys_configured_every_api_route_needs_one(keyed_app):
    for path in ("/models", "/status/" + "a" * 32, "/uploads/" + "a" * 32 + ".png"):
        response = keyed_app.get(path, status=401)
        assert "API key" in response.json["error"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert post(keyed_app, 401, path="/upload").json["error"]
    assert post(keyed_app, 401).json["success"] is False
    assert post(keyed_app, 401, api_key="wrong").json["success"] is False
    # The page, its files, health and the API description stay open.
    for path in ("/", "/static/app.js", "/health", "/openapi.json"):
        keyed_app.get(path, status=200)


def test_keys_are_accepted_in_each_documented_place(keyed_app):
    assert keyed_app.get("/models", headers={"Authorization": "Bearer first-key"}).status_int == 200
    assert keyed_app.get("/models", headers={"X-API-Key": "second-key"}).status_int == 200
    sid = keyed_app.post("/upload", upload_files=[("image", "a.png", png_bytes())],
                         headers={"X-API-Key": "first-key"}, status=202).json["sid"]
    keyed_app.get(f"/status/{sid}", headers={"X-API-Key": "first-key"}, status=200)
    # A DeepStack client's form field gets past the key check (then times out: no worker).
    assert "longer than" in post(keyed_app, 503, api_key="second-key").json["error"]


def test_no_keys_configured_means_open(deepstack_app):
    deepstack_app.get("/models", status=200)


def test_the_openapi_document_names_every_route(deepstack_app):
    document = deepstack_app.get("/openapi.json").json
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {"/upload", "/status/{sid}", "/uploads/{name}", "/models",
                                      "/models/{name}/download", "/health", "/health/live",
                                      "/health/ready", "/metrics", "/v1/vision/detection",
                                      "/v1/vision/custom/{model}", "/v1/vision/face",
                                      "/datasets", "/datasets/{name}",
                                      "/datasets/{name}/coco.json", "/datasets/{name}/import",
                                      "/datasets/{name}/images",
                                      "/datasets/{name}/images/{image_id}.png",
                                      "/datasets/{name}/images/{image_id}",
                                      "/training", "/training/{sid}", "/models/{name}",
                                      "/models/{name}/promote", "/review", "/review/{sid}.png",
                                      "/review/{sid}"}
    assert set(document["paths"]) == {pattern for pattern, _ in ROUTES.values()} - {
        "/", "/openapi.json"}
    form = document["paths"]["/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["properties"]["model"]["enum"] == ["", "rtmdet_tiny"]  # installed ones
