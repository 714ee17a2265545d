"""Datasets through the HTTP API under WebTest: create, add images (sent, or an upload already
here), correct, remove, export as COCO; and every bad input a clear error that stores nothing."""
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from tests.support import png_bytes

BOX = {"label": "cat", "box": [10, 20, 110, 120]}


def create(testapp, name="pets", classes=("cat", "dog"), status=201):
    return testapp.post_json("/datasets", {"name": name, "classes": list(classes)},
                             status=status)


def add(testapp, name="pets", annotations=(BOX,), data=None, status=201, **fields):
    files = [("image", "photo.png", png_bytes() if data is None else data)]
    params = {"annotations": json.dumps(list(annotations)), **fields}
    return testapp.post(f"/datasets/{name}/images", params=params, upload_files=files,
                        status=status)


def dataset_files(testapp) -> list[str]:
    root = testapp.app.registry.service.settings.datasets_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and p.name != ".lock" and p.parent.name != ".locks")


def test_a_dataset_is_created_listed_shown_and_deleted(testapp):
    created = create(testapp)
    assert created.headers["Location"].endswith("/datasets/pets")
    body = created.json
    assert body["classes"] == ["cat", "dog"] and body["images"] == 0
    assert body["boxes"] == {"cat": 0, "dog": 0} and body["split"] == {"train": 0, "held_out": 0}
    assert [d["name"] for d in testapp.get("/datasets").json["datasets"]] == ["pets"]
    assert testapp.get("/datasets/pets").json["coco_url"].endswith("/datasets/pets/coco.json")
    create(testapp, status=409)
    assert testapp.delete("/datasets/pets").json == {"deleted": "pets"}
    testapp.get("/datasets/pets", status=404)
    assert testapp.get("/datasets").json == {"datasets": []}
    assert dataset_files(testapp) == []


def test_images_are_added_corrected_and_removed_with_counts_per_class(testapp):
    create(testapp)
    first = add(testapp).json
    assert first["annotations"] == [BOX] and (first["width"], first["height"]) == (320, 240)
    stored = Image.open(io.BytesIO(testapp.get(first["image_url"]).body))
    assert stored.format == "PNG" and stored.size == (320, 240)
    second = add(testapp, annotations=[{"label": "dog", "box": [0, 0, 320, 240]}, BOX]).json
    summary = testapp.get("/datasets/pets").json
    assert summary["images"] == 2 and summary["boxes"] == {"cat": 2, "dog": 1}
    corrected = testapp.put_json(second["url"], {"annotations": [
        {"label": "dog", "box": [5.5, 6.5, 100, 200]}]}).json
    assert corrected["annotations"] == [{"label": "dog", "box": [5.5, 6.5, 100, 200]}]
    assert corrected["split"] == second["split"] and corrected["id"] == second["id"]
    assert testapp.get("/datasets/pets").json["boxes"] == {"cat": 1, "dog": 1}
    testapp.delete(first["url"])
    testapp.get(first["url"], status=404)
    testapp.get(first["image_url"], status=404)
    listed = testapp.get("/datasets/pets/images").json["images"]
    assert [image["id"] for image in listed] == [second["id"]]


def test_an_upload_already_on_the_server_is_added_by_its_sid_in_its_stored_pixels(testapp):
    create(testapp)
    sid = testapp.post("/upload", upload_files=[("image", "a.jpg", png_bytes(size=(200, 100)))],
                       status=202).json["sid"]
    added = testapp.post_json("/datasets/pets/images", {"sid": sid, "annotations": [
        {"label": "cat", "box": [1, 2, 199, 99]}]}, status=201).json
    assert added["source"] == sid and (added["width"], added["height"]) == (200, 100)
    assert testapp.get(added["image_url"]).body == testapp.get(f"/uploads/{sid}.png").body
    testapp.post_json("/datasets/pets/images", {"sid": "0" * 32}, status=404)
    testapp.post_json("/datasets/pets/images", {"sid": "../../etc/passwd"}, status=404)


def test_the_coco_export_holds_the_boxes_in_pixels_and_the_split_stays_fixed(testapp):
    create(testapp)
    added = [add(testapp, annotations=[{"label": "dog", "box": [10, 20, 110, 70 + i]}]).json
             for i in range(6)]
    assert [image["split"] for image in added] == ["train"] * 4 + ["held_out", "train"]
    coco = testapp.get("/datasets/pets/coco.json").json
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]
    assert len(coco["images"]) == 6 and len(coco["annotations"]) == 6
    first = coco["annotations"][0]
    assert first["bbox"] == [10, 20, 100, 50] and first["category_id"] == 2
    assert coco["images"][0]["file_name"] == f"images/{added[0]['id']}.png"
    testapp.delete(added[0]["url"])  # removing one changes no other image's split
    held_out = testapp.get("/datasets/pets/coco.json?split=held_out").json
    assert [i["file_name"] for i in held_out["images"]] == [f"images/{added[4]['id']}.png"]
    testapp.get("/datasets/pets/coco.json?split=test", status=400)
    testapp.get("/datasets/pets/coco.json?other=1", status=400)


def test_the_coco_export_is_what_finetune_reads(testapp, tmp_path):
    from detection.finetune.dataset import check_dataset
    create(testapp)
    for _ in range(2):
        add(testapp, annotations=[BOX, {"label": "dog", "box": [150, 50, 300, 200]}])
    coco = testapp.get("/datasets/pets/coco.json").json
    for image in coco["images"]:
        path = tmp_path / image["file_name"]
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(testapp.get(f"/datasets/pets/{image['file_name']}").body)
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    dataset = check_dataset(tmp_path / "coco.json", masks=False)
    assert dataset.classes == ("cat", "dog")


def test_a_new_label_is_refused_by_name_unless_classes_may_be_added(testapp):
    create(testapp)
    refused = add(testapp, annotations=[{"label": "hamster", "box": [0, 0, 5, 5]}], status=400)
    assert "'hamster'" in refused.json["error"] and "add_classes" in refused.json["error"]
    add(testapp, annotations=[{"label": "hamster", "box": [0, 0, 5, 5]}], add_classes="true")
    assert testapp.get("/datasets/pets").json["classes"] == ["cat", "dog", "hamster"]


@pytest.mark.parametrize("annotation, says", [
    ({"label": "cat", "box": [-1, 0, 10, 10]}, "not within the image"),
    ({"label": "cat", "box": [0, 0, 321, 10]}, "not within the image"),
    ({"label": "cat", "box": [5, 5, 5.5, 40]}, "under a pixel"),
    ({"label": "cat", "box": [50, 50, 10, 10]}, "under a pixel"),
    ({"label": "cat", "box": [0, 0, 10]}, "four numbers"),
    ({"label": "cat", "box": [0, 0, 10, "1e400"]}, "four numbers"),
    ({"label": "cat", "box": [0, 0, 10, True]}, "four numbers"),
    ({"label": "cat", "box": [0, 0, 10, 10**400]}, "four numbers"),
    ({"label": "cat", "box": [0, 0, 10, float("inf")]}, "four numbers"),
    ({"label": "zero\u200bwidth", "box": [0, 0, 10, 10]}, "printable"),
    ({"label": "a,b", "box": [0, 0, 10, 10]}, "without commas"),
    ({"label": "cat\x00", "box": [0, 0, 10, 10]}, "printable"),
    ({"label": "bell\x85", "box": [0, 0, 10, 10]}, "printable"),
    ({"label": " cat", "box": [0, 0, 10, 10]}, "spaces at either end"),
    ({"label": "x" * 65, "box": [0, 0, 10, 10]}, "1 to 64"),
    ({"label": "cat", "box": [0, 0, 10, 10], "score": 1}, "nothing else"),
    ("cat", "nothing else"),
])
def test_a_bad_box_or_label_is_a_400_naming_it_and_stores_nothing(testapp, annotation, says):
    create(testapp)
    before = dataset_files(testapp)
    error = add(testapp, annotations=[BOX, annotation], status=400).json["error"]
    assert says in error and "annotation 1" in error
    assert dataset_files(testapp) == before


def test_bad_bodies_names_and_ids_are_clear_errors(testapp):
    testapp.post_json("/datasets", {"name": "../up", "classes": []}, status=400)
    testapp.post_json("/datasets", {"name": "ok", "classes": ["a", "a"]}, status=400)
    testapp.post_json("/datasets", {"name": "ok", "classes": "a,b"}, status=400)
    testapp.post_json("/datasets", {"name": "ok", "colour": "red"}, status=400)
    testapp.post_json("/datasets", [1, 2], status=400)
    testapp.post("/datasets", "{not json", content_type="application/json", status=400)
    testapp.post("/datasets", "name=ok", status=400)  # a form, not JSON
    create(testapp)
    for path in ("/datasets/nope", "/datasets/nope/images", "/datasets/nope/coco.json",
                 "/datasets/pets/images/0123456789abcdef", "/datasets/pets/images/x.png",
                 "/datasets/pets/images/..%2F..%2Fdataset.json"):
        assert "error" in testapp.get(path, status=404).json
    add(testapp, name="nope", status=404)
    add(testapp, data=b"not an image", status=422)
    add(testapp, annotations=(), status=201)  # no boxes: a picture of the background
    testapp.post("/datasets/pets/images", params={"annotations": "[{"},
                 upload_files=[("image", "a.png", png_bytes())], status=400)
    testapp.put_json("/datasets/pets/images/0123456789abcdef", {"annotations": []}, status=404)
    testapp.delete("/datasets/pets/images/0123456789abcdef", status=404)
    testapp.patch("/datasets/pets", status=405)


def test_limits_on_datasets_images_classes_and_bytes(make_config, fake_checkpoint):
    import webtest

    from tests.support import app_for
    ini = make_config({"rtmdet_tiny": fake_checkpoint}, spawn_worker="false", max_datasets=2,
                      max_dataset_images=2, max_dataset_classes=3, max_datasets_mb=1)
    app = webtest.TestApp(app_for(ini))
    create(app, name="a")
    create(app, name="b", classes=["w", "x", "y", "z"], status=409)
    create(app, name="b")
    assert "2 datasets" in create(app, name="c", status=409).json["error"]
    add(app, name="a")
    add(app, name="a")
    assert "2 images" in add(app, name="a", status=409).json["error"]
    refused = add(app, name="b", annotations=[{"label": "p", "box": [0, 0, 9, 9]},
                                              {"label": "q", "box": [0, 0, 9, 9]}],
                  add_classes="1", status=409)
    assert "at most 3 classes" in refused.json["error"]
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")  # 1.5 MB: over the 1 MiB budget
    assert add(app, name="b", data=buffer.getvalue(), status=507).json["error"]
    assert app.get("/datasets/b").json["images"] == 0


def test_with_api_keys_datasets_need_one(make_config, fake_checkpoint):
    import webtest

    from tests.support import app_for
    ini = make_config({"rtmdet_tiny": fake_checkpoint}, spawn_worker="false", api_keys="k1")
    app = webtest.TestApp(app_for(ini))
    app.get("/datasets", status=401)
    app.post_json("/datasets", {"name": "a"}, status=401)
    app.post_json("/datasets", {"name": "a"}, headers={"X-API-Key": "k1"}, status=201)
    app.get("/datasets/a/coco.json", status=401)


def test_concurrent_additions_lose_nothing_and_split_one_in_five(testapp):
    create(testapp)
    service = testapp.app.registry.service
    png = png_bytes()
    errors = []

    def add_some():
        try:
            for _ in range(5):
                service.datasets.add_image("pets", png, 320, 240, [BOX])
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)
    threads = [threading.Thread(target=add_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    summary = testapp.get("/datasets/pets").json
    assert summary["images"] == 20 and summary["split"] == {"train": 16, "held_out": 4}


def test_uploads_kept_for_review_are_listed_shown_dismissed_and_saved_after_pruning(testapp):
    from detection.datasets.review import ReviewRule
    service = testapp.app.registry.service
    sid = testapp.post("/upload", upload_files=[("image", "a.png", png_bytes(size=(200, 100)))],
                       status=202).json["sid"]
    stored = service.records.files.input(sid)
    detections = [{"label": "cat", "score": 0.35, "bbox": [1, 2, 50, 60]}]
    kept = service.review.consider(ReviewRule(near=0.1), {
        "sid": sid, "model": "rtmdet_tiny", "threshold": 0.3,
        "image": {"width": 200, "height": 100}, "detections": detections}, stored)
    assert kept == ["1 detection(s) scored under 0.40"]
    [item] = testapp.get("/review").json["items"]
    assert item["sid"] == sid and item["detections"] == detections and item["reasons"] == kept
    assert testapp.get(item["image_url"]).body == stored.read_bytes()
    stored.unlink()  # the upload itself pruned: its kept copy still goes to a dataset
    create(testapp)
    added = testapp.post_json("/datasets/pets/images", {"sid": sid, "annotations": [
        {"label": "cat", "box": [1, 2, 50, 60]}]}, status=201).json
    assert (added["width"], added["height"]) == (200, 100)
    assert testapp.delete(f"/review/{sid}").json == {"dismissed": sid}
    testapp.delete(f"/review/{sid}", status=404)
    testapp.get(f"/review/{sid}.png", status=404)
    testapp.get("/review/..%2Fx.png", status=404)
    assert testapp.get("/review").json == {"items": []}


def test_json_nested_too_deep_is_a_400_not_a_crash(testapp):
    create(testapp)
    deep = "[" * 100_000 + "]" * 100_000
    testapp.post("/datasets", deep, content_type="application/json", status=400)
    add(testapp, annotations=(), status=201)
    refused = testapp.post("/datasets/pets/images", params={"annotations": deep},
                           upload_files=[("image", "a.png", png_bytes())], status=400)
    assert "nested too deep" in refused.json["error"]


def test_an_upload_goes_into_a_dataset_once_and_names_differ_in_more_than_case(testapp):
    create(testapp)
    sid = testapp.post("/upload", upload_files=[("image", "a.png", png_bytes())],
                       status=202).json["sid"]
    first = testapp.post_json("/datasets/pets/images", {"sid": sid}, status=201).json
    again = testapp.post_json("/datasets/pets/images", {"sid": sid}, status=409).json
    assert first["id"] in again["error"]
    testapp.delete(first["url"])
    testapp.post_json("/datasets/pets/images", {"sid": sid}, status=201)  # removed: again
    testapp.post_json("/datasets", {"name": "two", "classes": ["Cat", "cat"]}, status=400)
    refused = add(testapp, annotations=[{"label": "CAT", "box": [0, 0, 9, 9]}],
                  add_classes="true", status=400)
    assert "only in case" in refused.json["error"]
