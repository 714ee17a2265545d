"""Video clips made for tests with PyAV: a real photo panned across the frame (so that a real
model sees one object move), at a constant or a varying frame rate, in MP4 or WebM; and clips
that break the rules (an audio track alone, a frame too large, a few frames spread over hours,
frames that change size midway)."""
from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from tests.support import SHARED_PHOTOS

MILLISECOND = Fraction(1, 1000)


def panned_photo(photo: str = "dog.jpg", size=(640, 360), seconds: float = 2.0, fps: int = 10,
                 container: str = "mp4", codec: str = "libx264", times=None,
                 live: bool = False) -> bytes:
    """``photo`` scaled to the frame's height, sliding from left to right; frames at ``fps``,
    or at ``times`` (seconds) when given (a varying rate); ``live``: written as a stream is,
    with no duration in its header (WebM)."""
    width, height = size
    source = Image.open(SHARED_PHOTOS / photo).convert("RGB")
    scale = height / source.height
    source = np.asarray(source.resize((round(source.width * scale), height)))
    times = times if times is not None else [i / fps for i in range(round(seconds * fps))]
    frames = []
    for at in times:
        canvas = np.full((height, width, 3), 90, np.uint8)
        shift = round((width - source.shape[1] // 2) * at / max(times[-1], 1e-6))
        part = source[:, :max(0, min(source.shape[1], width - shift))]
        canvas[:, shift:shift + part.shape[1]] = part
        frames.append((at, canvas))
    return encode(frames, container, codec, live)


class _Stream:
    """Where a live stream goes: written forward, never sought back into."""

    def __init__(self):
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def encode(frames, container: str = "mp4", codec: str = "libx264", live: bool = False,
           rotation: int = 0, pix_fmt: str = "yuv420p") -> bytes:
    """``(time, rgb)`` frames as a video file's bytes; ``rotation``: its display matrix's
    (counterclockwise degrees, as phones record held sideways)."""
    buffer = _Stream() if live else io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=1000)
        height, width = frames[0][1].shape[:2]
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)
        for at, rgb in frames:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = round(at * 1000), MILLISECOND
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return bytes(buffer.data) if live else buffer.getvalue()


def audio_only(seconds: float = 1.0) -> bytes:
    """An MP4 with one AAC track and no video."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as output:
        stream = output.add_stream("aac", rate=44100)
        samples = np.zeros((1, 1024), np.float32)
        for index in range(int(seconds * 44100 / 1024)):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, index * 1024
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


def resized_midway(first=(320, 240), then=(640, 480), frames: int = 20, at: int = 10,
                   fps: int = 10) -> bytes:
    """A WebM whose frames change size at frame ``at``: VP8 keyframes carry their own size, so a
    second encoder's packets muxed into the same track make a stream whose header tells only the
    first size (as a spliced or hostile clip can)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="webm") as output:
        stream = output.add_stream("libvpx", rate=1000)
        stream.width, stream.height, stream.pix_fmt = *first, "yuv420p"
        other = av.CodecContext.create("libvpx", "w")
        other.width, other.height, other.pix_fmt, other.time_base = *then, "yuv420p", MILLISECOND
        for index in range(frames):
            width, height = first if index < at else then
            frame = av.VideoFrame.from_ndarray(grey(width, height), format="rgb24")
            frame.pts, frame.time_base = round(index * 1000 / fps), MILLISECOND
            encoder = stream if index < at else other
            packets = list(encoder.encode(frame))
            if index == at - 1:
                packets += stream.encode()  # the first encoder's last frames
            for packet in packets:
                packet.stream = stream
                output.mux(packet)
        for packet in other.encode():
            packet.stream = stream
            output.mux(packet)
    return buffer.getvalue()


def grey(width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), 128, np.uint8)
