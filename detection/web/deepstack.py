"""The DeepStack / CodeProject.AI detection API, so their clients work unchanged.

Synchronous for the client, but the job goes through the same queue and worker as /upload, and
stays visible under /status/<sid> and /uploads/<sid>.*.
"""
from __future__ import annotations

import email.utils
import socket
import time

from pyramid.view import view_config

from ..jobs.job import JobState
from .errors import DetectionFailed, ModelNotFound
from ..batches import is_zip
from ..videos import is_video
from .forms import UnsupportedMedia, job_request, parse_number, require_image
from .security import API_PERMISSION

DEFAULT_MIN_CONFIDENCE = 0.4
FACES = "faces"  # the model /v1/vision/face uses


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


@view_config(route_name="deepstack_face", request_method="POST", renderer="json",
             permission=API_PERMISSION)
def face(request):
    """DeepStack's face detection: the model named ``faces``; predictions without labels."""
    if FACES not in request.service.models:
        raise ModelNotFound(f"this server has no {FACES!r} model (configs/models.toml)")
    answer = detect(request, model_name=FACES, command="detect-faces")
    for prediction in answer["predictions"]:
        del prediction["label"]
    return answer


def detect(request, model_name: str | None, command: str | None = None) -> dict:
    service = request.service
    started = time.perf_counter()
    form = request.upload_form
    threshold = parse_number(form.fields.get("min_confidence"), "min_confidence", 1.0,
                             DEFAULT_MIN_CONFIDENCE)
    job = job_request(form, service.pick_model(model_name), threshold)
    data = require_image(form)
    if is_video(data) or is_zip(data):
        raise UnsupportedMedia("the DeepStack routes take images; send a video or a zip of "
                               "images to POST /upload (a job with progress: poll its "
                               "status_url)")
    status = service.detect_now(data, job)
    if status.state is JobState.FAILED:
        raise DetectionFailed(status.error)
    predictions = [prediction(d) for d in status.result["detections"]]
    timings = status.result["timings"]
    round_trip = round((time.perf_counter() - started) * 1000)
    device = status.result.get("device", "cpu")
    return {"success": True, "sid": status.job.sid, "predictions": predictions,
            "duration": round_trip,
            # What CodeProject.AI adds, for its clients (Blue Iris, Agent DVR...)
            "code": 200, "count": len(predictions), "message": summary(predictions),
            "command": command or ("detect" if model_name is None else "custom"),
            "moduleId": "mmdetection", "moduleName": f"MMDetection {job.model.name}",
            "executionProvider": "GPU" if device.startswith("cuda") else "CPU",
            "canUseGPU": device.startswith("cuda"),
            "inferenceMs": round(timings.get("inference_ms", 0)),
            "processMs": round(sum(timings.values())), "analysisRoundTripMs": round_trip,
            "processedBy": socket.gethostname(),
            "timestampUTC": email.utils.formatdate(usegmt=True)}


def summary(predictions: list[dict]) -> str:
    """"Found dog, bicycle, car" or "No objects found", as CodeProject.AI words it."""
    labels = list(dict.fromkeys(p["label"] for p in predictions))
    return f"Found {', '.join(labels)}" if labels else "No objects found"


def prediction(detection: dict) -> dict:
    x_min, y_min, x_max, y_max = (round(v) for v in detection["bbox"])
    return {"label": detection["label"], "confidence": detection["score"],
            "x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max}
