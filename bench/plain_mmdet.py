"""Plain mmdet, as a user would time it: a fresh process with default settings, the model loaded
with ``init_detector`` and run with ``inference_detector`` on each image (BGR arrays, as mmdet
takes them). For the faces model, facenet-pytorch's MTCNN ``detect`` in the same way. With
``--tiles N``, a tiled model's work done with mmdet alone: ``inference_detector`` on the whole
image and on each of the same N x N windows the service detects (their merge, an NMS of a few
hundred boxes, left out).

    python bench/plain_mmdet.py [--tiles N] [--device D] CONFIG CHECKPOINT IMAGE...
                                                            (CONFIG "mtcnn": the faces model)

It warms up on every image twice, prints ``ready``, then answers each line of its input (an
image's index) with the milliseconds one run took: the benchmarks interleave it with the service,
so that both see the same machine.
"""
from __future__ import annotations

import contextlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # detection/: faces, tiles


def load(config: str, checkpoint: str, tiles: int = 1, device: str = "cpu"):
    """A function that detects on one array, and the array it takes for an RGB image."""
    if config == "mtcnn":
        from detection.worker.detectors.face_detector import _import_mtcnn
        mtcnn = _import_mtcnn()(keep_all=True, device=device)
        return (lambda rgb: mtcnn.detect(rgb, landmarks=True)), (lambda rgb: rgb)
    from mmdet.apis import inference_detector, init_detector
    model = init_detector(config, checkpoint, device=device)
    if tiles == 1:
        return (lambda bgr: inference_detector(model, bgr)), (lambda rgb: rgb[:, :, ::-1].copy())
    from detection.worker.tiling import tile_windows

    def tiled(bgr):
        height, width = bgr.shape[:2]
        return [inference_detector(model, np.ascontiguousarray(bgr[y1:y2, x1:x2]))
                for x1, y1, x2, y2 in [(0, 0, width, height),
                                       *tile_windows(width, height, tiles)]]
    return tiled, (lambda rgb: rgb[:, :, ::-1].copy())


def main(config: str, checkpoint: str, paths: list[str], tiles: int = 1,
         device: str = "cpu") -> None:
    import torch
    with contextlib.redirect_stdout(sys.stderr):  # stdout answers the benchmark; mmdet talks
        detect, prepare = load(config, checkpoint, tiles, device)
        images = [prepare(np.asarray(Image.open(path).convert("RGB"))) for path in paths]
        for image in images * 2:
            detect(image)
    print("ready", flush=True)
    for line in sys.stdin:
        image = images[int(line)]
        started = time.perf_counter()
        detect(image)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        print(f"{(time.perf_counter() - started) * 1000:.2f}", flush=True)


# After its last op, a process's idle PyTorch (OpenMP) threads spin for ~6 ms of CPU (measured
# here), taking a core from whatever runs next: run beside each other with no pause, plain mmdet
# made the service's next upload slower (YOLOX-Nano's inference, two runs: 26.3-26.9 -> 28.6-34.5
# ms p50), and the service, on two torch threads, would slow plain mmdet's next run. Each side
# starts settled.
SETTLE_SECONDS = 0.05


class PlainMMDet:
    """The benchmarks' side of this script: one fresh process, measured run by run."""

    def __init__(self, config: str, checkpoint: Path, image_files: list[Path], tiles: int = 1,
                 device: str = "cpu"):
        import subprocess
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--tiles", str(tiles), "--device", device, config,
             str(checkpoint), *map(str, image_files)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            self.close()
            raise RuntimeError(f"plain mmdet did not start (it said {ready!r})")
        self.times: dict[int, list[float]] = {index: [] for index in range(len(image_files))}

    def measure(self, index: int) -> float:
        """Seconds one run on image ``index`` took, with the machine left to settle before and
        after it (``SETTLE_SECONDS``)."""
        time.sleep(SETTLE_SECONDS)
        self.process.stdin.write(f"{index}\n")
        self.process.stdin.flush()
        seconds = float(self.process.stdout.readline()) / 1000
        self.times[index].append(seconds)
        time.sleep(SETTLE_SECONDS)
        return seconds

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)
        self.process.stdout.close()


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("images", nargs="+")
    arguments = parser.parse_args()
    main(arguments.config, arguments.checkpoint, arguments.images, arguments.tiles,
         arguments.device)
