"""Errors as JSON, in one place: domain exceptions to HTTP statuses, and the 401/404/405 views."""
from __future__ import annotations

import logging

from pyramid.httpexceptions import HTTPException
from pyramid.view import forbidden_view_config, notfound_view_config, view_config

from ..callbacks.targets import CallbackRefused
from ..datasets.annotations import BadAnnotation
from ..datasets.archive import ArchiveTooLarge, BadArchive
from ..datasets.store import (
    DatasetExists,
    DatasetFull,
    DatasetNotFound,
    DatasetNotReady,
    DatasetStorageFull,
    ImageExists,
    ImageNotFound,
)
from ..finetune.versions import UnknownVersion
from ..images import BadImage, ImageTooLarge
from ..jobs.errors import DiskFull, QueueFull, QueueUnavailable
from ..jobs.storage import StorageFull
from ..models import UnknownModel
from ..batches import BadBatch, BatchTooLarge
from ..videos import BadVideo, VideoTooLarge
from .forms import BadParameter, BodyTooLarge, UnsupportedMedia
from .guards import CrossSiteRequest
from .routes import ROUTES
from .teaching import CannotCancel, CannotTrain, UnknownTraining
from .service import (
    DetectionTimeout,
    JobGone,
    ModelUnavailable,
    NothingToDownload,
    ServerBusy,
)

log = logging.getLogger(__name__)


class JobNotFound(LookupError):
    pass


class ModelNotFound(UnknownModel):
    """An unknown model named in the URL (a missing resource, not a bad parameter)."""


class DetectionFailed(RuntimeError):
    """A synchronous request's job failed in the worker; the message is the worker's reason."""


ERROR_STATUS = {BadParameter: 400, UnknownModel: 400, ModelNotFound: 404, BadImage: 422,
                ImageTooLarge: 413, BodyTooLarge: 413, JobNotFound: 404, ModelUnavailable: 400,
                CrossSiteRequest: 403, QueueFull: 503, QueueUnavailable: 503, DetectionTimeout: 503,
                ServerBusy: 503, JobGone: 503, StorageFull: 507, DiskFull: 507, DetectionFailed: 500,
                NothingToDownload: 409, BadAnnotation: 400, DatasetNotFound: 404,
                ImageNotFound: 404, DatasetExists: 409, DatasetFull: 409,
                DatasetStorageFull: 507, CannotTrain: 409, UnknownVersion: 404,
                UnknownTraining: 404, CannotCancel: 409, DatasetNotReady: 409,
                ImageExists: 409, BadArchive: 400, ArchiveTooLarge: 413, CallbackRefused: 400,
                UnsupportedMedia: 415, BadVideo: 422, VideoTooLarge: 413, BadBatch: 400,
                BatchTooLarge: 413}
RETRY_LATER = (QueueFull, QueueUnavailable, DetectionTimeout, ServerBusy)
DEEPSTACK_PREFIX = "/v1/"


def error_body(request, message: str) -> dict:
    """Our error shape; DeepStack clients also get their ``success: false`` (and CodeProject.AI's
    the status as ``code``; the caller has set it).

    Told by the path, not the route: errors raised before routing (body limits) answer too."""
    if request.path.startswith(DEEPSTACK_PREFIX):
        return {"success": False, "error": message, "code": request.response.status_int}
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
    if isinstance(error, RETRY_LATER):
        request.response.headers["Retry-After"] = str(error.retry_after)
    if status == 500 and not isinstance(error, DetectionFailed):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_body(request, "internal error; the server log has the details")
    return error_body(request, str(error))
