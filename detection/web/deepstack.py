"""The DeepStack / CodeProject.AI detection API, so their clients work unchanged.

Synchronous for the client, but the job goes through the same queue and worker as /upload, and
stays visible under /status/<sid> and /uploads/<sid>.*.
"""
from __future__ import annotations

import time

from pyramid.view import view_config

from ..jobs import JobState
from .errors import DetectionFailed, ModelNotFound
from .forms import parse_number, require_image
from .security import API_PERMISSION

DEFAULT_MIN_CONFIDENCE = 0.4


@view_config(route_name="deepstack_detection", request_method="POST", renderer="json",
             permission=API_PERMISSION)
def detection(request):
    return detect(request, model_name=None)


@view_config(route_name="deepstack_custom", request_method="POST", renderer="json",
             permission=API_PERMISSION)
def custom(request):
    name = request.matchdict["model"]
    if name not in request.service.models:
        raise ModelNotFound(f"unknown model {name!r}; choose one of {sorted(request.service.models)}")
    return detect(request, model_name=name)


def detect(request, model_name: str | None) -> dict:
    service = request.service
    started = time.perf_counter()
    form = request.upload_form
    model = service.pick_model(model_name)
    threshold = parse_number(form.fields.get("min_confidence"), "min_confidence", 1.0,
                             DEFAULT_MIN_CONFIDENCE)
    status = service.detect_now(require_image(form), model, threshold)
    if status.state is JobState.FAILED:
        raise DetectionFailed(status.error)
    return {"success": True, "sid": status.job.sid,
            "predictions": [prediction(d) for d in status.result["detections"]],
            "duration": round((time.perf_counter() - started) * 1000)}


def prediction(detection: dict) -> dict:
    x_min, y_min, x_max, y_max = (round(v) for v in detection["bbox"])
    return {"label": detection["label"], "confidence": detection["score"],
            "x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max}
