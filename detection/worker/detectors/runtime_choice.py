"""Which runtime runs a model faster on this machine: PyTorch alone, or ONNX Runtime for its
network (``onnx_network.py``). Timed, not assumed: each on a few warm runs of the whole
detection (the pipeline, the network, the post-processing) on a probe image, when the model
loads. The timings are kept beside the ONNX export for this machine (its CPU, cores and threads),
so that the next load of the same model need not time them again.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ...jobs.atomic import write_atomically

log = logging.getLogger(__name__)

PROBE_SIZE = (640, 480)  # a photo's size, as the service is asked most
WARM_RUNS, TIMED_RUNS = 1, 3
# For a one-stage detector on ONNX Runtime, PyTorch is left with the pre- and post-processing of
# small tensors, which one thread may do faster than two: forking and joining costs more there,
# and idle OpenMP threads spin for ~6 ms after each op, taking a core from what follows
# (YOLOX-Nano at 1280x960: 21.6 -> 19.8 ms; RTMDet-Ins, whose masks are made there, 970 -> 1570).
ONE_TORCH_THREAD = "onnxruntime, 1 torch thread"


def probe_image() -> np.ndarray:
    """A photo-like image, the same on every machine: texture on mid grey."""
    width, height = PROBE_SIZE
    return np.random.default_rng(0).integers(64, 192, (height, width, 3), dtype=np.uint8)


def median_ms(detect: Callable[[np.ndarray], object], image: np.ndarray) -> float:
    for _ in range(WARM_RUNS):
        detect(image)
    times = []
    for _ in range(TIMED_RUNS):
        started = time.perf_counter()
        detect(image)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def machine() -> str:
    """What the timings hold for: the CPU, its cores this process may use, and the threads."""
    import torch
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}; {len(os.sched_getaffinity(0))} cores; {torch.get_num_threads()} threads"


def timed_runtimes(timings_file: Path, candidates: set[str],
                   time_each: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Each candidate's median ms on the probe: kept from an earlier load on this machine, else
    timed now (``time_each``) and kept."""
    here = machine()
    try:
        kept = json.loads(timings_file.read_bytes())
        if kept.get("machine") == here and set(kept.get("ms", {})) == candidates:
            return {name: float(ms) for name, ms in kept["ms"].items()}
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    timings = time_each()
    try:
        write_atomically(timings_file, json.dumps({"machine": here, "ms": timings}).encode())
    except OSError as error:
        log.warning("cannot keep the runtimes' timings: %s", error)
    return timings
