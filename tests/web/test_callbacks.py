"""Callback URLs as the web takes them (WebTest, no worker: jobs stay queued): refused with the
reason unless the host is allowed and its addresses are too; an accepted one is recorded before
the job is queued, shown in /status, and never posted while the job runs."""
import time

import pytest

from detection.settings import SettingsError
from tests.support import app_for, png_bytes

SECRET = "a-test-secret-of-32-characters!!"


@pytest.fixture
def service_with(make_config, fake_checkpoint):
    import webtest

    def make(**overrides):
        settings = {"spawn_worker": "false", "callback_secret": SECRET, **overrides}
        return webtest.TestApp(app_for(make_config({"rtmdet_tiny": fake_checkpoint}, **settings)))
    return make


def upload(testapp, callback_url, status=202):
    return testapp.post("/upload", params={"callback_url": callback_url},
                        upload_files=[("image", "a.png", png_bytes())], status=status)


def stored(testapp) -> list[str]:
    uploads = testapp.app.registry.service.settings.uploads_dir
    return sorted(path.name for path in uploads.iterdir() if not path.name.startswith("."))


def test_without_allowed_hosts_no_callback_is_taken(service_with):
    testapp = service_with()
    error = upload(testapp, "http://example.com/hook", status=400).json["error"]
    assert "sends no callbacks" in error and "callback_hosts" in error
    assert stored(testapp) == []


@pytest.mark.parametrize("url, reason", [
    ("http://other.example/hook", "not one this server calls"),
    ("http://example.com:8080/hook", "not one this server calls"),  # a bare host: port 80 only
    ("http://127.0.0.1:9/hook", "private, loopback or reserved"),  # allowed host, private address
    ("http://localhost:8080/hook", "private, loopback or reserved"),  # a name for one
    ("http://169.254.169.254/latest/meta-data", "private, loopback or reserved"),  # cloud metadata
    ("http://[::ffff:127.0.0.1]/hook", "private, loopback or reserved"),  # IPv4 in IPv6
    ("http://0.0.0.0/hook", "not a host's"),
    ("http://2130706433/hook", "not one this server calls"),  # 127.0.0.1 as a number
    ("ftp://127.0.0.1/hook", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("http://user:pw@127.0.0.1/hook", "no user or password"),
    ("http://127.0.0.1/hook#part", "no #fragment"),
    ("http://127.0.0.1:99999/hook", "not a URL"),
    ("http://127.0.0.1/a b", "control characters"),
    ("http://127.0.0.1/" + "a" * 3000, "at most 2048"),
    ("http://127.0.0.1/caf\u00e9", "ASCII"),
    ("http://b\u00fccher.example/", "ASCII"),  # a name sent raw, never in its xn-- form
    ("http://127.0.0.1/a\u2028b", "ASCII"),
    ("http://does-not-resolve.invalid/hook", "does not resolve"),
])
def test_a_callback_is_refused_unless_its_host_and_addresses_are_allowed(service_with, url,
                                                                          reason):
    testapp = service_with(callback_hosts="127.0.0.1:* localhost:* 169.254.169.254 example.com "
                                          "::ffff:127.0.0.1 0.0.0.0 does-not-resolve.invalid")
    error = upload(testapp, url, status=400).json["error"]
    assert reason in error, error
    assert stored(testapp) == []  # nothing kept of a refused upload


def test_an_allowed_callback_is_recorded_and_shown_and_waits_for_the_job(service_with):
    testapp = service_with(callback_hosts="127.0.0.1:8099", callback_private="true")
    upload(testapp, "http://127.0.0.1:8080/hook", status=400)  # another port: not allowed
    sid = upload(testapp, "http://127.0.0.1:8099/hook?job=1").json["sid"]
    assert f"{sid}.callback.json" in stored(testapp)
    time.sleep(0.5)  # the deliverer looks; the job is queued, not ended: nothing is sent
    status = testapp.get(f"/status/{sid}").json
    assert status["state"] == "queued"
    assert status["callback"]["url"] == "http://127.0.0.1:8099/hook?job=1"
    assert (status["callback"]["state"], status["callback"]["attempts"]) == ("waiting", 0)
    assert testapp.get(f"/uploads/{sid}.callback.json").json["state"] == "waiting"


def test_a_training_takes_a_callback_and_refuses_a_bad_one(service_with):
    testapp = service_with(callback_hosts="127.0.0.1:*", callback_private="true")
    testapp.post_json("/datasets", {"name": "pets", "classes": ["cat"]}, status=201)
    for _ in range(5):
        sid = upload(testapp, "").json["sid"]
        testapp.post_json("/datasets/pets/images", {"sid": sid, "annotations": [
            {"label": "cat", "box": [10, 20, 110, 120]}]}, status=201)
    body = {"dataset": "pets", "base": "rtmdet_tiny", "name": "pets_model"}
    error = testapp.post_json("/training", {**body, "callback_url": "http://10.0.0.1/"},
                              status=400).json["error"]
    assert "not one this server calls" in error
    testapp.post_json("/training", {**body, "callback_url": 5}, status=400)
    sid = testapp.post_json("/training", {**body, "callback_url": "http://127.0.0.1:1/t"},
                            status=202).json["sid"]
    assert testapp.get(f"/status/{sid}").json["callback"]["state"] == "waiting"


def test_allowed_hosts_need_a_secret_long_enough_to_sign_with(make_config, fake_checkpoint):
    for secret in ("", "short"):
        ini = make_config({"rtmdet_tiny": fake_checkpoint}, callback_hosts="example.com",
                          callback_secret=secret)
        with pytest.raises(SettingsError, match="callback_secret"):
            app_for(ini)
    for host in ("https://example.com", "example.com/hooks", "example.com:port"):
        ini = make_config({"rtmdet_tiny": fake_checkpoint}, callback_hosts=host,
                          callback_secret=SECRET)
        with pytest.raises(SettingsError, match="no scheme, no path"):
            app_for(ini)


def test_a_callbacks_record_is_never_cached(service_with):
    testapp = service_with(callback_hosts="127.0.0.1:8099", callback_private="true")
    sid = upload(testapp, "http://127.0.0.1:8099/hook").json["sid"]
    answer = testapp.get(f"/uploads/{sid}.callback.json")
    assert answer.cache_control.max_age == 0
