"""Helpers the tests and the benchmarks share: settings files in a temp dir, the app, a live
server (waitress on a free port + the real daemon), and images made in memory."""
from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
SHARED_CHECKPOINT = ROOT.parent / "shared" / "models" / "yolox_nano_coco.pth"
SHARED_PHOTOS = ROOT.parent / "shared" / "photos"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def write_models_file(path: Path, checkpoints: dict[str, Path | None],
                      extra_models: str = "") -> Path:
    """A models.toml like the shipped one, with the given checkpoints (others point nowhere);
    models of other backends (faces) only when named in ``checkpoints``; ``extra_models``: more
    tables, as TOML."""
    import tomllib
    with open(ROOT / "configs" / "models.toml", "rb") as f:
        tables = tomllib.load(f)
    lines = []
    for name, table in tables.items():
        if "config" not in table:
            if name in checkpoints:
                lines += [f"[{name}]", f"backend = {table['backend']!r}",
                          f"hint = {table['hint']!r}", ""]
            continue
        lines += [f"[{name}]", f"config = {table['config']!r}", f"hint = {table['hint']!r}"]
        lines += [f"tiles = {table['tiles']}"] if "tiles" in table else []
        checkpoint = checkpoints.get(name, path.parent / "absent" / f"{name}.pth")
        lines += [f"checkpoint = {str(checkpoint)!r}", ""]
    path.write_text("\n".join(lines) + "\n" + extra_models)
    return path


def write_config(directory: Path, checkpoints: dict[str, Path], extra_models: str = "",
                 **overrides) -> Path:
    """Write a testing .ini (from configs/testing.ini) using ``directory``; return its path."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "configs" / "testing.ini")
    app = parser["app:main"]
    app["detection.uploads_dir"] = str(directory / "uploads")
    app["detection.checkpoints_dir"] = str(directory / "checkpoints")
    app["detection.datasets_dir"] = str(directory / "datasets")
    app["detection.models_file"] = str(write_models_file(directory / "models.toml", checkpoints,
                                                         extra_models))
    for key, value in overrides.items():
        app[f"detection.{key}"] = str(value)
    ini = directory / "testing.ini"
    with open(ini, "w") as f:
        parser.write(f)
    return ini


def app_for(ini: Path):
    from pyramid.paster import get_appsettings

    from web import main
    return main({"__file__": str(ini)}, **get_appsettings(str(ini)))


# A bound for what the service must refuse or finish "at once" (a bomb, a starved request): far
# above what it takes on a slow, busy machine (milliseconds here), far below what the attack costs
# without its defence (seconds to minutes, or the 30 s a waiting request would hold). Tests bound
# such work by this, never by a time tuned to one machine; speed goals live in bench/.
AT_ONCE_SECONDS = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``python web.py INI`` on a free port: real waitress, real daemon started by the app."""

    def __init__(self, ini: Path):
        self.ini = ini
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(ini)
        self.uploads = Path(parser["app:main"]["detection.uploads_dir"])
        self.models_file = Path(parser["app:main"]["detection.models_file"])

    def start(self, timeout: float = 30) -> "LiveServer":
        self.log = open(self.ini.parent / f"web-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "web.py"), str(self.ini)], cwd=ROOT,
            env={**os.environ, "PORT": str(self.port)}, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/health", timeout=1).raise_for_status()
                return self
            except requests.RequestException:
                assert self.process.poll() is None, "web.py exited at start-up"
                time.sleep(0.1)
        raise TimeoutError("the server did not answer /health")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
            self.log.close()

    def remove_metrics(self) -> None:
        """Its Prometheus files in /dev/shm (benchmarks: tests leave that to conftest)."""
        import shutil

        from detection.settings import load_settings
        shutil.rmtree(load_settings(self.ini).metrics_dir, ignore_errors=True)

    def worker_pid(self) -> int | None:
        from detection.jobs.locks import holder_pid
        return holder_pid(self.uploads / ".daemon.lock")

    def kill_worker(self, sig: int = signal.SIGKILL) -> int | None:
        pid = self.worker_pid()
        if pid:
            os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while self.worker_pid() == pid and time.monotonic() < deadline:
                time.sleep(0.05)
        return pid

    def upload(self, image: bytes, name: str = "photo.png", **fields) -> requests.Response:
        return requests.post(self.url + "/upload", files={"image": (name, image)},
                             data=fields, timeout=30)

    def wait_until_finished(self, sid: str, timeout: float = 120, interval: float = 0) -> dict:
        """Long-poll /status (``?wait=``), or poll every ``interval`` seconds as the page does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wait = f"?wait={min(30.0, deadline - time.monotonic()):.1f}" if not interval else ""
            status = requests.get(f"{self.url}/status/{sid}{wait}", timeout=60).json()
            if status["state"] in ("done", "failed"):
                return status
            time.sleep(interval or 0.01)
        raise TimeoutError(f"job {sid} did not finish in {timeout} s: {status}")


def done_result(job) -> dict:
    """A detection's result record as a worker writes it (no detections)."""
    return {**job.to_fields(), "device": "cpu", "image": {"width": 320, "height": 240},
            "detections": [], "timings": {"inference_ms": 1.0}}


def png_bytes(size=(320, 240), color=(40, 120, 200), mode="RGB", format="PNG", **save) -> bytes:
    """An image file in memory: a flat background with a few shapes on it."""
    import io

    from PIL import Image, ImageDraw
    image = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rectangle((w // 8, h // 6, w // 2, h * 5 // 6), fill=(230, 200, 40))
    draw.ellipse((w // 2, h // 4, w * 7 // 8, h * 3 // 4), fill=(200, 40, 60))
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save)
    return buffer.getvalue()


class FileServer:
    """A loopback HTTP server for the files of ``directory``, sent ``chunk_bytes`` at a time with
    ``pause`` seconds between (a slow link, so that progress can be seen), or (``stall``) a
    header and then nothing, or (``truncate``) half the bytes its header announces. ``requests``
    counts the GETs."""

    def __init__(self, directory: Path, chunk_bytes: int = 2**18, pause: float = 0.0,
                 stall: bool = False, truncate: bool = False):
        import http.server
        import threading

        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                served.requests += 1
                path = directory / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if stall:
                    time.sleep(60)
                for start in range(0, len(data) // 2 if truncate else len(data), chunk_bytes):
                    self.wfile.write(data[start:start + chunk_bytes])
                    time.sleep(pause)

            def log_message(self, *args):
                pass

        self.requests = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CallbackReceiver:
    """A loopback HTTP server that takes callbacks: it answers each POST with the next of
    ``answers`` (HTTP statuses; the last repeats), or first holds it ``hang`` seconds; it keeps
    each delivery (time, headers, body) and whether its signature checks with ``secret``."""

    def __init__(self, secret: str, answers: tuple[int, ...] = (200,), hang: float = 0.0):
        import http.server
        import threading

        from detection.callbacks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

        receiver = self
        self.deliveries: list[dict] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                signed = verify(secret, self.headers.get(TIMESTAMP_HEADER, ""),
                                self.headers.get(SIGNATURE_HEADER, ""), body, time.time())
                receiver.deliveries.append({"at": time.time(), "path": self.path,
                                            "headers": dict(self.headers), "body": body,
                                            "signed": signed})
                if hang:
                    time.sleep(hang)
                answer = answers[min(len(receiver.deliveries), len(answers)) - 1]
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RedisServer:
    """A real ``redis-server`` on a free port, its data (AOF, fsynced always) in ``directory``.

    Skips the test where redis-server is not installed, except under CI, where that fails."""

    def __init__(self, directory: Path):
        import shutil
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.binary):
            import pytest
            message = "redis-server is not installed (scripts/install-redis.sh installs it)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> "RedisServer":
        from redis import Redis
        from redis.exceptions import ConnectionError
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.directory), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--daemonize", "no", "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except ConnectionError:
                assert self.process.poll() is None and time.monotonic() < deadline, \
                    "redis-server did not start"
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)


def wait_until(condition, timeout: float, interval: float = 0.005):
    """``condition()``'s first true value, asked again every ``interval`` s for ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"not true within {timeout} s")
