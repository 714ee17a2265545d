"""Tiles alone, with a stand-in detector that "finds" known objects in whatever crop it is given:
the grid covers the image with the overlap it says; an object cut by a tile's inner edge is not
kept from that tile; one seen whole in the image and in tiles is one detection, in the image's
coordinates; boxes of two classes over each other both stay."""
import numpy as np
import pytest

from detection.worker.detectors import Detection
from detection.worker.tiling import OVERLAP, detect_tiled, tile_windows


@pytest.mark.parametrize("width, height, grid", [(2400, 1600, 3), (641, 479, 2), (1000, 90, 6)])
def test_the_tiles_cover_the_image_and_overlap_as_said(width, height, grid):
    windows = tile_windows(width, height, grid)
    assert len(windows) == grid * grid
    covered = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in windows:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    row = sorted({(x1, x2) for x1, _, x2, _ in windows})
    for (a1, a2), (b1, b2) in zip(row, row[1:]):
        assert (a2 - b1) >= OVERLAP * (a2 - a1) - 1  # each shares a quarter with the next


class Objects:
    """Finds each of ``objects`` (label, class id, box in the whole image) wholly or partly in a
    crop; which crop it is told by its size and the windows it was made from."""
    spec = None

    def __init__(self, objects, windows):
        self.objects, self.windows, self.calls, self.seen = objects, windows, 0, 0

    def detect_batch(self, crops, thresholds):
        self.calls += 1
        found = []
        windows = self.windows[self.seen:self.seen + len(crops)]
        self.seen += len(crops)
        for crop, (x1, y1, x2, y2) in zip(crops, windows):
            assert crop.shape[:2] == (y2 - y1, x2 - x1)
            here = []
            for label, class_id, score, (bx1, by1, bx2, by2) in self.objects:
                cx1, cy1 = max(bx1, x1) - x1, max(by1, y1) - y1
                cx2, cy2 = min(bx2, x2) - x1, min(by2, y2) - y1
                if cx1 < cx2 and cy1 < cy2:
                    here.append(Detection(label, class_id, score, (cx1, cy1, cx2, cy2)))
            found.append(here)
        return found


def test_objects_are_merged_into_the_images_coordinates_and_cut_ones_dropped():
    width, height, grid = 1200, 800, 3
    windows = [(0, 0, width, height), *tile_windows(width, height, grid)]
    small = ("person", 0, 0.9, (500.0, 350.0, 530.0, 400.0))  # whole in a tile (the middle)
    kite = ("kite", 33, 0.8, (505.0, 355.0, 525.0, 380.0))  # over it, another class
    large = ("car", 2, 0.7, (100.0, 100.0, 1100.0, 700.0))  # cut by every tile
    detector = Objects([small, kite, large], windows)
    found = detect_tiled(detector, np.zeros((height, width, 3), np.uint8), 0.3, grid)
    assert detector.calls == 2  # the image and its 9 tiles, in batches of at most 8
    assert [(d.label, d.bbox) for d in found] == [
        ("person", small[3]), ("kite", kite[3]), ("car", large[3])]  # best first, one each


def test_a_grid_of_one_is_the_plain_detection():
    detector = Objects([("dog", 16, 0.5, (10.0, 10.0, 50.0, 50.0))], [(0, 0, 100, 100)])
    found = detect_tiled(detector, np.zeros((100, 100, 3), np.uint8), 0.3, 1)
    assert [d.bbox for d in found] == [(10.0, 10.0, 50.0, 50.0)] and detector.calls == 1


def test_a_tiny_image_gets_no_tile_twice():
    windows = tile_windows(5, 1, 6)
    assert len(windows) == len(set(windows)) < 36
