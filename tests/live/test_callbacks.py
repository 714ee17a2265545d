"""Signed callbacks from a live server (spool; tests/live/test_rq.py has RQ's): a receiver on
127.0.0.1 that checks each signature answers 500 twice, then 200; one that hangs fails its own
delivery only; a delivery left open by a stopped server goes on when it starts again."""
import json
import re
import time

import pytest
import requests

from tests.support import AT_ONCE_SECONDS, CallbackReceiver, png_bytes, wait_until

pytestmark = pytest.mark.slow

SECRET = "a-test-secret-of-32-characters!!"
CALLBACKS = {"callback_hosts": "127.0.0.1:*", "callback_private": "true",
             "callback_secret": SECRET}


@pytest.fixture
def receivers():
    made = []

    def make(**options) -> CallbackReceiver:
        made.append(CallbackReceiver(SECRET, **options))
        return made[-1]
    yield make
    for receiver in made:
        receiver.stop()


def callback_of(server, sid: str) -> dict:
    return requests.get(f"{server.url}/status/{sid}", timeout=10).json()["callback"]


def metric(server, name: str, **labels) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{name}{{{wanted}}} (\S+)$" if labels else rf"^{name} (\S+)$", text,
                      re.MULTILINE)
    return float(match[1]) if match else 0.0


def test_a_callback_is_signed_retried_with_back_off_and_delivered(live_server, receivers):
    receiver = receivers(answers=(500, 500, 200))
    server = live_server(**CALLBACKS)
    sid = server.upload(png_bytes(), callback_url=receiver.url + "/hooks/detection?x=1",
                        threshold="0.0").json()["sid"]
    status = server.wait_until_finished(sid)
    assert status["state"] == "done"
    wait_until(lambda: callback_of(server, sid)["state"] == "delivered", 30, 0.05)
    assert len(receiver.deliveries) == 3
    assert all(d["signed"] for d in receiver.deliveries), "each attempt carries a valid signature"
    assert {d["path"] for d in receiver.deliveries} == {"/hooks/detection?x=1"}
    first, second, third = (d["at"] for d in receiver.deliveries)
    assert second - first >= 0.9 and third - second >= 1.9  # back-off: 1 s, then 2 s
    body = json.loads(receiver.deliveries[-1]["body"])
    final = requests.get(f"{server.url}/status/{sid}", timeout=10).json()
    assert body == {key: value for key, value in final.items() if key != "callback"}
    headers = receiver.deliveries[-1]["headers"]
    assert (headers["X-Detection-Job"], headers["X-Detection-Event"]) == (sid, "job.done")
    callback = final["callback"]
    assert (callback["attempts"], callback["last_error"]) == (3, None)
    assert callback["delivered_at"] >= callback["first_attempt_at"]
    assert metric(server, "detection_callbacks_total", result="delivered") == 1
    assert metric(server, "detection_callbacks_total", result="retried") == 2
    assert metric(server, "detection_callback_delay_seconds_count") == 1


def test_a_receiver_that_hangs_fails_its_delivery_in_bounded_time_and_delays_no_other(
        live_server, receivers):
    hanging, answering = receivers(hang=30), receivers()
    server = live_server(**CALLBACKS, callback_timeout_seconds=1, callback_retry_seconds=2)
    stuck = server.upload(png_bytes(), callback_url=hanging.url).json()["sid"]
    server.wait_until_finished(stuck)
    started = time.monotonic()
    fine = server.upload(png_bytes(size=(200, 100)), callback_url=answering.url).json()["sid"]
    server.wait_until_finished(fine)
    wait_until(lambda: callback_of(server, fine)["state"] == "delivered", AT_ONCE_SECONDS, 0.05)
    assert time.monotonic() - started < AT_ONCE_SECONDS
    wait_until(lambda: callback_of(server, stuck)["state"] == "failed", 15, 0.05)
    callback = callback_of(server, stuck)
    assert callback["attempts"] == 2 and callback["last_error"] == "no answer within 1 s"
    assert len(hanging.deliveries) == 2 and all(d["signed"] for d in hanging.deliveries)
    assert metric(server, "detection_callbacks_total", result="failed") == 1


def test_a_delivery_left_open_by_a_stopped_server_goes_on_when_it_starts_again(
        live_server, receivers):
    receiver = receivers(answers=(503, 503, 503, 200))
    server = live_server(**CALLBACKS)
    sid = server.upload(png_bytes(), callback_url=receiver.url).json()["sid"]
    server.wait_until_finished(sid)
    wait_until(lambda: callback_of(server, sid)["state"] == "retrying", AT_ONCE_SECONDS, 0.05)
    server.stop()
    assert callback_of_file(server, sid)["attempts"] == 1
    server.start()
    wait_until(lambda: callback_of(server, sid)["state"] == "delivered", 30, 0.05)
    assert len(receiver.deliveries) == 4 and all(d["signed"] for d in receiver.deliveries)


def callback_of_file(server, sid: str) -> dict:
    return json.loads((server.uploads / f"{sid}.callback.json").read_text())
