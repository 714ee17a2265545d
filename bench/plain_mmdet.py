"""Plain mmdet, as a user would time it: a fresh process with default settings, the model loaded
with ``init_detector`` and run with ``inference_detector`` on each image (BGR arrays, as mmdet
takes them). For the faces model, facenet-pytorch's MTCNN ``detect`` in the same way.

    python bench/plain_mmdet.py CONFIG CHECKPOINT IMAGE...     (CONFIG "mtcnn": the faces model)

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


def load(config: str, checkpoint: str):
    """A function that detects on one array, and the array it takes for an RGB image."""
    if config == "mtcnn":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from detection.worker.detectors.face_detector import _import_mtcnn
        mtcnn = _import_mtcnn()(keep_all=True, device="cpu")
        return (lambda rgb: mtcnn.detect(rgb, landmarks=True)), (lambda rgb: rgb)
    from mmdet.apis import inference_detector, init_detector
    model = init_detector(config, checkpoint, device="cpu")
    return (lambda bgr: inference_detector(model, bgr)), (lambda rgb: rgb[:, :, ::-1].copy())


def main(config: str, checkpoint: str, paths: list[str]) -> None:
    with contextlib.redirect_stdout(sys.stderr):  # stdout answers the benchmark; mmdet talks
        detect, prepare = load(config, checkpoint)
        images = [prepare(np.asarray(Image.open(path).convert("RGB"))) for path in paths]
        for image in images * 2:
            detect(image)
    print("ready", flush=True)
    for line in sys.stdin:
        image = images[int(line)]
        started = time.perf_counter()
        detect(image)
        print(f"{(time.perf_counter() - started) * 1000:.2f}", flush=True)


class PlainMMDet:
    """The benchmarks' side of this script: one fresh process, measured run by run."""

    def __init__(self, config: str, checkpoint: Path, image_files: list[Path]):
        import subprocess
        self.process = subprocess.Popen(
            [sys.executable, __file__, config, str(checkpoint), *map(str, image_files)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            self.close()
            raise RuntimeError(f"plain mmdet did not start (it said {ready!r})")
        self.times: dict[int, list[float]] = {index: [] for index in range(len(image_files))}

    def measure(self, index: int) -> float:
        """Seconds one run on image ``index`` took."""
        self.process.stdin.write(f"{index}\n")
        self.process.stdin.flush()
        seconds = float(self.process.stdout.readline()) / 1000
        self.times[index].append(seconds)
        return seconds

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)
        self.process.stdout.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
