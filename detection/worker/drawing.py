"""Draw detections (boxes, labels with scores, masks) onto an image with Pillow."""
from __future__ import annotations

import colorsys
import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .detectors.base import Detection

MASK_OPACITY = 0.45


@functools.lru_cache(maxsize=None)
def class_color(class_id: int) -> tuple[int, int, int]:
    """A bright colour per class, spread around the hue circle by the golden ratio."""
    hue = (class_id * 0.618033988749895) % 1.0
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 0.95))


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=512)  # one byte a pixel: a 6000-pixel-wide photo's are 50 MB
def _text(text: str, size: int) -> np.ndarray:
    """``text``'s coverage (0-255), from the font's ascent to its descent: parts rendered apart
    share a baseline when put side by side."""
    font = _font(size)
    ascent, descent = font.getmetrics()
    mask = Image.new("L", (max(1, round(font.getlength(text))), ascent + descent))
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=font)
    return np.asarray(mask)


@functools.lru_cache(maxsize=256)  # 1920x1080: 26 KB each; a 40 MP photo's: 0.7 MB
def _label(name: str, score: str, size: int, padding: int,
           color: tuple[int, int, int]) -> np.ndarray:
    """A label's pixels, black text on the class colour. The name and the score are rendered
    once each (about 0.3 ms a text; ``_text``) and put side by side: labels repeat in crowded
    scenes, and there are only 101 scores."""
    coverage = np.hstack([_text(name, size), _text(" ", size), _text(score, size)])
    height, width = coverage.shape
    label = np.empty((height + 2 * padding, width + 2 * padding, 3), np.uint8)
    label[:] = color
    text = label[padding:padding + height, padding:padding + width]
    text[:] = (text * (255 - coverage[..., None].astype(np.uint16)) + 127) // 255
    label.flags.writeable = False  # shared by every drawing that uses it
    return label


def draw_detections(pixels: np.ndarray, detections: list[Detection]) -> np.ndarray:
    """A copy of RGB ``pixels`` with every detection drawn; the best-scoring ones end on top.

    Drawn with numpy on one copy of the pixels (Pillow renders each label once)."""
    canvas = np.array(pixels)
    _tint_masks(canvas, [d for d in detections if d.mask is not None])
    height, width = canvas.shape[:2]
    line_width = max(2, round(min(width, height) / 300))
    font_size = max(12, round(min(width, height) / 40))
    labels, placed = [], []
    for detection in detections:  # best first: they get the best label places
        name = detection.label if detection.track_id is None else \
            f"{detection.label} #{detection.track_id}"
        label = _label(name, f"{detection.score:.2f}", font_size, line_width,
                       class_color(detection.class_id))
        rectangle = _label_place(detection.bbox, label.shape[1::-1], placed, width)
        placed.append(rectangle)
        labels.append((rectangle, label))
    for detection, (rectangle, label) in reversed(list(zip(detections, labels))):
        _outline(canvas, detection.bbox, class_color(detection.class_id), line_width)
        for x, y in detection.landmarks or ():  # faces: eyes, nose, mouth corners
            _dot(canvas, x, y, line_width + 1, class_color(detection.class_id))
        _paste(canvas, label, int(rectangle[0]), int(rectangle[1]))
    return canvas


def _tint_masks(canvas: np.ndarray, masked: list[Detection]) -> None:
    """Blend each pixel under a mask with the colour of the best-scoring mask there, in one pass
    over the part of the picture the masks' windows cover (blending mask by mask took 0.5 s for
    100 masks of a 1280x960 photo; picking the covered pixels out, 0.1 s)."""
    windows = [d.mask.window for d in masked if d.mask.pixels.size]
    if not windows:
        return
    area = (slice(min(w[0].start for w in windows), max(w[0].stop for w in windows)),
            slice(min(w[1].start for w in windows), max(w[1].stop for w in windows)))
    top = np.full(canvas.shape[:2], -1, np.int16)  # the best mask over each pixel
    for index in range(len(masked) - 1, -1, -1):  # best first in the list: it ends on top
        mask = masked[index].mask
        np.copyto(top[mask.window], index, where=mask.pixels)
    top, region = top[area], canvas[area]
    colors = np.array([class_color(d.class_id) for d in masked], np.float32)
    blended = region * (1 - MASK_OPACITY) + colors[top] * MASK_OPACITY  # top -1: not copied
    np.copyto(region, blended, casting="unsafe", where=(top >= 0)[..., None])


def _dot(canvas: np.ndarray, x: float, y: float, radius: int, color) -> None:
    """A square dot centred on (x, y), within the canvas."""
    height, width = canvas.shape[:2]
    x, y = int(round(x)), int(round(y))
    canvas[max(y - radius, 0):max(min(y + radius + 1, height), 0),
           max(x - radius, 0):max(min(x + radius + 1, width), 0)] = color


def _outline(canvas: np.ndarray, box, color, line_width: int) -> None:
    """A rectangle's outline, ``line_width`` pixels thick, inside the box (from (x1, y1) to
    (x2, y2), both included, as Pillow draws them), within the canvas."""
    height, width = canvas.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box)
    left, right = max(x1, 0), max(min(x2 + 1, width), 0)
    top, bottom = max(y1, 0), max(min(y2 + 1, height), 0)
    canvas[top:max(min(y1 + line_width, height), 0), left:right] = color
    canvas[max(y2 + 1 - line_width, 0):bottom, left:right] = color
    canvas[top:bottom, left:max(min(x1 + line_width, width), 0)] = color
    canvas[top:bottom, max(x2 + 1 - line_width, 0):right] = color


def _paste(canvas: np.ndarray, label: np.ndarray, x: int, y: int) -> None:
    """Copy ``label`` onto the canvas at (x, y), clipped to the canvas."""
    height, width = canvas.shape[:2]
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + label.shape[0], height), min(x + label.shape[1], width)
    if top < bottom and left < right:
        canvas[top:bottom, left:right] = label[top - y:bottom - y, left - x:right - x]


def _label_place(bbox, size, placed, image_width) -> tuple[float, float, float, float]:
    """Above the box, else inside its top, else below it: the first place no better label has.
    Labels of boxes at the right edge shift left to stay in the picture."""
    x1, y1, _, y2 = bbox
    width, height = size
    x1 = max(0, min(x1, image_width - width))
    candidates = [(x1, y1 - height), (x1, y1), (x1, y2)]
    rectangles = [(x, max(0, y), x + width, max(0, y) + height) for x, y in candidates]
    for rectangle in rectangles:
        if not any(_overlap(rectangle, other) for other in placed):
            return rectangle
    return rectangles[0]


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
