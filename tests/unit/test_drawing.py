"""Drawing: boxes in class colours at the right pixels, labels that do not hide each other, masks."""
import numpy as np

from detection.worker.detectors import Detection, Mask
from detection.worker.drawing import class_color, draw_detections


def test_boxes_are_drawn_at_their_pixels_in_their_class_colour():
    image = np.full((300, 400, 3), 128, np.uint8)
    box = Detection("dog", 16, 0.9, (100.0, 120.0, 300.0, 280.0))
    drawn = draw_detections(image, [box])
    assert tuple(drawn[200, 100]) == class_color(16)  # left edge
    assert tuple(drawn[200, 200]) == (128, 128, 128)  # inside stays untouched
    assert image.sum() == 128 * 3 * 400 * 300  # the input is not modified


def test_a_weaker_label_does_not_cover_a_stronger_one():
    image = np.full((300, 400, 3), 255, np.uint8)
    car = Detection("car", 2, 0.8, (200.0, 100.0, 390.0, 200.0))
    truck = Detection("truck", 7, 0.3, (198.0, 100.0, 385.0, 202.0))
    drawn = draw_detections(image, [car, truck])
    above = drawn[85:99, 230:260].reshape(-1, 3)  # where the car's label sits
    truck_colour = np.array(class_color(7))
    assert not (above == truck_colour).all(axis=1).any()


def test_masks_tint_only_their_pixels():
    image = np.zeros((80, 100, 3), np.uint8)
    mask = np.zeros((80, 100), dtype=bool)
    mask[10:30, 10:40] = True
    drawn = draw_detections(image, [Detection("cat", 15, 0.9, (5, 5, 95, 75), Mask.of(mask))])
    assert drawn[20, 20].sum() > 0 and drawn[50, 60].sum() == 0


def test_where_masks_overlap_the_best_scoring_one_shows_over_the_others():
    image = np.full((80, 100, 3), 100, np.uint8)
    best, worse = np.zeros((80, 100), bool), np.zeros((80, 100), bool)
    best[10:40, 10:40], worse[30:60, 30:60] = True, True
    detections = [Detection("cat", 15, 0.9, (70, 70, 75, 75), Mask.of(best)),
                  Detection("dog", 16, 0.5, (70, 70, 75, 75), Mask.of(worse))]
    drawn = draw_detections(image, detections).astype(int)
    tinted = {name: np.rint(100 * 0.55 + np.array(class_color(i)) * 0.45)
              for name, i in (("cat", 15), ("dog", 16))}
    assert np.abs(drawn[35, 35] - tinted["cat"]).max() <= 1  # under both: the best one
    assert np.abs(drawn[50, 50] - tinted["dog"]).max() <= 1
    assert (drawn[5, 5] == 100).all()
