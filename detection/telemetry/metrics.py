"""The service's Prometheus metrics, counted by whichever process does the work (import after
``telemetry.count_into``). Gauges (queue depth, storage, workers up) are read when scraped:
``detection.web.exposition``."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

# Stages are the benchmark's breakdown: web's decode, encode, store, queue (the upload); the
# worker's queue_wait (enqueued to claimed), read, inference, draw, encode, write.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

JOBS = Counter("detection_jobs", "Jobs by model and what became of them: accepted (queued by "
               "web), done, failed", ["model", "state"])
JOB_SECONDS = Histogram("detection_job_seconds", "Seconds a job spent in each stage",
                        ["model", "stage"], buckets=STAGE_BUCKETS)
MODEL_LOAD_SECONDS = Histogram("detection_model_load_seconds", "Seconds to load a model into a "
                               "worker", ["model"], buckets=(0.5, 1, 2, 5, 10, 20, 60, 120, 300))
REJECTED_UPLOADS = Counter("detection_rejected_uploads", "Uploads refused, by HTTP status "
                           "(413 too large, 422 not an image, 503 busy...)", ["status"])
HTTP_REQUESTS = Counter("http_requests", "HTTP requests by route and status",
                        ["route", "status"])
HTTP_SECONDS = Histogram("http_request_seconds", "Seconds to answer an HTTP request", ["route"],
                         buckets=STAGE_BUCKETS)
CALLBACKS = Counter("detection_callbacks", "Callback attempts by what came of them: delivered, "
                    "retried (it failed; another comes), failed (the last)", ["result"])
CALLBACK_DELAY_SECONDS = Histogram("detection_callback_delay_seconds", "Seconds from a job's "
                                   "end to its callback delivered",
                                   buckets=(*STAGE_BUCKETS, 300, 900, 3600))


def observe_stages(model: str, timings: dict[str, float]) -> None:
    """Each ``<stage>_ms`` (or ``<stage>``, in ms) of ``timings`` into ``detection_job_seconds``."""
    for name, ms in timings.items():
        JOB_SECONDS.labels(model, name.removesuffix("_ms")).observe(ms / 1000)
