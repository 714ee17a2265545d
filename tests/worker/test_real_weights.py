"""Real detections: the real COCO-trained YOLOX-Nano checkpoint on real photos, through the live
service. Checks decoding, orientation, resizing, coordinates in the original image and drawing."""
import io

import numpy as np
import pytest
import requests
from PIL import Image

from tests.oracle import assert_same_detections, iou
from tests.support import SHARED_CHECKPOINT, SHARED_PHOTOS, LiveServer, write_config
from tests.wide_shot import recall, wide_shot

pytestmark = [
    pytest.mark.slow, pytest.mark.real_weights,
    pytest.mark.skipif(not SHARED_CHECKPOINT.is_file(),
                       reason=f"the real YOLOX-Nano checkpoint is not at {SHARED_CHECKPOINT} "
                              "(it exists on the development machines only)"),
]

# (label, box) seen by eye on the photos; a detection must overlap its box with IoU >= 0.7.
DOG_PHOTO = {"dog": (133, 207, 326, 543), "bicycle": (52, 137, 572, 424),
             "car": (466, 78, 692, 171)}
EXPECTED_LABELS = {"eagle.jpg": {"bird"}, "grace_hopper.jpg": {"person", "tie"},
                   "kite.jpg": {"kite", "person"}, "person.jpg": {"person", "horse", "dog"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, rtmdet_checkpoint):
    directory = tmp_path_factory.mktemp("real")
    ini = write_config(directory, {"rtmdet_tiny": rtmdet_checkpoint,
                                   "yolox_nano": SHARED_CHECKPOINT,
                                   "yolox_nano_tiled": SHARED_CHECKPOINT},
                       default_model="yolox_nano", max_pixels=40_000_000,
                       max_upload_bytes=20_000_000)
    live = LiveServer(ini).start()
    yield live
    live.stop()
    live.kill_worker()


def detect(server: LiveServer, data: bytes, threshold="0.5") -> dict:
    response = server.upload(data, threshold=threshold)
    assert response.status_code == 202, response.text
    status = server.wait_until_finished(response.json()["sid"])
    assert status["state"] == "done", status
    return status


def assert_dog_photo(status: dict, scale: float = 1.0) -> None:
    best = {}
    for d in status["detections"]:
        best.setdefault(d["label"], d)
    assert set(DOG_PHOTO) <= set(best), status["detections"]
    for label, box in DOG_PHOTO.items():
        assert best[label]["score"] > 0.5
        assert iou(best[label]["bbox"], [v * scale for v in box]) >= 0.7, (label, best[label])


def dog_jpeg() -> bytes:
    return (SHARED_PHOTOS / "dog.jpg").read_bytes()


def test_dog_bicycle_and_car_where_they_are(server):
    status = detect(server, dog_jpeg())
    assert status["model"] == "yolox_nano" and status["image"] == {"width": 768, "height": 576}
    assert_dog_photo(status)


def test_only_the_classes_asked_for_are_returned_and_drawn(server):
    everything = detect(server, dog_jpeg())
    response = server.upload(dog_jpeg(), threshold="0.5", classes="Dog, car")
    only = server.wait_until_finished(response.json()["sid"])
    assert only["classes"] == ["dog", "car"]
    assert {d["label"] for d in only["detections"]} == {"dog", "car"}
    assert only["detections"] == [d for d in everything["detections"]
                                  if d["label"] in ("dog", "car")]
    drawn = {sid: np.asarray(Image.open(io.BytesIO(requests.get(
        f"{server.url}/uploads/{sid}.out.png", timeout=10).content))) for sid in
        (everything["sid"], only["sid"])}
    x1, y1, x2, _ = DOG_PHOTO["bicycle"]
    bicycle_edge = (slice(y1 + 30, y1 + 60), slice(x2 - 3, x2 + 3))  # the bicycle's right edge
    assert (drawn[everything["sid"]][bicycle_edge] != drawn[only["sid"]][bicycle_edge]).any()
    first = server.upload(dog_jpeg(), threshold="0.1", max_detections="1").json()["sid"]
    assert len(server.wait_until_finished(first)["detections"]) == 1


@pytest.mark.parametrize("photo", sorted(EXPECTED_LABELS))
def test_the_other_photos(server, photo):
    status = detect(server, (SHARED_PHOTOS / photo).read_bytes())
    assert EXPECTED_LABELS[photo] <= {d["label"] for d in status["detections"]}


def test_exif_orientation_gives_the_same_boxes_in_upright_coordinates(server):
    upright = Image.open(io.BytesIO(dog_jpeg()))
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 CCW to view": store it turned the other way
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_270).save(buffer, "JPEG", quality=95,
                                                       exif=exif.tobytes())
    status = detect(server, buffer.getvalue())
    assert status["image"] == {"width": 768, "height": 576}
    assert_dog_photo(status)


def test_a_larger_image_gets_boxes_in_its_own_pixels(server):
    upright = Image.open(io.BytesIO(dog_jpeg()))
    buffer = io.BytesIO()
    upright.resize((1536, 1152), Image.Resampling.BICUBIC).save(buffer, "PNG")
    status = detect(server, buffer.getvalue())
    assert status["image"] == {"width": 1536, "height": 1152}
    assert_dog_photo(status, scale=2.0)


def test_cmyk_jpeg_is_converted_correctly(server):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(dog_jpeg())).convert("CMYK").save(buffer, "JPEG", quality=95)
    assert_dog_photo(detect(server, buffer.getvalue()))


def test_the_drawn_result_shows_the_boxes(server):
    from detection.worker.drawing import class_color
    status = detect(server, dog_jpeg())
    drawn = np.asarray(Image.open(io.BytesIO(requests.get(server.url + status["result_url"]).content)))
    original = np.asarray(Image.open(io.BytesIO(dog_jpeg())).convert("RGB"))
    assert drawn.shape == original.shape
    dog = next(d for d in status["detections"] if d["label"] == "dog")
    x1, y1, x2, y2 = (round(v) for v in dog["bbox"])
    edge = drawn[(y1 + y2) // 2, x1]  # the middle of the box's left edge
    assert tuple(edge) == class_color(dog["class_id"])
    inside = (slice(y1 + 20, y2 - 20), slice(x1 + 20, x2 - 20))
    assert np.abs(drawn[inside].astype(int) - original[inside]).mean() < 3, "boxes, not blur"


def test_onnxruntime_and_pytorch_give_the_same_detections(server):
    """The fast path (ONNX Runtime backbone) against PyTorch alone, on every photo."""
    from detection.images import decode_image
    from detection.models import load_registry
    from detection.worker.detectors.mmdet_detector import MMDetDetector
    health = requests.get(server.url + "/health", timeout=10).json()
    assert health["worker"]["runtimes"]["yolox_nano"] == "onnxruntime"
    spec = load_registry(server.models_file, server.uploads)["yolox_nano"]
    torch_only = MMDetDetector(spec, "cpu", runtime="torch")
    for photo in sorted(SHARED_PHOTOS.glob("*.jpg")):
        status = detect(server, photo.read_bytes(), threshold="0.3")
        with open(photo, "rb") as f:
            pixels = np.asarray(decode_image(f.read(), 10**8))
        reference = [(d.label, d.score, d.bbox) for d in torch_only.detect(pixels, 0.3)]
        assert len(status["detections"]) == len(reference), photo.name
        assert_same_detections(status["detections"], reference, box_tolerance=0.5)


def test_tiles_find_small_far_objects_the_plain_model_misses(server):
    """A 2400 x 1600 wide shot of 12 objects 128 px tall: the model's 416 px view shrinks
    them to 22 px. Recall at IoU 0.5 (measured: 0 of 12 plain, 7 of 12 on 3 x 3 tiles)."""
    def best_box(rgb, label):
        found = detect(server, encoded(rgb), threshold="0.05")["detections"]
        return next(d["bbox"] for d in found if d["label"] == label)

    image, truth = wide_shot(best_box)
    data = encoded(image)
    plain = detect(server, data, threshold="0.3")
    tiled = server.wait_until_finished(server.upload(data, threshold="0.3", tiles="3")
                                       .json()["sid"])
    alias = server.wait_until_finished(server.upload(data, threshold="0.3",
                                                     model="yolox_nano_tiled").json()["sid"])
    assert (plain["tiles"], tiled["tiles"], alias["tiles"]) == (1, 3, 3)
    assert recall(truth, plain["detections"]) <= 0.1
    assert recall(truth, tiled["detections"]) >= 0.5
    assert alias["detections"] == tiled["detections"]  # the alias is the option, by name
    deepstack = requests.post(f"{server.url}/v1/vision/custom/yolox_nano_tiled",
                              files={"image": ("wide.png", data)},
                              data={"min_confidence": "0.3"}, timeout=60).json()
    assert len(deepstack["predictions"]) == len(tiled["detections"])


def encoded(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()
