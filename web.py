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
import sys
from pathlib import Path

from pyramid.config import Configurator

from detection.models import MissingCheckpoint, UnknownModel
from detection.security import ApiKeyPolicy
from detection.service import DetectionService
from detection.settings import SettingsError, parse_settings

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "production.ini"


def main(global_config: dict, **app_settings: str):
    """The Pyramid WSGI app."""
    settings = parse_settings(app_settings, global_config.get("__file__"))
    service = DetectionService(settings)
    with Configurator(settings=app_settings) as config:
        config.registry.service = service
        config.add_request_method(lambda request: request.registry.service, "service", reify=True)
        config.set_security_policy(ApiKeyPolicy(settings.api_keys))
        config.include("detection.routes")
        config.scan("detection.views")
        config.scan("detection.deepstack")
        config.scan("detection.errors")
    return config.make_wsgi_app()


def serve(config_file: str) -> None:
    """Serve the ini's app with waitress, with the ini's ``[server:main]`` settings."""
    import plaster
    import waitress
    from pyramid.paster import setup_logging

    setup_logging(config_file)
    loader = plaster.get_loader(config_file, protocols=["wsgi"])
    try:
        app = loader.get_wsgi_app()
    except (MissingCheckpoint, UnknownModel, SettingsError, FileNotFoundError) as error:
        sys.exit(f"Cannot start the service: {error}")
    server = {k: v for k, v in loader.get_settings("server:main").items()
              if k not in ("use", "here", "__file__")}
    if os.environ.get("HOST") or os.environ.get("PORT"):
        host, _, port = server.get("listen", "127.0.0.1:6543").rpartition(":")
        server["listen"] = f"{os.environ.get('HOST', host)}:{os.environ.get('PORT', port)}"
    waitress.serve(app, **server)


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT_CONFIG))
