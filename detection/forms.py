"""Reading an upload's multipart form: the image as a binary stream, whatever the client sent."""
from __future__ import annotations

import io
import math
from email.parser import BytesParser
from email.policy import HTTP

SINGLE_VALUED_FIELDS = ("image", "threshold", "model", "min_confidence", "api_key")


class BadParameter(ValueError):
    """A request parameter is missing or malformed; the message says which and why."""


class BodyTooLarge(ValueError):
    pass


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


def read_image_form(request):
    """The multipart form and its ``image`` as a binary stream, or a clear error."""
    limit = request.service.settings.max_upload_bytes
    if request.content_length and request.content_length > limit:
        raise BodyTooLarge(f"the upload is {request.content_length} bytes; the limit is {limit}")
    try:
        form = request.POST
    except ValueError as error:
        raise BadParameter(f"malformed multipart body: {error}") from None
    for name in SINGLE_VALUED_FIELDS:
        if len(form.getall(name)) > 1:
            raise BadParameter(f"send the {name} field once, not {len(form.getall(name))} times")
    field = form.get("image")
    if isinstance(field, str) and request.content_type == "multipart/form-data":
        return form, io.BytesIO(_part_bytes(request, "image"))
    if not hasattr(field, "file"):
        raise BadParameter("send the image as a multipart/form-data file field named 'image'")
    return form, field.file


def _part_bytes(request, name: str) -> bytes:
    """A multipart part sent without a file name (some DeepStack clients do): WebOb decodes it as
    text, losing binary data, so take its bytes from the body with the standard email parser."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == name:
            return part.get_payload(decode=True) or b""
    return b""
