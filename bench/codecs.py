"""The image codecs on the service's path, side by side: JPEG decode, PNG encode, PNG decode.

    .venv/bin/python bench/codecs.py [--output docs/codecs.md]

Medians of 15 runs on one thread, for bench/benchmark.py's photos (1280x960 and 1920x1080):
milliseconds, the PNG's size, and whether a PNG decodes back to the same pixels (lossless).
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchmark import SIZES, make_images  # noqa: E402

RUNS = 15


def timed(call: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(RUNS):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def pillow_png(level: int | None, strategy: int | None = None) -> Callable[[np.ndarray], bytes]:
    def encode(rgb: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        options = {} if level is None else {"compress_level": level}
        if strategy is not None:
            options["compress_type"] = strategy
        Image.fromarray(rgb).save(buffer, format="PNG", **options)
        return buffer.getvalue()
    return encode


def opencv_png(level: int) -> Callable[[np.ndarray], bytes]:
    import cv2

    def encode(rgb: np.ndarray) -> bytes:
        ok, data = cv2.imencode(".png", rgb[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, level])
        return data.tobytes()
    return encode


def opencv_decode(data: bytes) -> np.ndarray:
    import cv2
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]


def fpng_png(rgb: np.ndarray) -> bytes:
    import fpng
    return fpng.from_ndarray(rgb)


def main() -> None:
    import cv2
    import pyspng
    import simplejpeg
    cv2.setNumThreads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    jpegs = make_images()[1:]  # 1280x960, 1920x1080
    sizes = [f"{w}x{h}" for w, h in SIZES[1:]]
    decoders = {
        "Pillow": lambda data: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")),
        "OpenCV": opencv_decode,
        "simplejpeg": lambda data: simplejpeg.decode_jpeg(data, colorspace="RGB"),
    }
    encoders = {
        "Pillow, default (level 6)": pillow_png(None),
        "Pillow, level 1 + RLE (today)": pillow_png(1, 3),
        "Pillow, level 0": pillow_png(0),
        "OpenCV, level 1": opencv_png(1),
        "OpenCV, level 0": opencv_png(0),
        "fpng": fpng_png,
    }
    png_decoders = {
        "Pillow": lambda data: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")),
        "OpenCV": opencv_decode,
        "pyspng": lambda data: pyspng.load(data),
    }
    lines = ["| step | codec | " + " | ".join(sizes) + " |", "|---|---|" + "---|" * len(sizes)]
    pixels = [decoders["Pillow"](data) for data in jpegs]
    for name, decode in decoders.items():
        cells = []
        for data, reference in zip(jpegs, pixels):
            ms, decoded = timed(lambda: decode(data))
            same = "same pixels" if np.array_equal(decoded, reference) else (
                f"max diff {int(np.abs(decoded.astype(int) - reference).max())}")
            cells.append(f"{ms:.1f} ms ({same} as Pillow)")
        lines.append(f"| JPEG decode | {name} | " + " | ".join(cells) + " |")
    pngs = []
    for name, encode in encoders.items():
        cells = []
        for rgb in pixels:
            ms, data = timed(lambda: encode(rgb))
            lossless = np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), rgb)
            cells.append(f"{ms:.1f} ms, {len(data) / 2**20:.2f} MiB"
                         + ("" if lossless else ", LOSSY"))
            if name == "Pillow, level 1 + RLE (today)":
                pngs.append(data)
        lines.append(f"| PNG encode | {name} | " + " | ".join(cells) + " |")
    for name, decode in png_decoders.items():
        cells = []
        for data, rgb in zip(pngs, pixels):
            ms, decoded = timed(lambda: decode(data))
            cells.append(f"{ms:.1f} ms" + ("" if np.array_equal(decoded, rgb) else ", DIFFERS"))
        lines.append(f"| PNG decode | {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.output:
        args.output.write_text("# Image codecs, side by side\n\nMade by `bench/codecs.py` (one "
                               "thread, medians of 15).\n\n" + table)


if __name__ == "__main__":
    main()
