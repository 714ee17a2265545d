"""Operating the service: Prometheus metrics from web and worker, liveness and readiness, JSON
logs that follow a job by its sid."""
import json

import pytest
import requests
import webtest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import app_for, png_bytes, wait_until

Samples = dict[tuple[str, frozenset], float]


def scrape(url: str, **headers: str) -> Samples:
    response = requests.get(url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith(
        "text/plain; version=")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.slow
def test_a_scrape_counts_jobs_stages_requests_and_refusals_of_web_and_worker(live_server):
    server = live_server()
    before = scrape(server.url)
    sids = [server.upload(png_bytes(), threshold="0.5").json()["sid"] for _ in range(3)]
    assert all(server.wait_until_finished(sid)["state"] == "done" for sid in sids)
    assert server.upload(b"text, not an image " * 10).status_code == 422
    assert server.upload(png_bytes(), classes="unicorn").status_code == 400
    model = {"model": "rtmdet_tiny"}
    done = ("detection_jobs_total", frozenset({**model, "state": "done"}.items()))
    # The worker counts a job once its result is safe on disk, just after the client hears.
    after = wait_until(lambda: (samples := scrape(server.url)).get(done, 0)
                       - before.get(done, 0) >= 3 and samples, timeout=10)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)
    assert moved("detection_jobs_total", **model, state="accepted") == 3
    assert moved("detection_jobs_total", **model, state="done") == 3  # counted by the worker
    assert moved("detection_jobs_total", **model, state="failed") == 0
    assert moved("detection_rejected_uploads_total", status="422") == 1
    assert moved("detection_rejected_uploads_total", status="400") == 1
    assert moved("http_requests_total", route="upload", status="202") == 3
    assert moved("http_request_seconds_count", route="upload") == 5
    for stage in ("decode", "encode_input", "store_input", "enqueue",  # web
                  "queue_wait", "read", "inference", "draw", "encode", "write"):  # worker
        assert moved("detection_job_seconds_count", **model, stage=stage) == 3, stage
    assert moved("detection_job_seconds_sum", **model, stage="inference") > 0
    assert value(after, "detection_model_load_seconds_count", **model) == 1
    assert value(after, "detection_queue_depth") == 0
    assert value(after, "detection_worker_up") == 1
    assert value(after, "detection_storage_bytes") > 0


def test_metrics_need_the_api_key_unless_opened_for_a_scraper(make_config, fake_checkpoint):
    keyed = webtest.TestApp(app_for(make_config({"rtmdet_tiny": fake_checkpoint},
                                                spawn_worker="false", api_keys="secret")))
    keyed.get("/metrics", status=401)
    assert b"detection_queue_depth" in keyed.get(
        "/metrics", headers={"X-API-Key": "secret"}).body
    public = webtest.TestApp(app_for(make_config({"rtmdet_tiny": fake_checkpoint},
                                                 spawn_worker="false", api_keys="secret",
                                                 metrics_public="true")))
    assert b"detection_queue_depth 0.0" in public.get("/metrics").body


@pytest.mark.slow
def test_json_logs_tell_a_jobs_story_across_web_and_worker_by_its_sid(live_server):
    server = live_server(log_format="json")
    sid = server.upload(png_bytes(), threshold="0.5").json()["sid"]
    assert server.wait_until_finished(sid)["state"] == "done"
    assert requests.get(f"{server.url}/uploads/{sid}.out.png", timeout=10).status_code == 200
    web_log = server.ini.parent / f"web-{server.port}.log"

    def read_story() -> list[dict]:  # every line about it is one JSON object
        return [json.loads(line) for path in (web_log, server.uploads / ".daemon.log")
                for line in path.read_text().splitlines() if sid in line]
    # The worker logs "done" once the result is durable: the client may hear of it first.
    story = wait_until(lambda: (lines := read_story()) and any(
        entry.get("event") == "done" for entry in lines) and lines, timeout=30, interval=0.05)
    events = {(entry.get("event"), entry.get("route")): entry for entry in story
              if entry.get("sid") == sid}
    enqueued, claimed = events[("enqueued", None)], events[("claimed", None)]
    done = events[("done", None)]
    assert enqueued["model"] == "rtmdet_tiny" and set(enqueued["timings"]) == {
        "decode", "encode", "store", "queue"}
    assert claimed["attempt"] == 1 and claimed["worker_pid"] != enqueued["pid"]
    assert {"inference_ms", "draw_ms", "write_ms"} <= set(done["timings"])
    fetched = events[("request", "uploaded_file")]
    assert fetched["status"] == 200 and fetched["method"] == "GET"
    assert all(entry["level"] in ("INFO", "WARNING") for entry in story)


def test_a_failed_job_logs_its_reason_with_its_sid(make_config, rtmdet_checkpoint, caplog):
    from pyramid.paster import get_appsettings

    from detection.jobs.job import Job, new_sid
    from detection.settings import parse_settings
    from detection.worker.spool_worker import SpoolWorker
    ini = make_config({"rtmdet_tiny": rtmdet_checkpoint})
    worker = SpoolWorker(parse_settings(get_appsettings(str(ini)), str(ini)))
    job = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
    worker.queue.records.files.input(job.sid).write_bytes(b"not a png")
    worker.queue.enqueue(job)
    worker.run_jobs([worker.queue.claim_next()])
    failed = [r for r in caplog.records if getattr(r, "event", None) == "failed"]
    assert len(failed) == 1 and failed[0].sid == job.sid
    assert failed[0].reason == worker.queue.status(job.sid).error


def test_a_relayed_worker_line_keeps_its_traceback_and_fields(caplog):
    """A worker's JSON line, as the daemon relays it: its traceback (exc_info) and fields named
    as a log record's attributes do not break the relay."""
    import logging

    from detection.logs import relay
    line = json.dumps({"time": "t", "pid": 7, "level": "ERROR", "logger": "__main__",
                       "message": "failed abc", "exc_info": "Traceback ...", "sid": "abc",
                       "args": "theirs"})
    with caplog.at_level(logging.INFO):
        relay(logging.getLogger("detection.worker.supervisor"), line, worker_pid=7)
    [record] = caplog.records
    assert record.levelname == "ERROR" and record.getMessage() == "failed abc"
    assert record.sid == "abc" and record.from_exc_info == "Traceback ..."
    assert record.from_args == "theirs" and record.worker_pid == 7


def test_counts_of_processes_that_are_gone_are_added_up_not_lost(tmp_path):
    """Web and the daemon fold the files of exited processes into one per kind: the totals a
    scrape sees do not move, and the directory does not grow with every worker ever run."""
    import subprocess
    import sys

    from detection.telemetry import fold_gone_processes
    count = (f"import os\nos.environ['PROMETHEUS_MULTIPROC_DIR'] = {str(tmp_path)!r}\n"
             "from prometheus_client import Counter, Histogram\n"
             "Counter('jobs', 'jobs', ['state']).labels('done').inc(3)\n"
             "Histogram('seconds', 'seconds', buckets=(1, 2)).observe(1.5)\n")

    def totals() -> dict:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(tmp_path))
        return {(s.name, frozenset(s.labels.items())): s.value for family in
                text_string_to_metric_families(generate_latest(registry).decode())
                for s in family.samples}
    for _ in range(3):
        subprocess.run([sys.executable, "-c", count], check=True)
    before = totals()
    assert before[("jobs_total", frozenset({("state", "done")}))] == 9
    fold_gone_processes(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_gone.db",
                                                             "histogram_gone.db"]
    assert totals() == before
    subprocess.run([sys.executable, "-c", count], check=True)
    fold_gone_processes(tmp_path)
    assert totals()[("jobs_total", frozenset({("state", "done")}))] == 12
    assert totals()[("seconds_count", frozenset())] == 4
