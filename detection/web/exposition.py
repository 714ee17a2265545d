"""``GET /metrics``: the Prometheus exposition of every process's counts (prometheus-client's
``MultiProcessCollector`` over ``uploads/.metrics``), plus what is read when scraped: queue depth,
workers up, storage. And the tween that counts and times each HTTP request."""
from __future__ import annotations

import logging
import re
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from pyramid.response import Response
from pyramid.tweens import EXCVIEW

from ..jobs.errors import QueueUnavailable
from ..jobs.layout import SID_PATTERN
from ..telemetry.metrics import HTTP_REQUESTS, HTTP_SECONDS, REJECTED_UPLOADS
from .health import worker_status
from .security import API_PERMISSION

UPLOAD_ROUTES = ("/upload", "/v1/vision/")  # paths: a body refused before routing counts too
SID_IN_PATH = re.compile(SID_PATTERN.pattern)
access = logging.getLogger("detection.web.access")


class ServiceCollector:
    """The gauges, read from the service at each scrape."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        service = self.service
        depth = GaugeMetricFamily("detection_queue_depth", "Jobs waiting or running")
        up = GaugeMetricFamily("detection_worker_up", "Detection workers alive (the daemon's, "
                               "or RQ's on any host)")
        try:
            depth.add_metric([], service.queue.depth())
            worker = worker_status(service)
            up.add_metric([], len(worker.get("workers") or []) if worker["alive"] else 0)
        except QueueUnavailable:  # Redis away: say nothing rather than something wrong
            pass
        yield depth
        yield up
        storage = GaugeMetricFamily("detection_storage_bytes", "Bytes in uploads/ (the storage "
                                    "budget's running estimate)")
        storage.add_metric([], service.storage.estimated_bytes)
        yield storage
        if service.settings.max_storage_bytes:
            budget = GaugeMetricFamily("detection_storage_max_bytes", "The storage budget")
            budget.add_metric([], service.settings.max_storage_bytes)
            yield budget


def metrics(request) -> Response:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(request.service.settings.metrics_dir))
    registry.register(ServiceCollector(request.service))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST, charset=None)


def http_metrics_tween_factory(handler, registry):
    """Counts, times and logs (a line each) every request."""
    def count(request):
        started = time.perf_counter()
        status = 500
        try:
            response = handler(request)
            status = response.status_int
            return response
        finally:
            seconds = time.perf_counter() - started
            route = request.matched_route.name if request.matched_route else "none"
            HTTP_REQUESTS.labels(route, str(status)).inc()
            HTTP_SECONDS.labels(route).observe(seconds)
            if (request.method == "POST" and request.path.startswith(UPLOAD_ROUTES)
                    and 400 <= status != 500):
                REJECTED_UPLOADS.labels(str(status)).inc()
            fields = {"event": "request", "method": request.method, "path": request.path,
                      "route": route, "status": status, "ms": round(seconds * 1000, 1)}
            if match := SID_IN_PATH.search(request.path):  # about a job: /status, /uploads
                fields["sid"] = match[0]
            access.info("%s %s %d %.1f ms", request.method, request.path, status,
                        seconds * 1000, extra=fields)
    return count


def includeme(config) -> None:
    public = config.registry.detection_settings.metrics_public
    config.add_view(metrics, route_name="metrics", request_method="GET",
                    permission=None if public else API_PERMISSION)
    config.add_tween("detection.web.exposition.http_metrics_tween_factory", over=EXCVIEW)
