"""The API's views: HTTP only. Parse the request, call the service, answer JSON."""
from __future__ import annotations

from pyramid.response import FileResponse
from pyramid.view import view_config

from ..jobs.job import JobKind, JobState, JobStatus
from ..jobs.kinds import REPORTS_PROGRESS, STATUS_FIELDS
from ..batches import is_zip
from ..jobs.layout import (
    BATCH_INPUT,
    BATCH_OUTPUT,
    CALLBACK,
    COCO,
    CSV,
    CONTENT_TYPES,
    FILE_NAME,
    FRAMES,
    OUTPUT,
    PROGRESS,
    RESULT,
    VIDEO_INPUT,
    VIDEO_OUTPUT,
)
from ..videos import is_video
from .errors import JobNotFound, ModelNotFound
from .forms import (
    MAX_STATUS_WAIT,
    BadParameter,
    job_request,
    parse_flag,
    parse_fps,
    parse_number,
    require_image,
)
from .health import health as health_of
from .health import readiness as readiness_of
from .openapi import openapi_document
from .routes import STATIC_DIR
from .security import API_PERMISSION


CHANGING = (PROGRESS, CALLBACK)  # a job's files rewritten while it runs: never cached


@view_config(route_name="home", request_method="GET")
def home(request):
    return FileResponse(str(STATIC_DIR / "index.html"), request, content_type="text/html")


@view_config(route_name="upload", request_method="POST", renderer="json",
             permission=API_PERMISSION)
def upload(request):
    service = request.service
    form = request.upload_form
    threshold = parse_number(form.fields.get("threshold"), "threshold", 1.0,
                             service.settings.default_threshold)
    job = job_request(form, service.pick_model(form.fields.get("model")), threshold)
    kind, accepted = _accept(service, form, job, parse_flag(request.GET.get("batch"), "batch"))
    urls = _urls(request, accepted.sid, kind)
    request.response.status_int = 202
    request.response.location = urls["status_url"]
    request.response.cache_control = "no-store"
    request.response.headers["Server-Timing"] = ", ".join(
        f"{step};dur={ms:.1f}" for step, ms in accepted.timings.items())
    return {"sid": accepted.sid, **urls}


def _accept(service, form, job, batch: bool):
    """An upload as its job: a batch (``?batch=1``'s images, or one zip of them), a video, or
    a photo; the job's kind, and what the service answered. A video's options are checked
    whatever is sent."""
    fps = parse_fps(form.fields.get("fps"))
    track = parse_flag(form.fields.get("track"), "track", True)
    zipped = len(form.images) == 1 and is_zip(form.images[0][1])
    if batch or zipped:
        if not form.images:
            require_image(form)
        return JobKind.BATCH, service.accept_batch(form.images[0][1] if zipped else form.images,
                                                   job)
    data = require_image(form)
    if not is_video(data):
        return JobKind.DETECT, service.accept_upload(data, job)
    if job.tiles is not None:
        raise BadParameter("tiles are for images; a video's frames are detected whole")
    return JobKind.VIDEO, service.accept_video(data, job, fps, track)


@view_config(route_name="status", request_method="GET", renderer="json", http_cache=0,
             permission=API_PERMISSION)
def status(request):
    """``?wait=S`` (up to 60) answers as soon as the job finishes, or after S seconds (at once
    when ``max_waiting_requests`` requests wait already)."""
    sid = request.matchdict["sid"]
    unknown = set(request.GET) - {"wait"}
    if unknown:
        raise BadParameter(f"unknown query parameters: {', '.join(sorted(unknown))} (only wait)")
    wait = parse_number(request.GET.get("wait"), "wait", MAX_STATUS_WAIT, 0.0)
    job_status = request.service.job_status(sid)
    if job_status is None:
        raise JobNotFound(f"no job with id {sid!r}")
    if wait and job_status.state in (JobState.QUEUED, JobState.RUNNING):
        job_status = request.service.wait_for(sid, wait)
        if job_status is None:  # pruned while we waited
            raise JobNotFound(f"no job with id {sid!r}")
    body = status_body(request, job_status)
    callback = request.service.callbacks.public(sid)
    if callback is not None:
        body["callback"] = callback
    return body


@view_config(route_name="uploaded_file", request_method="GET", renderer="json",
             permission=API_PERMISSION)
def uploaded_file(request):
    """The original design's poll: 404 until the file exists (410 if the job failed)."""
    name = request.matchdict["name"]
    path = request.service.records.public_file(name)
    if path is None:
        raise JobNotFound(f"no such file: {name!r}")
    match = FILE_NAME.fullmatch(name)
    try:
        return _job_file(request, path, match["kind"])
    except FileNotFoundError:
        pass  # not made yet, or pruned: say which
    job_status = request.service.job_status(match["sid"])  # (RQ: writes a finished job's files)
    if job_status is None:
        raise JobNotFound(f"no job with id {match['sid']!r}")
    if job_status.state is JobState.DONE and path.exists():
        return _job_file(request, path, match["kind"])
    request.response.cache_expires(0)
    if job_status.state is JobState.FAILED:
        request.response.status_int = 410
        return {"error": f"the job failed: {job_status.error}", "state": "failed"}
    request.response.status_int = 404
    return {"error": f"{name} is not ready yet", "state": job_status.state.value}


def _job_file(request, path, kind: str) -> FileResponse:
    """A job's file as its kind is served: never sniffed into another type by a browser; what
    changes never cached; a client's own video or zip a download, never shown in the page."""
    response = FileResponse(str(path), request, cache_max_age=0 if kind in CHANGING else 3600,
                            content_type=CONTENT_TYPES[kind])
    response.headers["X-Content-Type-Options"] = "nosniff"
    if kind in (VIDEO_INPUT, BATCH_INPUT):
        response.content_disposition = "attachment"
    return response


@view_config(route_name="health", request_method="GET", renderer="json", http_cache=0)
def health(request):
    return health_of(request.service)


@view_config(route_name="health_live", request_method="GET", renderer="json", http_cache=0)
def health_live(request):
    """The web process answers (for a liveness probe: restart it when this fails)."""
    return {"status": "alive"}


@view_config(route_name="health_ready", request_method="GET", renderer="json", http_cache=0)
def health_ready(request):
    """The default model can be served now: 200, else 503 with the reasons (for a readiness
    probe: send no traffic meanwhile)."""
    readiness = readiness_of(request.service)
    if not readiness["ready"]:
        request.response.status_int = 503
        readiness["error"] = "; ".join(readiness["reasons"])
    return readiness


@view_config(route_name="models", request_method="GET", renderer="json",
             permission=API_PERMISSION)
def models(request):
    service = request.service
    return {"default": service.settings.default_model,
            "default_threshold": service.settings.default_threshold,
            "models": [spec.describe() for spec in service.models.values()]}


@view_config(route_name="model_download", request_method="POST", renderer="json",
             permission=API_PERMISSION)
def model_download(request):
    """Download a model's weights as a job: 202 with its status URL (200 when installed)."""
    service = request.service
    name = request.matchdict["name"]
    spec = service.models.get(name)
    if spec is None:
        raise ModelNotFound(f"unknown model {name!r}; choose one of {sorted(service.models)}")
    sid = service.request_download(spec)
    if sid is None:
        return {"model": name, "available": True}
    urls = _urls(request, sid, JobKind.DOWNLOAD)
    request.response.status_int = 202
    request.response.location = urls["status_url"]
    request.response.cache_control = "no-store"
    return {"sid": sid, "model": name, **urls}


@view_config(route_name="openapi", request_method="GET", renderer="json")
def openapi(request):
    return openapi_document(request.service)


def _urls(request, sid: str, kind: JobKind) -> dict:
    """Relative URLs, or absolute ones under ``public_url``: never built from the Host header.
    A download draws nothing: it has no result_url."""
    base = request.service.settings.public_url
    def url(name: str) -> str:
        return base + request.route_path("uploaded_file", name=name)
    urls = {"status_url": base + request.route_path("status", sid=sid),
            "json_url": url(f"{sid}{RESULT}")}
    if kind is JobKind.DETECT:
        urls["result_url"] = url(f"{sid}{OUTPUT}")
    elif kind is JobKind.VIDEO:
        urls.update(result_url=url(f"{sid}{VIDEO_OUTPUT}"), frames_url=url(f"{sid}{FRAMES}"))
    elif kind is JobKind.BATCH:
        urls.update(result_url=url(f"{sid}{BATCH_OUTPUT}"), coco_url=url(f"{sid}{COCO}"),
                    csv_url=url(f"{sid}{CSV}"))
    return urls


def status_body(request, job_status: JobStatus) -> dict:
    """/status's answer: the job's fields and state; how far it is (queue position, progress);
    then what its kind shows of its result, or why it failed."""
    job, state = job_status.job, job_status.state
    body = {"sid": job.sid, "kind": job.kind.value, "state": state.value, "model": job.model,
            **job.options.to_fields(), **_urls(request, job.sid, job.kind)}
    if state is JobState.QUEUED:
        body["queue_position"] = job_status.queue_position
    elif job_status.progress is not None:
        body["progress"] = job_status.progress.fraction
        body["stage"] = job_status.progress.stage
        body.update({key: value for key, value in job_status.progress.details.items()
                     if key not in body})
    elif state is JobState.RUNNING and job.kind in REPORTS_PROGRESS:
        body["progress"], body["stage"] = 0.0, "starting"
    if state is JobState.DONE:
        body.update({key: job_status.result.get(key) for key in STATUS_FIELDS[job.kind]})
        if job.kind is not JobKind.DETECT:
            body["progress"] = 1.0
    elif state is JobState.FAILED:
        body["error"] = job_status.error
    return body
