"""HTTP only: parse the request, call the service, answer JSON. Errors become JSON in one place."""
from __future__ import annotations

import io
import logging
import re
from email.parser import BytesParser
from email.policy import HTTP

from pyramid.httpexceptions import HTTPException
from pyramid.response import FileResponse
from pyramid.view import forbidden_view_config, notfound_view_config, view_config

from .images import BadImage, ImageTooLarge
from .jobs import JobState, JobStatus, QueueFull
from .models import UnknownModel
from .openapi import openapi_document
from .routes import ROUTES, STATIC_DIR
from .security import API_PERMISSION
from .service import BadParameter, DetectionTimeout, ModelUnavailable

log = logging.getLogger(__name__)

MAX_STATUS_WAIT = 60.0
SINGLE_VALUED_FIELDS = ("image", "threshold", "model", "min_confidence", "api_key")
UPLOADED_FILE = re.compile(r"(?P<sid>[0-9a-f]{32})(?P<kind>\.png|\.out\.png|\.json|\.error\.json)")
CONTENT_TYPES = {".png": "image/png", ".out.png": "image/png",
                 ".json": "application/json", ".error.json": "application/json"}


class BodyTooLarge(ValueError):
    pass


class JobNotFound(LookupError):
    pass


class ModelNotFound(UnknownModel):
    """An unknown model named in the URL (a missing resource, not a bad parameter)."""


class DetectionFailed(RuntimeError):
    """A synchronous request's job failed in the worker; the message is the worker's reason."""


ERROR_STATUS = {BadParameter: 400, UnknownModel: 400, ModelNotFound: 404, BadImage: 422,
                ImageTooLarge: 413, BodyTooLarge: 413, JobNotFound: 404, ModelUnavailable: 400,
                QueueFull: 503, DetectionTimeout: 503, DetectionFailed: 500}


@view_config(route_name="home", request_method="GET")
def home(request):
    return FileResponse(str(STATIC_DIR / "index.html"), request, content_type="text/html")


def read_image_form(request):
    """The multipart form and its ``image`` as a binary stream, or a clear error."""
    limit = request.service.settings.max_upload_bytes
    if request.content_length and request.content_length > limit:
        raise BodyTooLarge(f"the upload is {request.content_length} bytes; the limit is {limit}")
    try:
        form = request.POST
    except ValueError as error:
        raise BadParameter(f"malformed multipart body: {error}") from None
    for name in SINGLE_VALUED_FIELDS:
        if len(form.getall(name)) > 1:
            raise BadParameter(f"send the {name} field once, not {len(form.getall(name))} times")
    field = form.get("image")
    if isinstance(field, str) and request.content_type == "multipart/form-data":
        return form, io.BytesIO(_part_bytes(request, "image"))
    if not hasattr(field, "file"):
        raise BadParameter("send the image as a multipart/form-data file field named 'image'")
    return form, field.file


def _part_bytes(request, name: str) -> bytes:
    """A multipart part sent without a file name (some DeepStack clients do): WebOb decodes it as
    text, losing binary data, so take its bytes from the body with the standard email parser."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == name:
            return part.get_payload(decode=True) or b""
    return b""


@view_config(route_name="upload", request_method="POST", renderer="json",
             permission=API_PERMISSION)
def upload(request):
    service = request.service
    form, image = read_image_form(request)
    model = service.pick_model(form.get("model"))
    threshold = service.parse_threshold(form.get("threshold"))
    sid = service.accept_upload(image, model, threshold)
    request.response.status_int = 202
    request.response.location = request.route_url("status", sid=sid)
    return {"sid": sid, **_urls(request, sid)}


@view_config(route_name="status", request_method="GET", renderer="json", http_cache=0,
             permission=API_PERMISSION)
def status(request):
    """``?wait=S`` (up to 60) answers as soon as the job finishes, or after S seconds."""
    sid = request.matchdict["sid"]
    job_status = request.service.job_status(sid)
    if job_status is None:
        raise JobNotFound(f"no job with id {sid!r}")
    if "wait" in request.GET and job_status.state in (JobState.QUEUED, JobState.RUNNING):
        wait = request.service.parse_seconds(request.GET["wait"], "wait", MAX_STATUS_WAIT)
        job_status = request.service.wait_for(sid, wait)
    return status_body(request, job_status)


@view_config(route_name="uploaded_file", request_method="GET", renderer="json",
             permission=API_PERMISSION)
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


@view_config(route_name="models", request_method="GET", renderer="json",
             permission=API_PERMISSION)
def models(request):
    service = request.service
    return {"default": service.settings.default_model,
            "default_threshold": service.settings.default_threshold,
            "models": [spec.describe() for spec in service.models.values()]}


@view_config(route_name="openapi", request_method="GET", renderer="json")
def openapi(request):
    return openapi_document(request.service)


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


def error_body(request, message: str) -> dict:
    """Our error shape; DeepStack clients also get their ``success: false``."""
    route = request.matched_route
    if route is not None and route.name.startswith("deepstack"):
        return {"success": False, "error": message}
    return {"error": message}


@notfound_view_config(renderer="json")
def not_found(request):
    route = request.matched_route
    if route is not None and route.name in ROUTES:  # the path exists, not for this method
        allowed = ROUTES[route.name][1]
        request.response.status_int = 405
        request.response.headers["Allow"] = allowed
        return error_body(request, f"{request.method} is not allowed here; use {allowed}")
    request.response.status_int = 404
    return error_body(request, f"nothing at {request.path}")


@forbidden_view_config(renderer="json")
def no_api_key(request):
    request.response.status_int = 401
    request.response.headers["WWW-Authenticate"] = 'Bearer realm="detection"'
    return error_body(request, "a valid API key is required (Authorization: Bearer KEY, "
                               "X-API-Key: KEY, or an api_key form field)")


@view_config(context=HTTPException, renderer="json")
def http_error(error, request):
    request.response.status_int = error.status_int
    request.response.headers.update({k: v for k, v in error.headers.items() if k == "Allow"})
    return error_body(request, error.detail or error.title)


@view_config(context=Exception, renderer="json")
def domain_error(error, request):
    status = next((ERROR_STATUS[kind] for kind in type(error).__mro__ if kind in ERROR_STATUS), 500)
    request.response.status_int = status
    if isinstance(error, (QueueFull, DetectionTimeout)):
        request.response.headers["Retry-After"] = str(error.retry_after)
    if status == 500 and not isinstance(error, DetectionFailed):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_body(request, "internal error; the server log has the details")
    return error_body(request, str(error))
