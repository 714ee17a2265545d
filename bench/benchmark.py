"""Benchmark the service against plain mmdet and the original spawn-per-upload design.

    make bench      (= .venv/bin/python bench/benchmark.py --output docs/benchmarks.md)

For each model, in one run on this machine: plain mmdet as a user times it (the floor: a fresh
process with default settings, ``init_detector`` + ``inference_detector`` on a warm model, run
beside each upload: ``plain_mmdet.py``), the service one upload at a time (POST /upload until
the PNG is served) with its breakdown, the original design (a fresh process per upload), a
burst of concurrent uploads, the peak memory of web + worker during it, and the cold start. Random-weights checkpoints (the compute of trained
ones) except YOLOX-Nano, which uses the real checkpoint from ../shared when it is there.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import requests
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from plain_mmdet import PlainMMDet  # noqa: E402

from tests.random_weights import build_random_checkpoint  # noqa: E402
from tests.support import SHARED_CHECKPOINT, LiveServer, write_config  # noqa: E402

CONFIGS = {"rtmdet_tiny": "rtmdet/rtmdet_tiny_8xb32-300e_coco.py",
           "faster_rcnn_r50": "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
           "yolox_nano": "yolox/yolox_nano_8xb8-300e_coco.py"}
SIZES = [(640, 480), (1280, 960), (1920, 1080)]
THRESHOLD = "0.3"


def make_images() -> list[bytes]:
    """JPEGs of three sizes with shapes and texture (seeded: the same every run)."""
    rng = np.random.default_rng(0)
    images = []
    for width, height in SIZES:
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8) // 4 + 96
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = int(rng.integers(0, width - 50)), int(rng.integers(0, height - 50))
            w, h = int(rng.integers(40, width // 3)), int(rng.integers(40, height // 3))
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h),
                                                                     fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def percentiles(seconds: list[float]) -> tuple[float, float]:
    return statistics.median(seconds), float(np.percentile(seconds, 95))


def one_upload(server: LiveServer, data: bytes, **fields: str) -> dict:
    """POST /upload, long-poll /status/<sid>?wait=60, then GET /uploads/<sid>.out.png, on one
    keep-alive connection as a browser would; seconds per step (the server's from its
    Server-Timing header and the result's timings)."""
    with requests.Session() as client:
        started = time.perf_counter()
        response = client.post(f"{server.url}/upload", files={"image": ("bench.jpg", data)},
                               data={"threshold": THRESHOLD, **fields}, timeout=30)
        accepted = time.perf_counter()
        sid = response.json()["sid"]
        status = client.get(f"{server.url}/status/{sid}?wait=60", timeout=90).json()
        assert status["state"] == "done", status
        fetch_started = time.perf_counter()
        # Read whole, as a browser would (requests' .content reads in 10 KiB pieces: 4 ms more)
        result = client.get(f"{server.url}/uploads/{sid}.out.png", timeout=30, stream=True)
        assert result.status_code == 200 and result.raw.read()[:4] == b"\x89PNG"
        finished = time.perf_counter()
    web = {f"web {step}": float(duration) / 1000 for step, duration in
           re.findall(r"(\w+);dur=([\d.]+)", response.headers["Server-Timing"])}
    worker = {f"worker {name.removesuffix('_ms')}": ms / 1000
              for name, ms in status["timings"].items()}
    steps = {"receive": accepted - started - sum(web.values()), **web,
             "hand-off": fetch_started - accepted - sum(worker.values()), **worker,
             "serve": finished - fetch_started}
    return {"total": finished - started, "steps": steps}


def burst(server: LiveServer, images: list[bytes], count: int) -> dict:
    """``count`` concurrent uploads; wall time until the last result is written (its clients
    poll once a second, as the page does behind the queue's head, so they hear up to a second
    later); peak RSS of web + worker."""
    web = psutil.Process(server.process.pid)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                daemon = [psutil.Process(server.worker_pid())] if server.worker_pid() else []
                processes = [web, *daemon, *(child for p in daemon
                                             for child in p.children(recursive=True))]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in processes))
            except psutil.NoSuchProcess:
                pass
            stop.wait(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.time()  # compared with the results' modification times
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        responses = list(pool.map(lambda i: server.upload(images[i % len(images)], name="b.jpg",
                                                          threshold=THRESHOLD), range(count)))
        sids = [r.json()["sid"] for r in responses if r.status_code == 202]
        states = list(pool.map(lambda sid: server.wait_until_finished(sid, 1800, interval=1.0)
                               ["state"], sids))
    wall = max((server.uploads / f"{sid}.json").stat().st_mtime for sid in sids) - started
    stop.set()
    sampler.join()
    return {"wall": wall, "done": states.count("done"), "accepted": len(sids), "sent": count,
            "peak_rss": peak[0]}


def original_design(ini: Path, server: LiveServer, data: bytes, runs: int) -> list[float]:
    """A fresh `python mmdetectionl.py SID THRESHOLD` per upload (import, load, infer, draw)."""
    sid = server.upload(data, threshold=THRESHOLD).json()["sid"]
    server.wait_until_finished(sid)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run = subprocess.run([sys.executable, str(ROOT / "mmdetectionl.py"), "--config", str(ini),
                              sid, THRESHOLD], capture_output=True, text=True, cwd=ROOT)
        if run.returncode:
            raise RuntimeError(f"the detection script failed:\n{run.stderr[-2000:]}")
        times.append(time.perf_counter() - started)
    return times


def bench_model(name: str, checkpoint: Path, images: list[bytes], args, workdir: Path) -> dict:
    heavy = name == "faster_rcnn_r50"
    rounds, uploads, burst_size = (1, 6, 20) if heavy else (2, 30, 50)
    from detection.models import mmdet_configs_dir
    files = []
    for index, data in enumerate(images):
        files.append(workdir / f"image{index}.jpg")
        files[-1].write_bytes(data)
    floor = PlainMMDet(str(mmdet_configs_dir() / CONFIGS[name]), checkpoint, files,
                       device=args.device)
    (workdir / name).mkdir(parents=True, exist_ok=True)
    ini = write_config(workdir / name, {name: checkpoint}, default_model=name,
                       device=args.device, max_upload_bytes=20_000_000, max_pixels=40_000_000,
                       max_queue=100, idle_exit_seconds=600)
    print(f"== {name}: cold start, service, burst", flush=True)
    started = time.perf_counter()
    server = LiveServer(ini).start(timeout=60)
    sid = server.upload(images[0], threshold=THRESHOLD).json()["sid"]
    assert server.wait_until_finished(sid, 600)["state"] == "done"
    cold = time.perf_counter() - started
    try:
        runs = []
        for i in range(uploads):  # the floor beside each upload: both see the same machine
            size = i % len(images)
            for _ in range(rounds):
                floor.measure(size)
            runs.append({**one_upload(server, images[size]), "size": size})
        floor.close()
        crowd = burst(server, images, burst_size)
        print(f"== {name}: original design", flush=True)
        original = original_design(ini, server, images[0], 2 if heavy else 3)
    finally:
        server.stop()
        server.kill_worker()
        server.remove_metrics()
    return {"name": name, "floor": floor.times, "runs": runs, "burst": crowd, "cold": cold,
            "original": original}


def report(results: list[dict], device: str) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    import onnxruntime
    import torch
    gpu = f", on {torch.cuda.get_device_name(device)} ({device})" if device != "cpu" else ""
    lines = [
        f"Machine: {cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"
        f"{gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; images {', '.join(f'{w}x{h}' for w, h in SIZES)} "
        f"(JPEG); threshold {THRESHOLD}. Times in seconds. Floor: plain mmdet in a fresh process "
        "with default settings (`bench/plain_mmdet.py`), run beside each upload. Burst: 50 uploads at once "
        "(Faster R-CNN: 20), the wall time until the last result is written (the clients poll "
        "once a second, as the page does behind the queue's head).", "",
        "| model | floor p50 / p95 | service p50 / p95 | service ÷ floor | original design p50 "
        "| original ÷ service | burst: images, wall, img/s (÷ 1/floor) | lost | peak RSS web+worker "
        "| cold start |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        floor50, floor95 = percentiles([t for times in r["floor"].values() for t in times])
        service50, service95 = percentiles([run["total"] for run in r["runs"]])
        original50 = statistics.median(r["original"])
        b = r["burst"]
        rate = b["done"] / b["wall"]
        lines.append(
            f"| {r['name']} | {floor50:.3f} / {floor95:.3f} | {service50:.3f} / {service95:.3f} "
            f"| {service50 / floor50:.2f} | {original50:.2f} | {original50 / service50:.1f}× "
            f"| {b['done']}/{b['sent']}, {b['wall']:.1f}, {rate:.2f} ({rate * floor50:.2f}) "
            f"| {b['accepted'] - b['done']} | {b['peak_rss'] / 2**20:.0f} MiB | {r['cold']:.1f} |")
    lines += ["", "Overhead by image size: the service's p50 (from the start of `POST /upload` to "
              "`GET /uploads/<sid>.out.png` answered) minus the floor's p50 on the same pixels, "
              "in ms:", "",
              "| model | " + " | ".join(f"{w}x{h}: service − floor = overhead"
                                        for w, h in SIZES) + " |",
              "|---|" + "---|" * len(SIZES)]
    for r in results:
        cells = []
        for size in range(len(SIZES)):
            service = statistics.median(run["total"] for run in r["runs"] if run["size"] == size)
            floor = statistics.median(r["floor"][size])
            cells.append(f"{service * 1000:.0f} − {floor * 1000:.0f} = "
                         f"**{(service - floor) * 1000:.0f}**")
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    steps = list(results[0]["runs"][0]["steps"])
    lines += ["", "Where the service's time goes (means in ms, one upload at a time: the steps "
              "add up to the total). receive: the upload's transfer and parsing, the client's "
              "share included; web decode, encode (the input PNG), store (writing it), queue "
              "(the job's ticket and its pixels): from the upload's `Server-Timing` header; "
              "hand-off: the queue's pick-up, the result's JSON and the answer to the client's "
              "long-poll (`GET /status/<sid>?wait=60`), less where the worker starts before the "
              "client has the answer; worker read (the pixels) ... write (the drawn PNG): from "
              "the result's timings; serve: `GET /uploads/<sid>.out.png`.", "",
              "| model | size | " + " | ".join(steps) + " | total |",
              "|---|---|" + "---|" * (len(steps) + 1)]
    for r in results:
        for size, (width, height) in enumerate(SIZES):
            runs = [run for run in r["runs"] if run["size"] == size]
            mean = {step: statistics.fmean(run["steps"][step] for run in runs) for step in steps}
            total = statistics.fmean(run["total"] for run in runs)
            lines.append(f"| {r['name']} | {width}x{height} | "
                         + " | ".join(f"{mean[step] * 1000:.1f}" for step in steps)
                         + f" | {total * 1000:.1f} |")
    return "\n".join(lines) + "\n"


GENERATED_BEGIN = "<!-- generated by bench/benchmark.py: begin -->"
GENERATED_END = "<!-- generated by bench/benchmark.py: end -->"


def write_report(path: Path, table: str) -> None:
    """Put the tables between the file's generated-block markers, keeping the hand-written text
    around them; a file without the markers is written whole, as a page of its own."""
    generated = "Made by `make bench` (bench/benchmark.py).\n\n" + table
    text = path.read_text() if path.exists() else ""
    begin, end = text.find(GENERATED_BEGIN), text.find(GENERATED_END)
    if begin < 0 and end < 0:
        path.write_text("# Benchmarks\n\n" + generated)
    elif 0 <= begin < end:
        path.write_text(text[:begin] + GENERATED_BEGIN + "\n" + generated + text[end:])
    else:
        sys.exit(f"{path}: the markers {GENERATED_BEGIN} and {GENERATED_END} must both be there, "
                 "in that order (or neither); the file was left as it is")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--output", type=Path, help="also write the tables to this markdown file "
                        "(between its generated-block markers when it has them)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N on a GPU machine")
    args = parser.parse_args()
    workdir = ROOT / "artifacts" / "bench"
    images = make_images()
    results = []
    for name in args.models:
        if name == "yolox_nano" and SHARED_CHECKPOINT.is_file():
            checkpoint = SHARED_CHECKPOINT
        else:
            checkpoint = workdir / "checkpoints" / f"{name}_random.pth"
            if not checkpoint.exists():
                build_random_checkpoint(CONFIGS[name], checkpoint)
        results.append(bench_model(name, checkpoint, images, args, workdir))
    table = report(results, args.device)
    print(table)
    if args.output:
        write_report(args.output, table)


if __name__ == "__main__":
    main()
