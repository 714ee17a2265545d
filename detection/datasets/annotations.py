"""A dataset image's boxes as clients send them: ``[{"label": L, "box": [x1, y1, x2, y2]}, ...]``
in the image's pixels, checked before anything is stored."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

MAX_BOXES = 1000  # per image
MAX_LABEL_CHARS = 64
# Printable, no comma (class lists are comma-separated on the DeepStack and upload routes).
LABEL = re.compile(r"[^\x00-\x1f\x7f-\x9f,]+")
MIN_SIDE = 1.0  # pixels: a box under a pixel wide or high is a slip of the mouse


class BadAnnotation(ValueError):
    """A class name or a box that cannot be stored; the message says which and why."""


@dataclass(frozen=True)
class Box:
    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    def as_json(self) -> dict:
        return {"label": self.label, "box": [self.x1, self.y1, self.x2, self.y2]}


def check_label(raw: object) -> str:
    """A class name: 1 to 64 printable characters, no comma, no space at either end."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_LABEL_CHARS \
            or raw != raw.strip() or not LABEL.fullmatch(raw):
        raise BadAnnotation(f"a class name is 1 to {MAX_LABEL_CHARS} printable characters, "
                            f"without commas or spaces at either end; got {raw!r:.80}")
    return raw


def check_classes(raw: object) -> tuple[str, ...]:
    """A list of distinct class names."""
    if not isinstance(raw, list):
        raise BadAnnotation('"classes" must be a list of class names')
    classes = tuple(check_label(label) for label in raw)
    if len(set(classes)) != len(classes):
        raise BadAnnotation("the class names must be distinct")
    return classes


def parse_boxes(raw: object, width: int, height: int) -> list[Box]:
    """Boxes within a ``width`` x ``height`` image, each at least a pixel wide and high."""
    if not isinstance(raw, list):
        raise BadAnnotation('"annotations" must be a list of {"label": ..., "box": [x1, y1, '
                            'x2, y2]}')
    if len(raw) > MAX_BOXES:
        raise BadAnnotation(f"at most {MAX_BOXES} boxes an image; got {len(raw)}")
    boxes = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) != {"label", "box"}:
            raise BadAnnotation(f'annotation {index} must be {{"label": ..., "box": [x1, y1, '
                                f'x2, y2]}} and nothing else')
        try:
            label = check_label(item["label"])
        except BadAnnotation as error:
            raise BadAnnotation(f"annotation {index}: {error}") from None
        box = item["box"]
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                        and math.isfinite(v) for v in box)):
            raise BadAnnotation(f"annotation {index}'s box must be four numbers: x1, y1, x2, y2")
        x1, y1, x2, y2 = (float(v) for v in box)
        if not (0 <= x1 and 0 <= y1 and x2 <= width and y2 <= height):
            raise BadAnnotation(f"annotation {index}'s box {box} is not within the image "
                                f"(0, 0, {width}, {height})")
        if x2 - x1 < MIN_SIDE or y2 - y1 < MIN_SIDE:
            raise BadAnnotation(f"annotation {index}'s box {box} is under a pixel wide or high "
                                "(x2 must exceed x1, and y2 y1, by 1 or more)")
        boxes.append(Box(label, x1, y1, x2, y2))
    return boxes
