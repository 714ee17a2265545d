"""Drawing: boxes in class colours at the right pixels, labels that do not hide each other, masks."""
import numpy as np

from detection.worker.detectors import Detection
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
    drawn = draw_detections(image, [Detection("cat", 15, 0.9, (5, 5, 95, 75), mask)])
    assert drawn[20, 20].sum() > 0 and drawn[50, 60].sum() == 0


def test_where_masks_overlap_the_best_scoring_one_shows_over_the_others():
    image = np.full((80, 100, 3), 100, np.uint8)
    best, worse = np.zeros((80, 100), bool), np.zeros((80, 100), bool)
    best[10:40, 10:40], worse[30:60, 30:60] = True, True
    detections = [Detection("cat", 15, 0.9, (70, 70, 75, 75), best),
                  Detection("dog", 16, 0.5, (70, 70, 75, 75), worse)]
    drawn = draw_detections(image, detections).astype(int)
    tinted = {name: np.rint(100 * 0.55 + np.array(class_color(i)) * 0.45)
              for name, i in (("cat", 15), ("dog", 16))}
    assert np.abs(drawn[35, 35] - tinted["cat"]).max() <= 1  # under both: the best one
    assert np.abs(drawn[50, 50] - tinted["dog"]).max() <= 1
    assert (drawn[5, 5] == 100).all()


def test_a_mask_in_either_memory_order_encodes_the_same_run_lengths():
    mask = np.zeros((48, 64), bool)
    mask[5:20, 7:50] = True
    mask[30, 3] = True
    columns_first = np.asfortranarray(mask)
    assert (Detection("cat", 15, 0.9, (0, 0, 1, 1), mask).to_json()["mask"]
            == Detection("cat", 15, 0.9, (0, 0, 1, 1), columns_first).to_json()["mask"])


def test_labels_at_the_right_edge_stay_in_the_picture():
    image = np.full((200, 300, 3), 255, np.uint8)
    edge = Detection("donut", 54, 0.9, (280.0, 80.0, 300.0, 150.0))
    drawn = draw_detections(image, [edge])
    label_row = drawn[70]  # just above the box, where its label sits
    coloured = np.flatnonzero((label_row == np.array(class_color(54))).all(axis=1))
    assert coloured.size and coloured.min() < 240, "the label was moved left, into view"


def test_labels_render_each_name_and_score_once_however_many_boxes():
    from detection.worker import drawing
    drawing._text.cache_clear()
    rng = np.random.default_rng(0)
    boxes = [Detection(name, class_id, float(rng.uniform(0, 1)), (x, x, x + 40.0, x + 30.0))
             for name, class_id, x in zip(["person", "car"] * 150, [0, 2] * 150,
                                          rng.uniform(0, 900, 300))]
    draw_detections(np.zeros((1000, 1000, 3), np.uint8), boxes)
    scores = {f"{d.score:.2f}" for d in boxes}
    assert drawing._text.cache_info().misses == 2 + 1 + len(scores)  # names, the space, scores


def test_face_landmarks_are_drawn_as_dots_in_the_box_colour():
    image = np.zeros((200, 200, 3), np.uint8)
    face = Detection("face", 0, 0.99, (50.0, 50.0, 150.0, 160.0),
                     landmarks=((80.0, 90.0), (120.0, 90.0), (100.0, 110.0)))
    drawn = draw_detections(image, [face])
    for x, y in face.landmarks:
        assert tuple(drawn[int(y), int(x)]) == class_color(0)
    assert drawn[130, 100].sum() == 0  # inside the box, away from the dots
