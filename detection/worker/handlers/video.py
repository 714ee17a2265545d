"""Video jobs: detect a video's frames at the rate asked for, follow the objects across them
(ByteTrack), and make its drawing (an H.264 MP4 that browsers play), its detections frame by
frame (JSON lines) and a summary: its tracks, and the objects of each class."""
from __future__ import annotations

import json
import math
import secrets
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from ...jobs.atomic import TEMP_SUFFIX
from ...jobs.job import Job, Progress
from ...jobs.layout import FRAMES, VIDEO_OUTPUT
from ...jobs.records import Outcome
from ...videos import VideoLimits, probe, sampled_frames
from ..drawing import draw_detections
from ..tracking import LOW_SCORE, Tracker, untracked
from . import Work

PROGRESS_EVERY_SECONDS = 0.5
MIN_TRACK_FRAMES = 3  # a track seen in fewer detected frames is a flicker: not summed up
MILLISECOND = Fraction(1, 1000)
MAX_BITRATE = "6M"  # bits a second of the drawn video, at most: 225 MB for 300 s


class VideoHandler:
    needs_model = True
    batches = False

    def run(self, jobs: list[Job], work: Work) -> list[Outcome]:
        return [self._video(job, work) for job in jobs]

    def _video(self, job: Job, work: Work) -> Outcome:
        writer = Mp4Writer(work.models.settings.uploads_dir)
        try:
            return self._detect(job, work, writer)
        finally:
            writer.close()

    def _detect(self, job: Job, work: Work, writer: "Mp4Writer") -> Outcome:
        options = job.options
        data = work.read_bytes(job)
        limits = VideoLimits.of(work.models.settings)
        info = probe(data, limits, options.fps)
        total = math.ceil(info.seconds * options.fps) if info.seconds else None
        detector = work.models.get(job.model)
        tracker = Tracker(options.threshold) if options.track else None
        lines, tracks, counts = [], {}, {}
        started, reported = time.monotonic(), 0.0
        spent = dict.fromkeys(("read_ms", "inference_ms", "track_ms", "draw_ms", "encode_ms"),
                              0.0)
        clock = time.perf_counter()
        for index, (at, rgb) in enumerate(sampled_frames(data, limits, options.fps)):
            spent["read_ms"] += _lap(clock)
            if (reason := work.cancelled(job)) is not None:
                return Outcome.failed(reason)
            clock = time.perf_counter()
            found = detector.detect_batch([rgb], [min(options.threshold, LOW_SCORE)])[0]
            found = [d for d in found if not options.classes or d.label in options.classes]
            spent["inference_ms"] += _lap(clock)
            clock = time.perf_counter()
            found = (tracker.follow(index, found) if tracker
                     else untracked(found, options.threshold))[:options.max_detections]
            spent["track_ms"] += _lap(clock)
            clock = time.perf_counter()
            drawn = draw_detections(rgb, found)
            spent["draw_ms"] += _lap(clock)
            clock = time.perf_counter()
            writer.add(drawn, at)
            spent["encode_ms"] += _lap(clock)
            lines.append(json.dumps({"frame": index, "time": round(at, 3),
                                     "detections": [d.to_json() for d in found]}))
            _summarize(found, at, tracks, counts)
            if time.monotonic() - reported >= PROGRESS_EVERY_SECONDS:
                reported = time.monotonic()
                work.report_progress(job, _progress(index + 1, total, reported - started))
            clock = time.perf_counter()
        if not lines:
            return Outcome.failed("the video has no frame to detect")
        clock = time.perf_counter()
        mp4 = writer.finish()
        spent["encode_ms"] += _lap(clock)
        kept = [t for t in tracks.values() if t["frames"] >= MIN_TRACK_FRAMES]
        for track in kept:
            counts.setdefault(track["label"], set()).add(track["id"])
        result = {"sid": job.sid, "kind": job.kind.value, "model": job.model,
                  **options.to_fields(), "device": work.models.device,
                  "video": info.to_json(), "frames": len(lines),
                  "counts": {label: len(ids) for label, ids in sorted(counts.items())},
                  "tracks": sorted(kept, key=lambda t: t["first_seen"]),
                  "timings": {k: round(v, 1) for k, v in spent.items()}}
        return Outcome(result=result, files={VIDEO_OUTPUT: mp4,
                                             FRAMES: ("\n".join(lines) + "\n").encode()})


def _lap(since: float) -> float:
    return (time.perf_counter() - since) * 1000


def _summarize(found, at: float, tracks: dict, counts: dict) -> None:
    """Each track's class, first and last time seen, frames and best score; without tracking,
    the objects of each class (the most seen in one frame)."""
    per_frame: dict[str, int] = {}
    for d in found:
        if d.track_id is None:
            per_frame[d.label] = per_frame.get(d.label, 0) + 1
            continue
        track = tracks.setdefault(d.track_id, {"id": d.track_id, "label": d.label,
                                               "first_seen": round(at, 3), "frames": 0,
                                               "best_score": 0.0})
        track["last_seen"], track["frames"] = round(at, 3), track["frames"] + 1
        track["best_score"] = round(max(track["best_score"], d.score), 4)
    for label, count in per_frame.items():
        best = counts.setdefault(label, set())
        best.update(range(len(best), count))  # as many as the most seen at once


def _progress(done: int, total: int | None, elapsed: float) -> Progress:
    fraction = min(1.0, done / total) if total else 0.0
    eta = elapsed / done * (total - done) if total and done < total else 0.0
    return Progress(fraction, f"frame {done} of {total}" if total else f"frame {done}",
                    {"frames_done": done, "frames_total": total, "eta_seconds": round(eta, 1)})


class Mp4Writer:
    """Frames into an H.264 MP4 (yuv420p, its index first: browsers play it as it comes), each
    shown from its time, its bitrate capped (a noisy clip cannot swell it); written to a
    temporary file in ``folder`` (moving the index needs a file; a killed worker's is pruned
    there as any temporary file is)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)  # (an RQ worker's own may not exist yet)
        self.path = folder / f".mp4.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        self.container = None
        self.stream = None

    def add(self, rgb: np.ndarray, at: float) -> None:
        import av
        height, width = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2  # H.264 wants even
        if self.container is None:
            self.container = av.open(str(self.path), mode="w", format="mp4",
                                     options={"movflags": "+faststart"})
            self.stream = self.container.add_stream("libx264", rate=1000, options={
                "crf": "26", "preset": "superfast", "maxrate": MAX_BITRATE,
                "bufsize": MAX_BITRATE})
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]),
                                           format="rgb24")
        frame.pts, frame.time_base = round(at * 1000), MILLISECOND
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def finish(self) -> bytes:
        """The MP4's bytes."""
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.container = None
        return self.path.read_bytes()

    def close(self) -> None:
        """Whatever happened, the temporary file goes."""
        if self.container is not None:
            self.container.close()
        self.path.unlink(missing_ok=True)
