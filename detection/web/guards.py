"""Checks a request passes before routing: a URL that decodes (UTF-8, as WebOb reads it), and for
a state-changing request, before any byte of its body is read, a declared size within the upload
limit and no request from another site's page."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from pyramid.response import Response
from pyramid.tweens import EXCVIEW, INGRESS

from .forms import check_body_size

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DATASET_IMPORT = re.compile(r"/datasets/[^/]+/import")  # a zip: its own, larger limit


class CrossSiteRequest(PermissionError):
    """A browser sent a state-changing request from a page of another origin (CSRF)."""


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_origin(request, trusted: frozenset[str]) -> None:
    """Refuse a request whose ``Origin`` is neither this server nor a trusted one.

    Browsers send ``Origin`` on every cross-origin POST; curl and API clients send none."""
    origin = request.headers.get("Origin")
    if origin is None:
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            raise CrossSiteRequest("a cross-site request was refused")
        return
    if origin.lower() not in trusted | {request.host_url.lower()}:
        raise CrossSiteRequest(f"requests from pages of {origin} are refused; "
                               "trust an origin with detection.allowed_origins")


def request_guard_tween_factory(handler, registry):
    settings = registry.service.settings
    trusted = frozenset(origin_of(url) for url in (settings.public_url, *settings.allowed_origins)
                        if url)

    def guard(request):
        if request.method not in SAFE_METHODS:
            request.add_finished_callback(release_body)
            if DATASET_IMPORT.fullmatch(request.path_info):
                check_body_size(request, settings.max_import_mb * 2**20)
            else:
                check_body_size(request, settings.max_upload_bytes)
            check_origin(request, trusted)
        return handler(request)
    return guard


def url_guard_tween_factory(handler, registry):
    """A path that is not UTF-8 (``/status/%ff``) is a client's mistake: 400, as JSON, before
    anything (routing, logging, the error views) reads it."""
    def guard(request):
        try:
            request.path_info
        except UnicodeDecodeError:
            body = {"error": "the URL is not valid UTF-8"}
            if request.environ.get("PATH_INFO", "").startswith("/v1/"):  # DeepStack's shape
                body = {"success": False, **body, "code": 400}
            return Response(json_body=body, status=400)
        return handler(request)
    return guard


def release_body(request) -> None:
    """Once answered, let go of the upload's bytes: an error's traceback holds the frames that
    hold them, in a cycle with the request that only a later garbage collection would free."""
    request.exception = request.exc_info = None
    request.__dict__.pop("upload_form", None)


def includeme(config) -> None:
    config.add_tween("detection.web.guards.url_guard_tween_factory", under=INGRESS)
    # Under the exception view tween, so that its errors answer JSON like any other.
    config.add_tween("detection.web.guards.request_guard_tween_factory", under=EXCVIEW)
