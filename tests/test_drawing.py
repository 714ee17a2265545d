"""Drawing: boxes in class colours at the right pixels, labels that do not hide each other, masks."""
import numpy as np
from PIL import Image

from detection.worker.detector import Detection
from detection.worker.drawing import class_color, draw_detections


def test_boxes_are_drawn_at_their_pixels_in_their_class_colour():
    image = Image.new("RGB", (400, 300), (128, 128, 128))
    box = Detection("dog", 16, 0.9, (100.0, 120.0, 300.0, 280.0))
    drawn = np.asarray(draw_detections(image, [box]))
    assert tuple(drawn[200, 100]) == class_color(16)  # left edge
    assert tuple(drawn[200, 200]) == (128, 128, 128)  # inside stays untouched
    assert np.asarray(image).sum() == 128 * 3 * 400 * 300  # the input is not modified


def test_a_weaker_label_does_not_cover_a_stronger_one():
    image = Image.new("RGB", (400, 300), (255, 255, 255))
    car = Detection("car", 2, 0.8, (200.0, 100.0, 390.0, 200.0))
    truck = Detection("truck", 7, 0.3, (198.0, 100.0, 385.0, 202.0))
    drawn = np.asarray(draw_detections(image, [car, truck]))
    above = drawn[85:99, 230:260].reshape(-1, 3)  # where the car's label sits
    truck_colour = np.array(class_color(7))
    assert not (above == truck_colour).all(axis=1).any()


def test_masks_tint_only_their_pixels():
    image = Image.new("RGB", (100, 80), (0, 0, 0))
    mask = np.zeros((80, 100), dtype=bool)
    mask[10:30, 10:40] = True
    drawn = np.asarray(draw_detections(image, [Detection("cat", 15, 0.9, (5, 5, 95, 75), mask)]))
    assert drawn[20, 20].sum() > 0 and drawn[50, 60].sum() == 0


def test_labels_at_the_right_edge_stay_in_the_picture():
    image = Image.new("RGB", (300, 200), (255, 255, 255))
    edge = Detection("donut", 54, 0.9, (280.0, 80.0, 300.0, 150.0))
    drawn = np.asarray(draw_detections(image, [edge]))
    label_row = drawn[70]  # just above the box, where its label sits
    coloured = np.flatnonzero((label_row == np.array(class_color(54))).all(axis=1))
    assert coloured.size and coloured.min() < 240, "the label was moved left, into view"
