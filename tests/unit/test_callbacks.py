"""Callbacks' parts alone: the README's verifier checks what the service signs and refuses
hostile headers; a name that resolved to a public address when the job was accepted and to a
private one at delivery is not called (the attempt fails for good, no request is made); a name
that does not resolve for a while is tried again; a receiver that trickles its answer is cut off
when the attempt's time is up."""
import re
import socket
import threading
import time

from detection.callbacks.deliverer import Deliverer
from detection.callbacks.sender import post
from detection.callbacks.signing import signature, verify
from detection.callbacks.targets import CallbackPolicy, CallbackRefused, parse_target, resolve
from detection.jobs.job import Job, JobState, JobStatus
from detection.jobs.records import JobRecords
from tests.support import ROOT, wait_until

SECRET = "0123456789abcdef0123"
POLICY = CallbackPolicy(("hooks.example",), allow_private=False, secret=SECRET,
                        timeout_seconds=1, retry_seconds=60)


def readme_verifier():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Be told when a job ends"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)[1]
    namespace: dict = {}
    exec(code, namespace)
    return namespace["verify"]


def test_the_readme_verifier_accepts_our_signature_and_nothing_else():
    check = readme_verifier()
    body, now = b'{"sid": "x", "state": "done"}', int(time.time())
    headers = {"X-Detection-Timestamp": str(now),
               "X-Detection-Signature": signature(SECRET, now, body)}
    assert check(SECRET, headers, body) and verify(SECRET, str(now), headers[
        "X-Detection-Signature"], body, time.time())
    assert not check(SECRET, headers, body + b" ")  # the body changed
    assert not check("another-secret-of-20c", headers, body)
    assert not check(SECRET, {**headers, "X-Detection-Timestamp": str(now - 301)}, body)
    assert not check(SECRET, {"X-Detection-Signature": headers["X-Detection-Signature"]}, body)
    for timestamp, signed in (("\u00b2", "x"), ("9" * 5000, "x"), (str(now), "sha256=\u00e9")):
        hostile = {"X-Detection-Timestamp": timestamp, "X-Detection-Signature": signed}
        assert not check(SECRET, hostile, body)  # refused, never an exception
        assert not verify(SECRET, timestamp, signed, body, time.time())
    old = now - 3600  # a signature made an hour ago, replayed
    assert not check(SECRET, {"X-Detection-Timestamp": str(old),
                              "X-Detection-Signature": signature(SECRET, old, body)}, body)


def addresses(*ips):
    return lambda host, port, *args, **kwargs: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips]


def test_every_address_of_a_name_must_be_public(monkeypatch):
    target = parse_target("https://hooks.example/in", POLICY)
    monkeypatch.setattr(socket, "getaddrinfo", addresses("93.184.216.34"))
    assert resolve(target, POLICY) == ["93.184.216.34"]
    for private in ("10.1.2.3", "192.168.0.1", "100.64.0.1", "127.0.0.2", "169.254.169.254",
                    "64:ff9b::a9fe:a9fe", "2002:a00:1::1", "::7f00:1", "fec0::1", "fe80::1",
                    "::ffff:10.0.0.1", "fc00::1", "2001:db8::1"):
        monkeypatch.setattr(socket, "getaddrinfo", addresses("93.184.216.34", private))
        try:
            resolve(target, POLICY)
        except CallbackRefused as refused:
            assert private in str(refused)
        else:
            raise AssertionError(f"{private} was let through")


def test_a_name_that_turns_private_after_acceptance_is_never_called(tmp_path, monkeypatch):
    records = JobRecords(tmp_path)
    job = Job.detect("a" * 32, "rtmdet_tiny", 0.3)
    done = JobStatus(job, JobState.DONE, result={"detections": []})
    deliverer = Deliverer(records, POLICY, lambda sid: done, lambda sid: True)
    monkeypatch.setattr(socket, "getaddrinfo", addresses("93.184.216.34"))
    deliverer.check("https://hooks.example/in")  # accepted: public then
    deliverer.register(job.sid, "https://hooks.example/in")
    connections = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connections.append(a))
    monkeypatch.setattr(socket, "getaddrinfo", addresses("10.0.0.7"))  # rebound
    deliverer.follow(job.sid)
    record = wait_until(lambda: (records.callback(job.sid) or {}).get("state") == "failed"
                        and records.callback(job.sid), timeout=5, interval=0.02)
    assert record["attempts"] == 1 and "10.0.0.7" in record["last_error"]
    assert connections == []


def test_a_name_that_does_not_resolve_for_a_while_is_tried_again(tmp_path, monkeypatch):
    records = JobRecords(tmp_path)
    job = Job.detect("b" * 32, "rtmdet_tiny", 0.3)
    done = JobStatus(job, JobState.DONE, result={"detections": []})
    deliverer = Deliverer(records, POLICY, lambda sid: done, lambda sid: True)
    deliverer.register(job.sid, "https://hooks.example/in")

    def no_answer(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    monkeypatch.setattr(socket, "getaddrinfo", no_answer)
    deliverer.follow(job.sid)
    record = wait_until(lambda: (records.callback(job.sid) or {}).get("state") == "retrying"
                        and records.callback(job.sid), timeout=5, interval=0.02)
    assert record["attempts"] == 1 and "does not resolve" in record["last_error"]


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_time_limit():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def trickle():
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.sendall(b"HTTP/1.0 200 OK\r\n")
        try:
            for _ in range(100):  # a header byte every 0.2 s: 20 s of it
                connection.sendall(b"X")
                time.sleep(0.2)
        except OSError:
            pass
        connection.close()
    threading.Thread(target=trickle, daemon=True).start()
    target = parse_target(f"http://127.0.0.1:{port}/in",
                          CallbackPolicy(("127.0.0.1:*",), True, SECRET, 1, 60))
    started = time.monotonic()
    try:
        post(target, ["127.0.0.1"], b"{}", {}, timeout=1.0)
    except TimeoutError as error:
        assert "no answer within 1 s" in str(error)
    else:
        raise AssertionError("a trickled answer was taken")
    assert time.monotonic() - started < 3
    listener.close()
