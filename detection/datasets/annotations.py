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
    """A class name: 1 to 64 printable characters (as training reads them), no comma, no space
    at either end."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_LABEL_CHARS \
            or raw != raw.strip() or not LABEL.fullmatch(raw) or not raw.isprintable():
        raise BadAnnotation(f"a class name is 1 to {MAX_LABEL_CHARS} printable characters, "
                            f"without commas or spaces at either end; got {raw!r:.80}")
    return raw


def check_classes(raw: object) -> tuple[str, ...]:
    """A list of distinct class names."""
    if not isinstance(raw, list):
        raise BadAnnotation('"classes" must be a list of class names')
    classes = tuple(check_label(label) for label in raw)
    if len({label.casefold() for label in classes}) != len(classes):
        raise BadAnnotation("the class names must be distinct, in any case (as clients ask "
                            "for classes: Cat is cat)")
    return classes


def coordinates(box: object) -> tuple[float, float, float, float]:
    """Four finite numbers (a huge integer overflows; a bool is not a number)."""
    if not isinstance(box, list) or len(box) != 4 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in box):
        raise ValueError(box)
    values = tuple(float(v) for v in box)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(box)
    return values


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
        try:
            x1, y1, x2, y2 = coordinates(box)
        except (TypeError, ValueError, OverflowError):
            raise BadAnnotation(f"annotation {index}'s box must be four numbers: x1, y1, x2, "
                                "y2") from None
        if not (0 <= x1 and 0 <= y1 and x2 <= width and y2 <= height):
            raise BadAnnotation(f"annotation {index}'s box {box} is not within the image "
                                f"(0, 0, {width}, {height})")
        if x2 - x1 < MIN_SIDE or y2 - y1 < MIN_SIDE:
            raise BadAnnotation(f"annotation {index}'s box {box} is under a pixel wide or high "
                                "(x2 must exceed x1, and y2 y1, by 1 or more)")
        boxes.append(Box(label, x1, y1, x2, y2))
    return boxes
