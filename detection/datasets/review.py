"""Uploads the model was unsure of, kept for a person to correct ("to review"): a detection just
above its threshold, a class it has rarely found, or one upload in N at random, as a model's
``review`` rule in models.toml says (none: nothing is kept). Page, curl and DeepStack uploads
alike: the rule is applied where a detection's result is recorded (the spool's worker; with
RQ, the web process that collects it). A kept upload is a copy of its stored PNG and its
detections, so that it outlives the uploads' retention; the list is bounded in count and bytes,
the oldest going first.

    <datasets_dir>/.review/<sid>.png, <sid>.json    a kept upload, its detections and why
    <datasets_dir>/.review/seen.json                classes found so far, per model
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..jobs.atomic import atomic_path, write_atomically
from ..jobs.layout import SID_PATTERN
from ..jobs.locks import exclusively

log = logging.getLogger(__name__)

STORED_PNG_WAIT_SECONDS = 5.0  # how long a spool worker's review waits for the upload's PNG


@dataclass(frozen=True)
class ReviewRule:
    """A model's ``review = { near = 0.1, rare = 5, one_in = 50 }``: keep an upload with a
    detection scoring under threshold + ``near``, or of a class found fewer than ``rare`` times
    before, or one upload in ``one_in`` (0: not by that)."""
    near: float = 0.0
    rare: int = 0
    one_in: int = 0

    @classmethod
    def of(cls, table: object) -> ReviewRule | None:
        if table is None:
            return None
        if not isinstance(table, dict) or set(table) - {"near", "rare", "one_in"}:
            raise ValueError("review takes { near = 0.1, rare = 5, one_in = 50 } (any of them)")
        near, rare, one_in = table.get("near", 0.0), table.get("rare", 0), table.get("one_in", 0)
        if not (isinstance(near, (int, float)) and 0 <= near <= 1 and isinstance(rare, int)
                and rare >= 0 and isinstance(one_in, int) and one_in >= 0):
            raise ValueError("review's near is 0 to 1, rare and one_in whole numbers from 0")
        return cls(float(near), rare, one_in)

    def reasons(self, sid: str, threshold: float, detections: list[dict],
                seen: dict[str, int]) -> list[str]:
        """Why an upload is to be reviewed (none: it is not)."""
        why = []
        unsure = [d for d in detections if d["score"] < threshold + self.near]
        if self.near and unsure:
            why.append(f"{len(unsure)} detection(s) scored under {threshold + self.near:.2f}")
        rare = sorted({d["label"] for d in detections if seen.get(d["label"], 0) < self.rare})
        if self.rare and rare:
            why.append(f"rarely found: {', '.join(rare)}")
        if self.one_in and int(sid[:8], 16) % self.one_in == 0:
            why.append(f"one upload in {self.one_in}, at random")
        return why


class ReviewList:
    def __init__(self, datasets_dir: Path, max_items: int, max_bytes: int):
        self.root = datasets_dir / ".review"
        self.max_items = max_items
        self.max_bytes = max_bytes

    @classmethod
    def of(cls, settings) -> ReviewList:
        return cls(settings.datasets_dir, settings.max_review_items,
                   settings.max_review_mb * 2**20)

    def consider(self, rule: ReviewRule | None, result: dict, stored_png: Path) -> list[str]:
        """Keep this detection's upload if ``rule`` says so; why it was kept (none: it was
        not)."""
        if rule is None or not SID_PATTERN.fullmatch(str(result.get("sid"))):
            return []
        self.root.mkdir(parents=True, exist_ok=True)
        with exclusively(self.root / ".lock"):
            seen = self._seen()
            counts = seen.setdefault(result["model"], {})
            why = rule.reasons(result["sid"], result["threshold"], result["detections"],
                               counts)
            for detection in result["detections"]:
                counts[detection["label"]] = counts.get(detection["label"], 0) + 1
            if rule.rare:
                write_atomically(self.root / "seen.json", json.dumps(seen).encode())
            if why:
                self._keep(result, stored_png, why)
        return why

    def items(self) -> list[dict]:
        """The kept uploads, newest first."""
        found = []
        for path in self.root.glob("*.json") if self.root.is_dir() else ():
            if SID_PATTERN.fullmatch(path.stem):
                try:
                    found.append(json.loads(path.read_bytes()))
                except (OSError, ValueError):
                    continue
        return sorted(found, key=lambda item: item["added"], reverse=True)

    def image(self, sid: str) -> Path | None:
        path = self.root / f"{sid}.png"
        return path if SID_PATTERN.fullmatch(sid) and path.is_file() else None

    def dismiss(self, sid: str) -> bool:
        if not SID_PATTERN.fullmatch(sid) or not (self.root / f"{sid}.json").exists():
            return False
        with exclusively(self.root / ".lock"):
            (self.root / f"{sid}.json").unlink(missing_ok=True)
            (self.root / f"{sid}.png").unlink(missing_ok=True)
        return True

    def _seen(self) -> dict:
        try:
            seen = json.loads((self.root / "seen.json").read_bytes())
        except (OSError, ValueError):
            return {}
        return seen if isinstance(seen, dict) else {}

    def _keep(self, result: dict, stored_png: Path, why: list[str]) -> None:
        sid = result["sid"]
        size = stored_png.stat().st_size
        if size > self.max_bytes:
            return
        self._make_room(size)
        with atomic_path(self.root / f"{sid}.png") as temp:
            shutil.copyfile(stored_png, temp)
        # Boxes only: a person corrects boxes, and a mask model's RLEs would outweigh them
        boxes = [{k: v for k, v in d.items() if k != "mask"} for d in result["detections"]]
        write_atomically(self.root / f"{sid}.json", json.dumps({
            "sid": sid, "model": result["model"], "threshold": result["threshold"],
            "image": result["image"], "detections": boxes, "reasons": why,
            "added": time.time()}).encode())

    def _make_room(self, more: int) -> None:
        """Drop the oldest kept uploads until one more of ``more`` bytes fits the bounds (the
        bytes of each: its PNG and its JSON)."""
        kept = sorted(((self._size(p), p) for p in self.root.glob("*.json")
                       if SID_PATTERN.fullmatch(p.stem)), key=lambda item: item[0][0])
        used = sum(size for (_, size), _ in kept)
        while kept and (len(kept) + 1 > self.max_items or used + more > self.max_bytes):
            (_, size), oldest = kept.pop(0)
            used -= size
            oldest.unlink(missing_ok=True)
            oldest.with_suffix(".png").unlink(missing_ok=True)

    @staticmethod
    def _size(record: Path) -> tuple[float, int]:
        """When a kept upload was kept, and its bytes (0 for files gone meanwhile)."""
        total, when = 0, 0.0
        for path in (record, record.with_suffix(".png")):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            total += stat.st_size
            when = when or stat.st_mtime
        return when, total


def keep_for_review(review: ReviewList, spec, result: dict, stored_png: Path,
                    wait_seconds: float = 0.0) -> None:
    """``ReviewList.consider`` a detection's result by its model's rule, best effort: a full
    disk or a pruned upload loses the review, never the job. ``wait_seconds``: how long the
    PNG may take to appear (the spool queues a job before its web process stores the PNG,
    ``SpoolQueue.enqueuing``: a fast model may finish first)."""
    if spec is None or spec.review is None:
        return
    deadline = time.monotonic() + wait_seconds
    while not stored_png.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        why = review.consider(spec.review, result, stored_png)
    except OSError as error:
        log.warning("could not keep %s for review: %s", result.get("sid"), error)
        return
    if why:
        log.info("kept %s for review: %s", result["sid"], "; ".join(why),
                 extra={"sid": result["sid"], "event": "kept_for_review"})
