"""Video uploads as the web takes them (WebTest, no worker: jobs stay queued): sniffed from their
bytes, probed before they are accepted; what cannot be a video job is refused with the reason,
and nothing of it is kept."""
import pytest

from tests.clips import audio_only, encode, grey, panned_photo
from tests.support import app_for


@pytest.fixture
def testapp(make_config, fake_checkpoint):
    import webtest
    ini = make_config({"rtmdet_tiny": fake_checkpoint}, spawn_worker="false",
                      max_video_seconds=60, max_video_frames=100)
    return webtest.TestApp(app_for(ini))


def upload(testapp, data, status, name="clip.bin", route="/upload", **fields):
    return testapp.post(route, params=fields, upload_files=[("image", name, data)],
                        status=status)


def kept(testapp) -> list[str]:
    uploads = testapp.app.registry.service.settings.uploads_dir
    return sorted(p.name for p in uploads.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("container, codec", [("mp4", "libx264"), ("webm", "libvpx-vp9")])
def test_a_video_is_a_job_of_its_own_kind_whatever_its_name(testapp, container, codec):
    data = panned_photo(seconds=1, fps=10, container=container, codec=codec)
    body = upload(testapp, data, 202, name="photo.jpg", fps="2", track="false").json
    assert body["result_url"].endswith(".out.mp4") and body["frames_url"].endswith(".jsonl")
    status = testapp.get(body["status_url"]).json
    assert (status["kind"], status["state"], status["fps"], status["track"]) == (
        "video", "queued", 2.0, False)
    assert kept(testapp) == [f"{body['sid']}.video"]


@pytest.mark.parametrize("make, code, reason", [
    (lambda: audio_only(), 422, "no video track"),
    (lambda: panned_photo(seconds=1)[:3000], 422, "FFmpeg"),  # truncated: its index is at the end
    (lambda: b"\x00\x00\x00\x18ftypmp42" + bytes(5000), 422, "FFmpeg"),  # a header, then nothing
    (lambda: encode([(0, grey(64, 48)), (3 * 3600, grey(64, 48))]), 413, "lasts 10800 s"),
    (lambda: encode([(0, grey(4096, 2304))]), 413, "pixels a frame"),
    (lambda: panned_photo(seconds=5, fps=10), 413, "ask for a lower fps"),  # 5 s x 30 > 100
    (lambda: encode([(0, grey(64, 48)), (0.1, grey(64, 48))], "mov", "png", pix_fmt="rgb24"),
     422, "this service reads"),  # a still-image codec in a MOV
    # WebM's first bytes, then an RTP session description: read as Matroska, never as SDP
    (lambda: b"\x1aE\xdf\xa3\x01v=0\nc=IN IP4 127.0.0.1\nm=video 45004 RTP/AVP 96\n", 422,
     "FFmpeg"),
])
def test_what_cannot_be_a_video_job_is_refused_before_it_is_decoded(testapp, make, code, reason):
    error = upload(testapp, make(), code, fps="30").json["error"]
    assert reason in error, error
    assert kept(testapp) == []


def test_a_heif_or_avif_still_image_is_not_taken_for_a_video(testapp):
    avif = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(64)
    assert "video" not in upload(testapp, avif, 422).json["error"]  # refused as an image is
    assert kept(testapp) == []


def test_options_that_do_not_fit_a_video_are_refused(testapp):
    data = panned_photo(seconds=1)
    assert "tiles are for images" in upload(testapp, data, 400, tiles="2").json["error"]
    assert "fps must be" in upload(testapp, data, 400, fps="0").json["error"]
    assert "track must be" in upload(testapp, data, 400, track="maybe").json["error"]
    assert kept(testapp) == []


@pytest.mark.parametrize("route", ["/v1/vision/detection", "/v1/vision/custom/rtmdet_tiny"])
def test_the_deepstack_routes_refuse_a_video_with_415(testapp, route):
    body = upload(testapp, panned_photo(seconds=1), 415, route=route).json
    assert body["success"] is False and "POST /upload" in body["error"]
