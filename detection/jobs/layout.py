"""The public ``uploads/`` layout: every file a job has there, named in one place.

    <sid>.png            the stored upload, as PNG (detections)
    <sid>.out.png        the drawn result (the original design's poll target)
    <sid>.json           the result (the job is done)
    <sid>.error.json     the reason it failed (the job is failed)
    <sid>.progress.json  how far a long job is, while it runs
    <sid>.callback.json  its callback's delivery: where, and how it went (``detection.callbacks``)
    <sid>.video          a video upload, as sent (its container sniffed and probed)
    <sid>.out.mp4        a video's drawing: H.264, its boxes, labels and track ids
    <sid>.jsonl          a video's detections, one line a detected frame
    <sid>.batch.zip      a batch's images, as sent, in order
    <sid>.out.zip        a batch's drawings, one JPEG an image
    <sid>.coco.json      a batch's detections, as COCO results with its images and categories
    <sid>.csv            a batch's detections, one row each

Web, worker, command line, storage, OpenAPI and tests all take names from here; only
``records.py`` writes and reads what they hold.
"""
from __future__ import annotations

import re
from pathlib import Path

SID_PATTERN = re.compile(r"[0-9a-f]{32}")

INPUT = ".png"
OUTPUT = ".out.png"
RESULT = ".json"
ERROR = ".error.json"
PROGRESS = ".progress.json"
CALLBACK = ".callback.json"
VIDEO_INPUT = ".video"
VIDEO_OUTPUT = ".out.mp4"
FRAMES = ".jsonl"
BATCH_INPUT = ".batch.zip"
BATCH_OUTPUT = ".out.zip"
COCO = ".coco.json"
CSV = ".csv"
SUFFIXES = (INPUT, OUTPUT, RESULT, ERROR, PROGRESS, CALLBACK, VIDEO_INPUT, VIDEO_OUTPUT, FRAMES,
            BATCH_INPUT, BATCH_OUTPUT, COCO, CSV)
FINISHED = (RESULT, ERROR)  # a job with either file is done or failed
CONTENT_TYPES = {INPUT: "image/png", OUTPUT: "image/png", RESULT: "application/json",
                 ERROR: "application/json", PROGRESS: "application/json",
                 CALLBACK: "application/json", VIDEO_INPUT: "application/octet-stream",
                 VIDEO_OUTPUT: "video/mp4", FRAMES: "application/x-ndjson",
                 BATCH_INPUT: "application/zip", BATCH_OUTPUT: "application/zip",
                 COCO: "application/json", CSV: "text/csv"}
# Longest suffix first: "<sid>.out.png" is an output, not an input named "<sid>.out".
FILE_NAME = re.compile(rf"(?P<sid>{SID_PATTERN.pattern})"
                       rf"(?P<kind>{'|'.join(re.escape(s) for s in sorted(SUFFIXES, key=len, reverse=True))})")


def finishes_a_job(name: str) -> bool:
    """Whether a file of this name, appearing in uploads/, says a job is done or failed."""
    match = FILE_NAME.fullmatch(name)
    return match is not None and match["kind"] in FINISHED


class JobFiles:
    """Where a job's files are, under one uploads directory."""

    def __init__(self, uploads_dir: Path):
        self.uploads_dir = uploads_dir

    def input(self, sid: str) -> Path:
        return self.uploads_dir / f"{sid}{INPUT}"

    def output(self, sid: str) -> Path:
        return self.uploads_dir / f"{sid}{OUTPUT}"

    def result(self, sid: str) -> Path:
        return self.uploads_dir / f"{sid}{RESULT}"

    def error(self, sid: str) -> Path:
        return self.uploads_dir / f"{sid}{ERROR}"

    def progress(self, sid: str) -> Path:
        return self.uploads_dir / f"{sid}{PROGRESS}"

    def callback(self, sid: str) -> Path:
        return self.uploads_dir / f"{sid}{CALLBACK}"

    def video_input(self, sid: str) -> Path:
        return self.uploads_dir / f"{sid}{VIDEO_INPUT}"

    def batch_input(self, sid: str) -> Path:
        return self.uploads_dir / f"{sid}{BATCH_INPUT}"
