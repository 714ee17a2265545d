"""The service against plain mmdet, model by model, with each runtime, side by side.

    make bench      (= ... bench/runtimes.py --output docs/runtimes.md)

For every model of configs/models.toml, on this machine, in one run: plain mmdet in a fresh
process with default settings (``bench/plain_mmdet.py``: ``init_detector`` + ``inference_detector``;
MTCNN's ``detect`` for the faces model), warm, against the service (``POST /upload`` until the
drawn PNG is served, one upload at a time) with ``runtime = torch``, ``onnxruntime`` and ``auto``
(what auto chose is read from /health). Each plain run is interleaved with a service upload of
the same image. Random-weights checkpoints (the compute of trained ones) except YOLOX-Nano, which
uses the real checkpoint from ../shared when it is there. The images are the benchmark's shapes,
except for the faces model: a portrait (../shared/photos/grace_hopper.jpg, resized), since how
long MTCNN takes depends on the faces it considers. A model with tiles (``yolox_nano_tiled``) is
compared with plain mmdet run on the same windows (``plain_mmdet.py --tiles``).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchmark import THRESHOLD, make_images, one_upload  # noqa: E402
from plain_mmdet import PlainMMDet  # noqa: E402

from tests.random_weights import build_random_checkpoint  # noqa: E402
from tests.support import SHARED_CHECKPOINT, SHARED_PHOTOS, LiveServer, write_config  # noqa: E402

SIZES = ((640, 480), (1280, 960))  # the first two of the benchmark's images
RUNTIMES = ("torch", "onnxruntime", "auto")
HEAVY = {"faster_rcnn_r50", "mask_rcnn_r50"}
GOAL = 1.15  # the service's p50 within this of plain mmdet's


def checkpoint_for(name: str, config: str | None, workdir: Path) -> Path | None:
    if name.startswith("yolox_nano") and SHARED_CHECKPOINT.is_file():  # the tiled one too
        return SHARED_CHECKPOINT
    if config is None:
        return None  # faces: facenet-pytorch's own weights
    path = workdir / "checkpoints" / f"{name}_random.pth"
    if not path.exists():
        build_random_checkpoint(config, path)
    return path


def portraits() -> list[bytes]:
    """The faces model's images: a portrait at each size, as JPEGs."""
    import io

    from PIL import Image
    portrait = Image.open(SHARED_PHOTOS / "grace_hopper.jpg").convert("RGB")
    images = []
    for size in SIZES:
        buffer = io.BytesIO()
        portrait.resize(size).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def bench_model(name: str, config: str | None, workdir: Path, images: list[bytes],
                runs: int, tiles: int = 1) -> dict:
    from detection.models import mmdet_configs_dir
    checkpoint = checkpoint_for(name, config, workdir)
    files = []
    for (width, height), data in zip(SIZES, images):
        path = workdir / f"{width}x{height}.jpg"
        path.write_bytes(data)
        files.append(path)
    plain = PlainMMDet(str(mmdet_configs_dir() / config) if config else "mtcnn",
                       checkpoint or Path("-"), files, tiles)
    service: dict[str, dict[int, list[float]]] = {}
    chosen: dict[str, str] = {}
    try:
        for runtime in RUNTIMES:
            directory = workdir / name / runtime
            directory.mkdir(parents=True, exist_ok=True)
            ini = write_config(directory, {name: checkpoint}, default_model=name,
                               runtime=runtime, max_queue=100, idle_exit_seconds=600)
            print(f"== {name}: runtime {runtime}", flush=True)
            server = LiveServer(ini).start(timeout=60)
            try:
                sid = server.upload(images[0], threshold=THRESHOLD).json()["sid"]  # load, warm
                assert server.wait_until_finished(sid, 900)["state"] == "done"
                for index in range(len(SIZES)):
                    one_upload(server, images[index])
                times: dict[int, list[float]] = {index: [] for index in range(len(SIZES))}
                for i in range(runs * len(SIZES)):
                    index = i % len(SIZES)
                    plain.measure(index)
                    times[index].append(one_upload(server, images[index])["total"])
                service[runtime] = times
                worker = requests.get(server.url + "/health", timeout=10).json()["worker"]
                chosen[runtime] = worker.get("runtimes", {}).get(name, "?")
                if runtime == "auto":
                    chosen["timings"] = worker.get("runtime_ms", {}).get(name, {})
            finally:
                server.stop()
                server.kill_worker()
                server.remove_metrics()
    finally:
        plain.close()
    return {"name": name, "plain": plain.times, "service": service, "chosen": chosen}


def report(results: list[dict]) -> str:
    import onnxruntime
    import psutil
    import torch
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), platform.processor())
    lines = [
        f"Machine: {cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
        f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}. p50 in ms of plain mmdet (a fresh process, default "
        "settings, `inference_detector` on a warm model) and of the service (from the start of "
        "`POST /upload` to `GET /uploads/<sid>.out.png` answered), one upload at a time, each "
        "beside a plain run of the same image; in brackets the service ÷ plain mmdet (the goal: "
        f"at most {GOAL}). auto: what `runtime = auto` chose when the model loaded, and its "
        "timings of each runtime on its probe. The images: the benchmark's shapes; for faces, "
        "a portrait (grace_hopper.jpg) at each size. A model with tiles against plain mmdet on "
        "the same windows (`plain_mmdet.py --tiles`).", "",
        "| model | image | plain mmdet | service, torch | service, onnxruntime | service, auto "
        "| auto chose (probe ms) |",
        "|---|---|---|---|---|---|---|"]
    for r in results:
        for index, (width, height) in enumerate(SIZES):
            plain = statistics.median(r["plain"][index]) * 1000
            cells = []
            for runtime in RUNTIMES:
                ms = statistics.median(r["service"][runtime][index]) * 1000
                cells.append(f"{ms:.0f} ({ms / plain:.2f})")
            timings = ", ".join(f"{k} {v:g}" for k, v in r["chosen"].get("timings", {}).items())
            choice = f"{r['chosen'].get('auto', '?')}" + (f" ({timings})" if timings else "")
            lines.append(f"| {r['name']} | {width}x{height} | {plain:.0f} | "
                         + " | ".join(cells) + f" | {choice} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import tomllib
    with open(ROOT / "configs" / "models.toml", "rb") as f:
        tables = tomllib.load(f)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(tables), choices=list(tables))
    parser.add_argument("--runs", type=int, default=10, help="uploads per image size (the "
                        "R-CNNs: a third)")
    parser.add_argument("--output", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    workdir = ROOT / "artifacts" / "runtimes"
    workdir.mkdir(parents=True, exist_ok=True)
    images = make_images()[:len(SIZES)]
    started = time.perf_counter()
    faces = portraits() if SHARED_PHOTOS.is_dir() else images
    results = [bench_model(name, tables[name].get("config"), workdir,
                           faces if tables[name].get("backend") == "mtcnn" else images,
                           max(3, args.runs // 3) if name in HEAVY else args.runs,
                           tables[name].get("tiles", 1))
               for name in args.models]
    table = report(results)
    print(table)
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.output:
        args.output.write_text("# Runtimes: the service against plain mmdet\n\nMade by "
                               "`make bench` (bench/runtimes.py).\n\n" + table)


if __name__ == "__main__":
    main()
