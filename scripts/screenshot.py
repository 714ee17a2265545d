"""Regenerate the README's pictures: the page with a real result (YOLOX-Nano on dog.jpg), or
with ``labelling``, that result being corrected (its boxes editable, one relabelled).

    .venv/bin/python scripts/screenshot.py URL PHOTO OUTPUT [result|labelling]
(the server at URL must offer yolox_nano with real weights).
"""
import sys

from playwright.sync_api import sync_playwright


def main(url: str, photo: str, output: str, view: str = "result") -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1000, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#model option", state="attached")
        page.select_option("#model", "yolox_nano")
        page.locator("#file-input").set_input_files(photo)
        page.locator(".job .state.done").wait_for(timeout=60_000)
        page.wait_for_function("document.querySelector('img.result').naturalWidth > 0")
        if view == "labelling":
            card = page.locator(".job").first
            card.locator(".correct").click()
            card.locator(".edit-box").first.wait_for()
            page.wait_for_function("img => img.complete && !img.src.endsWith('.out.png')",
                                   arg=card.locator("img.result").element_handle())
            card.locator(".box-layer").focus()
            page.keyboard.press("]")  # the first box selected, then relabelled
            card.locator(".label-input").fill("my dog")
            card.locator(".new-dataset").fill("pets")
            card.screenshot(path=output)
        else:
            page.locator("tbody tr").first.hover()
            page.screenshot(path=output, full_page=True)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
