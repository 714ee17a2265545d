"""HTTP only: parse the request, call the service, answer JSON. Errors become JSON in one place."""
from __future__ import annotations

import logging
import re

from pyramid.httpexceptions import HTTPException
from pyramid.response import FileResponse
from pyramid.view import notfound_view_config, view_config

from .images import BadImage, ImageTooLarge
from .jobs import JobState, JobStatus, QueueFull
from .models import UnknownModel
from .routes import STATIC_DIR
from .service import BadParameter, ModelUnavailable

log = logging.getLogger(__name__)

UPLOADED_FILE = re.compile(r"(?P<sid>[0-9a-f]{32})(?P<kind>\.png|\.out\.png|\.json|\.error\.json)")
CONTENT_TYPES = {".png": "image/png", ".out.png": "image/png",
                 ".json": "application/json", ".error.json": "application/json"}


class BodyTooLarge(ValueError):
    pass


class JobNotFound(LookupError):
    pass


ERROR_STATUS = {BadParameter: 400, UnknownModel: 400, BadImage: 422, ImageTooLarge: 413,
                BodyTooLarge: 413, JobNotFound: 404, ModelUnavailable: 503, QueueFull: 503}


@view_config(route_name="home", request_method="GET")
def home(request):
    return FileResponse(str(STATIC_DIR / "index.html"), request, content_type="text/html")


@view_config(route_name="upload", request_method="POST", renderer="json")
def upload(request):
    service = request.service
    limit = service.settings.max_upload_bytes
    if request.content_length and request.content_length > limit:
        raise BodyTooLarge(f"the upload is {request.content_length} bytes; the limit is {limit}")
    try:
        form = request.POST
    except ValueError as error:
        raise BadParameter(f"malformed multipart body: {error}") from None
    field = form.get("image")
    if not hasattr(field, "file"):
        raise BadParameter("send the image as a multipart/form-data file field named 'image'")
    model = service.pick_model(form.get("model"))
    threshold = service.parse_threshold(form.get("threshold"))
    sid = service.accept_upload(field.file, model, threshold)
    request.response.status_int = 202
    request.response.location = request.route_url("status", sid=sid)
    return {"sid": sid, **_urls(request, sid)}


@view_config(route_name="status", request_method="GET", renderer="json", http_cache=0)
def status(request):
    sid = request.matchdict["sid"]
    job_status = request.service.job_status(sid)
    if job_status is None:
        raise JobNotFound(f"no job with id {sid!r}")
    return status_body(request, job_status)


@view_config(route_name="uploaded_file", request_method="GET", renderer="json")
def uploaded_file(request):
    """The original design's poll: 404 until the file exists (410 if the job failed)."""
    name = request.matchdict["name"]
    match = UPLOADED_FILE.fullmatch(name)
    if not match:
        raise JobNotFound(f"no such file: {name!r}")
    path = request.service.settings.uploads_dir / name
    if path.is_file():
        return FileResponse(str(path), request, cache_max_age=3600,
                            content_type=CONTENT_TYPES[match["kind"]])
    job_status = request.service.job_status(match["sid"])
    if job_status is None:
        raise JobNotFound(f"no job with id {match['sid']!r}")
    request.response.cache_expires(0)
    if job_status.state is JobState.FAILED:
        request.response.status_int = 410
        return {"error": f"the job failed: {job_status.error}", "state": "failed"}
    request.response.status_int = 404
    return {"error": f"{name} is not ready yet", "state": job_status.state.value}


@view_config(route_name="health", request_method="GET", renderer="json", http_cache=0)
def health(request):
    return request.service.health()


@view_config(route_name="models", request_method="GET", renderer="json")
def models(request):
    service = request.service
    return {"default": service.settings.default_model,
            "default_threshold": service.settings.default_threshold,
            "models": [spec.describe() for spec in service.models.values()]}


def _urls(request, sid: str) -> dict:
    return {"status_url": request.route_url("status", sid=sid),
            "result_url": request.route_url("uploaded_file", name=f"{sid}.out.png"),
            "json_url": request.route_url("uploaded_file", name=f"{sid}.json")}


def status_body(request, job_status: JobStatus) -> dict:
    job = job_status.job
    body = {"sid": job.sid, "state": job_status.state.value, "model": job.model,
            "threshold": job.threshold, **_urls(request, job.sid)}
    if job_status.state is JobState.QUEUED:
        body["queue_position"] = job_status.queue_position
    elif job_status.state is JobState.DONE:
        for key in ("image", "detections", "timings"):
            body[key] = job_status.result[key]
    elif job_status.state is JobState.FAILED:
        body["error"] = job_status.error
    return body


@notfound_view_config(renderer="json")
def not_found(request):
    request.response.status_int = 404
    return {"error": f"nothing at {request.path}"}


@view_config(context=HTTPException, renderer="json")
def http_error(error, request):
    request.response.status_int = error.status_int
    request.response.headers.update({k: v for k, v in error.headers.items() if k == "Allow"})
    return {"error": error.detail or error.title}


@view_config(context=Exception, renderer="json")
def domain_error(error, request):
    status = next((ERROR_STATUS[kind] for kind in type(error).__mro__ if kind in ERROR_STATUS), 500)
    request.response.status_int = status
    if isinstance(error, QueueFull):
        request.response.headers["Retry-After"] = str(error.retry_after)
    if status == 500:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return {"error": "internal error; the server log has the details"}
    return {"error": str(error)}
