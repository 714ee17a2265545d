"""Batches as the web takes them (WebTest, no worker: jobs stay queued): a zip of images, or
several image parts of ?batch=1, is one job; a hostile zip (slip, bomb, thousands of files, not
images, links) or too many images is refused with the reason, and nothing of it is kept."""
import io
import stat
import zipfile

import pytest

from tests.bombs import bomb_png
from tests.clips import panned_photo
from tests.support import app_for, png_bytes


@pytest.fixture
def testapp(make_config, fake_checkpoint):
    import webtest
    ini = make_config({"rtmdet_tiny": fake_checkpoint}, spawn_worker="false",
                      max_batch_images=5, max_batch_mb=1)
    return webtest.TestApp(app_for(ini))


def zipped(files) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()


def kept(testapp) -> list[str]:
    uploads = testapp.app.registry.service.settings.uploads_dir
    return sorted(p.name for p in uploads.iterdir() if not p.name.startswith("."))


def post(testapp, files, status, query=""):
    return testapp.post(f"/upload{query}", upload_files=files, status=status)


def test_a_zip_or_image_parts_are_one_batch_job(testapp):
    body = post(testapp, [("image", "p.zip", zipped([("a/x.png", png_bytes()),
                                                     ("b/x.png", png_bytes()),
                                                     ("__MACOSX/._x.png", b"junk"),
                                                     (".DS_Store", b"junk")]))], 202).json
    status = testapp.get(body["status_url"]).json
    assert (status["kind"], status["count"]) == ("batch", 2)
    assert body["coco_url"].endswith(".coco.json") and body["csv_url"].endswith(".csv")
    stored = zipfile.ZipFile(io.BytesIO(testapp.get(
        f"/uploads/{body['sid']}.batch.zip").body)).namelist()
    assert stored == ["x.png", "x-2.png"]  # by file name, made unique
    sid = post(testapp, [("image", f"{i}.png", png_bytes()) for i in range(3)], 202,
               "?batch=1").json["sid"]
    assert testapp.get(f"/status/{sid}").json["count"] == 3
    sid = post(testapp, [("image", "a\\..\\..\\evil.png", png_bytes()),
                         ("image", ".profile\x07.png", png_bytes())], 202, "?batch=1").json["sid"]
    stored = zipfile.ZipFile(io.BytesIO(testapp.get(f"/uploads/{sid}.batch.zip").body))
    assert stored.namelist() == ["evil.png", "profile_.png"]  # no folder, dot or control left


def link(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("files, code, reason", [
    ([("../x.png", png_bytes())], 400, "not a plain relative path"),
    ([("/etc/x.png", png_bytes())], 400, "not a plain relative path"),
    ([(link("x.png"), "/etc/passwd")], 400, "symbolic link"),
    ([(f"{i}.png", png_bytes()) for i in range(6)], 413, "at most 5 images"),
    ([(f"{i}.txt", b"") for i in range(5000)], 413, "more files than"),
    ([("bomb.png", bytes(3 << 20))], 413, "inflate to more than"),
    ([("notes.txt", b"hello")], 422, "notes.txt: not an image"),
    ([("clip.mp4", panned_photo(seconds=0.5))], 422, "clip.mp4: not an image"),
    ([(".hidden.png", png_bytes())], 400, "no image"),
    ([("huge.png", bomb_png(5000, 5000))], 413, "huge.png: "),  # over max_pixels, as it says
])
def test_a_hostile_or_oversized_batch_is_refused_and_leaves_nothing(testapp, files, code, reason):
    error = post(testapp, [("image", "b.zip", zipped(files))], code).json["error"]
    assert reason in error, error
    assert kept(testapp) == []


def test_a_broken_zip_and_batch_parts_that_are_not_images_are_refused(testapp):
    assert "not a readable zip" in post(testapp, [("image", "b.zip", b"PK\x03\x04" + bytes(100))],
                                        400).json["error"]
    error = post(testapp, [("image", "a.png", png_bytes()), ("image", "b.txt", b"text")], 422,
                 "?batch=1").json["error"]
    assert "b.txt: not an image" in error
    assert kept(testapp) == []


def test_the_deepstack_routes_refuse_a_zip_with_415(testapp):
    answer = testapp.post("/v1/vision/detection", upload_files=[
        ("image", "b.zip", zipped([("a.png", png_bytes())]))], status=415).json
    assert answer["success"] is False
