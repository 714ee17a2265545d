"""Video jobs: detect a video's frames at the rate asked for, follow the objects across them
(ByteTrack), and make its drawing (an H.264 MP4 that browsers play), its detections frame by
frame (JSON lines) and a summary: its tracks, and the objects of each class."""
from __future__ import annotations

import itertools
import json
import math
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from ...jobs.job import Job, Progress
from ...jobs.layout import FRAMES, VIDEO_OUTPUT
from ...jobs.records import Outcome
from ...videos import VideoLimits, probe, sampled_frames
from ..drawing import draw_detections
from ..output_files import OutputFiles
from ..tracking import LOW_SCORE, Tracker, untracked
from . import Work

PROGRESS_EVERY_SECONDS = 0.5
MIN_TRACK_FRAMES = 3  # a track seen in fewer detected frames is a flicker: not summed up
MILLISECOND = Fraction(1, 1000)
MAX_BITRATE = "6M"  # bits a second of the drawn video, at most: 225 MB for 300 s
MAX_SUMMARY_TRACKS = 1000  # the summary's tracks, the longest seen (its counts count them all)


class VideoHandler:
    needs_model = True
    batches = False

    def run(self, jobs: list[Job], work: Work) -> list[Outcome]:
        return [self._video(job, work) for job in jobs]

    def _video(self, job: Job, work: Work) -> Outcome:
        with OutputFiles(work.models.settings.uploads_dir, job.sid) as outputs:
            writer = Mp4Writer(outputs.path(VIDEO_OUTPUT))
            try:
                with open(outputs.path(FRAMES), "w", encoding="utf-8") as frames:
                    outcome = self._detect(job, work, writer, frames)
            finally:
                writer.close()
            return outcome if outcome.error else Outcome(result=outcome.result,
                                                         files=outputs.keep())

    def _detect(self, job: Job, work: Work, writer: "Mp4Writer", frames) -> Outcome:
        """The video's summary; its drawing and frames' detections written as they come."""
        options = job.options
        data = work.read_bytes(job)
        limits = VideoLimits.of(work.models.settings)
        info = probe(data, limits, options.fps)
        total = math.ceil(info.seconds * options.fps) if info.seconds else None
        detector = work.models.get(job.model)
        tracker = Tracker(options.threshold) if options.track else None
        detected, tracks, counts = 0, {}, {}
        started, reported = time.monotonic(), 0.0
        spent = dict.fromkeys(("read_ms", "inference_ms", "track_ms", "draw_ms", "encode_ms"),
                              0.0)
        clock = time.perf_counter()
        frames_read = enumerate(sampled_frames(data, limits, options.fps))
        # A GPU detects several frames in one pass; then each is followed, drawn and written
        while group := list(itertools.islice(frames_read, work.models.batch_size)):
            spent["read_ms"] += _lap(clock)
            if (reason := work.cancelled(job)) is not None:
                return Outcome.failed(reason)
            clock = time.perf_counter()
            found_in = detector.detect_batch([rgb for _, (_, rgb) in group],
                                             [min(options.threshold, LOW_SCORE)] * len(group))
            spent["inference_ms"] += _lap(clock)
            for (index, (at, rgb)), found in zip(group, found_in):
                clock = time.perf_counter()
                found = [d for d in found if not options.classes or d.label in options.classes]
                found = (tracker.follow(index, found) if tracker
                         else untracked(found, options.threshold))[:options.max_detections]
                spent["track_ms"] += _lap(clock)
                clock = time.perf_counter()
                drawn = draw_detections(rgb, found)
                spent["draw_ms"] += _lap(clock)
                clock = time.perf_counter()
                writer.add(drawn, at)
                spent["encode_ms"] += _lap(clock)
                frames.write(json.dumps({"frame": index, "time": round(at, 3),
                                         "detections": [d.to_json() for d in found]}) + "\n")
                detected += 1
                _summarize(found, at, tracks, counts)
            if time.monotonic() - reported >= PROGRESS_EVERY_SECONDS:
                reported = time.monotonic()
                work.report_progress(job, _progress(detected, total, reported - started))
            clock = time.perf_counter()
        if not detected:
            return Outcome.failed("the video has no frame to detect")
        clock = time.perf_counter()
        writer.finish()
        spent["encode_ms"] += _lap(clock)
        kept = [t for t in tracks.values() if t["frames"] >= MIN_TRACK_FRAMES]
        for track in kept:
            counts.setdefault(track["label"], set()).add(track["id"])
        longest = sorted(kept, key=lambda t: -t["frames"])[:MAX_SUMMARY_TRACKS]
        result = {"sid": job.sid, "kind": job.kind.value, "model": job.model,
                  **options.to_fields(), "device": work.models.device,
                  "video": info.to_json(), "frames": detected,
                  "counts": {label: len(ids) for label, ids in sorted(counts.items())},
                  "tracks": sorted(longest, key=lambda t: t["first_seen"]),
                  "tracks_total": len(kept),
                  "timings": {k: round(v, 1) for k, v in spent.items()}}
        return Outcome(result=result)


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
    shown from its time, its bitrate capped (a noisy clip cannot swell it), at ``path``."""

    def __init__(self, path: Path):
        self.path = path
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

    def finish(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.container = None

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
