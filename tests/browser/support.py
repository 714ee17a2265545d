"""The browser tests' helpers: Debian's Chromium, where screenshots go, and the page's steps."""
import os
import shutil

import pytest

from tests.support import ROOT, png_bytes

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"

MARKS = [pytest.mark.slow, pytest.mark.browser]
if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    MARKS.append(pytest.mark.skip(reason="Debian's chromium is not installed "
                                         "(scripts/install-browser.sh installs it)"))


def write_image(tmp_path, name="photo.png", **kwargs):
    path = tmp_path / name
    path.write_bytes(png_bytes(**kwargs))
    return path


def open_page(page, server):
    page.goto(server.url + "/")
    page.wait_for_selector("#model option", state="attached")  # /models has answered
    return page


def wait_done(page, card, timeout=90_000):
    card.locator(".state.done").wait_for(timeout=timeout)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=card.locator("img.result").element_handle(), timeout=timeout)
