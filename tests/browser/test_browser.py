"""The page as a person uses it: headless Chromium (Debian's) driven by Playwright against the live
server with the real worker. Screenshots land in artifacts/ (not committed)."""
import shutil

import pytest
import requests

from tests.browser.support import ARTIFACTS, MARKS, open_page, wait_done, write_image

pytestmark = MARKS


def test_upload_shows_the_result_and_a_table_matching_the_json(page, live_server, tmp_path):
    server = live_server()
    open_page(page, server)
    assert page.locator("#model").input_value() == "rtmdet_tiny"
    assert page.locator("#model option[value=faster_rcnn_r50]").is_disabled()
    page.locator("#threshold").fill("0.97")
    page.locator("#file-input").set_input_files(str(write_image(tmp_path, size=(480, 360))))
    card = page.locator(".job").first
    wait_done(page, card)
    src = card.locator("img.result").get_attribute("src")
    sid = src.rsplit("/", 1)[1].split(".")[0]
    document = requests.get(f"{server.url}/uploads/{sid}.json", timeout=10).json()
    assert document["threshold"] == 0.97
    rows = card.locator("tbody tr")
    assert rows.count() == len(document["detections"]) > 0
    for i, detection in enumerate(document["detections"][:10]):
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert cells[1] == detection["label"] and cells[2] == f"{detection['score']:.2f}"
        assert cells[3] == ", ".join(str(round(v)) for v in detection["bbox"])
    assert card.locator(".json-link").get_attribute("href").endswith(f"{sid}.json")
    assert "object" in card.locator(".summary").inner_text()


def test_the_classes_field_limits_the_labels_and_offers_the_models_classes(
        page, live_server, tmp_path):
    server = live_server()
    open_page(page, server)
    assert page.locator("#class-names option").count() == 80
    page.locator("#threshold").fill("0.01")
    image = str(write_image(tmp_path, size=(480, 360)))
    page.locator("#file-input").set_input_files(image)
    card = page.locator(".job").first
    wait_done(page, card)
    labels = card.locator("tbody tr td:nth-child(2)").all_inner_texts()
    wanted = labels[-1]  # a label this (random-weights) model gives, not its best
    assert len(set(labels)) > 1
    page.locator("#classes").fill(wanted)
    page.locator("#file-input").set_input_files(image)
    card = page.locator(".job").first
    wait_done(page, card)
    assert f"only {wanted}" in card.locator(".summary").inner_text()
    assert set(card.locator("tbody tr td:nth-child(2)").all_inner_texts()) == {wanted}


def test_the_faces_model_is_offered_and_finds_a_face(page, live_server, rtmdet_checkpoint,
                                                     tmp_path):
    from tests.support import SHARED_PHOTOS
    if not (SHARED_PHOTOS / "grace_hopper.jpg").is_file():
        pytest.skip("../shared/photos is missing")
    server = live_server({"rtmdet_tiny": rtmdet_checkpoint, "faces": None})
    open_page(page, server)
    page.locator("#model").select_option("faces")
    assert "landmarks" in page.locator("#model-hint").inner_text()
    page.locator("#file-input").set_input_files(str(SHARED_PHOTOS / "grace_hopper.jpg"))
    card = page.locator(".job").first
    wait_done(page, card)
    assert card.locator("tbody tr td:nth-child(2)").all_inner_texts() == ["face"]
    assert "1 object: 1 × face" in card.locator(".summary").inner_text()


def test_a_fine_tuned_model_appears_with_its_classes_and_detects_them(page, live_server,
                                                                      tmp_path):
    """Trained beside the running service (briefly, from random weights), a custom model is
    offered on the next page load with its classes, and its results carry only them."""
    from tests.shapes import CLASSES, make_dataset, run_finetune
    server = live_server()
    open_page(page, server)
    assert page.locator("#model option[value=shapes]").count() == 0
    train = make_dataset(tmp_path / "shapes", 8)
    run = run_finetune(server.ini, "shapes", "rtmdet_tiny", train, "--epochs", "1",
                       "--image-size", "128")
    assert run.returncode == 0, run.stderr[-3000:]
    open_page(page, server)
    page.locator("#model").select_option("shapes")
    hint = page.locator("#model-hint").inner_text()
    assert "fine-tuned from rtmdet_tiny on 6 images" in hint  # 2 of 8 validate
    assert "detects circle, square, triangle" in hint
    offered = page.eval_on_selector_all("#class-names option", "os => os.map(o => o.value)")
    assert offered == list(CLASSES)
    page.locator("#threshold").fill("0.01")
    page.locator("#file-input").set_input_files(str(train.parent / "000.png"))
    card = page.locator(".job").first
    wait_done(page, card)
    labels = card.locator("tbody tr td:nth-child(2)").all_inner_texts()
    assert labels and set(labels) <= set(CLASSES)


def test_hovering_a_row_highlights_its_box(page, live_server, tmp_path):
    server = live_server()
    open_page(page, server)
    page.locator("#threshold").fill("0.98")
    page.locator("#file-input").set_input_files(str(write_image(tmp_path, size=(600, 400))))
    card = page.locator(".job").first
    wait_done(page, card)
    first_row = card.locator("tbody tr").first
    first_row.hover()
    highlight = card.locator(".highlight")
    assert highlight.is_visible()
    box = [float(v) for v in first_row.locator("td").nth(3).inner_text().split(", ")]
    shown = card.locator("img.result").bounding_box()
    scale = shown["width"] / 600
    drawn = highlight.bounding_box()
    assert abs(drawn["x"] - shown["x"] - box[0] * scale) < 3
    assert abs(drawn["width"] - (box[2] - box[0]) * scale) < 4


def test_a_text_file_shows_the_servers_reason(page, live_server, tmp_path):
    server = live_server()
    open_page(page, server)
    notes = tmp_path / "notes.jpg"
    notes.write_text("definitely not a photo\n" * 20)
    page.locator("#file-input").set_input_files(str(notes))
    card = page.locator(".job").first
    card.locator(".state.failed").wait_for(timeout=20_000)
    assert "not an image" in card.locator(".message").inner_text()


def test_reload_resumes_jobs_and_clear_forgets_them(page, live_server, tmp_path):
    server = live_server()
    open_page(page, server)
    page.locator("#file-input").set_input_files([
        str(write_image(tmp_path, "one.png")), str(write_image(tmp_path, "two.png", size=(300, 200)))])
    page.wait_for_function("JSON.parse(localStorage.getItem('detection.jobs') || '[]').length == 2")
    page.reload()
    cards = page.locator(".job")
    assert sorted(cards.locator(".job-name").all_inner_texts()) == ["one.png", "two.png"]
    for i in range(2):
        wait_done(page, cards.nth(i))
    page.locator("#clear-jobs").click()
    assert cards.count() == 0 and page.evaluate("localStorage.getItem('detection.jobs')") is None


def test_queue_position_and_busy_server_are_explained(page, live_server, tmp_path):
    server = live_server(spawn_worker="false", max_queue=1)  # no worker: jobs wait
    open_page(page, server)
    page.locator("#file-input").set_input_files(str(write_image(tmp_path, "first.png")))
    first = page.locator(".job").first
    first.locator(".state.queued").wait_for()
    first.locator(".message", has_text="position 1").wait_for()
    page.locator("#file-input").set_input_files(str(write_image(tmp_path, "second.png")))
    second = page.locator(".job").first
    second.locator(".message", has_text="retrying in").wait_for(timeout=10_000)
    assert "busy" in second.locator(".state").inner_text().lower()


def test_a_job_at_the_head_of_the_queue_is_long_polled_not_polled_every_second(
        page, live_server, tmp_path):
    server = live_server(spawn_worker="false")  # no worker: the job stays first in the queue
    polls = []
    page.on("request", lambda request: polls.append(request.url) if "/status/" in request.url
            else None)
    open_page(page, server)
    page.locator("#file-input").set_input_files(str(write_image(tmp_path)))
    page.locator(".job .message", has_text="position 1").wait_for()
    page.wait_for_timeout(4000)
    assert len(polls) == 2 and "?wait=" not in polls[0] and polls[1].endswith("?wait=10"), polls


def test_phone_width_has_no_sideways_scrolling_and_works_by_keyboard(browser, live_server):
    server = live_server()
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    open_page(page, server)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "drop-zone"
    page.evaluate("""document.querySelector('#file-input').addEventListener(
        'click', (e) => { e.preventDefault(); window.pickerOpened = true; })""")
    page.keyboard.press("Enter")
    assert page.evaluate("window.pickerOpened") is True
    assert page.locator("#file-input").get_attribute("multiple") is not None
    for control in ("threshold", "model"):
        assert page.locator(f"label[for={control}]").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "phone.png", full_page=True)
    context.close()


def test_a_server_with_api_keys_asks_for_one_and_shows_the_result(page, live_server, tmp_path):
    server = live_server(api_keys="sesame")
    page.on("dialog", lambda dialog: dialog.accept("sesame"))
    open_page(page, server)  # /models answered 401: the page asked, then retried with the key
    assert page.evaluate("localStorage.getItem('detection.apiKey')") == "sesame"
    page.locator("#threshold").fill("0.99")
    page.locator("#file-input").set_input_files(str(write_image(tmp_path)))
    wait_done(page, page.locator(".job").first)
    assert page.locator("img.result").get_attribute("src").startswith("blob:")


def test_a_model_not_installed_is_downloaded_from_the_page_with_a_progress_bar(
        page, live_server, tmp_path, rtmdet_checkpoint):
    """The second kind of job on the page: its progress bar moves, then the model is offered."""
    import hashlib

    from tests.support import FileServer
    served = tmp_path / "served"
    served.mkdir()
    digest = hashlib.sha256(rtmdet_checkpoint.read_bytes()).hexdigest()
    name = f"rtmdet_tiny_fetched_20260101-{digest[:8]}.pth"
    shutil.copy(rtmdet_checkpoint, served / name)
    files = FileServer(served, pause=0.08)  # 20 MB in about 6 s
    try:
        server = live_server(extra_models=(
            f'[rtmdet_fetched]\nconfig = "rtmdet/rtmdet_tiny_8xb32-300e_coco.py"\n'
            f'weights_url = "{files.url}/{name}"\n'
            f'checkpoint = "{tmp_path / "fetched" / "fetched.pth"}"\n'))
        open_page(page, server)
        assert page.locator("#model option[value=rtmdet_fetched]").is_disabled()
        page.locator("#download-model").select_option("rtmdet_fetched")
        page.locator("#download-button").click()
        card = page.locator(".job").first
        card.locator(".state.running").wait_for(timeout=60_000)
        page.wait_for_function("bar => bar.value > 0 && bar.value < 1 && !bar.hidden",
                               arg=card.locator("progress").element_handle(), timeout=60_000)
        assert "Downloading" in card.locator(".message").inner_text()
        card.locator(".state.done").wait_for(timeout=90_000)
    finally:
        files.stop()
    assert "installed" in card.locator(".message").inner_text()
    page.wait_for_function("() => !document.querySelector('#model option[value=rtmdet_fetched]')"
                           ".disabled", timeout=10_000)
    page.locator("#model").select_option("rtmdet_fetched")
    page.locator("#file-input").set_input_files(str(write_image(tmp_path, size=(320, 240))))
    wait_done(page, page.locator(".job").first)
