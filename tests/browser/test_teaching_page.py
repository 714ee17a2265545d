"""Teaching from the page, as a person does it: a COCO zip imported into a dataset, its images
shown with their boxes where the annotations put them, a training started from the real
YOLOX-Nano and followed to its end (progress bar, validation curve), its version promoted, and
the new model offered by the upload form."""
import json
import zipfile

import pytest
import requests

from tests.browser.support import MARKS, open_page
from tests.shapes import make_dataset
from tests.support import SHARED_CHECKPOINT

pytestmark = [*MARKS, pytest.mark.skipif(not SHARED_CHECKPOINT.is_file(),
                                         reason="needs the real YOLOX-Nano checkpoint")]


def test_a_dataset_is_imported_shown_trained_and_its_version_promoted(page, live_server,
                                                                      tmp_path):
    server = live_server({"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano")
    annotations = make_dataset(tmp_path / "shapes", 10)
    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in annotations.parent.rglob("*"):
            if path.is_file() and path != archive:
                zipped.write(path, path.relative_to(annotations.parent))
    coco = json.loads(annotations.read_text())

    open_page(page, server)
    page.locator("#datasets-details summary").click()
    page.locator("#import-name").fill("shapes")
    page.locator("#import-file").set_input_files(str(archive))
    page.locator("#import-button").click()
    page.locator("#import-message", has_text="Imported 10 images into shapes").wait_for()
    card = page.locator(".dataset[data-name=shapes]")
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for category_id, label in names.items():
        count = sum(a["category_id"] == category_id for a in coco["annotations"])
        assert f"{label} {count}" in card.locator(".class-counts").inner_text()
    assert "10 images (2 held out)" in card.locator(".dataset-size").inner_text()

    # The gallery, the newest image first: its boxes where its annotations say.
    card.locator(".show-images").click()
    items = card.locator(".gallery-item")
    items.nth(9).wait_for()
    assert items.count() == 10 and card.locator(".gallery-item.held-out").count() == 2
    newest = requests.get(f"{server.url}/datasets/shapes/images", timeout=10).json()["images"][-1]
    item = items.first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=item.locator("img").element_handle())
    shown = item.locator("img").bounding_box()
    scale = shown["width"] / newest["width"]
    assert item.locator(".gallery-box").count() == len(newest["annotations"])
    for drawn, annotation in zip(item.locator(".gallery-box").all(), newest["annotations"]):
        x1, y1, x2, y2 = annotation["box"]
        at = drawn.bounding_box()
        assert abs(at["x"] - (shown["x"] + x1 * scale)) < 2
        assert abs(at["y"] - (shown["y"] + y1 * scale)) < 2
        assert abs(at["width"] - (x2 - x1) * scale) < 2
        assert drawn.inner_text() == annotation["label"]

    # Train from the page, follow it to its end, promote what it made.
    card.locator(".train").click()
    form = card.locator(".train-form")
    form.locator("select[name=base] option[value=yolox_nano]").wait_for(state="attached")
    assert form.locator("input[name=name]").input_value() == "shapes"
    form.locator("input[name=epochs]").fill("2")
    form.locator("button[type=submit]").click()
    training = page.locator(".training").first
    training.locator(".state.done").wait_for(timeout=240_000)
    assert training.locator(".training-progress").evaluate("bar => bar.value") == 1
    assert "shapes@1: mAP@0.5" in training.locator(".stage").inner_text()
    assert training.locator(".plot .map-line").get_attribute("points").count(",") >= 1
    rows = training.locator(".versions tbody tr")
    rows.first.wait_for()
    assert rows.count() == 1 and rows.first.locator("td").first.inner_text() == "shapes@1"
    rows.first.locator(".promote").click()
    training.locator(".versions td", has_text="served").wait_for()
    page.locator("#model option[value=shapes]").wait_for(state="attached")
    assert requests.get(f"{server.url}/models/shapes", timeout=10).json()["versions"][0]["served"]
