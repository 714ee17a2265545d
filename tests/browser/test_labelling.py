"""Correcting a result on the page, as a person does it with a mouse: the drawn boxes become
editable, one is dragged and relabelled, the others deleted, a new one drawn; saved to a new
dataset, the dataset's COCO export holds them at the right pixels."""
import requests

from tests.browser.support import MARKS, open_page, wait_done, write_image

pytestmark = MARKS


def drag(page, start, end, steps=8):
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=steps)
    page.mouse.up()


def test_a_box_is_dragged_relabelled_and_saved_to_a_dataset_at_its_pixels(page, live_server,
                                                                          tmp_path):
    server = live_server()
    open_page(page, server)
    page.locator("#threshold").fill("0.97")
    page.locator("#file-input").set_input_files(str(write_image(tmp_path, size=(480, 360))))
    card = page.locator(".job").first
    wait_done(page, card)
    sid = card.locator("img.result").get_attribute("src").rsplit("/", 1)[1].split(".")[0]
    detections = requests.get(f"{server.url}/uploads/{sid}.json", timeout=10).json()["detections"]
    assert detections, "a random model at 0.97 still proposes a box"

    card.locator(".correct").click()
    boxes = card.locator(".edit-box")
    boxes.first.wait_for()
    assert boxes.count() == len(detections)
    page.wait_for_function("img => img.src.endsWith('.png') && !img.src.endsWith('.out.png')"
                           " && img.complete", arg=card.locator("img.result").element_handle())
    # Keep the largest box; select each other one by keyboard (] selects the next) and delete it.
    area = [(d["bbox"][2] - d["bbox"][0]) * (d["bbox"][3] - d["bbox"][1]) for d in detections]
    kept = area.index(max(area))
    card.locator(".box-layer").focus()
    while boxes.count() > 1:
        target = 0 if kept != 0 else 1
        page.keyboard.press("Escape")
        for _ in range(target + 1):
            page.keyboard.press("]")
        page.keyboard.press("Delete")
        kept -= target < kept
    card.locator("img.result").scroll_into_view_if_needed()
    image = card.locator("img.result").bounding_box()
    scale = image["width"] / 480
    x1, y1, x2, y2 = detections[area.index(max(area))]["bbox"]
    assert x2 - x1 > 20 and y2 - y1 > 20, "a box large enough to drag by its middle"
    dx = 30 if (x1 + x2) / 2 < 240 else -30  # towards the middle: never clamped at an edge
    dy = 20 if (y1 + y2) / 2 < 180 else -20
    dx, dy = (max(-x1, min(dx, 480 - x2)), max(-y1, min(dy, 360 - y2)))
    centre = (image["x"] + (x1 + x2) / 2 * scale, image["y"] + (y1 + y2) / 2 * scale)
    drag(page, centre, (centre[0] + dx * scale, centre[1] + dy * scale))
    card.locator(".label-input").fill("widget")
    # a new box, drawn on the image (mouse down on a spot no box covers); filling the label
    # scrolled the page: where the image is now
    card.locator("img.result").scroll_into_view_if_needed()
    image = card.locator("img.result").bounding_box()
    free = (image["x"] + 5 * scale, image["y"] + 5 * scale)
    if card.locator(".edit-box").evaluate_all(
            "(els, [x, y]) => els.some(el => { const r = el.getBoundingClientRect();"
            " return x >= r.left - 10 && x <= r.right + 10"
            " && y >= r.top - 10 && y <= r.bottom + 10; })",
            list(free)):
        free = (image["x"] + 470 * scale, image["y"] + 350 * scale)
        drag(page, free, (free[0] - 60 * scale, free[1] - 40 * scale))
        drawn = [410, 310, 470, 350]
    else:
        drag(page, free, (free[0] + 60 * scale, free[1] + 40 * scale))
        drawn = [5, 5, 65, 45]
    card.locator(".label-input").fill("gadget")
    assert card.locator(".edit-box").count() == 2
    card.locator(".new-dataset").fill("corrected")
    card.locator(".save-box").click()
    card.locator(".editor-message", has_text="Saved to dataset corrected").wait_for()

    coco = requests.get(f"{server.url}/datasets/corrected/coco.json", timeout=10).json()
    names = {c["id"]: c["name"] for c in coco["categories"]}
    saved = {names[a["category_id"]]: a["bbox"] for a in coco["annotations"]}
    assert set(saved) == {"widget", "gadget"}
    moved = [x1 + dx, y1 + dy, x2 - x1, y2 - y1]
    assert all(abs(a - b) <= 1.5 for a, b in zip(saved["widget"], moved)), (saved, moved)
    expected = [drawn[0], drawn[1], drawn[2] - drawn[0], drawn[3] - drawn[1]]
    assert all(abs(a - b) <= 1.5 for a, b in zip(saved["gadget"], expected)), saved
    image_file = coco["images"][0]["file_name"]
    stored = requests.get(f"{server.url}/datasets/corrected/{image_file}", timeout=10)
    assert stored.content == requests.get(f"{server.url}/uploads/{sid}.png", timeout=10).content


def test_an_upload_kept_for_review_is_corrected_from_the_review_list(page, live_server, tmp_path):
    server = live_server()
    server.models_file.write_text(server.models_file.read_text().replace(
        "[rtmdet_tiny]\n", "[rtmdet_tiny]\nreview = { one_in = 1 }\n", 1))  # keeps every upload
    sid = server.upload(write_image(tmp_path, size=(400, 300)).read_bytes(),
                        threshold="0.99").json()["sid"]
    assert server.wait_until_finished(sid)["state"] == "done"
    open_page(page, server)
    page.locator("#review summary").click()
    item = page.locator(f".review-item[data-sid='{sid}']")
    assert "one upload in 1" in item.locator(".review-why").inner_text()
    item.locator(".correct").click()
    layer = item.locator(".box-layer")
    layer.wait_for()
    layer.focus()
    while item.locator(".edit-box").count():  # the model's boxes: none is right
        page.keyboard.press("]")
        page.keyboard.press("Delete")
    item.locator("img.result").scroll_into_view_if_needed()
    image = item.locator("img.result").bounding_box()
    scale = image["width"] / 400
    drag(page, (image["x"] + 50 * scale, image["y"] + 40 * scale),
         (image["x"] + 150 * scale, image["y"] + 240 * scale))
    item.locator(".label-input").fill("block")
    item.locator(".new-dataset").fill("reviewed")
    item.locator(".save-box").click()
    item.wait_for(state="detached")  # saved, then off the list
    coco = requests.get(f"{server.url}/datasets/reviewed/coco.json", timeout=10).json()
    [box] = coco["annotations"]
    assert all(abs(a - b) <= 1.5 for a, b in zip(box["bbox"], [50, 40, 100, 200])), box
    assert requests.get(f"{server.url}/review", timeout=10).json() == {"items": []}
