"""Detection jobs: read each upload, detect (a batch of one model at once on a GPU), draw the
boxes, encode the drawing as PNG; the result document is what /status and DeepStack answer from.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from ...images import encode_png
from ...jobs.job import Job
from ...jobs.records import ImageSize, JobResult, Outcome
from ...stopwatch import Stopwatch
from ..detectors import Detection
from ..drawing import draw_detections
from ..model_cache import ModelCache
from ..tiling import detect_tiled
from . import Work, failure_reason

log = logging.getLogger(__name__)


class DetectHandler:
    needs_model = True
    batches = True

    def run(self, jobs: list[Job], work: Work) -> list[Outcome]:
        """Each job done with its drawing and result, or failed with its reason: an upload that
        cannot be read, or an image the model cannot take, fails alone."""
        outcomes: dict[str, Outcome] = {}
        ready, pixels, read_ms = [], [], []
        for job in jobs:
            started = time.perf_counter()
            try:
                pixels.append(work.read_input(job))
            except Exception as error:
                outcomes[job.sid] = Outcome.failed(failure_reason(error), error)
                continue
            ready.append(job)
            read_ms.append((time.perf_counter() - started) * 1000)
        for job, outcome in zip(ready, detect_each(ready, pixels, work.models, read_ms)):
            outcomes[job.sid] = outcome
        return [outcomes[job.sid] for job in jobs]


def detect_each(jobs: list[Job], pixels: list[np.ndarray], models: ModelCache,
                read_ms: list[float]) -> list[Outcome]:
    """The jobs' outcomes, in one batch; if the batch fails, job by job, so that one image the
    model cannot take fails alone."""
    if not jobs:
        return []
    try:
        return detect_images(jobs, pixels, models, read_ms)
    except Exception as error:
        if len(jobs) == 1:
            return [Outcome.failed(failure_reason(error), error)]
        log.warning("a batch of %d failed (%s: %s): detecting its jobs one by one",
                    len(jobs), type(error).__name__, error)
    outcomes = []
    for job, image, read in zip(jobs, pixels, read_ms):
        try:
            outcomes += detect_images([job], [image], models, [read])
        except Exception as error:
            outcomes.append(Outcome.failed(failure_reason(error), error))
    return outcomes


def detect_images(jobs: list[Job], pixels: list[np.ndarray], models: ModelCache,
                  read_ms: list[float]) -> list[Outcome]:
    """Detect on RGB ``pixels`` (which took ``read_ms`` each to get) for jobs of one model, in
    one batch (each job's ``inference_ms`` is the batch's), draw the boxes and encode the
    drawings as PNG."""
    timings = Stopwatch()
    detector = models.get(jobs[0].model)
    timings.lap("model_ms")
    grids = [job.options.tiles or detector.spec.tiles for job in jobs]
    if max(grids) == 1:
        batch = detector.detect_batch(pixels, [job.options.threshold for job in jobs])
    else:  # a tiled job is a batch of its own tiles
        batch = [detect_tiled(detector, image, job.options.threshold, grid)
                 for job, image, grid in zip(jobs, pixels, grids)]
    timings.lap("inference_ms")
    outcomes = []
    for job, image, detections, read, grid in zip(jobs, pixels, batch, read_ms, grids):
        options = job.options
        detections = [d for d in detections if not options.classes or d.label in options.classes]
        detections = detections[:options.max_detections]  # best first
        drawing = Stopwatch(read_ms=read, **timings.laps)
        drawn = draw_detections(image, detections)
        drawing.lap("draw_ms")
        png = encode_png(drawn)
        drawing.lap("encode_ms")
        height, width = image.shape[:2]
        result = result_document(job, models.device, (width, height), detections, drawing.laps,
                                 grid)
        outcomes.append(Outcome(result=result, output=png))
    return outcomes


def result_document(job: Job, device: str, size: tuple[int, int], detections: list[Detection],
                    timings: dict[str, float], tiles: int = 1) -> JobResult:
    """The detections JSON served as ``/uploads/<sid>.json``."""
    options = job.options
    return JobResult(sid=job.sid, kind=job.kind.value, model=job.model,
                     threshold=options.threshold, classes=list(options.classes),
                     max_detections=options.max_detections, tiles=tiles, device=device,
                     image=ImageSize(width=size[0], height=size[1]),
                     detections=[d.to_json() for d in detections],
                     timings={k: round(v, 1) for k, v in timings.items()})
