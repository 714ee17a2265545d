"""Batch jobs: detect each of a batch's images in turn (on tiles too, if asked), and make its
results: COCO results with its images and the model's categories (``<sid>.coco.json``), one CSV
row a detection (``<sid>.csv``), the drawings in a zip (``<sid>.out.zip``: JPEGs, 2048 px a
side at most), and a summary. An
image that cannot be decoded fails alone, named in the summary's ``failed``."""
from __future__ import annotations

import csv
import io
import itertools
import json
import time
import zipfile
from pathlib import PurePosixPath

from PIL import Image

from ...batches import unpack
from ...images import decode_image
from ...jobs.job import Job, Progress
from ...jobs.layout import BATCH_OUTPUT, COCO, CSV
from ...jobs.records import Outcome
from ..drawing import draw_detections
from ..output_files import OutputFiles
from ..tiling import detect_each
from . import Work, failure_reason

PROGRESS_EVERY_SECONDS = 0.5
DRAWN_SIDE = 2048


class BatchHandler:
    needs_model = True
    batches = False

    def run(self, jobs: list[Job], work: Work) -> list[Outcome]:
        return [self._batch(job, work) for job in jobs]

    def _batch(self, job: Job, work: Work) -> Outcome:
        with OutputFiles(work.models.settings.uploads_dir, job.sid) as outputs:
            with zipfile.ZipFile(outputs.path(BATCH_OUTPUT), "w", zipfile.ZIP_STORED) as drawn:
                outcome = self._detect(job, work, drawn)
            if outcome.error:
                return outcome
            return Outcome(result=outcome.result, files={**outcome.files, **outputs.keep()})

    def _detect(self, job: Job, work: Work, drawn: zipfile.ZipFile) -> Outcome:
        """The batch's summary, COCO results and CSV; its drawings written to ``drawn``."""
        options = job.options
        total, images = unpack(work.read_bytes(job))
        detector = work.models.get(job.model)
        grid = options.tiles or detector.spec.tiles
        coco = {"images": [], "annotations": [],
                "categories": [{"id": i, "name": name} for i, name in enumerate(detector.classes)]}
        rows, summary, failed, counts = [], [], [], {}
        spent = dict.fromkeys(("read_ms", "inference_ms", "draw_ms", "encode_ms"), 0.0)
        started = reported = time.monotonic()
        numbered = enumerate(images)
        # A GPU detects several images in one pass; each is then drawn and summed up
        while group := list(itertools.islice(numbered, work.models.batch_size)):
            if (reason := work.cancelled(job)) is not None:
                return Outcome.failed(reason)
            clock = time.perf_counter()
            decoded = []
            for index, (name, data) in group:
                try:
                    rgb = decode_image(data, work.models.settings.max_pixels)
                except Exception as error:  # this image alone
                    failed.append({"file_name": name, "error": failure_reason(error)})
                    continue
                decoded.append((index, name, rgb))
            spent["read_ms"] += _since(clock)
            clock = time.perf_counter()
            found_in = detect_each(detector, [rgb for _, _, rgb in decoded], options.threshold,
                                   grid) if decoded else []
            spent["inference_ms"] += _since(clock)
            for (index, name, rgb), found in zip(decoded, found_in):
                found = [d for d in found if not options.classes
                         or d.label in options.classes][:options.max_detections]
                clock = time.perf_counter()
                picture = draw_detections(rgb, found)
                spent["draw_ms"] += _since(clock)
                clock = time.perf_counter()
                drawn.writestr(f"{index + 1:04d}_{PurePosixPath(name).stem}.jpg",
                               _drawing(picture))
                spent["encode_ms"] += _since(clock)
                height, width = rgb.shape[:2]
                summary.append(_add_image(coco, rows, counts, name, width, height, found))
            if time.monotonic() - reported >= PROGRESS_EVERY_SECONDS:
                reported = time.monotonic()
                work.report_progress(job, _progress(group[-1][0] + 1, total,
                                                    reported - started))
        if not summary:
            return Outcome.failed(f"no image of the batch could be read ({failed[0]['error']})"
                                  if failed else "the batch has no image")
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(("file_name", "label", "score", "x1", "y1", "x2", "y2"))
        writer.writerows(rows)
        result = {"sid": job.sid, "kind": job.kind.value, "model": job.model,
                  **options.to_fields(), "tiles": grid, "device": work.models.device,
                  "images": summary, "counts": dict(sorted(counts.items())), "failed": failed,
                  "timings": {k: round(v, 1) for k, v in spent.items()}}
        return Outcome(result=result, files={COCO: json.dumps(coco).encode(),
                                             CSV: table.getvalue().encode()})


def _add_image(coco: dict, rows: list, counts: dict, name: str, width: int, height: int,
               found: list) -> dict:
    """An image's detections added to the COCO results, the CSV's rows and the counts; its line
    of the summary."""
    image_id = len(coco["images"]) + 1
    coco["images"].append({"id": image_id, "file_name": name, "width": width, "height": height})
    here: dict[str, int] = {}
    for d in found:
        x1, y1, x2, y2 = d.bbox
        coco["annotations"].append({
            "id": len(coco["annotations"]) + 1, "image_id": image_id,
            "category_id": d.class_id, "score": round(d.score, 4),
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0})
        rows.append((_cell(name), d.label, f"{d.score:.4f}", *(f"{v:.2f}" for v in d.bbox)))
        here[d.label] = here.get(d.label, 0) + 1
        counts[d.label] = counts.get(d.label, 0) + 1
    return {"file_name": name, "width": width, "height": height, "detections": len(found),
            "counts": here}


def _cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _drawing(picture) -> bytes:
    """A batch's drawing as its zip keeps it: a JPEG at most ``DRAWN_SIDE`` pixels a side (a
    batch of large photos stays a download, not gigabytes of PNGs)."""
    image = Image.fromarray(picture)
    image.thumbnail((DRAWN_SIDE, DRAWN_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _since(clock: float) -> float:
    return (time.perf_counter() - clock) * 1000


def _progress(done: int, total: int, elapsed: float) -> Progress:
    eta = elapsed / done * (total - done)
    return Progress(done / total, f"image {done} of {total}",
                    {"images_done": done, "images_total": total, "eta_seconds": round(eta, 1)})
