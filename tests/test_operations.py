"""Operating the service: Prometheus metrics from web and worker, liveness and readiness."""
import pytest
import requests
import webtest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import app_for, png_bytes

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
    after = scrape(server.url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)
    model = {"model": "rtmdet_tiny"}
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
