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
# The codecs read (their decoders by name): what cameras, phones and browsers record. Others
# (AV1's hidden frames, still-image codecs in a MOV) are refused before a frame is decoded.
CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "mpeg4"})
IMAGE_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1")
MIN_SIDE = 2  # pixels: H.264's 4:2:0 needs frames at least this wide and high


class BadVideo(ValueError):
    """Bytes that look like a video container but are not one FFmpeg can read as video."""


class VideoTooLarge(ValueError):
    """A video over a limit: its duration, frame size or frames."""


def container_of(data: bytes) -> str | None:
    """The FFmpeg demuxer of a video's bytes: ``mov`` for an MP4/MOV (an ``ftyp``, ``moov``,
    ``mdat`` or ``wide`` box first; not the HEIF/AVIF still images that share it), ``matroska``
    for Matroska/WebM; None for anything else. Only these demuxers ever read a client's bytes."""
    if data[4:8] == b"ftyp":
        return None if data[8:12] in IMAGE_BRANDS else "mov"
    if data[4:8] in (b"moov", b"mdat", b"wide"):
        return "mov"
    return "matroska" if data[:4] == b"\x1aE\xdf\xa3" else None


def is_video(data: bytes) -> bool:
    return container_of(data) is not None


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
        with _open(data) as container:
            stream = _video_stream(container, limits)
            stream.thread_type, stream.codec_context.thread_count = "SLICE", 1  # the web's
            info = _info(container, stream)
            _check(info, stream.frames, limits, fps)
            for _ in container.decode(stream):
                return info
    except av.FFmpegError as error:
        raise BadVideo(f"not a video FFmpeg can read: {error}") from None
    raise BadVideo("its video track has no frame that decodes")


def _open(data: bytes):
    """``data`` opened by the demuxer its first bytes name, and no other."""
    import av
    return av.open(io.BytesIO(data), mode="r", format=container_of(data) or "mov",
                   options={"probesize": str(5 << 20), "analyzeduration": "5000000"})


def _video_stream(container, limits: VideoLimits):
    """The container's main video track, its decoder bounded; ``BadVideo`` if it has none
    this service reads."""
    if not container.streams.video:
        raise BadVideo("it has no video track (audio only, or no stream at all)")
    stream = container.streams.best("video")
    if stream.codec_context.name not in CODECS:
        raise BadVideo(f"its video is {stream.codec_context.name}; this service reads "
                       f"{', '.join(sorted(CODECS))}")
    # FFmpeg refuses a frame over this itself, before it allocates one (a size changed mid-way)
    stream.codec_context.options = {"max_pixels": str(limits.max_frame_pixels)}
    return stream


def _info(container, stream) -> VideoInfo:
    context = stream.codec_context
    seconds = container.duration / 1e6 if container.duration else (
        float(stream.duration * stream.time_base) if stream.duration and stream.time_base
        else None)
    rate = float(stream.average_rate) if stream.average_rate else None
    return VideoInfo(context.width, context.height, seconds, rate, context.name)


def _check(info: VideoInfo, frames: int, limits: VideoLimits, fps: float) -> None:
    if info.width < MIN_SIDE or info.height < MIN_SIDE:
        raise BadVideo(f"its frames are {info.width}x{info.height}: too small to be video")
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
    with _open(data) as container:
        stream = _video_stream(container, limits)
        stream.thread_type = "FRAME"
        rate = float(stream.average_rate or 30)
        due, decoded, sampled, start, size = 0.0, 0, 0, None, None
        try:
            frames = container.decode(stream)
            for frame in frames:
                decoded += 1
                at = frame.time if frame.time is not None else (decoded - 1) / rate
                start = at if start is None else start  # clocks start at the first frame
                time = at - start
                if decoded > (time + 1) * MAX_SOURCE_FPS or time > limits.max_seconds:
                    raise VideoTooLarge(f"it runs past {limits.max_seconds:g} s, or has more "
                                        f"than {MAX_SOURCE_FPS} frames a second (its container "
                                        "said otherwise)")
                size = size or (frame.width, frame.height)
                if (frame.width, frame.height) != size:
                    raise BadVideo(f"its frame size changes at {time:.1f} s, from "
                                   f"{size[0]}x{size[1]} to {frame.width}x{frame.height}")
                if time + 1e-6 < due:
                    continue
                sampled += 1
                if sampled > limits.max_frames:
                    raise VideoTooLarge(f"it has more than {limits.max_frames} frames to detect "
                                        f"at {fps:g} a second (its container said fewer)")
                due = time + 1 / fps
                yield time, _upright(frame.to_ndarray(format="rgb24"), frame.rotation)
        except av.FFmpegError as error:
            raise BadVideo(f"it cannot be decoded after {decoded} frames: {error}") from None


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """A frame turned as its display matrix says (counterclockwise degrees)."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
