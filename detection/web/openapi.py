"""The OpenAPI 3.0 description served at /openapi.json (a fuzz test keeps it true)."""
from __future__ import annotations

from .. import __version__
from ..datasets.annotations import MAX_BOXES, MAX_LABEL_CHARS
from ..jobs.job import MAX_DETECTIONS, MAX_TILES, JobKind
from .forms import MAX_DETECTIONS_LIMIT, MAX_STATUS_WAIT


def _json(schema: dict | str, description: str, headers: dict | None = None) -> dict:
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
ACCEPTED_HEADERS = {
    "Location": {"description": "the status URL", "schema": {"type": "string"}},
    "Server-Timing": {"description": "milliseconds per step: decode, encode and store (the "
                                     "stored PNG), queue", "schema": {"type": "string"}}}
KEYED = [{}, {"bearer": []}, {"apiKeyHeader": []}]  # a key only where the settings name any
DEEPSTACK_KEY_NOTE = ("Where API keys are configured, DeepStack clients send theirs as an "
                      "`api_key` form field (the headers work too).")


def _errors(schema: str, *codes: int) -> dict:
    meaning = {400: "a bad parameter", 401: "a missing or wrong API key",
               403: "a POST from a page of another origin", 404: "not found",
               410: "the job failed: its results will never exist",
               409: "the model has no weights to download; a dataset exists already or is "
                    "at a limit",
               413: "the body, the image or the video is too large",
               415: "a video, on a route that takes images",
               422: "not an image (or a video), empty, truncated or corrupt",
               500: "the detection itself failed",
               503: "queue full, too many requests waiting, or timed out waiting",
               507: "no room to store the image (storage budget or disk full)"}
    return {str(code): _json(schema, meaning[code], RETRY_AFTER if code == 503 else None)
            for code in codes}


CALLBACK_URL = {"type": "string", "description": "http(s) URL of a host the server allows "
                "(callback_hosts): it is POSTed the job's status JSON when the job ends, signed "
                "(X-Detection-Signature: HMAC-SHA256 over timestamp.body); 400 if not allowed"}


def _upload_form(model_names: list[str], threshold_name: str, default: float) -> dict:
    properties = {
        "image": {"type": "string", "format": "binary", "description": "the photo"},
        threshold_name: {"type": "number", "minimum": 0, "maximum": 1, "default": default},
        "classes": {"type": "string", "description": "only these labels, comma-separated "
                    "(e.g. `person,car`; GET /models lists each model's); empty: all. An "
                    "unknown name is a 400 that lists the model's classes"},
        "max_detections": {"type": "integer", "minimum": 1, "maximum": MAX_DETECTIONS_LIMIT,
                           "default": MAX_DETECTIONS, "description": "the best ones, at most"},
        "tiles": {"type": "integer", "minimum": 1, "maximum": MAX_TILES, "description":
                  "N: also detect on an N x N grid of overlapping tiles and merge (small, far "
                  "objects; about N*N+1 times the time); 1: none; absent: the model's own "
                  "(GET /models); not for models with masks"},
    }
    if threshold_name == "threshold":
        properties["model"] = {"type": "string", "enum": ["", *model_names],
                               "description": "an installed model; empty: the default"}
        properties["callback_url"] = CALLBACK_URL
        properties["fps"] = {"type": "number", "minimum": 0.1, "maximum": 30, "description":
                             "a video's frames a second to detect (default: video_fps, 5)"}
        properties["track"] = {"type": "string", "enum": ["true", "false"], "description":
                               "a video's objects followed across frames (default true)"}
    return {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image"], "properties": properties}}}}


def _schemas() -> dict:
    string, number, integer = {"type": "string"}, {"type": "number"}, {"type": "integer"}
    detection = {"type": "object", "required": ["label", "class_id", "score", "bbox"],
                 "properties": {"label": string, "class_id": integer, "score": number,
                                "bbox": {"type": "array", "items": number, "minItems": 4,
                                         "maxItems": 4, "description": "x1, y1, x2, y2 in pixels"},
                                "mask": {"type": "object", "description": "COCO RLE",
                                         "properties": {"size": {"type": "array",
                                                                 "items": integer},
                                                        "counts": string}}}}
    image = {"type": "object", "required": ["width", "height"],
             "properties": {"width": integer, "height": integer}}
    urls = {"status_url": string, "result_url": string, "json_url": string}
    return {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": string, "state": string}},
        "DeepStackError": {"type": "object", "required": ["success", "error"],
                           "properties": {"success": {"type": "boolean", "enum": [False]},
                                          "error": string, "code": integer}},
        "Detection": detection,
        "Accepted": {"type": "object", "required": ["sid", *urls], "properties": {
            "sid": string, **urls, "frames_url": string, "coco_url": string,
            "csv_url": string}},
        "DownloadAccepted": {"type": "object", "required": ["sid", "model", "status_url",
                                                            "json_url"],
                             "properties": {"sid": string, "model": string, **urls}},
        "Installed": {"type": "object", "required": ["model", "available"],
                      "properties": {"model": string, "available": {"type": "boolean"}}},
        "Status": {"type": "object", "required": ["sid", "kind", "state", "model", "status_url",
                                                  "json_url"],
                   "description": "A detection has threshold, classes, max_detections and "
                                  "result_url, and once done image, detections and timings; a "
                                  "download, while it runs, progress (0 to 1) and stage, and "
                                  "once done checkpoint, bytes, sha256 and timings.",
                   "properties": {
                       "sid": string, "model": string, "threshold": number, **urls,
                       "kind": {"type": "string", "enum": [kind.value for kind in JobKind]},
                       "classes": {"type": "array", "items": string}, "max_detections": integer,
                       "tiles": {"type": "integer", "nullable": True},
                       "fps": number, "track": {"type": "boolean"}, "frames_url": string,
                       "video": {"type": "object"}, "frames": integer,
                       "counts": {"type": "object", "additionalProperties": integer},
                       "tracks": {"type": "array", "items": {"type": "object"}},
                       "tracks_total": integer,
                       "count": integer, "coco_url": string, "csv_url": string,
                       "images": {"type": "array", "items": {"type": "object"}},
                       "failed": {"type": "array", "items": {"type": "object"}},
                       "state": {"type": "string",
                                 "enum": ["queued", "running", "done", "failed"]},
                       "queue_position": integer, "image": image, "error": string,
                       "progress": {"type": "number", "minimum": 0, "maximum": 1},
                       "stage": string, "checkpoint": string, "bytes": integer,
                       "sha256": string,
                       "detections": {"type": "array",
                                      "items": {"$ref": "#/components/schemas/Detection"}},
                       "timings": {"type": "object", "additionalProperties": number},
                       "callback": {"type": "object", "description": "the job's callback "
                                    "delivery (times are Unix seconds)", "properties": {
                                        "url": string, "attempts": integer,
                                        "state": {"type": "string", "enum": [
                                            "waiting", "retrying", "delivered", "failed"]},
                                        "last_error": {"type": "string", "nullable": True},
                                        **{name: {"type": "number", "nullable": True} for name in
                                           ("first_attempt_at", "next_attempt_at",
                                            "delivered_at")}}}}},
        "Result": {"type": "object", "required": ["sid", "model", "threshold", "image",
                                                  "detections", "timings"],
                   "properties": {"sid": string, "model": string, "threshold": number,
                                  "classes": {"type": "array", "items": string},
                                  "max_detections": integer, "device": string,
                                  "image": image, "timings": {"type": "object"},
                                  "detections": {"type": "array", "items": {
                                      "$ref": "#/components/schemas/Detection"}}}},
        "Models": {"type": "object", "required": ["default", "default_threshold", "models"],
                   "properties": {"default": string, "default_threshold": number,
                                  "models": {"type": "array", "items": {"type": "object"}}}},
        "Health": {"type": "object", "required": ["status", "version", "worker", "queue",
                                                  "models"],
                   "properties": {"status": string, "version": string,
                                  "worker": {"type": "object"}, "queue": {"type": "object"},
                                  "models": {"type": "object"}}},
        "Live": {"type": "object", "required": ["status"], "properties": {"status": string}},
        "Ready": {"type": "object", "required": ["ready", "reasons", "default_model"],
                  "properties": {"ready": {"type": "boolean"},
                                 "reasons": {"type": "array", "items": string},
                                 "default_model": string, "worker_alive": {"type": "boolean"},
                                 "model_loaded": {"type": "boolean", "nullable": True},
                                 "error": string}},
        **_dataset_schemas(),
        "DeepStackResult": {"type": "object", "required": ["success", "predictions", "duration"],
                            "properties": {
                                "success": {"type": "boolean", "enum": [True]}, "sid": string,
                                "duration": integer, "code": integer, "count": integer,
                                "message": string, "command": string, "moduleId": string,
                                "moduleName": string, "executionProvider": string,
                                "canUseGPU": {"type": "boolean"}, "inferenceMs": integer,
                                "processMs": integer, "analysisRoundTripMs": integer,
                                "processedBy": string, "timestampUTC": string,
                                "predictions": {"type": "array", "items": {
                                    "type": "object",
                                    "required": ["confidence", "x_min", "y_min",
                                                 "x_max", "y_max"],
                                    "properties": {"label": string, "confidence": number,
                                                   "x_min": integer, "y_min": integer,
                                                   "x_max": integer, "y_max": integer}}}}},
    }


LABEL = {"type": "string", "minLength": 1, "maxLength": MAX_LABEL_CHARS,
         "description": "printable, no comma, no space at either end"}
BOX = {"type": "object", "required": ["label", "box"], "additionalProperties": False,
       "properties": {"label": LABEL, "box": {
           "type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
           "description": "x1, y1, x2, y2 in the image's pixels: within it, at least a pixel "
                          "wide and high"}}}
ANNOTATIONS = {"type": "array", "items": BOX, "maxItems": MAX_BOXES}


def _dataset_schemas() -> dict:
    string, integer = {"type": "string"}, {"type": "integer"}
    return {
        "Dataset": {"type": "object", "required": ["name", "classes", "images", "boxes", "split"],
                    "properties": {"name": string, "classes": {"type": "array", "items": string},
                                   "images": integer, "bytes": integer,
                                   "created": {"type": "number"},
                                   "boxes": {"type": "object", "additionalProperties": integer,
                                             "description": "boxes per class"},
                                   "split": {"type": "object", "properties": {
                                       "train": integer, "held_out": integer}},
                                   "url": string, "images_url": string, "coco_url": string}},
        "DatasetImage": {"type": "object", "required": ["id", "width", "height", "annotations",
                                                        "split"],
                         "properties": {"id": string, "width": integer, "height": integer,
                                        "annotations": ANNOTATIONS,
                                        "split": {"type": "string",
                                                  "enum": ["train", "held_out"]},
                                        "added": {"type": "number"},
                                        "source": {"type": "string", "nullable": True},
                                        "url": string, "image_url": string}},
        "Deleted": {"type": "object", "required": ["deleted"], "properties": {"deleted": string}},
        "TrainingAccepted": {"type": "object", "required": ["sid", "kind", "model",
                                                            "status_url", "json_url"],
                             "properties": {"sid": string, "kind": string, "model": string,
                                            "status_url": string, "json_url": string,
                                            "model_url": string}},
        "Model": {"type": "object", "required": ["name", "versions"], "properties": {
            "name": string, "versions": {"type": "array", "items": {
                "type": "object", "required": ["version", "number", "served"], "properties": {
                    "version": string, "number": integer, "served": {"type": "boolean"},
                    "metrics": {"type": "object"}, "base": string, "dataset": string}}}}},
    }


def _dataset_paths() -> dict:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    image_id = {"name": "image_id", "in": "path", "required": True,
                "schema": {"type": "string"}}
    dataset = _json("Dataset", "the dataset")
    image = _json("DatasetImage", "the image and its boxes")
    deleted = _json("Deleted", "deleted")
    changed = ("Error", 400, 401, 403, 404, 409, 413)
    return {
        "/datasets": {
            "get": {"summary": "The datasets kept for fine-tuning", "security": KEYED,
                    "responses": {"200": _json({"type": "object", "properties": {
                        "datasets": {"type": "array", "items": {
                            "$ref": "#/components/schemas/Dataset"}}}}, "the datasets"),
                        **_errors("Error", 401)}},
            "post": {"summary": "Create a dataset", "security": KEYED,
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"type": "object", "required": ["name"],
                                    "additionalProperties": False, "properties": {
                                        "name": {"type": "string",
                                                 "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                                        "classes": {"type": "array", "items": LABEL,
                                                    "uniqueItems": True}}}}}},
                     "responses": {"201": dataset, **_errors("Error", 400, 401, 403, 409,
                                                             413)}}},
        "/datasets/{name}": {
            "get": {"summary": "A dataset: classes, images, boxes per class, split sizes",
                    "security": KEYED, "parameters": [name],
                    "responses": {"200": dataset, **_errors("Error", 401, 404)}},
            "delete": {"summary": "Delete a dataset and its images", "security": KEYED,
                       "parameters": [name],
                       "responses": {"200": deleted, **_errors("Error", 401, 403, 404)}}},
        "/datasets/{name}/coco.json": {"get": {
            "summary": "The dataset as COCO annotations (what `finetune` reads)",
            "description": "Each image's `file_name` is its URL relative to this one. Optional "
                           "query parameter `split`: `train` or `held_out` only.",
            "security": KEYED, "parameters": [name],
            "responses": {"200": _json({"type": "object"}, "COCO detection annotations"),
                          **_errors("Error", 400, 401, 404)}}},
        "/datasets/{name}/import": {"post": {
            "summary": "Import a zip of a COCO annotation file and its images",
            "description": "All its images are added, or none; the dataset is made if needed. "
                           "A zip over `max_import_mb` (sent or inflated), with entries outside "
                           "its folder, links, or images named outside it, is refused whole.",
            "security": KEYED, "parameters": [name],
            "requestBody": {"required": True, "content": {
                kind: {"schema": {"type": "string", "format": "binary"}}
                for kind in ("application/zip", "application/octet-stream")}},
            "responses": {"201": _json({"type": "object", "properties": {
                "imported": {"type": "integer"},
                "dataset": {"$ref": "#/components/schemas/Dataset"}}}, "the images added"),
                **_errors("Error", 400, 401, 403, 409, 413, 422, 503, 507)}}},
        "/datasets/{name}/images": {
            "get": {"summary": "A dataset's images and their boxes", "security": KEYED,
                    "parameters": [name],
                    "responses": {"200": _json({"type": "object", "properties": {
                        "images": {"type": "array", "items": {
                            "$ref": "#/components/schemas/DatasetImage"}}}}, "the images"),
                        **_errors("Error", 401, 404)}},
            "post": {"summary": "Add an image with its boxes: sent, or an upload already here",
                     "description": "A label not in the dataset's classes is a 400 that names "
                                    "it, unless `add_classes` is true.",
                     "security": KEYED, "parameters": [name],
                     "requestBody": {"required": True, "content": {
                         "multipart/form-data": {"schema": {
                             "type": "object", "required": ["image"], "properties": {
                                 "image": {"type": "string", "format": "binary"},
                                 "annotations": {"type": "string",
                                                 "description": "the boxes, as JSON"},
                                 "add_classes": {"type": "string",
                                                 "enum": ["true", "false", "1", "0"]}}}},
                         "application/json": {"schema": {
                             "type": "object", "required": ["sid"],
                             "additionalProperties": False, "properties": {
                                 "sid": {"type": "string", "description": "an upload's id"},
                                 "annotations": ANNOTATIONS,
                                 "add_classes": {"type": "boolean", "nullable": True}}}}}},
                     "responses": {"201": image, **_errors(*changed, 422, 503, 507)}}},
        "/datasets/{name}/images/{image_id}.png": {"get": {
            "summary": "An image's pixels, as the dataset keeps them", "security": KEYED,
            "parameters": [name, image_id],
            "responses": {"200": {"description": "the image", "content": {"image/png": {
                "schema": {"type": "string", "format": "binary"}}}},
                **_errors("Error", 401, 404)}}},
        "/datasets/{name}/images/{image_id}": {
            "get": {"summary": "An image's boxes", "security": KEYED,
                    "parameters": [name, image_id],
                    "responses": {"200": image, **_errors("Error", 401, 404)}},
            "put": {"summary": "Correct an image's boxes", "security": KEYED,
                    "parameters": [name, image_id],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"type": "object", "required": ["annotations"],
                                   "additionalProperties": False, "properties": {
                                       "annotations": ANNOTATIONS,
                                       "add_classes": {"type": "boolean", "nullable": True}}}}}},
                    "responses": {"200": image, **_errors(*changed)}},
            "delete": {"summary": "Remove an image", "security": KEYED,
                       "parameters": [name, image_id],
                       "responses": {"200": deleted, **_errors("Error", 401, 403, 404)}}},
    }


def _teaching_paths() -> dict:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    sid = {"name": "sid", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/review": {"get": {
            "summary": "Uploads kept for a person to correct (a model's review rule)",
            "security": KEYED,
            "responses": {"200": _json({"type": "object", "properties": {"items": {
                "type": "array", "items": {"type": "object", "required": [
                    "sid", "model", "detections", "reasons", "image_url"]}}}},
                "newest first"), **_errors("Error", 401)}}},
        "/review/{sid}.png": {"get": {
            "summary": "A kept upload's image", "security": KEYED, "parameters": [sid],
            "responses": {"200": {"description": "the image", "content": {"image/png": {
                "schema": {"type": "string", "format": "binary"}}}},
                **_errors("Error", 401, 404)}}},
        "/review/{sid}": {"delete": {
            "summary": "Take a kept upload off the list", "security": KEYED,
            "parameters": [sid],
            "responses": {"200": _json({"type": "object", "properties": {
                "dismissed": {"type": "string"}}}, "off the list"),
                **_errors("Error", 401, 403, 404)}}},
        "/training": {"post": {
            "summary": "Train a dataset into a new version NAME@K of a model, as a job",
            "description": "202 and a status URL: /status shows progress, epoch, loss and "
                           "ETA while it trains, then the version's held-out scores beside the "
                           "served version's. One training at a time per host; detections "
                           "go on meanwhile.",
            "security": KEYED,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["dataset", "base", "name"],
                "additionalProperties": False, "properties": {
                    "dataset": {"type": "string"}, "base": {"type": "string"},
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                    "epochs": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "time_budget": {"type": "number", "minimum": 0, "maximum": 1000000,
                                    "description": "seconds of training (default 240; 0: no "
                                    "limit); under training_timeout_seconds"},
                    "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295},
                    "callback_url": CALLBACK_URL}}}}},
            "responses": {"202": _json("TrainingAccepted", "queued; poll status_url",
                                       {"Location": ACCEPTED_HEADERS["Location"]}),
                          **_errors("Error", 400, 401, 403, 404, 409, 413, 503)}}},
        "/training/{sid}": {"delete": {
            "summary": "Cancel a training (queued: failed at once; running: within seconds)",
            "security": KEYED,
            "parameters": [{"name": "sid", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"202": _json("Status", "its status"),
                          **_errors("Error", 401, 403, 404, 409)}}},
        "/models/{name}": {"get": {
            "summary": "A model, and a taught one's versions with their held-out scores",
            "security": KEYED, "parameters": [name],
            "responses": {"200": _json("Model", "the model"), **_errors("Error", 401, 404)}}},
        "/models/{name}/promote": {"post": {
            "summary": "Serve one of a taught model's versions (a rollback: an older one)",
            "security": KEYED, "parameters": [name],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["version"], "additionalProperties": False,
                "properties": {"version": {"type": "integer", "minimum": 1,
                                           "maximum": 999999}}}}}},
            "responses": {"200": _json("Model", "served now"),
                          **_errors("Error", 400, 401, 403, 404, 409, 413)}}},
    }


def openapi_document(service) -> dict:
    models = service.installed_models()
    metrics_security = [{}] if service.settings.metrics_public else KEYED
    default = service.settings.default_threshold
    sid = {"name": "sid", "in": "path", "required": True, "schema": {"type": "string"}}
    deepstack_errors = _errors("DeepStackError", 400, 401, 403, 413, 415, 422, 500, 503, 507)
    # ``?wait=`` is described in words: as a formal optional number, an empty object serializes to
    # no parameter at all, which a fuzzer then expects to be refused.
    wait = (f"Optional query parameter `wait` (seconds, 0 to {MAX_STATUS_WAIT:g}): a long-poll, "
            "answered as soon as the job is done or failed, or after that many seconds (at once "
            "when too many "
            "requests wait already). Any other query parameter is a 400.")
    return {
        "openapi": "3.0.3",
        "info": {"title": "Object detection service", "version": __version__,
                 "description": "Upload a photo; get every COCO object boxed, labelled and "
                                "scored. Asynchronous API (/upload, /status, /uploads) and a "
                                "DeepStack-compatible synchronous one (/v1/vision/...)."},
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKeyHeader": {"type": "apiKey", "in": "header",
                                                 "name": "X-API-Key"}}},
        "paths": {
            "/upload": {"post": {
                "summary": "Queue a photo (or a video: MP4, MOV, WebM) for detection",
                "description": "A video (told by its bytes) is a job of kind video: its "
                               "frames are detected at fps a second and followed across "
                               "frames; result_url is its drawn MP4, frames_url its detections "
                               "frame by frame (JSON lines). A zip of images, or several image "
                               "parts with ?batch=1, is a job of kind batch: coco_url, csv_url, "
                               "and result_url a zip of the drawings.", "security": KEYED,
                "parameters": [{"name": "batch", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["true", "false", "1",
                                                                      "0"]},
                                "description": "several image parts: one batch"}],
                "requestBody": _upload_form(models, "threshold", default),
                "responses": {"202": _json("Accepted", "accepted; poll status_url",
                                           ACCEPTED_HEADERS),
                              **_errors("Error", 400, 401, 403, 413, 422, 503, 507)}}},
            "/status/{sid}": {"get": {
                "summary": "A job's state, and its detections once done", "security": KEYED,
                "description": wait, "parameters": [sid],
                "responses": {"200": _json("Status", "the job"),
                              **_errors("Error", 400, 401, 404)}}},
            "/uploads/{name}": {"get": {
                "summary": "<sid>.png (input), .out.png (drawn), .json (result), "
                           ".error.json (failure), .progress.json (while a long job runs)",
                "security": KEYED,
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the file", "content": {
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {"type": "object"}}}},
                    **_errors("Error", 401, 404, 410)}}},
            "/models": {"get": {"summary": "The models offered", "security": KEYED,
                                "responses": {"200": _json("Models", "the models"),
                                              **_errors("Error", 401)}}},
            "/models/{name}/download": {"post": {
                "summary": "Download a model's weights into checkpoints/, as a job",
                "description": "202 and a status URL (the job's progress is in /status); 200 "
                               "when the model is installed already.",
                "security": KEYED,
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"202": _json("DownloadAccepted", "queued; poll status_url",
                                           {"Location": ACCEPTED_HEADERS["Location"]}),
                              "200": _json("Installed", "installed already"),
                              **_errors("Error", 401, 403, 404, 409, 503)}}},
            "/health": {"get": {"summary": "Worker, queue and models",
                                "responses": {"200": _json("Health", "the service's state")}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (text exposition format)", "security": metrics_security,
                "responses": {"200": {"description": "the metrics", "content": {
                    "text/plain": {"schema": {"type": "string"}}}},
                              **_errors("Error", 401)}}},
            "/health/live": {"get": {"summary": "The web process answers (liveness)",
                                     "responses": {"200": _json("Live", "alive")}}},
            "/health/ready": {"get": {
                "summary": "The default model can be served now (readiness)",
                "responses": {"200": _json("Ready", "ready"),
                              "503": _json("Ready", "not ready; `error` says why")}}},
            "/v1/vision/detection": {"post": {
                "summary": "DeepStack-compatible detection (waits for the result)",
                "description": DEEPSTACK_KEY_NOTE,
                "security": KEYED,
                "requestBody": _upload_form(models, "min_confidence", 0.4),
                "responses": {"200": _json("DeepStackResult", "the predictions"),
                              **deepstack_errors}}},
            "/v1/vision/custom/{model}": {"post": {
                "summary": "DeepStack-compatible detection with a chosen model",
                "description": DEEPSTACK_KEY_NOTE,
                "security": KEYED,
                "parameters": [{"name": "model", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "requestBody": _upload_form(models, "min_confidence", 0.4),
                "responses": {"200": _json("DeepStackResult", "the predictions"),
                              **_errors("DeepStackError", 404), **deepstack_errors}}},
            "/v1/vision/face": {"post": {
                "summary": "DeepStack-compatible face detection (the `faces` model)",
                "description": DEEPSTACK_KEY_NOTE, "security": KEYED,
                "requestBody": _upload_form(models, "min_confidence", 0.4),
                "responses": {"200": _json("DeepStackResult", "the faces (no labels)"),
                              **_errors("DeepStackError", 404), **deepstack_errors}}},
            **_dataset_paths(),
            **_teaching_paths(),
        },
    }
