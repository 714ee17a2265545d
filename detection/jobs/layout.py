"""The public ``uploads/`` layout: every file a job has there, named in one place.

    <sid>.png          the stored upload, as PNG
    <sid>.out.png      the drawn result (the original design's poll target)
    <sid>.json         the detections (the job is done)
    <sid>.error.json   the reason it failed (the job is failed)

Web, worker, command line, storage, OpenAPI and tests all take names from here.
"""
from __future__ import annotations

import re
from pathlib import Path

SID_PATTERN = re.compile(r"[0-9a-f]{32}")

INPUT = ".png"
OUTPUT = ".out.png"
RESULT = ".json"
ERROR = ".error.json"
SUFFIXES = (INPUT, OUTPUT, RESULT, ERROR)
FINISHED = (RESULT, ERROR)  # a job with either file is done or failed
CONTENT_TYPES = {INPUT: "image/png", OUTPUT: "image/png",
                 RESULT: "application/json", ERROR: "application/json"}
# Longest suffix first: "<sid>.out.png" is an output, not an input named "<sid>.out".
FILE_NAME = re.compile(rf"(?P<sid>{SID_PATTERN.pattern})"
                       rf"(?P<kind>{'|'.join(re.escape(s) for s in sorted(SUFFIXES, key=len, reverse=True))})")


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

    def is_finished(self, sid: str) -> bool:
        """Done or failed: two stat calls."""
        return self.result(sid).exists() or self.error(sid).exists()
