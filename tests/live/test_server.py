"""The real thing: waitress on a free port, the daemon started by the app, HTTP from outside."""
import concurrent.futures
import io
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from PIL import Image

from tests.support import ROOT, LiveServer, png_bytes

pytestmark = pytest.mark.slow


def test_upload_poll_and_fetch_over_http(live_server):
    server = live_server()
    ready = requests.get(server.url + "/health/ready", timeout=10)  # the daemon starts on demand
    assert ready.status_code == 200 and ready.json()["model_loaded"] is False
    response = server.upload(png_bytes(size=(640, 480), format="JPEG"), threshold="0.0")
    assert response.status_code == 202
    sid = response.json()["sid"]
    status = server.wait_until_finished(sid)
    assert status["state"] == "done", status
    assert status["image"] == {"width": 640, "height": 480} and status["detections"]
    png = requests.get(server.url + status["result_url"], timeout=10)
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (640, 480)
    document = requests.get(server.url + status["json_url"], timeout=10).json()
    assert document["detections"] == status["detections"] and document["sid"] == sid
    health = requests.get(server.url + "/health", timeout=10).json()
    assert health["worker"]["alive"] and health["worker"]["pid"] == server.worker_pid()
    assert health["worker"]["device"] == "cpu" and health["worker"]["gpu"] is None
    assert health["models"]["loaded"] == ["rtmdet_tiny"]
    ready = requests.get(server.url + "/health/ready", timeout=10).json()
    assert ready == {"ready": True, "reasons": [], "default_model": "rtmdet_tiny",
                     "worker_alive": True, "model_loaded": True}


def test_only_one_worker_for_a_burst_and_nothing_lost(live_server):
    server = live_server(max_queue=12)
    images = [png_bytes(size=(200 + 10 * i, 150)) for i in range(20)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda data: server.upload(data), images))
    accepted = [r.json()["sid"] for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code != 202]
    assert refused and all(r.status_code == 503 for r in refused)
    assert all(int(r.headers["Retry-After"]) >= 1 and "full" in r.json()["error"] for r in refused)
    assert len(accepted) >= 12
    workers = {server.worker_pid()}
    for sid in accepted:
        assert server.wait_until_finished(sid)["state"] == "done"
        workers.add(server.worker_pid())
    assert len(workers - {None}) == 1, "a burst never starts a second model process"


def test_kill_9_of_the_worker_mid_job_loses_nothing(live_server):
    server = live_server()
    first = server.upload(png_bytes(), threshold="0.0").json()["sid"]
    assert server.wait_until_finished(first)["state"] == "done"  # the worker is warm
    sids = [server.upload(png_bytes(size=(400 + i, 300))).json()["sid"] for i in range(6)]
    running = server.uploads / ".queue" / "running"
    deadline = time.monotonic() + 60
    while not any(running.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.005)
    victim = server.kill_worker(signal.SIGKILL)
    assert victim
    states = [server.wait_until_finished(sid)["state"] for sid in sids]
    assert states == ["done"] * 6
    assert server.worker_pid() not in (None, victim)


def test_queued_jobs_survive_a_restart_of_the_web_server(live_server):
    server = live_server()
    sids = [server.upload(png_bytes()).json()["sid"] for _ in range(3)]
    server.stop()
    server.kill_worker()
    assert any((server.uploads / ".queue" / "queued").iterdir()) or any(
        (server.uploads / ".queue" / "running").iterdir())
    restarted = LiveServer(server.ini).start()
    try:
        assert [restarted.wait_until_finished(s)["state"] for s in sids] == ["done"] * 3
    finally:
        restarted.stop()
        restarted.kill_worker()


def test_the_worker_exits_when_idle_and_comes_back_on_demand(live_server):
    server = live_server(idle_exit_seconds=1)
    first = server.upload(png_bytes()).json()["sid"]
    assert server.wait_until_finished(first)["state"] == "done"
    deadline = time.monotonic() + 20
    while server.worker_pid() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.worker_pid() is None
    second = server.upload(png_bytes()).json()["sid"]
    assert server.wait_until_finished(second)["state"] == "done"


def test_a_worker_that_cannot_start_fails_the_jobs_with_the_reason(live_server, tmp_path,
                                                                   monkeypatch):
    broken = tmp_path / "broken" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this torch is broken')")
    monkeypatch.setenv("PYTHONPATH", str(broken.parent))  # the web process never imports torch
    server = live_server()
    sid = server.upload(png_bytes()).json()["sid"]
    status = server.wait_until_finished(sid, timeout=60)
    assert status["state"] == "failed"
    assert "could not start" in status["error"] and "this torch is broken" in status["error"]


def test_missing_default_checkpoint_gives_a_clear_message_not_a_traceback(make_config, tmp_path):
    ini = make_config({})
    result = subprocess.run([sys.executable, str(ROOT / "web.py"), str(ini)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PORT": "1"})
    assert result.returncode != 0
    assert "python mmdetectionl.py download rtmdet_tiny" in result.stderr
    assert "Traceback" not in result.stderr


def run_cli(*args, ini=None) -> subprocess.CompletedProcess:
    config = ["--config", str(ini)] if ini else []
    return subprocess.run([sys.executable, str(ROOT / "mmdetectionl.py"), *config, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_original_command_line_detects_one_stored_upload(make_config, rtmdet_checkpoint):
    ini = make_config({"rtmdet_tiny": rtmdet_checkpoint})
    from pyramid.paster import get_appsettings

    from detection.jobs.job import new_sid
    from detection.settings import parse_settings
    settings = parse_settings(get_appsettings(str(ini)), str(ini))
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    sid = new_sid()
    (settings.uploads_dir / f"{sid}.png").write_bytes(png_bytes())
    result = run_cli(sid, "0.0", ini=ini)
    assert result.returncode == 0, result.stderr
    assert (settings.uploads_dir / f"{sid}.out.png").is_file()
    assert (settings.uploads_dir / f"{sid}.json").is_file()
    # A missing threshold takes the default instead of crashing (the original did crash).
    assert run_cli(sid, ini=ini).returncode == 0


def test_the_command_line_documents_itself_and_lists_models(make_config, rtmdet_checkpoint):
    ini = make_config({"rtmdet_tiny": rtmdet_checkpoint})
    usage = run_cli("--help")
    assert usage.returncode == 0
    for word in ("SID", "worker", "download", "list"):
        assert word in usage.stdout
    listing = run_cli("list", ini=ini).stdout
    assert "rtmdet_tiny" in listing and "installed" in listing and "faster_rcnn_r50" in listing
