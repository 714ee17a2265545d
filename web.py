"""The web side of the service.

``main(global_config, **settings)`` builds the Pyramid app (``pserve configs/production.ini`` uses
it); ``python web.py [INI]`` serves it with waitress. ``HOST`` and ``PORT`` override the ini's
``listen``.
"""
from __future__ import annotations

import warnings

# Pyramid 2.0 still imports pkg_resources; setuptools warns about it on every start.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

import os
import resource
import sys
from pathlib import Path

from pyramid.config import Configurator
from pyramid.response import Response

from detection.logs import format_handlers
from detection.memory import tune_malloc
from detection.models import MissingCheckpoint, UnknownModel
from detection.settings import Settings, SettingsError, parse_settings
from detection.telemetry import count_into, fold_gone_processes
from detection.web.forms import FORM_OVERHEAD_BYTES
from detection.web.security import ApiKeyPolicy

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "production.ini"


def main(global_config: dict, **app_settings: str):
    """The Pyramid WSGI app."""
    settings = parse_settings(app_settings, global_config.get("__file__"))
    format_handlers(settings.log_format)  # the handlers the ini's logging sections made
    count_into(settings.metrics_dir)  # before detection.telemetry.metrics is imported
    fold_gone_processes(settings.metrics_dir)
    with Configurator(settings=app_settings) as config:
        config.registry.detection_settings = settings
        config.include("detection.web.service")
        config.set_security_policy(ApiKeyPolicy(settings.api_keys))
        config.set_response_factory(lambda request: RelativeLocationResponse())
        config.include("detection.web.guards")
        config.include("detection.web.forms")
        config.include("detection.web.routes")
        config.include("detection.web.exposition")  # after routes: it adds a view to one
        config.scan("detection.web.views")
        config.scan("detection.web.deepstack")
        config.scan("detection.web.dataset_views")
        config.scan("detection.web.teaching_views")
        config.scan("detection.web.errors")
    return config.make_wsgi_app()


class RelativeLocationResponse(Response):
    """Keeps ``Location`` as the view set it (relative, or under ``public_url``); WebOb would
    otherwise make it absolute from the client's ``Host`` header."""

    def _abs_headerlist(self, environ):
        return list(self.headerlist)


# Waitress's own limits, checked against the app's before serving (docs/api.md: "Errors and limits").
RESERVED_THREADS = 2  # kept free of waiting requests, for /health, uploads and polls


def fit_server_to_app(server: dict, settings: Settings) -> None:
    """Refuse waitress settings that would starve the app; set the ones derived from its limits."""
    threads = int(server.get("threads", 4))
    if settings.max_waiting_requests > threads - RESERVED_THREADS:
        raise SettingsError(f"detection.max_waiting_requests ({settings.max_waiting_requests}) "
                            f"must leave {RESERVED_THREADS} of waitress's {threads} threads free")
    # Waitress refuses bigger bodies as they arrive: the upload limit plus the form's framing,
    # or a dataset zip's limit if larger (the app holds each route to its own).
    server["max_request_body_size"] = str(max(settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
                                              settings.max_import_mb * 2**20))
    # Each connection may hold a socket and a spooled body: raise the soft descriptor limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * int(server.get("connection_limit", 100)) + 256
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def serve(config_file: str) -> None:
    """Serve the ini's app with waitress, with the ini's ``[server:main]`` settings."""
    import plaster
    import waitress
    from pyramid.paster import setup_logging

    setup_logging(config_file)
    tune_malloc(one_heap=True)
    loader = plaster.get_loader(config_file, protocols=["wsgi"])
    server = {k: v for k, v in loader.get_settings("server:main").items()
              if k not in ("use", "here", "__file__")}
    try:
        app = loader.get_wsgi_app()
        fit_server_to_app(server, app.registry.service.settings)
    except (MissingCheckpoint, UnknownModel, SettingsError, FileNotFoundError) as error:
        sys.exit(f"Cannot start the service: {error}")
    if os.environ.get("HOST") or os.environ.get("PORT"):
        host, _, port = server.get("listen", "127.0.0.1:6543").rpartition(":")
        server["listen"] = f"{os.environ.get('HOST', host)}:{os.environ.get('PORT', port)}"
    server = waitress.create_server(app, **server)  # bound: this process serves
    app.registry.service.callbacks.resume()
    server.print_listen("Serving on http://{}:{}")
    server.run()


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT_CONFIG))
