"""Tiles against small, far objects: recall and time of YOLOX-Nano on a wide shot, plain and on
N x N tiles, as the worker runs it (``detect_tiled``), on this machine.

    .venv/bin/python bench/tiles.py --output docs/tiles.md

The wide shot (tests/wide_shot.py): 12 objects of real photos (person, bird, dog, horse,
bicycle), each 128 px tall, on a 2400 x 1600 field; an object is found by a detection of its
label at IoU >= 0.5 over its box. Also the detections on ../shared/photos/kite.jpg (a beach with
far kites and people; no boxes known: counts only). Needs the real checkpoint in ../shared.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import SHARED_CHECKPOINT, SHARED_PHOTOS  # noqa: E402
from tests.wide_shot import OBJECT_PIXELS, SIZE, recall, wide_shot  # noqa: E402

GRIDS = (1, 2, 3, 4)
THRESHOLD = 0.3


def load_yolox_nano():
    from detection.models import load_registry
    from detection.worker.detectors import load_detector
    directory = Path(tempfile.mkdtemp())
    (directory / "models.toml").write_text(
        '[yolox_nano]\nconfig = "yolox/yolox_nano_8xb8-300e_coco.py"\n'
        f'checkpoint = "{SHARED_CHECKPOINT}"\n')
    return load_detector(load_registry(directory / "models.toml", directory)["yolox_nano"],
                         "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    from detection.worker.tiling import detect_tiled
    detector = load_yolox_nano()

    def best_box(rgb, label):
        return next(d.bbox for d in detector.detect_batch([rgb], [0.05])[0] if d.label == label)

    image, truth = wide_shot(best_box)
    kite = np.asarray(Image.open(SHARED_PHOTOS / "kite.jpg").convert("RGB"))
    rows = []
    for grid in GRIDS:
        times = []
        for _ in range(args.runs + 1):
            started = time.perf_counter()
            found = detect_tiled(detector, image, THRESHOLD, grid)
            times.append(time.perf_counter() - started)
        kite_found = Counter(d.label for d in detect_tiled(detector, kite, THRESHOLD, grid))
        rows.append((grid, recall(truth, [d.to_json() for d in found]), len(found),
                     statistics.median(times[1:]) * 1000, kite_found))
    plain_ms = rows[0][3]
    lines = [f"YOLOX-Nano (the real checkpoint), score >= {THRESHOLD}, on this machine's CPU; "
             f"median of {args.runs} warm runs. Wide shot: {SIZE[0]} x {SIZE[1]}, "
             f"{len(truth)} objects {OBJECT_PIXELS} px tall. kite.jpg: "
             f"{kite.shape[1]} x {kite.shape[0]}.", "",
             "| tiles | wide shot: recall @ IoU 0.5 | detections | ms | × plain | "
             "kite.jpg: kites, persons |", "|---|---|---|---|---|---|"]
    for grid, found, count, ms, kite_found in rows:
        name = "plain" if grid == 1 else f"{grid} × {grid} (+ whole)"
        lines.append(f"| {name} | {found:.2f} ({round(found * len(truth))} of {len(truth)}) | "
                     f"{count} | {ms:.0f} | {ms / plain_ms:.1f} | {kite_found['kite']}, "
                     f"{kite_found['person']} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.output:
        args.output.write_text("# Tiles: small, far objects\n\nMade by `bench/tiles.py` "
                               "([Tiles](models.md#tiles-small-far-objects)).\n\n" + table)


if __name__ == "__main__":
    main()
