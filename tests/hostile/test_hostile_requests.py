"""Hostile requests under WebTest: bodies built to exhaust the parser, cross-site posts, forged
Host headers, damaged result files, full disks. Each answers a clear 4xx/5xx JSON error."""
import errno
import io
import os
import time

import pytest
import webtest
from PIL import Image

from detection.web.security import key_matches
from tests.attacks import (
    many_parts_body,
    multipart_body,
    nested_multipart_body,
    open_descriptors,
)
from tests.support import AT_ONCE_SECONDS, app_for, png_bytes


@pytest.fixture
def open_app(make_config, fake_checkpoint):
    def build(**overrides):
        settings = {"spawn_worker": "false", "max_queue": 5, **overrides}
        return webtest.TestApp(app_for(make_config({"rtmdet_tiny": fake_checkpoint}, **settings)))
    return build


def post_body(app, body: bytes, content_type: str, path="/upload", status="*", **headers):
    """POST exactly these bytes (``TestApp.post`` would re-frame a multipart body)."""
    return app.request(path, method="POST", body=body, content_type=content_type,
                       status=status, headers=headers)


def test_thousands_of_file_parts_open_no_files_and_answer_413(open_app):
    app = open_app()
    body, content_type = many_parts_body(3000)
    before = open_descriptors(os.getpid())
    started = time.perf_counter()
    response = post_body(app, body, content_type, status=413)
    assert time.perf_counter() - started < AT_ONCE_SECONDS
    assert "parts" in response.json["error"]
    assert open_descriptors(os.getpid()) - before < 5


def test_a_declared_body_over_the_limit_is_refused_before_the_key_check(open_app):
    app = open_app(api_keys="secret")
    body, content_type = multipart_body([("image", "a.png", b"\0" * (3 * 2**20))])
    response = post_body(app, body, content_type, status=413, path="/v1/vision/detection")
    assert response.json["success"] is False and "limit" in response.json["error"]


@pytest.mark.parametrize("parts,status", [
    ([("image", None, os.urandom(10 * 2**20))], 422),  # one big part without a file name
    ([("image", None, b"x")] + [(f"f{i}", None, b"x" * 40) for i in range(120_000)], 413),
])
def test_ten_megabytes_of_parts_without_file_names_answer_at_once(open_app, parts, status):
    app = open_app(max_upload_bytes=16 * 2**20)
    body, content_type = multipart_body(parts)
    started = time.perf_counter()
    response = post_body(app, body, content_type, path="/v1/vision/detection", status=status)
    assert time.perf_counter() - started < AT_ONCE_SECONDS
    assert response.json["success"] is False


def test_deeply_nested_multipart_is_a_clear_error_not_a_crash(open_app):
    body, content_type = nested_multipart_body(depth=5000)
    response = post_body(open_app(), body, content_type, status="4*")
    assert response.status_int in (400, 422) and response.json["error"]


@pytest.mark.parametrize("body,status,words", [
    (b"--b\r\nContent-Disposition: form-data; name=image\r\n\r\nabc", 400, "malformed"),
    (b"--b\r\n" + b"X-Long: " + b"a" * 10_000 + b"\r\n\r\n", 413, "header length"),
    (b"--b\r\n" + b"X: y\r\n" * 100 + b"\r\n", 413, "header count"),
])
def test_broken_or_oversized_multipart_framing_is_a_clear_error(open_app, body, status, words):
    response = post_body(open_app(), body, "multipart/form-data; boundary=b", status=status)
    assert words in response.json["error"]


def test_a_text_field_over_its_size_is_400(open_app):
    body, content_type = multipart_body([("image", "a.png", png_bytes()),
                                         ("threshold", None, b"0" * 5000)])
    assert "threshold" in post_body(open_app(), body, content_type, status=400).json["error"]


def test_a_cross_site_post_is_refused_and_same_origin_or_none_accepted(open_app):
    app = open_app(allowed_origins="https://trusted.example")
    body, content_type = multipart_body([("image", "a.png", png_bytes())])
    refused = post_body(app, body, content_type, status=403, Origin="https://evil.example")
    assert "evil.example" in refused.json["error"]
    post_body(app, body, content_type, status=403, Origin="null")
    post_body(app, body, content_type, status=403, **{"Sec-Fetch-Site": "cross-site"})
    post_body(app, body, content_type, status=202)  # curl: no Origin
    post_body(app, body, content_type, status=202, Origin="http://localhost")  # the page
    post_body(app, body, content_type, status=202, Origin="https://trusted.example")


def test_urls_never_come_from_the_host_header(open_app):
    body, content_type = multipart_body([("image", "a.png", png_bytes())])
    forged = post_body(open_app(), body, content_type, status=202, Host="evil.example")
    assert forged.json["status_url"].startswith("/status/")
    assert "evil" not in forged.headers["Location"] + str(forged.json)
    public = open_app(public_url="https://detect.example.org/")
    answer = post_body(public, body, content_type, status=202, Host="evil.example")
    assert answer.json["result_url"].startswith("https://detect.example.org/uploads/")
    assert answer.headers["Location"] == answer.json["status_url"]


def test_keys_of_any_length_compare_by_digest():
    assert key_matches("secret", ("secret",)) and key_matches("b", ("a", "b"))
    assert not key_matches("secre", ("secret",)) and not key_matches("x" * 10_000, ("secret",))
    assert not key_matches(None, ("secret",))


def test_a_damaged_result_file_reads_as_failed_not_500(open_app):
    app = open_app()
    body, content_type = multipart_body([("image", "a.png", png_bytes())])
    sid = post_body(app, body, content_type, status=202).json["sid"]
    service = app.app.registry.service
    service.queue.records.files.result(sid).write_bytes(b'{"model": "rtm')  # torn by a power cut
    status = app.get(f"/status/{sid}", status=200).json
    assert status["state"] == "failed" and "damaged" in status["error"]


def test_an_upload_on_a_full_disk_is_507_and_stores_nothing(open_app, monkeypatch):
    app = open_app()

    def no_space(path, data):
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("detection.jobs.records.write_atomically", no_space)
    body, content_type = multipart_body([("image", "a.png", png_bytes())])
    response = post_body(app, body, content_type, status=507)
    assert "disk is full" in response.json["error"]
    uploads = app.app.registry.service.settings.uploads_dir
    assert not [p for p in uploads.iterdir() if not p.name.startswith(".")]


def test_an_upload_beyond_the_storage_budget_is_507(open_app):
    app = open_app(max_storage_mb=1, max_queue=50)
    noise = Image.frombytes("RGB", (400, 300), os.urandom(400 * 300 * 3))  # PNG: ~360 KB
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    body, content_type = multipart_body([("image", "a.png", buffer.getvalue())])
    statuses = [post_body(app, body, content_type).status_int for _ in range(8)]
    # Queued jobs are never pruned: once they fill the budget, uploads are refused.
    assert statuses[0] == 202 and statuses[-1] == 507
    response = post_body(app, body, content_type, status=507)
    assert "no room" in response.json["error"]


def test_a_field_in_an_unknown_charset_is_400_even_before_the_key_check(open_app):
    body = (b'--b\r\nContent-Disposition: form-data; name="api_key"\r\n'
            b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nkey\r\n--b--\r\n")
    response = post_body(open_app(api_keys="secret"), body, "multipart/form-data; boundary=b",
                         path="/v1/vision/detection", status=400)
    assert "charset" in response.json["error"] and response.json["success"] is False


@pytest.mark.parametrize("path,method", [("/status/%ff", "GET"), ("/%ff", "GET"),
                                         ("/uploads/%c3%28.json", "GET"),
                                         ("/models/%ff%fe/download", "POST"),
                                         ("/v1/vision/custom/%ff", "POST")])
def test_a_url_that_is_not_utf8_is_a_400_as_json_not_a_crash(open_app, path, method):
    response = open_app().request(path, method=method, status=400)
    assert response.json["error"] == "the URL is not valid UTF-8"
    assert response.json.get("success", False) is False
