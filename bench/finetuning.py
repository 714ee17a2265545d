"""Fine-tuning, measured: training time and validation mAP of custom models, and their speed
as the service serves them, beside the model they came from.

    .venv/bin/python bench/finetuning.py --output docs/finetuning.md

The shapes dataset of the tests (60 training, 20 validation images, 320 px). YOLOX-Nano from the
real COCO checkpoint in ../shared (boxes); RTMDet-Ins-Tiny from random weights (masks: no COCO
checkpoint of it can be downloaded here). Then each model through the live service: uploads of
a 320x320 shape photo and of the benchmark's 640x480 JPEG, one at a time.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchmark import make_images, one_upload  # noqa: E402
from tests.random_weights import build_random_checkpoint  # noqa: E402
from tests.shapes import make_dataset, run_finetune, shapes_photo  # noqa: E402
from tests.support import SHARED_CHECKPOINT, LiveServer, write_config  # noqa: E402

RUNS = {"shapes": ("yolox_nano", ["--epochs", "20"]),
        "shape_masks": ("rtmdet_ins_tiny", ["--epochs", "30", "--image-size", "160"])}
UPLOADS = 20


def train(ini: Path, name: str, base: str, options: list[str], data: Path) -> str:
    """Run ``mmdetectionl.py finetune``; its closing line (classes, seconds, mAP)."""
    started = time.monotonic()
    run = run_finetune(ini, name, base, data / "train/annotations.json",
                       "--val", str(data / "val/annotations.json"), *options)
    run.check_returncode()
    outcome = run.stdout.splitlines()[-1].split(". Served now")[0].split(": ", 1)[1]
    return f"{outcome} (the whole command: {time.monotonic() - started:.0f} s)"


def serve(server: LiveServer, model: str, photos: dict[str, bytes]) -> dict[str, tuple]:
    """p50 of the whole upload and of the worker's inference, per photo."""
    speeds = {}
    for label, data in photos.items():
        for _ in range(2):
            one_upload(server, data, model=model)  # warm: loaded, first passes done
        runs = [one_upload(server, data, model=model) for _ in range(UPLOADS)]
        speeds[label] = (statistics.median(r["total"] for r in runs),
                         statistics.median(r["steps"]["worker inference"] for r in runs))
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="also write the report to this markdown file")
    args = parser.parse_args()
    if not SHARED_CHECKPOINT.is_file():
        sys.exit(f"needs the real YOLOX-Nano checkpoint at {SHARED_CHECKPOINT}")
    work = ROOT / "artifacts" / "bench-finetuning"
    shutil.rmtree(work, ignore_errors=True)
    make_dataset(work / "data" / "train", 60)
    make_dataset(work / "data" / "val", 20, seed=1)
    masks_base = build_random_checkpoint("rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py",
                                         work / "rtmdet_ins_tiny_random.pth")
    ini = write_config(work, {"yolox_nano": SHARED_CHECKPOINT, "rtmdet_ins_tiny": masks_base},
                       default_model="yolox_nano")
    trained = {name: train(ini, name, base, options, work / "data")
               for name, (base, options) in RUNS.items()}
    photos = {"320x320 PNG": shapes_photo(0), "640x480 JPEG": make_images()[0]}
    server = LiveServer(ini).start()
    try:
        speeds = {model: serve(server, model, photos)
                  for model in ("yolox_nano", *RUNS, "rtmdet_ins_tiny")}
    finally:
        server.stop()
        server.kill_worker()
        server.remove_metrics()
    lines = ["## Training (2 cores, CPU)", ""] + [
        f"- `{name}` from `{RUNS[name][0]}` ({' '.join(RUNS[name][1])}): {line}"
        for name, line in trained.items()]
    lines += ["", f"## Served (p50 of {UPLOADS} uploads, one at a time; ms)", "",
              "| model | " + " | ".join(f"{p}: upload to result | {p}: inference"
                                       for p in photos) + " |",
              "|---|" + "---:|---:|" * len(photos)]
    for model, speed in speeds.items():
        lines.append(f"| {model} | " + " | ".join(f"{total * 1000:.0f} | {inference * 1000:.0f}"
                                                 for total, inference in speed.values()) + " |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        args.output.write_text("# Fine-tuning\n\nMade by `bench/finetuning.py`.\n\n" + report)


if __name__ == "__main__":
    main()
