"""Asking for a training under WebTest (no worker: the job stays queued): each request checked
before it is queued, refused with the reason, or queued as a job of kind train whose status
shows its options."""
import pytest

from tests.support import png_bytes

CAT = [{"label": "cat", "box": [10, 20, 110, 120]}]


@pytest.fixture
def pets(make_config, fake_checkpoint):
    import webtest

    from tests.support import app_for
    ini = make_config({"rtmdet_tiny": fake_checkpoint}, spawn_worker="false", max_queue=50)
    testapp = webtest.TestApp(app_for(ini))
    testapp.post_json("/datasets", {"name": "pets", "classes": ["cat"]}, status=201)
    return testapp


def add_images(testapp, count, annotations=CAT):
    for _ in range(count):
        testapp.post_json("/datasets/pets/images", {"sid": upload(testapp), "annotations":
                                                    annotations}, status=201)


def upload(testapp) -> str:
    return testapp.post("/upload", upload_files=[("image", "a.png", png_bytes())],
                        status=202).json["sid"]


def train(testapp, status=202, **fields):
    body = {"dataset": "pets", "base": "rtmdet_tiny", "name": "pets_model", **fields}
    return testapp.post_json("/training", body, status=status)


def test_a_training_is_queued_as_a_job_whose_status_shows_its_options(pets):
    add_images(pets, 5)  # four to train on, the fifth held out
    accepted = train(pets, epochs=3, time_budget=60, seed=7)
    body = accepted.json
    assert body["kind"] == "train" and body["model"] == "pets_model"
    assert accepted.headers["Location"] == body["status_url"]
    assert body["model_url"].endswith("/models/pets_model")
    status = pets.get(body["status_url"]).json
    assert status["kind"] == "train" and status["state"] == "queued"
    assert (status["model"], status["dataset"], status["name"]) == ("rtmdet_tiny", "pets",
                                                                    "pets_model")
    assert (status["epochs"], status["time_budget"], status["seed"]) == (3, 60.0, 7)
    assert "result_url" not in status


def test_a_dataset_too_small_to_train_on_is_refused_with_what_it_lacks(pets):
    add_images(pets, 1)
    error = train(pets, status=409).json["error"]
    assert "at least 2 training images" in error and "cat" in error
    add_images(pets, 1)
    add_images(pets, 3, annotations=[])  # the fifth (held out) has no box
    assert "held-out image with a box" in train(pets, status=409).json["error"]
    train(pets, dataset="nope", status=404)


@pytest.mark.parametrize("fields, says", [
    ({"base": "faces"}, "no mmdet model"),
    ({"base": "yolox_nano"}, "not installed"),
    ({"name": "rtmdet_tiny"}, "not made by teaching"),
    ({"name": "bad name"}, "name must be a name"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"time_budget": -1}, "time budget"),
    ({"time_budget": "NaN"}, "time budget"),
    ({"time_budget": float("nan")}, "time budget"),
    ({"time_budget": 3600}, "under training_timeout_seconds"),
    ({"base": "rtmdet_ins_tiny"}, "of boxes"),
    ({"seed": 2**32}, "seed"),
    ({"colour": "red"}, "unknown fields"),
])
def test_bad_training_requests_are_refused_with_the_reason(pets, fields, says):
    add_images(pets, 5)
    refused = train(pets, status="*", **fields)
    assert refused.status_int in (400, 409) and says in refused.json["error"]


def test_a_model_that_was_not_taught_has_no_versions_and_cannot_be_promoted(pets):
    assert pets.get("/models/rtmdet_tiny").json["versions"] == []
    pets.get("/models/nothing_here", status=404)
    pets.post_json("/models/rtmdet_tiny/promote", {"version": 1}, status=404)
    pets.post_json("/models/rtmdet_tiny/promote", {"version": "1"}, status=400)


def test_a_queued_training_is_cancelled_at_once_and_an_ended_one_cannot_be(pets):
    add_images(pets, 5)
    sid = train(pets).json["sid"]
    cancelled = pets.delete(f"/training/{sid}", status=202).json
    assert cancelled["state"] == "failed" and "cancelled by DELETE" in cancelled["error"]
    assert pets.get(f"/status/{sid}").json["state"] == "failed"
    assert "has ended" in pets.delete(f"/training/{sid}", status=409).json["error"]
    pets.delete("/training/" + "0" * 32, status=404)
    pets.delete(f"/training/{upload(pets)}", status=404)  # a detection is not a training
    pets.post_json(f"/training/{sid}", {}, status=405)
