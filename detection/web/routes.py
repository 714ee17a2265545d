"""URL routes of the service (the names views and tests refer to)."""
from ..settings import PROJECT_ROOT

STATIC_DIR = PROJECT_ROOT / "static"

# name: (pattern, the methods its views answer; GET implies HEAD)
ROUTES = {
    "home": ("/", "GET, HEAD"),
    "upload": ("/upload", "POST"),
    "status": ("/status/{sid}", "GET, HEAD"),
    "uploaded_file": ("/uploads/{name}", "GET, HEAD"),
    "health": ("/health", "GET, HEAD"),
    "health_live": ("/health/live", "GET, HEAD"),
    "health_ready": ("/health/ready", "GET, HEAD"),
    "metrics": ("/metrics", "GET, HEAD"),
    "models": ("/models", "GET, HEAD"),
    "model": ("/models/{name}", "GET, HEAD"),
    "model_download": ("/models/{name}/download", "POST"),
    "model_promote": ("/models/{name}/promote", "POST"),
    "review": ("/review", "GET, HEAD"),
    "review_image": ("/review/{sid}.png", "GET, HEAD"),  # before:
    "review_item": ("/review/{sid}", "DELETE"),
    "training": ("/training", "POST"),
    "training_job": ("/training/{sid}", "DELETE"),
    "openapi": ("/openapi.json", "GET, HEAD"),
    "datasets": ("/datasets", "GET, HEAD, POST"),
    "dataset": ("/datasets/{name}", "GET, HEAD, DELETE"),
    "dataset_coco": ("/datasets/{name}/coco.json", "GET, HEAD"),
    "dataset_import": ("/datasets/{name}/import", "POST"),
    "dataset_images": ("/datasets/{name}/images", "GET, HEAD, POST"),
    "dataset_image_file": ("/datasets/{name}/images/{image_id}.png", "GET, HEAD"),  # before:
    "dataset_image": ("/datasets/{name}/images/{image_id}", "GET, HEAD, PUT, DELETE"),
    "deepstack_detection": ("/v1/vision/detection", "POST"),
    "deepstack_custom": ("/v1/vision/custom/{model}", "POST"),
    "deepstack_face": ("/v1/vision/face", "POST"),
}


def includeme(config) -> None:
    config.add_static_view("static", str(STATIC_DIR), cache_max_age=3600)
    for name, (pattern, _) in ROUTES.items():
        config.add_route(name, pattern)
