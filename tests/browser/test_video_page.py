"""A video from the page, in headless Chromium: a progress bar while it runs, then the drawn
MP4 in a <video> that Chromium decodes and plays, the counts per class, and a timeline of the
tracks whose bars seek the video."""
import pytest

from tests.browser.support import ARTIFACTS, MARKS, open_page
from tests.clips import panned_photo
from tests.support import SHARED_CHECKPOINT

pytestmark = [*MARKS, pytest.mark.skipif(not SHARED_CHECKPOINT.is_file(),
                                         reason="the real YOLOX-Nano checkpoint is not here")]


def test_a_video_plays_on_the_page_with_its_counts_and_tracks(page, live_server, tmp_path):
    server = live_server({"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano",
                         video_fps=10)
    open_page(page, server)
    clip = tmp_path / "dog.mp4"
    clip.write_bytes(panned_photo(seconds=6, fps=10))
    page.locator("#file-input").set_input_files(str(clip))
    card = page.locator(".job").first
    card.locator(".upload-progress:not([hidden])").wait_for(timeout=60_000)  # frames, as they go
    card.locator(".state.done").wait_for(timeout=120_000)
    video = card.locator("video")
    page.wait_for_function("v => v.readyState >= 2 && v.videoWidth === 640 && v.duration > 5",
                           arg=video.element_handle(), timeout=30_000)
    assert "1 × dog" in card.locator(".video-summary").inner_text()
    bars = card.locator(".timeline rect.track")
    assert bars.count() >= 1 and "dog #" in card.locator(".timeline text").first.text_content()
    bars.first.click()  # plays from the track's start
    page.wait_for_function("v => !v.paused && v.currentTime > 0.2", arg=video.element_handle(),
                           timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "video.png"), full_page=True)
