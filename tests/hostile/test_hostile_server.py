"""Hostile clients and faults against the live service (waitress + the real daemon): it stays up,
answers, and every accepted job still ends done or failed with a reason."""
import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests

from detection.jobs.job import new_sid
from tests import bombs
from tests.attacks import many_parts_body, open_descriptors, rss_bytes
from tests.support import AT_ONCE_SECONDS, ROOT, png_bytes, wait_until

pytestmark = pytest.mark.slow


def health(server, timeout=5) -> tuple[dict, float]:
    started = time.perf_counter()
    response = requests.get(server.url + "/health", timeout=timeout)
    return response.json(), time.perf_counter() - started


def running_ticket(server):
    return next((server.uploads / ".queue" / "running").iterdir(), None)


def test_thousands_of_parts_leave_the_server_up_with_few_descriptors(live_server):
    server = live_server()
    pid = server.process.pid
    body, content_type = many_parts_body(3000)
    before = open_descriptors(pid)
    for _ in range(3):
        response = requests.post(server.url + "/upload", data=body, timeout=30,
                                 headers={"Content-Type": content_type})
        assert response.status_code == 413 and "parts" in response.json()["error"]
    assert open_descriptors(pid) - before < 20
    assert server.process.poll() is None
    sid = server.upload(png_bytes()).json()["sid"]
    assert server.wait_until_finished(sid)["state"] == "done"
    # The launcher's first process (python-daemon forks) is reaped: no <defunct> child of web.
    web = psutil.Process(server.process.pid)
    assert wait_until(lambda: all(c.status() != psutil.STATUS_ZOMBIE for c in web.children()),
                      timeout=5)


def test_decoding_bombs_are_refused_fast_and_leave_no_memory_behind(live_server):
    server = live_server(max_upload_bytes=24 * 2**20)
    pid = server.process.pid
    requests.get(server.url + "/health", timeout=10)
    baseline = rss_bytes(pid)
    for name, data in bombs.refused().items():
        for _ in range(3):
            started = time.perf_counter()
            response = server.upload(data, name=f"bomb.{name}")
            elapsed = time.perf_counter() - started
            assert response.status_code in (413, 422), (name, response.text)
            assert elapsed < AT_ONCE_SECONDS, (name, elapsed)
        assert rss_bytes(pid) - baseline < 100 * 2**20, name
    assert not list((server.uploads / ".queue" / "queued").iterdir())


def test_a_hundred_long_polls_starve_nothing_and_wake_at_once(live_server, make_config):
    server = live_server(spawn_worker="false")
    waited = server.upload(png_bytes()).json()["sid"]
    process = psutil.Process(server.process.pid)
    url = f"{server.url}/status/{waited}?wait=30"
    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        polls = [pool.submit(requests.get, url, timeout=60) for _ in range(100)]
        time.sleep(2)
        # Beyond max_waiting_requests (4 in testing.ini) a long-poll answers the state at once.
        answered = [f for f in polls if f.done()]
        assert len(answered) >= 90 and all(f.result().json()["state"] == "queued"
                                           for f in answered)
        cpu_before = sum(process.cpu_times()[:2])
        body, seconds = health(server)
        assert seconds < AT_ONCE_SECONDS and body["status"] == "ok"  # not after the 30 s wait
        started = time.perf_counter()
        second = server.upload(png_bytes(size=(200, 100)))
        assert second.status_code == 202 and time.perf_counter() - started < AT_ONCE_SECONDS
        time.sleep(2)
        assert sum(process.cpu_times()[:2]) - cpu_before < 0.5  # waiting costs no polling
        # A worker started now finishes the job: the waiting long-polls answer at once.
        worker = subprocess.Popen([sys.executable, str(ROOT / "mmdetectionl.py"), "--config",
                                   str(server.ini), "worker"], cwd=ROOT,
                                  stderr=subprocess.DEVNULL)
        try:
            states = [f.result(timeout=60).json()["state"] for f in polls]
            assert states.count("done") == 100 - len(answered)
            assert server.wait_until_finished(second.json()["sid"])["state"] == "done"
        finally:
            worker.terminate()
            worker.wait(30)


def test_a_hundred_slow_clients_do_not_lock_everyone_out(live_server):
    server = live_server()
    head = ("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n").encode()
    sockets = []
    try:
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(head)
            sockets.append(s)
        for s in sockets:  # trickle
            s.sendall(b"x")
        body, seconds = health(server)
        assert seconds < AT_ONCE_SECONDS and body["status"] == "ok"
        sid = server.upload(png_bytes()).json()["sid"]
        for s in sockets:
            s.sendall(b"x")
        assert server.wait_until_finished(sid, timeout=60)["state"] == "done"
    finally:
        for s in sockets:
            s.close()


def test_a_torn_ticket_fails_its_job_and_stops_nothing(live_server):
    server = live_server()
    torn = new_sid()
    (server.uploads / f"{torn}.png").write_bytes(png_bytes())
    (server.uploads / ".queue" / "queued" / f"{time.time_ns():020d}-{torn}.0.json").write_bytes(b"")
    sid = server.upload(png_bytes()).json()["sid"]
    assert server.wait_until_finished(sid)["state"] == "done"
    status = requests.get(f"{server.url}/status/{torn}", timeout=10).json()
    assert status["state"] == "failed" and "damaged" in status["error"]
    assert health(server)[0]["worker"]["restarts"] == 0
    assert list((server.uploads / ".queue" / "damaged").iterdir())


def warm_worker(server) -> dict:
    sid = server.upload(png_bytes()).json()["sid"]
    assert server.wait_until_finished(sid)["state"] == "done"
    return health(server)[0]["worker"]


def test_a_stopped_worker_is_replaced_and_its_jobs_done(live_server):
    server = live_server(heartbeat_timeout_seconds=3)
    stopped = warm_worker(server)["worker_pid"]
    os.kill(stopped, signal.SIGSTOP)
    try:
        sid = server.upload(png_bytes()).json()["sid"]
        assert server.wait_until_finished(sid, timeout=60)["state"] == "done"
        worker = health(server)[0]["worker"]
        assert worker["alive"] and worker["worker_pid"] != stopped
        assert not psutil.pid_exists(stopped) or psutil.Process(stopped).status() == "zombie"
    finally:
        if psutil.pid_exists(stopped):
            os.kill(stopped, signal.SIGKILL)


def test_a_stopped_daemon_is_killed_and_started_again_by_web(live_server):
    server = live_server(heartbeat_timeout_seconds=3)
    warm_worker(server)
    daemon = server.worker_pid()
    os.kill(daemon, signal.SIGSTOP)
    try:
        assert wait_until(lambda: not health(server)[0]["worker"]["alive"], timeout=10)
        sid = server.upload(png_bytes()).json()["sid"]
        assert server.wait_until_finished(sid, timeout=60)["state"] == "done"
        assert server.worker_pid() not in (None, daemon)
    finally:
        if psutil.pid_exists(daemon):
            os.kill(daemon, signal.SIGKILL)


def test_a_job_over_its_time_limit_fails_with_the_reason(live_server):
    server = live_server(job_timeout_seconds=2, heartbeat_timeout_seconds=60)
    warm_worker(server)
    sid = server.upload(png_bytes(size=(2000, 1500))).json()["sid"]
    ticket = wait_until(lambda: running_ticket(server), timeout=30)
    hung = health(server)[0]["worker"]["worker_pid"]
    os.kill(hung, signal.SIGSTOP)  # a job that never ends
    status = server.wait_until_finished(sid, timeout=30)
    assert status["state"] == "failed" and "longer than 2 s" in status["error"], ticket
    later = server.upload(png_bytes()).json()["sid"]
    assert server.wait_until_finished(later, timeout=60)["state"] == "done"
    assert health(server)[0]["worker"]["worker_pid"] != hung


def test_kill_9_of_the_daemon_during_a_deepstack_call(live_server):
    server = live_server()
    warm_worker(server)
    image = png_bytes(size=(2000, 1500), format="JPEG")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(requests.post, server.url + "/v1/vision/detection",
                           files={"image": ("a.jpg", image)}, timeout=60)
        wait_until(lambda: running_ticket(server), timeout=30)
        assert server.kill_worker(signal.SIGKILL)
        response = call.result(timeout=60)
    # 200, not the 503 of the 30 s sync timeout: the job was recovered and done in time.
    assert response.status_code == 200 and response.json()["success"] is True


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_fails_the_running_job_with_a_reason_and_uploads_get_507(
        live_server, tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(uploads)],
                             capture_output=True, text=True)
    if mounted.returncode:  # the injected-ENOSPC tests cover the same paths without a mount
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    server = None
    try:
        server = live_server(heartbeat_timeout_seconds=60, max_storage_mb=0)
        child = warm_worker(server)["worker_pid"]
        os.kill(child, signal.SIGSTOP)
        sid = server.upload(png_bytes(size=(600, 400))).json()["sid"]
        filler = uploads / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        full = server.upload(png_bytes(size=(600, 400)))
        assert full.status_code == 507 and "disk is full" in full.json()["error"]
        os.kill(child, signal.SIGCONT)
        status = server.wait_until_finished(sid, timeout=60)
        assert status["state"] == "failed" and "No space left" in status["error"]
        filler.unlink()
        later = server.upload(png_bytes()).json()["sid"]
        assert server.wait_until_finished(later, timeout=60)["state"] == "done"
        assert health(server)[0]["worker"]["restarts"] == 0
    finally:
        if server is not None:
            server.stop()
            server.kill_worker()
        subprocess.run(["umount", "-l", str(uploads)], check=False)


def test_a_worker_dying_at_every_start_fails_the_jobs_with_its_last_words(live_server, tmp_path,
                                                                          monkeypatch):
    broken = tmp_path / "broken" / "psutil"  # only the worker imports psutil
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("import os; print('psutil is broken'); os._exit(9)")
    monkeypatch.setenv("PYTHONPATH", str(broken.parent))
    server = live_server()
    sid = server.upload(png_bytes()).json()["sid"]
    status = server.wait_until_finished(sid, timeout=90)
    assert status["state"] == "failed" and "keeps dying" in status["error"]
    assert "psutil is broken" in status["error"] and "status 9" in status["error"]
    assert server.worker_pid() is not None  # the daemon itself lives on
    def not_ready() -> dict | None:
        response = requests.get(server.url + "/health/ready", timeout=10)
        return response.json() if response.status_code == 503 else None
    ready = wait_until(not_ready, timeout=10)
    assert "keeps dying" in ready["error"] and ready["ready"] is False
