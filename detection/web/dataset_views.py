"""The datasets' views: HTTP only. A dataset is kept by ``request.service.datasets``
(``detection/datasets/store.py``); images come as a multipart upload or as an upload already on
the server (its ``sid``), boxes as JSON."""
from __future__ import annotations

from pyramid.response import FileResponse
from pyramid.view import view_config

from ..datasets.store import HELD_OUT, TRAIN, DatasetImage, ImageNotFound
from .errors import JobNotFound
from .forms import (
    BadParameter,
    only_fields,
    parse_flag,
    parse_json_field,
    read_json,
    require_image,
)
from .security import API_PERMISSION

# The second: what Windows browsers say; the third: what tools say of bytes they do not know.
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")


def _url(request, route: str, **parts: str) -> str:
    """Relative, or under ``public_url``: never built from the Host header."""
    return request.service.settings.public_url + request.route_path(route, **parts)


def _dataset(request, name: str) -> dict:
    summary = request.service.datasets.summary(name)
    return {**summary, "url": _url(request, "dataset", name=name),
            "images_url": _url(request, "dataset_images", name=name),
            "coco_url": _url(request, "dataset_coco", name=name)}


def _image(request, name: str, image: DatasetImage) -> dict:
    return {**image.as_json(),
            "url": _url(request, "dataset_image", name=name, image_id=image.id),
            "image_url": _url(request, "dataset_image_file", name=name, image_id=image.id)}


@view_config(route_name="datasets", request_method="GET", renderer="json",
             permission=API_PERMISSION)
def list_datasets(request):
    store = request.service.datasets
    return {"datasets": [_dataset(request, name) for name in store.names()]}


@view_config(route_name="datasets", request_method="POST", renderer="json",
             permission=API_PERMISSION)
def create_dataset(request):
    """``{"name": N, "classes": [...]}`` -> 201 and the new dataset."""
    body = only_fields(read_json(request), {"name", "classes"}, {"name"})
    created = request.service.datasets.create(body["name"], body.get("classes", []))
    request.response.status_int = 201
    request.response.location = _url(request, "dataset", name=created["name"])
    return _dataset(request, created["name"])


@view_config(route_name="dataset", request_method="GET", renderer="json",
             permission=API_PERMISSION)
def show_dataset(request):
    return _dataset(request, request.matchdict["name"])


@view_config(route_name="dataset", request_method="DELETE", renderer="json",
             permission=API_PERMISSION)
def delete_dataset(request):
    name = request.matchdict["name"]
    request.service.datasets.delete(name)
    return {"deleted": name}


@view_config(route_name="dataset_images", request_method="GET", renderer="json",
             permission=API_PERMISSION)
def list_images(request):
    name = request.matchdict["name"]
    return {"images": [_image(request, name, image)
                       for image in request.service.datasets.images(name)]}


@view_config(route_name="dataset_images", request_method="POST", renderer="json",
             permission=API_PERMISSION)
def add_image(request):
    """A multipart ``image`` with ``annotations`` (a JSON text field), or JSON ``{"sid": SID,
    "annotations": [...]}`` for an upload already here; ``add_classes`` lets new labels in."""
    name = request.matchdict["name"]
    service = request.service
    service.datasets.require(name)  # 404 before the image is decoded
    if request.content_type == "multipart/form-data":
        form = request.upload_form
        png, width, height = service.image_for_dataset(require_image(form))
        annotations = parse_json_field(form.fields.get("annotations"), "annotations")
        add_classes, source = form.fields.get("add_classes"), None
    else:
        body = only_fields(read_json(request), {"sid", "annotations", "add_classes"}, {"sid"})
        source = body["sid"]
        if not isinstance(source, str) or (stored := service.stored_upload(source)) is None:
            raise JobNotFound(f"no upload with id {source!r:.80} (or its image was pruned)")
        png, width, height = stored
        annotations, add_classes = body.get("annotations"), body.get("add_classes")
    image = service.datasets.add_image(name, png, width, height,
                                       [] if annotations is None else annotations,
                                       parse_flag(add_classes, "add_classes"), source)
    request.response.status_int = 201
    request.response.location = _url(request, "dataset_image", name=name, image_id=image.id)
    return _image(request, name, image)


@view_config(route_name="dataset_image", request_method="GET", renderer="json",
             permission=API_PERMISSION)
def show_image(request):
    name, image_id = request.matchdict["name"], request.matchdict["image_id"]
    return _image(request, name, request.service.datasets.image(name, image_id))


@view_config(route_name="dataset_image", request_method="PUT", renderer="json",
             permission=API_PERMISSION)
def correct_image(request):
    """``{"annotations": [...], "add_classes": bool}``: the image's boxes, replaced."""
    name, image_id = request.matchdict["name"], request.matchdict["image_id"]
    body = only_fields(read_json(request), {"annotations", "add_classes"}, {"annotations"})
    image = request.service.datasets.set_boxes(name, image_id, body["annotations"],
                                               parse_flag(body.get("add_classes"), "add_classes"))
    return _image(request, name, image)


@view_config(route_name="dataset_image", request_method="DELETE", renderer="json",
             permission=API_PERMISSION)
def remove_image(request):
    name, image_id = request.matchdict["name"], request.matchdict["image_id"]
    request.service.datasets.remove_image(name, image_id)
    return {"deleted": image_id}


@view_config(route_name="dataset_image_file", request_method="GET", renderer="json",
             permission=API_PERMISSION)
def image_file(request):
    name, image_id = request.matchdict["name"], request.matchdict["image_id"]
    path = request.service.datasets.image_file(name, image_id)
    try:
        return FileResponse(str(path), request, content_type="image/png")
    except FileNotFoundError:  # removed since
        raise ImageNotFound(f"no image {image_id!r} in dataset {name!r}") from None


@view_config(route_name="dataset_coco", request_method="GET", renderer="json",
             permission=API_PERMISSION)
def coco_export(request):
    """COCO annotations (the format ``finetune`` reads); each ``file_name`` is the image's URL
    relative to this one. ``?split=train`` or ``held_out``: that split only."""
    unknown = set(request.GET) - {"split"}
    if unknown:
        raise BadParameter(f"unknown query parameters: {', '.join(sorted(unknown))} (only "
                           "split)")
    split = request.GET.get("split")
    if split not in (None, TRAIN, HELD_OUT):
        raise BadParameter(f"split must be {TRAIN} or {HELD_OUT}, got {split!r:.40}")
    request.response.cache_control = "no-store"
    return request.service.datasets.coco(request.matchdict["name"],
                                         lambda image: f"images/{image.id}.png", split)


@view_config(route_name="dataset_import", request_method="POST", renderer="json",
             permission=API_PERMISSION)
def import_zip(request):
    """A zip of a COCO annotation file and its images (``Content-Type: application/zip`` or
    ``application/octet-stream``): all its images are added, or none; the dataset is made if
    needed."""
    if request.content_type not in ZIP_TYPES:
        raise BadParameter("send the zip as the body, with Content-Type: application/zip")
    name = request.matchdict["name"]
    added = request.service.import_dataset(name, request.body_file)
    request.response.status_int = 201
    request.response.location = _url(request, "dataset", name=name)
    return {"imported": added, "dataset": _dataset(request, name)}


@view_config(route_name="review", request_method="GET", renderer="json",
             permission=API_PERMISSION)
def review_list(request):
    """Uploads kept for a person to correct (a model's ``review`` rule), newest first."""
    request.response.cache_control = "no-store"
    return {"items": [{**item, "image_url": _url(request, "review_image", sid=item["sid"])}
                      for item in request.service.review.items()]}


@view_config(route_name="review_image", request_method="GET", renderer="json",
             permission=API_PERMISSION)
def review_image(request):
    path = request.service.review.image(request.matchdict["sid"])
    try:
        if path is None:
            raise FileNotFoundError(request.matchdict["sid"])
        return FileResponse(str(path), request, content_type="image/png")
    except FileNotFoundError:  # none, or dismissed since
        raise JobNotFound(f"no upload {request.matchdict['sid']!r:.80} to review") from None


@view_config(route_name="review_item", request_method="DELETE", renderer="json",
             permission=API_PERMISSION)
def dismiss_review(request):
    """Reviewed (saved to a dataset, or not worth it): off the list."""
    sid = request.matchdict["sid"]
    if not request.service.review.dismiss(sid):
        raise JobNotFound(f"no upload {sid!r:.80} to review")
    return {"dismissed": sid}
