"""Reading an upload's multipart form: parsed once, with limits, before anything else touches it.

WebOb's ``request.POST`` opens a temp file per file part and recurses into nested multiparts, so
a small hostile body could exhaust file descriptors or the stack. Here the body is parsed by
``multipart`` (a streaming parser with limits) into memory, at most ``max_upload_bytes`` of it,
and ``request.upload_form`` (reified) is the only way views and the security policy read it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import multipart

from ..jobs.job import MAX_DETECTIONS, MAX_TILES, MAX_VIDEO_FPS
from ..models import ModelSpec

# The fields any route reads. Other parts are tolerated (some clients add their own) but counted.
TEXT_FIELDS = ("threshold", "model", "min_confidence", "api_key", "classes", "max_detections",
               "annotations", "add_classes", "callback_url", "tiles", "fps", "track")
IMAGE_FIELD = "image"
MAX_PARTS = 16
MAX_TEXT_FIELD_BYTES = 4096  # COCO's 80 class names, comma-separated, are 700 bytes
MAX_JSON_BYTES = 1 << 20  # a JSON body; a dataset image's 1000 boxes are ~60 KB
FIELD_BYTES = {"annotations": MAX_JSON_BYTES}  # text fields allowed more than the others
MAX_DETECTIONS_LIMIT = 1000
MAX_STATUS_WAIT = 60.0  # seconds a ?wait= long-poll may ask for
MAX_PART_HEADERS = 8
MAX_PART_HEADER_BYTES = 4096
# What multipart framing may add to an image of max_upload_bytes (boundaries, part headers).
FORM_OVERHEAD_BYTES = MAX_PARTS * (MAX_PART_HEADERS * MAX_PART_HEADER_BYTES // 4 + 256)


class BadParameter(ValueError):
    """A request parameter is missing or malformed; the message says which and why."""


class UnsupportedMedia(ValueError):
    """A body of a kind this route does not take (a video on an image-only route)."""


class BodyTooLarge(ValueError):
    """The body, or one of its parts, is over a limit."""


@dataclass(frozen=True)
class JobRequest:
    """What a client asks of a job: a model, a threshold, only some classes (none: all), and at
    most so many detections."""
    model: ModelSpec
    threshold: float
    classes: tuple[str, ...] = ()
    max_detections: int = MAX_DETECTIONS
    callback_url: str | None = None  # told of the job's end (``detection.callbacks``)
    tiles: int | None = None  # a grid of tiles to detect on too (None: the model's own)


@dataclass
class UploadForm:
    fields: dict[str, str] = field(default_factory=dict)
    image: bytes | None = None  # the first image part
    images: list[tuple[str, bytes]] = field(default_factory=list)  # all, with file names


def parse_number(raw: str | None, name: str, high: float, default: float) -> float:
    """``raw`` as a number in [0, high]; ``default`` when it is absent or blank."""
    if raw is None or not str(raw).strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= high:  # also rejects nan
        raise BadParameter(f"{name} must be a number in [0, {high:g}], got {raw!r}")
    return value


def parse_count(raw: str | None, name: str, high: int, default: int) -> int:
    """``raw`` as a whole number in [1, high]; ``default`` when it is absent or blank."""
    if raw is None or not str(raw).strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= high:
        raise BadParameter(f"{name} must be a whole number in [1, {high}], got {raw!r}")
    return value


def parse_classes(raw: str | None, model: ModelSpec) -> tuple[str, ...]:
    """``person,car``: labels of ``model`` (any case), as it names them; none or blank: all."""
    names = {name.lower(): name for name in model.classes}
    asked = [word.strip() for word in (raw or "").split(",") if word.strip()]
    unknown = [word for word in asked if word.lower() not in names]
    if unknown:
        raise BadParameter(f"model {model.name} has no class {', '.join(map(repr, unknown))}; "
                           f"its classes: {', '.join(model.classes)}")
    return tuple(dict.fromkeys(names[word.lower()] for word in asked))


def job_request(form: UploadForm, model: ModelSpec, threshold: float) -> JobRequest:
    """The job a form asks for, its ``classes`` and ``max_detections`` checked."""
    return JobRequest(model, threshold, parse_classes(form.fields.get("classes"), model),
                      parse_count(form.fields.get("max_detections"), "max_detections",
                                  MAX_DETECTIONS_LIMIT, MAX_DETECTIONS),
                      form.fields.get("callback_url", "").strip() or None,
                      parse_tiles(form.fields.get("tiles"), model))


def parse_fps(raw: str | None) -> float | None:
    """A video's ``fps``: frames a second to detect (0.1 to 30); absent: the setting's."""
    if raw is None or not str(raw).strip():
        return None
    fps = parse_number(raw, "fps", MAX_VIDEO_FPS, 0.0)
    if fps < 0.1:
        raise BadParameter(f"fps must be a number in [0.1, {MAX_VIDEO_FPS}], got {raw!r}")
    return fps


def parse_tiles(raw: str | None, model: ModelSpec) -> int | None:
    """``tiles``: N (1 to MAX_TILES) for an N x N grid, 1 for none; absent: the model's own."""
    if raw is None or not str(raw).strip():
        return None
    tiles = parse_count(raw, "tiles", MAX_TILES, 1)
    if tiles > 1 and model.masks:
        raise BadParameter(f"model {model.name} has masks: tiles work on boxes only (send "
                           "tiles=1 or none)")
    return tiles


def check_body_size(request, limit: int) -> None:
    """413 for a declared body over the upload limit, before any byte of it is read."""
    length = request.content_length or 0
    if length > limit + FORM_OVERHEAD_BYTES:
        raise BodyTooLarge(f"the upload is {length} bytes; the limit is {limit}")


def read_upload_form(request) -> UploadForm:
    """The request's multipart form (``request.upload_form``), or a clear error."""
    limit = request.service.settings.max_upload_bytes
    check_body_size(request, limit)
    if request.content_type != "multipart/form-data":
        raise BadParameter("send the image as a multipart/form-data file field named 'image'")
    _, options = multipart.parse_options_header(request.headers["Content-Type"])
    boundary = options.get("boundary")
    if not boundary:
        raise BadParameter("malformed multipart body: no boundary in its Content-Type")
    parser = multipart.MultipartParser(
        request.body_file, boundary, content_length=request.content_length or -1,
        part_limit=MAX_PARTS, header_limit=MAX_PART_HEADERS,
        headersize_limit=MAX_PART_HEADER_BYTES, partsize_limit=limit,
        # Everything stays in memory (the body is capped): no temp file per part.
        spool_limit=limit + FORM_OVERHEAD_BYTES, memory_limit=limit + FORM_OVERHEAD_BYTES)
    form = UploadForm()
    try:
        for part in parser:
            _take_part(form, part, limit)
    except multipart.ParserLimitReached as error:
        raise BodyTooLarge(f"the form is over a limit: {error} (at most {MAX_PARTS} parts, "
                           f"{MAX_PART_HEADERS} headers a part, an image of {limit} bytes)") from None
    except multipart.MultipartError as error:
        raise BadParameter(f"malformed multipart body: {error}") from None
    return form


def read_json(request) -> dict:
    """The request's JSON object body (at most ``MAX_JSON_BYTES``), or a clear error."""
    if request.content_type != "application/json":
        raise BadParameter("send a JSON object (Content-Type: application/json)")
    body = request.body_file.read(MAX_JSON_BYTES + 1)
    if len(body) > MAX_JSON_BYTES:
        raise BodyTooLarge(f"the JSON body is over {MAX_JSON_BYTES} bytes")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise BadParameter(f"the body is not JSON: {error}") from None
    except RecursionError:
        raise BadParameter("the body is JSON nested too deep") from None
    if not isinstance(document, dict):
        raise BadParameter("the body must be a JSON object")
    return document


def only_fields(document: dict, allowed: set[str], required: set[str] = frozenset()) -> dict:
    """A JSON body with no field but ``allowed`` ones, and every ``required`` one."""
    unknown, missing = set(document) - allowed, required - set(document)
    if unknown:
        raise BadParameter(f"unknown fields: {', '.join(sorted(unknown))} (allowed: "
                           f"{', '.join(sorted(allowed))})")
    if missing:
        raise BadParameter(f"missing fields: {', '.join(sorted(missing))}")
    return document


def parse_json_field(raw: str | None, name: str) -> object:
    """A form field that holds JSON (a dataset image's ``annotations``); absent: None."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise BadParameter(f"the {name} field is not JSON: {error}") from None
    except RecursionError:
        raise BadParameter(f"the {name} field is JSON nested too deep") from None


def parse_flag(raw: object, name: str, default: bool = False) -> bool:
    """true/false (JSON), or a form field's true, false, 1, 0; absent or blank: ``default``."""
    if isinstance(raw, bool):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    if isinstance(raw, str) and raw.strip().lower() in ("true", "1", "false", "0"):
        return raw.strip().lower() in ("true", "1")
    raise BadParameter(f"{name} must be true or false, got {raw!r:.40}")


def require_image(form: UploadForm) -> bytes:
    if form.image is None:
        raise BadParameter("send the image as a multipart/form-data file field named 'image'")
    if len(form.images) > 1:
        raise BadParameter("send the image field once (several images: POST /upload?batch=1, "
                           "or one zip of them)")
    return form.image


def _take_part(form: UploadForm, part: multipart.MultipartPart, limit: int) -> None:
    if part.name == IMAGE_FIELD:
        # Bytes as sent, with or without a file name (some DeepStack clients send none).
        form.images.append((part.filename or "", part.file.getvalue()))
        form.image = form.images[0][1]
    elif part.name in TEXT_FIELDS:
        if part.name in form.fields:
            raise BadParameter(f"send the {part.name} field once, not several times")
        field_limit = FIELD_BYTES.get(part.name, MAX_TEXT_FIELD_BYTES)
        if part.size > field_limit:
            raise BadParameter(f"the {part.name} field is over {field_limit} bytes")
        try:
            form.fields[part.name] = part.value
        except (UnicodeDecodeError, LookupError):  # not in its charset, or no such charset
            raise BadParameter(f"the {part.name} field is not text in a known charset") from None
    part.close()


def includeme(config) -> None:
    config.add_request_method(read_upload_form, "upload_form", reify=True)
