"""Benchmark the service against raw mmdet and the original spawn-per-upload design.

    make bench      (= .venv/bin/python bench/benchmark.py --output docs/benchmarks.md)

For each model, in one run on this machine: raw ``inference_detector`` on a warm model (the floor),
the service one upload at a time (POST /upload until the PNG is served) with its breakdown, the
original design (a fresh process per upload), a burst of concurrent uploads, the peak memory of
web + worker during it, and the cold start. Random-weights checkpoints (the compute of trained
ones) except YOLOX-Nano, which uses the real checkpoint from ../shared when it is there.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import gc
import io
import os
import platform
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


def measure_floor(config: str, checkpoint: Path, images: list[bytes], rounds: int,
                  device: str) -> dict[int, list[float]]:
    """Raw mmdet: inference_detector on a warm model; seconds per image, by image size."""
    import torch
    from mmdet.apis import inference_detector, init_detector

    from detection.models import mmdet_configs_dir
    model = init_detector(str(mmdet_configs_dir() / config), str(checkpoint), device=device)
    arrays = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, :, ::-1].copy()
              for data in images]
    inference_detector(model, arrays[0])
    times = {size: [] for size in range(len(arrays))}
    for _ in range(rounds):
        for size, array in enumerate(arrays):
            started = time.perf_counter()
            inference_detector(model, array)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[size].append(time.perf_counter() - started)
    del model
    gc.collect()
    return times


def one_upload(server: LiveServer, data: bytes) -> dict:
    """POST /upload, long-poll /status/<sid>?wait=60, then GET /uploads/<sid>.out.png."""
    started = time.perf_counter()
    response = server.upload(data, name="bench.jpg", threshold=THRESHOLD)
    accepted = time.perf_counter()
    sid = response.json()["sid"]
    assert server.wait_until_finished(sid)["state"] == "done"
    fetch_started = time.perf_counter()
    result = requests.get(f"{server.url}/uploads/{sid}.out.png", timeout=30)
    assert result.status_code == 200
    finished = time.perf_counter()
    timings = requests.get(f"{server.url}/uploads/{sid}.json", timeout=30).json()["timings"]
    worker = sum(timings.values()) / 1000
    return {"total": finished - started, "upload": accepted - started,
            "fetch": finished - fetch_started, "worker": worker,
            "handoff": max(0.0, finished - started - (accepted - started) - worker
                           - (finished - fetch_started)), **timings}


def burst(server: LiveServer, images: list[bytes], count: int) -> dict:
    """``count`` concurrent uploads; wall time until all are done; peak RSS of web + worker."""
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
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        responses = list(pool.map(lambda i: server.upload(images[i % len(images)], name="b.jpg",
                                                          threshold=THRESHOLD), range(count)))
        sids = [r.json()["sid"] for r in responses if r.status_code == 202]
        states = list(pool.map(lambda sid: server.wait_until_finished(sid, 1800, interval=1.0)
                               ["state"], sids))
    wall = time.perf_counter() - started
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
    rounds, uploads, burst_size = (1, 6, 20) if heavy else (5, 15, 50)
    print(f"== {name}: floor", flush=True)
    floor = measure_floor(CONFIGS[name], checkpoint, images, rounds, args.device)
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
        runs = [{**one_upload(server, images[i % len(images)]), "size": i % len(images)}
                for i in range(uploads)]
        crowd = burst(server, images, burst_size)
        print(f"== {name}: original design", flush=True)
        original = original_design(ini, server, images[0], 2 if heavy else 3)
    finally:
        server.stop()
        server.kill_worker()
    return {"name": name, "floor": floor, "runs": runs, "burst": crowd, "cold": cold,
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
        f"(JPEG); threshold {THRESHOLD}. Times in seconds.", "",
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
    lines += ["", "Service breakdown (median ms per upload): decode+save is the whole `POST /upload`; "
              "hand-off is what is left between it, the worker and the final fetch (queue pick-up "
              "and the answer to the client's long-poll, `GET /status/<sid>?wait=60`); "
              "the burst's clients poll once a second, as the page does.", "",
              "| model | total | decode+save | hand-off | read | model | inference | draw | write "
              "| fetch |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        median = {k: statistics.median(run[k] for run in r["runs"]) for k in r["runs"][0]
                  if k != "size"}
        lines.append(
            f"| {r['name']} | {median['total'] * 1000:.0f} | {median['upload'] * 1000:.0f} "
            f"| {median['handoff'] * 1000:.0f} | {median['read_ms']:.0f} | {median['model_ms']:.0f} "
            f"| {median['inference_ms']:.0f} | {median['draw_ms']:.0f} | {median['write_ms']:.0f} "
            f"| {median['fetch'] * 1000:.0f} |")
    lines += ["", "Service ÷ floor by image size (medians; the service's extra work is mostly PNG "
              "encoding and decoding, which grows with the pixels):", "",
              "| model | " + " | ".join(f"{w}x{h}" for w, h in SIZES) + " |",
              "|---|" + "---|" * len(SIZES)]
    for r in results:
        cells = []
        for size in range(len(SIZES)):
            service = statistics.median(run["total"] for run in r["runs"] if run["size"] == size)
            floor = statistics.median(r["floor"][size])
            cells.append(f"{service:.3f} ÷ {floor:.3f} = {service / floor:.2f}")
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--output", type=Path, help="also write the table to this markdown file")
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
        args.output.write_text("# Benchmarks\n\nMade by `make bench` (bench/benchmark.py).\n\n"
                               + table)


if __name__ == "__main__":
    main()
