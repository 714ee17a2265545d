"""Video uploads: told from images by their first bytes (MP4, MOV, WebM), probed with PyAV
(FFmpeg, bundled in its wheels) before they are accepted, and read frame by frame within limits
by the worker.

What the container says is checked before any frame is decoded (a video track; its frame size;
its duration, and the frames that makes at the rate asked for), and the frames as they come
(their size, their times, their count), since a container may lie. Frames are sampled by their
time, not their index (variable frame rates), and turned upright by their display matrix.
"""
from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

MAX_SOURCE_FPS = 240  # frames a second a source may have; more is an attack, not a camera


class BadVideo(ValueError):
    """Bytes that look like a video container but are not one FFmpeg can read as video."""


class VideoTooLarge(ValueError):
    """A video over a limit: its duration, frame size or frames."""


def is_video(data: bytes) -> bool:
    """Whether ``data`` begins as an MP4/MOV (an ``ftyp``, ``moov``, ``mdat`` or ``wide`` box)
    or a Matroska/WebM file does."""
    return data[4:8] in (b"ftyp", b"moov", b"mdat", b"wide") or data[:4] == b"\x1aE\xdf\xa3"


@dataclass(frozen=True)
class VideoLimits:
    max_seconds: float
    max_frame_pixels: int
    max_frames: int  # detected, at the rate asked for

    @classmethod
    def of(cls, settings) -> "VideoLimits":
        return cls(settings.max_video_seconds, settings.max_video_frame_pixels,
                   settings.max_video_frames)


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    seconds: float | None  # as the container says
    fps: float | None  # its average frame rate, as it says
    codec: str

    def to_json(self) -> dict:
        return {"width": self.width, "height": self.height, "seconds": self.seconds,
                "fps": self.fps, "codec": self.codec}


def probe(data: bytes, limits: VideoLimits, fps: float) -> VideoInfo:
    """What a video's container says of it, checked against ``limits`` for detecting ``fps``
    frames a second, and its first frame decoded; else ``BadVideo`` or ``VideoTooLarge``."""
    import av
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise BadVideo("it has no video track (audio only, or no stream at all)")
            stream = container.streams.video[0]
            info = _info(container, stream)
            _check(info, stream.frames, limits, fps)
            for _ in container.decode(stream):
                return info
    except av.FFmpegError as error:
        raise BadVideo(f"not a video FFmpeg can read: {error}") from None
    raise BadVideo("its video track has no frame that decodes")


def _info(container, stream) -> VideoInfo:
    context = stream.codec_context
    seconds = container.duration / 1e6 if container.duration else (
        float(stream.duration * stream.time_base) if stream.duration and stream.time_base
        else None)
    rate = float(stream.average_rate) if stream.average_rate else None
    return VideoInfo(context.width, context.height, seconds, rate, context.name)


def _check(info: VideoInfo, frames: int, limits: VideoLimits, fps: float) -> None:
    if info.width <= 0 or info.height <= 0:
        raise BadVideo("its video track has no frame size")
    if info.width * info.height > limits.max_frame_pixels:
        raise VideoTooLarge(f"its frames are {info.width}x{info.height}; the limit is "
                            f"{limits.max_frame_pixels} pixels a frame")
    if info.seconds is not None and info.seconds > limits.max_seconds:
        raise VideoTooLarge(f"it lasts {info.seconds:.0f} s; the limit is "
                            f"{limits.max_seconds:g} s")
    if frames > limits.max_seconds * MAX_SOURCE_FPS:
        raise VideoTooLarge(f"it says it has {frames} frames; the limit is "
                            f"{limits.max_seconds * MAX_SOURCE_FPS:.0f}")
    if info.seconds is not None and math.ceil(info.seconds * fps) > limits.max_frames:
        raise VideoTooLarge(f"{info.seconds:.0f} s at {fps:g} frames a second is "
                            f"{math.ceil(info.seconds * fps)} frames to detect; the limit is "
                            f"{limits.max_frames} (ask for a lower fps)")


def sampled_frames(data: bytes, limits: VideoLimits, fps: float
                   ) -> Iterator[tuple[float, np.ndarray]]:
    """Upright RGB frames, ``fps`` a second by their times, with their times in seconds;
    ``VideoTooLarge`` as soon as the frames break a limit the container did not tell."""
    import av
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or 30)
        due, decoded, sampled = 0.0, 0, 0
        for frame in container.decode(stream):
            decoded += 1
            time = frame.time if frame.time is not None else decoded / rate
            if decoded > limits.max_seconds * MAX_SOURCE_FPS or time > limits.max_seconds:
                raise VideoTooLarge(f"it runs past {limits.max_seconds:g} s (its container "
                                    "said less)")
            if frame.width * frame.height > limits.max_frame_pixels:
                raise VideoTooLarge(f"a frame at {time:.1f} s is {frame.width}x{frame.height}; "
                                    f"the limit is {limits.max_frame_pixels} pixels a frame")
            if time + 1e-6 < due:
                continue
            sampled += 1
            if sampled > limits.max_frames:
                raise VideoTooLarge(f"it has more than {limits.max_frames} frames to detect at "
                                    f"{fps:g} a second (its container said fewer)")
            due = time + 1 / fps
            yield time, _upright(frame.to_ndarray(format="rgb24"), frame.rotation)


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """A frame turned as its display matrix says (counterclockwise degrees)."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
