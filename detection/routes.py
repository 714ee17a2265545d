"""URL routes of the service (the names views and tests refer to)."""
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def includeme(config) -> None:
    config.add_static_view("static", str(STATIC_DIR), cache_max_age=3600)
    config.add_route("home", "/")
    config.add_route("upload", "/upload")
    config.add_route("status", "/status/{sid}")
    config.add_route("uploaded_file", "/uploads/{name}")
    config.add_route("health", "/health")
    config.add_route("models", "/models")
    config.add_route("openapi", "/openapi.json")
    config.add_route("deepstack_detection", "/v1/vision/detection")
    config.add_route("deepstack_custom", "/v1/vision/custom/{model}")
