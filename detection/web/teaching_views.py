"""Teaching's views: HTTP only. Train a dataset into a new version of a model (a job: poll its
status for progress), list a model's versions with their scores, promote one."""
from __future__ import annotations

from pyramid.view import view_config

from ..jobs.job import NAME, JobKind
from ..jobs.layout import RESULT
from .errors import ModelNotFound
from .forms import BadParameter, only_fields, read_json
from .security import API_PERMISSION
from .teaching import (
    cancel_training,
    promote,
    queue_training,
    training_options,
    versions_of,
)
from .views import status_body


@view_config(route_name="training", request_method="POST", renderer="json",
             permission=API_PERMISSION)
def train(request):
    """``{"dataset", "base", "name", "epochs", "time_budget", "seed", "callback_url"}`` -> 202
    and the job's status URL; it trains version ``name@K``."""
    body = only_fields(read_json(request), {"dataset", "base", "name", "epochs", "time_budget",
                                            "seed", "callback_url"})
    options, base = training_options(body)
    callback_url = body.get("callback_url")
    if callback_url is not None and not isinstance(callback_url, str):
        raise BadParameter("callback_url must be a URL")
    job = queue_training(request.service, options, base, (callback_url or "").strip() or None)
    base_url = request.service.settings.public_url
    urls = {"status_url": base_url + request.route_path("status", sid=job.sid),
            "json_url": base_url + request.route_path("uploaded_file", name=f"{job.sid}{RESULT}"),
            "model_url": base_url + request.route_path("model", name=options.name)}
    request.response.status_int = 202
    request.response.location = urls["status_url"]
    request.response.cache_control = "no-store"
    return {"sid": job.sid, "kind": JobKind.TRAIN.value, "model": options.name, **urls}


@view_config(route_name="model", request_method="GET", renderer="json",
             permission=API_PERMISSION)
def model(request):
    """A model as /models lists it, and a taught one's versions with their held-out scores."""
    name = request.matchdict["name"]
    versions = versions_of(request.service)
    spec = request.service.models.get(name)
    described = versions.describe(name) if NAME.fullmatch(name) else []
    if spec is None and not described:
        raise ModelNotFound(f"no model {name!r}")
    return {**(spec.describe() if spec else {"name": name, "available": False}),
            "versions": described}


@view_config(route_name="model_promote", request_method="POST", renderer="json",
             permission=API_PERMISSION)
def promote_version(request):
    """``{"version": K}``: serve version K as the model (a rollback is a promote of an older
    one)."""
    name = request.matchdict["name"]
    body = only_fields(read_json(request), {"version"})
    number = body.get("version")
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 999_999:
        raise BadParameter("version must be a version's number (1, 2, ...)")
    if not NAME.fullmatch(name):
        raise ModelNotFound(f"no model {name!r:.80}")
    promote(request.service, name, number)
    return {"name": name, "served": f"{name}@{number}",
            "versions": versions_of(request.service).describe(name)}


@view_config(route_name="training_job", request_method="DELETE", renderer="json",
             permission=API_PERMISSION)
def cancel(request):
    """Stop a training: 202 and its status (failed at once if it was queued; a running one
    stops at its next look, within seconds, and fails with the reason). Its version is never
    made; the served model is unchanged."""
    status = cancel_training(request.service, request.matchdict["sid"])
    request.response.status_int = 202
    request.response.cache_control = "no-store"
    return status_body(request, status)
