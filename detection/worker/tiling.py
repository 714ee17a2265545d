"""Tiled detection, for small objects far away: a model that sees a large photo shrunk to its
input (416 px for YOLOX-Nano) loses what is a few pixels tall there. The photo is also cut into
an N x N grid of overlapping tiles, each detected at the model's input size (all in one batch),
and the boxes of the whole and of the tiles are merged, class by class, with mmcv's NMS (the op
mmdet's ``merge_results_by_nms`` runs; that helper wants mmdet's samples and sahi's slicing).

A tile's box that touches one of its inner edges is cut by it and dropped: the overlap shows an
object narrower than it whole in a neighbour, and the pass over the whole photo finds the large
ones.
"""
from __future__ import annotations

import math

import numpy as np

from .detectors import Detection, DetectorBackend

OVERLAP = 0.25  # of a tile's width and height, shared with its neighbour
MERGE_IOU = 0.5  # boxes of one class overlapping more than this are one object
EDGE_PIXELS = 2.0  # a box this close to a tile's inner edge is cut by it
CHUNK = 8  # crops in one pass of the network, at most


def tile_windows(width: int, height: int, grid: int) -> list[tuple[int, int, int, int]]:
    """The ``grid`` x ``grid`` tiles of an image, ``(x1, y1, x2, y2)``, each sharing
    ``OVERLAP`` of itself with its neighbours (fewer, for an image too small for so many)."""
    def spans(size: int) -> list[tuple[int, int]]:
        tile = math.ceil(size / (grid - (grid - 1) * OVERLAP))
        step = (size - tile) / (grid - 1) if grid > 1 else 0
        return [(round(i * step), min(size, round(i * step) + tile)) for i in range(grid)]
    # A tiny image's tiles repeat one another: each once
    return list(dict.fromkeys((x1, y1, x2, y2) for y1, y2 in spans(height)
                              for x1, x2 in spans(width)))


def detect_each(detector: DetectorBackend, images: list[np.ndarray], threshold: float,
                grid: int) -> list[list[Detection]]:
    """Each image's detections: images of one size in one pass when untiled (a batch pads its
    images to the largest, which would move a smaller one's boxes near its edges), else each
    on its tiles."""
    if grid > 1:
        return [detect_tiled(detector, image, threshold, grid) for image in images]
    by_size: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault(image.shape, []).append(index)
    found: list[list[Detection]] = [[] for _ in images]
    for indices in by_size.values():
        for index, detections in zip(indices, detector.detect_batch(
                [images[i] for i in indices], [threshold] * len(indices))):
            found[index] = detections
    return found


def detect_tiled(detector: DetectorBackend, image: np.ndarray, threshold: float,
                 grid: int) -> list[Detection]:
    """``image``'s detections, best first, from the whole image and its ``grid`` x ``grid``
    tiles."""
    if grid == 1:
        return detector.detect_batch([image], [threshold])[0]
    height, width = image.shape[:2]
    windows = [(0, 0, width, height), *tile_windows(width, height, grid)]
    crops = [np.ascontiguousarray(image[y1:y2, x1:x2]) for x1, y1, x2, y2 in windows]
    found = [detections for start in range(0, len(crops), CHUNK)  # a bounded batch at a time
             for detections in detector.detect_batch(crops[start:start + CHUNK],
                                                     [threshold] * len(crops[start:start + CHUNK]))]
    candidates = list(found[0])
    for (x1, y1, x2, y2), detections in zip(windows[1:], found[1:]):
        inner = (x1 > 0, y1 > 0, x2 < width, y2 < height)  # edges that cut the image
        for d in detections:
            bx1, by1, bx2, by2 = d.bbox
            cut = ((inner[0] and bx1 <= EDGE_PIXELS) or (inner[1] and by1 <= EDGE_PIXELS)
                   or (inner[2] and bx2 >= x2 - x1 - EDGE_PIXELS)
                   or (inner[3] and by2 >= y2 - y1 - EDGE_PIXELS))
            if not cut:
                candidates.append(_shifted(d, x1, y1))
    return _merged(candidates)


def _shifted(detection: Detection, dx: int, dy: int) -> Detection:
    x1, y1, x2, y2 = detection.bbox
    landmarks = detection.landmarks and tuple((x + dx, y + dy) for x, y in detection.landmarks)
    return Detection(detection.label, detection.class_id, detection.score,
                     (x1 + dx, y1 + dy, x2 + dx, y2 + dy), landmarks=landmarks)


def _merged(candidates: list[Detection]) -> list[Detection]:
    """The best of each group of boxes of one class that overlap, best first."""
    if not candidates:
        return []
    import torch
    from mmcv.ops import batched_nms
    boxes = torch.tensor([d.bbox for d in candidates], dtype=torch.float32)
    scores = torch.tensor([d.score for d in candidates], dtype=torch.float32)
    classes = torch.tensor([d.class_id for d in candidates])
    _, keep = batched_nms(boxes, scores, classes, {"type": "nms", "iou_threshold": MERGE_IOU})
    return sorted((candidates[i] for i in keep.tolist()), key=lambda d: -d.score)
