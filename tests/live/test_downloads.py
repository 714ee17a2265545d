"""The second kind of job: a model's weights downloaded by the service, with progress in /status,
through the same queue, records, daemon and time limits as detections (spool here; RQ in
test_rq.py; the page in test_browser.py)."""
import hashlib
import shutil
import time

import pytest
import requests
import webtest

from tests.support import FileServer, app_for, png_bytes

RTMDET = "rtmdet/rtmdet_tiny_8xb32-300e_coco.py"


def fetched_model(served, source, url: str, checkpoints) -> tuple[str, str]:
    """Serve ``source`` under a zoo-style name (its hash in it); the models.toml table of a model
    whose weights are there and not yet here, and the name served."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    name = f"rtmdet_tiny_fetched_20260101-{digest[:8]}.pth"
    shutil.copy(source, served / name)
    return (f'[rtmdet_fetched]\nconfig = "{RTMDET}"\nhint = "the same, fetched"\n'
            f'weights_url = "{url}/{name}"\ncheckpoint = "{checkpoints / "fetched.pth"}"\n'), name


@pytest.fixture
def api(make_config, fake_checkpoint, tmp_path):
    """The app under WebTest with no daemon; one model (``mine``) that publishes no weights."""
    (tmp_path / "mine.py").write_text("")  # a config of one's own: no zoo entry
    ini = make_config({"rtmdet_tiny": fake_checkpoint}, spawn_worker="false",
                      extra_models='[mine]\nconfig = "mine.py"\nclasses = ["key"]\n')
    return webtest.TestApp(app_for(ini))


def test_a_download_is_a_job_with_its_own_status(api):
    models = {m["name"]: m for m in api.get("/models").json["models"]}
    assert models["faster_rcnn_r50"]["downloadable"] and not models["faster_rcnn_r50"]["available"]
    assert not models["mine"]["downloadable"]
    accepted = api.post("/models/faster_rcnn_r50/download", status=202)
    sid = accepted.json["sid"]
    assert accepted.location.endswith(f"/status/{sid}") and "result_url" not in accepted.json
    status = api.get(f"/status/{sid}").json
    assert status["kind"] == "download" and status["model"] == "faster_rcnn_r50"
    assert status["state"] == "queued" and status["queue_position"] == 1
    assert "threshold" not in status and "result_url" not in status
    again = api.post("/models/faster_rcnn_r50/download", status=202)
    assert again.json["sid"] == sid  # one download of a model at a time


def test_a_download_that_cannot_be_is_refused_clearly(api):
    assert api.post("/models/rtmdet_tiny/download", status=200).json == {
        "model": "rtmdet_tiny", "available": True}
    assert "unknown model" in api.post("/models/nope/download", status=404).json["error"]
    refused = api.post("/models/mine/download", status=409).json["error"]
    assert "no weights to download" in refused and "mine" in refused
    assert api.get("/models/faster_rcnn_r50/download", status=405).json["error"]


def test_a_download_needs_the_api_key_where_keys_are_set(make_config, fake_checkpoint):
    ini = make_config({"rtmdet_tiny": fake_checkpoint}, spawn_worker="false", api_keys="k")
    app = webtest.TestApp(app_for(ini))
    app.post("/models/faster_rcnn_r50/download", status=401)
    app.post("/models/faster_rcnn_r50/download", headers={"X-API-Key": "k"}, status=202)


@pytest.mark.slow
def test_the_daemon_downloads_with_progress_and_the_model_is_served(live_server, tmp_path,
                                                                    rtmdet_checkpoint):
    served = tmp_path / "served"
    served.mkdir()
    files = FileServer(served, chunk_bytes=2**18, pause=0.05)  # 20 MB in about 4 s
    try:
        table, _ = fetched_model(served, rtmdet_checkpoint, files.url, tmp_path / "fetched")
        server = live_server(extra_models=table)
        accepted = requests.post(f"{server.url}/models/rtmdet_fetched/download", timeout=10)
        assert accepted.status_code == 202
        sid = accepted.json()["sid"]
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = requests.get(f"{server.url}/status/{sid}", timeout=10).json()
            seen.append((status["state"], status.get("progress"), status.get("stage")))
            if status["state"] in ("done", "failed"):
                break
            time.sleep(0.2)
    finally:
        files.stop()
    assert status["state"] == "done", status
    partway = [p for state, p, stage in seen if state == "running" and p and 0 < p < 1]
    assert partway and partway == sorted(partway), seen  # progress seen, never going back
    assert any(stage and stage.startswith("downloading: ") for _, _, stage in seen)
    assert status["progress"] == 1.0 and status["bytes"] == rtmdet_checkpoint.stat().st_size
    assert status["sha256"] == hashlib.sha256(rtmdet_checkpoint.read_bytes()).hexdigest()
    assert (tmp_path / "fetched" / "fetched.pth").read_bytes() == rtmdet_checkpoint.read_bytes()
    models = {m["name"]: m for m in requests.get(f"{server.url}/models", timeout=10).json()["models"]}
    assert models["rtmdet_fetched"]["available"]
    sid = server.upload(png_bytes(), model="rtmdet_fetched").json()["sid"]
    assert server.wait_until_finished(sid)["state"] == "done"


@pytest.mark.slow
def test_a_corrupted_or_hung_download_fails_with_its_reason_and_detections_go_on(
        live_server, tmp_path, rtmdet_checkpoint):
    served = tmp_path / "served"
    served.mkdir()
    files = FileServer(served)
    hung = FileServer(served, stall=True)
    try:
        table, name = fetched_model(served, rtmdet_checkpoint, files.url, tmp_path / "fetched")
        (served / name).write_bytes(b"not what was published")
        slow_table = table.replace("rtmdet_fetched", "rtmdet_hung").replace(
            files.url, hung.url).replace("fetched.pth", "hung.pth")
        # (A limit under the 30 s without a byte after which the download itself gives up.)
        server = live_server(extra_models=table + slow_table, download_timeout_seconds=10)
        warm = server.upload(png_bytes()).json()["sid"]
        corrupted = requests.post(f"{server.url}/models/rtmdet_fetched/download", timeout=10)
        status = server.wait_until_finished(corrupted.json()["sid"])
        assert status["state"] == "failed" and "corrupted" in status["error"], status
        assert server.wait_until_finished(warm)["state"] == "done"
        stalled = requests.post(f"{server.url}/models/rtmdet_hung/download", timeout=10).json()
        # Detections have their own lane: served while the download hangs.
        sid = server.upload(png_bytes()).json()["sid"]
        assert server.wait_until_finished(sid)["state"] == "done"
        assert requests.get(f"{server.url}/status/{stalled['sid']}",
                            timeout=10).json()["state"] in ("queued", "running")
        status = server.wait_until_finished(stalled["sid"], timeout=120)
        assert status["state"] == "failed", status
        assert "downloading model rtmdet_hung took longer than 10 s" in status["error"]
    finally:
        files.stop()
        hung.stop()
    assert not list((tmp_path / "fetched").glob("*.pth")), "nothing installed"
    assert not list((tmp_path / "fetched").glob(".*.tmp")), "the partial download discarded"
