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
    font = _font(max(12, round(short_side / 40)))
    for detection in reversed(detections):
        color = class_color(detection.class_id)
        x1, y1, x2, y2 = detection.bbox
        draw.rectangle((x1, y1, x2, y2), outline=color, width=line_width)
        text = f"{detection.label} {detection.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        height = bottom - top + 2 * line_width
        label_y = y1 - height if y1 - height >= 0 else y1  # above the box, or inside at the top
        draw.rectangle((x1, label_y, x1 + right - left + 2 * line_width, label_y + height),
                       fill=color)
        draw.text((x1 + line_width, label_y + line_width - top), text, fill=(0, 0, 0), font=font)
    return canvas
