"""Uploads kept for review: a model's rule (near its threshold, a class rarely found, one in N),
the list's bounds in count and bytes (the oldest go first), and dismissing one."""
import time

import pytest

from detection.datasets.review import ReviewList, ReviewRule

SID = "ab" * 16


def result(sid=SID, scores=(0.9,), labels=("cat",), threshold=0.3) -> dict:
    return {"sid": sid, "model": "m", "threshold": threshold, "image": {"width": 4, "height": 4},
            "detections": [{"label": label, "score": score, "bbox": [0, 0, 1, 1]}
                           for label, score in zip(labels, scores)]}


def test_the_rule_names_each_reason():
    rule = ReviewRule(near=0.1, rare=2, one_in=0)
    assert rule.reasons(SID, 0.3, result(scores=(0.35,))["detections"], {"cat": 5}) == [
        "1 detection(s) scored under 0.40"]
    assert rule.reasons(SID, 0.3, result(scores=(0.9,))["detections"], {"cat": 1}) == [
        "rarely found: cat"]
    assert rule.reasons(SID, 0.3, result(scores=(0.9,))["detections"], {"cat": 2}) == []
    assert ReviewRule(one_in=1).reasons(SID, 0.3, [], {}) == ["one upload in 1, at random"]
    every_third = [sid for sid in (f"{i:08x}" + "0" * 24 for i in range(30))
                   if ReviewRule(one_in=3).reasons(sid, 0.3, [], {})]
    assert len(every_third) == 10


@pytest.mark.parametrize("table", [{"near": 2}, {"rare": -1}, {"one_in": 1.5}, {"other": 1},
                                   "near"])
def test_a_bad_rule_is_refused(table):
    with pytest.raises(ValueError):
        ReviewRule.of(table)


def test_kept_uploads_are_listed_newest_first_bounded_and_dismissed(tmp_path):
    png = tmp_path / "in.png"
    png.write_bytes(b"x" * 1000)
    review = ReviewList(tmp_path / "datasets", max_items=3, max_bytes=2500)
    rule = ReviewRule(one_in=1)
    sids = [f"{i:032x}" for i in range(4)]
    for sid in sids:
        assert review.consider(rule, result(sid), png) == ["one upload in 1, at random"]
    kept = [item["sid"] for item in review.items()]
    assert kept == sids[:0:-1][:2], "2500 bytes hold two: the oldest went first"
    assert review.image(sids[3]).read_bytes() == png.read_bytes()
    assert review.dismiss(sids[3]) and not review.dismiss(sids[3])
    assert review.image(sids[3]) is None and review.image("../x") is None
    assert review.consider(None, result(sids[0]), png) == []


def test_rare_classes_are_counted_per_model_as_results_come(tmp_path):
    png = tmp_path / "in.png"
    png.write_bytes(b"x")
    review = ReviewList(tmp_path / "datasets", max_items=10, max_bytes=10**6)
    rule = ReviewRule(rare=2)
    kept = [bool(review.consider(rule, result(f"{i:032x}"), png)) for i in range(4)]
    assert kept == [True, True, False, False]


def test_the_count_bound_holds_when_the_bytes_fit(tmp_path):
    png = tmp_path / "in.png"
    png.write_bytes(b"x")
    review = ReviewList(tmp_path / "datasets", max_items=2, max_bytes=10**6)
    for i in range(5):
        review.consider(ReviewRule(one_in=1), result(f"{i:032x}"), png)
    assert len(review.items()) == 2


def test_a_review_waits_for_the_png_its_web_process_is_still_storing(tmp_path):
    """The spool queues a job before its PNG is stored: a fast model may finish first."""
    import threading
    from types import SimpleNamespace

    from detection.datasets import review as reviews
    review = ReviewList(tmp_path / "datasets", max_items=10, max_bytes=10**6)
    spec = SimpleNamespace(review=ReviewRule(one_in=1))
    png = tmp_path / "late.png"
    threading.Timer(0.2, png.write_bytes, (b"stored late",)).start()
    reviews.keep_for_review(review, spec, result(), png, wait_seconds=5)
    assert review.image(SID).read_bytes() == b"stored late"
    other, started = "cd" * 16, time.monotonic()
    reviews.keep_for_review(review, spec, result(other), tmp_path / "never.png", wait_seconds=0.1)
    assert review.image(other) is None and time.monotonic() - started < 2  # no raise
