"""Measure what hostile clients and faults cost the live service (the numbers behind issue 8's
fixes; the hostile test suites assert bounds on the same things).

    .venv/bin/python bench/hostile_probe.py

Starts web.py (testing settings, a random-weights RTMDet-tiny) in a temp dir and prints one line
per probe: the many-parts body, each decoding bomb, 100 long-polls, 100 slow clients, kill -9 of
the daemon during a DeepStack call, a stopped worker, and pruning 4000 stored jobs.
"""
from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detection.jobs.storage import prune_storage  # noqa: E402
from tests import bombs  # noqa: E402
from tests.attacks import many_parts_body, open_descriptors, rss_bytes  # noqa: E402
from tests.random_weights import build_random_checkpoint  # noqa: E402
from tests.support import LiveServer, png_bytes, write_config  # noqa: E402


def timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def wait_done(server: LiveServer, sid: str) -> str:
    return server.wait_until_finished(sid, timeout=120)["state"]


def probe_parts(server: LiveServer) -> str:
    body, content_type = many_parts_body(3000)
    before = open_descriptors(server.process.pid)
    response, seconds = timed(lambda: requests.post(
        server.url + "/upload", data=body, headers={"Content-Type": content_type}, timeout=30))
    return (f"3000-part body: {response.status_code} in {seconds * 1000:.0f} ms, web fds "
            f"{before} -> {open_descriptors(server.process.pid)}, web alive: "
            f"{server.process.poll() is None}")


def probe_bombs(server: LiveServer) -> list[str]:
    lines, pid = [], server.process.pid
    baseline = rss_bytes(pid)
    for name, data in bombs.refused().items():
        response, seconds = timed(lambda: server.upload(data, name=f"bomb.{name}"))
        lines.append(f"bomb {name} ({len(data) >> 10} KiB): {response.status_code} in "
                     f"{seconds * 1000:.0f} ms, web RSS +{(rss_bytes(pid) - baseline) >> 20} MiB")
    return lines


def probe_long_polls(directory: Path, checkpoint: Path) -> str:
    ini = write_config(directory / "polls", {"rtmdet_tiny": checkpoint}, spawn_worker="false")
    server = LiveServer(ini).start()  # no worker: the job stays queued, the polls wait
    try:
        sid = server.upload(png_bytes()).json()["sid"]
        process = psutil.Process(server.process.pid)
        with concurrent.futures.ThreadPoolExecutor(100) as pool:
            polls = [pool.submit(requests.get, f"{server.url}/status/{sid}?wait=8", timeout=60)
                     for _ in range(100)]
            time.sleep(2)
            immediate = sum(f.done() for f in polls)
            cpu = sum(process.cpu_times()[:2])
            health, health_seconds = timed(lambda: requests.get(server.url + "/health",
                                                                timeout=30))
            upload, upload_seconds = timed(lambda: server.upload(png_bytes()))
            time.sleep(4)
            cpu = sum(process.cpu_times()[:2]) - cpu
    finally:
        server.stop()
    return (f"100 long-polls: {immediate} answered at once (over the cap of 4), /health "
            f"{health.status_code} in {health_seconds * 1000:.0f} ms, upload "
            f"{upload.status_code} in {upload_seconds * 1000:.0f} ms, web CPU while 4 wait: "
            f"{cpu / 4 * 100:.1f}% of a core")


def probe_slow_clients(server: LiveServer) -> str:
    head = (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n")
    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
    try:
        for s in sockets:
            s.sendall(head)
        health, seconds = timed(lambda: requests.get(server.url + "/health", timeout=60))
        upload, upload_seconds = timed(lambda: server.upload(png_bytes()))
    finally:
        for s in sockets:
            s.close()
    return (f"100 slow clients: /health {health.status_code} in {seconds * 1000:.0f} ms, "
            f"upload {upload.status_code} in {upload_seconds * 1000:.0f} ms")


def probe_kill_during_deepstack(server: LiveServer) -> str:
    image = png_bytes(size=(2000, 1500), format="JPEG")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.perf_counter()
        call = pool.submit(requests.post, server.url + "/v1/vision/detection",
                           files={"image": ("a.jpg", image)}, timeout=120)
        running = server.uploads / ".queue" / "running"
        while not any(running.iterdir()):
            time.sleep(0.005)
        server.kill_worker(signal.SIGKILL)
        response = call.result()
    return (f"kill -9 of the daemon during a DeepStack call: {response.status_code} after "
            f"{time.perf_counter() - started:.1f} s (sync timeout 30 s)")


def probe_stopped_worker(server: LiveServer) -> str:
    worker = requests.get(server.url + "/health", timeout=10).json()["worker"]["worker_pid"]
    os.kill(worker, signal.SIGSTOP)
    sid = server.upload(png_bytes()).json()["sid"]
    state, seconds = timed(lambda: wait_done(server, sid))
    if psutil.pid_exists(worker):
        os.kill(worker, signal.SIGKILL)
    return (f"stopped worker (heartbeat timeout 3 s): next job {state} after {seconds:.1f} s "
            "(replacement worker included)")


def probe_pruning(directory: Path) -> str:
    uploads = directory / "prune"
    uploads.mkdir()
    old = time.time() - 48 * 3600
    for i in range(4000):
        for suffix in (".png", ".out.png", ".json"):
            path = uploads / f"{i:032x}{suffix}"
            path.write_bytes(b"x")
            os.utime(path, (old, old))
    report, seconds = timed(lambda: prune_storage(uploads, pending=set(), retention_hours=24,
                                                  max_bytes=None))
    return f"pruning 4000 old jobs (12000 files): {report.removed_jobs} removed in {seconds:.2f} s"


def main() -> None:
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        checkpoint = build_random_checkpoint("rtmdet/rtmdet_tiny_8xb32-300e_coco.py",
                                             directory / "rtmdet.pth")
        ini = write_config(directory, {"rtmdet_tiny": checkpoint}, max_upload_bytes=24 * 2**20,
                           heartbeat_timeout_seconds=3, max_queue=200)
        server = LiveServer(ini).start()
        try:
            assert wait_done(server, server.upload(png_bytes()).json()["sid"]) == "done"
            (directory / "polls").mkdir()
            lines = [probe_parts(server), *probe_bombs(server),
                     probe_long_polls(directory, checkpoint),
                     probe_slow_clients(server), probe_kill_during_deepstack(server),
                     probe_stopped_worker(server), probe_pruning(directory)]
        finally:
            server.stop()
            server.kill_worker()
            server.remove_metrics()
    print("\n".join(f"- {line}" for line in lines))


if __name__ == "__main__":
    main()
