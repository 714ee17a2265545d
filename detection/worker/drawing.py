"""Draw detections (boxes, labels with scores, masks) onto an image with Pillow."""
from __future__ import annotations

import colorsys
import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .detector import Detection

MASK_OPACITY = 0.45


@functools.lru_cache(maxsize=None)
def class_color(class_id: int) -> tuple[int, int, int]:
    """A bright colour per class, spread around the hue circle by the golden ratio."""
    hue = (class_id * 0.618033988749895) % 1.0
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 0.95))


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=4096)
def _label_mask(text: str, size: int) -> Image.Image:
    """The text rendered once as a mask: crowded scenes repeat labels ("person 0.93")."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font)
    return mask


def draw_detections(image: Image.Image, detections: list[Detection]) -> Image.Image:
    """A copy of ``image`` with every detection drawn; the best-scoring ones end on top."""
    canvas = image.convert("RGB")
    masked = [d for d in detections if d.mask is not None]
    if masked:
        pixels = np.asarray(canvas, dtype=np.float32).copy()
        for detection in reversed(masked):
            color = np.array(class_color(detection.class_id), dtype=np.float32)
            region = detection.mask
            pixels[region] = pixels[region] * (1 - MASK_OPACITY) + color * MASK_OPACITY
        canvas = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    short_side = min(canvas.size)
    line_width = max(2, round(short_side / 300))
    font_size = max(12, round(short_side / 40))
    labels, placed = [], []
    for detection in detections:  # best first: they get the best label places
        mask = _label_mask(f"{detection.label} {detection.score:.2f}", font_size)
        size = (mask.width + 2 * line_width, mask.height + 2 * line_width)
        rectangle = _label_place(detection.bbox, size, placed, canvas.width)
        placed.append(rectangle)
        labels.append((rectangle, mask))
    for detection, (rectangle, mask) in reversed(list(zip(detections, labels))):
        color = class_color(detection.class_id)
        draw.rectangle(detection.bbox, outline=color, width=line_width)
        draw.rectangle(rectangle, fill=color)
        draw.bitmap((rectangle[0] + line_width, rectangle[1] + line_width), mask, fill=(0, 0, 0))
    return canvas


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
