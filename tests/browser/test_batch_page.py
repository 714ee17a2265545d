"""A batch from the page, in headless Chromium: three photos chosen with "one batch" ticked are
one card, one job: a progress bar, then the counts, the links to COCO, CSV and the drawings, and
each photo with its boxes where the COCO results put them."""
import pytest
import requests

from tests.browser.support import ARTIFACTS, MARKS, open_page
from tests.support import SHARED_CHECKPOINT, SHARED_PHOTOS

pytestmark = [*MARKS, pytest.mark.skipif(not SHARED_CHECKPOINT.is_file(),
                                         reason="the real YOLOX-Nano checkpoint is not here")]
PHOTOS = ("dog.jpg", "eagle.jpg", "person.jpg")


def test_three_photos_as_one_batch_show_their_boxes(page, live_server):
    server = live_server({"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano",
                         max_upload_bytes=8_000_000)
    open_page(page, server)
    page.locator("#threshold").fill("0.5")
    page.locator("#as-batch").check()
    page.locator("#file-input").set_input_files([str(SHARED_PHOTOS / p) for p in PHOTOS])
    card = page.locator(".job").first
    card.locator(".state.done").wait_for(timeout=120_000)
    assert page.locator(".job").count() == 1  # one card for the three
    items = card.locator(".batch-grid li")
    assert items.count() == 3
    assert "dog" in items.nth(0).inner_text() and "bird" in items.nth(1).inner_text()
    coco_href = card.locator(".coco-link").get_attribute("href")
    coco = requests.get(server.url + coco_href, timeout=10).json()
    assert card.locator(".batch-grid .gallery-box").count() == len(coco["annotations"]) > 0
    assert "2 × dog" in card.locator(".batch-summary").inner_text()  # dog.jpg, person.jpg
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "batch.png"), full_page=True)
