"""Comparing detections: with mmdet's own (the oracle), and boxes by their overlap."""
from __future__ import annotations


def iou(a, b) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def assert_same_detections(ours: list[dict], theirs: list[tuple], box_tolerance: float = 0.1):
    """Each detection matches one of theirs: same label, score within 1e-3, box within tolerance.

    (ONNX Runtime reorders float operations, so boxes move by hundredths of a pixel and
    near-equal scores may swap places.)"""
    unmatched = list(theirs)
    for mine in ours:
        match = next((t for t in unmatched if t[0] == mine["label"]
                      and abs(t[1] - mine["score"]) <= 1e-3
                      and max(abs(a - b) for a, b in zip(t[2], mine["bbox"])) <= box_tolerance),
                     None)
        assert match is not None, f"no match for {mine}"
        unmatched.remove(match)
