"""Faces: MTCNN with the weights facenet-pytorch ships, through the same queue, worker, files
and routes as the COCO models; real detections on real photos."""
import importlib.util
import io

import numpy as np
import pytest
import requests
from PIL import Image

from tests.oracle import iou
from tests.support import ROOT, SHARED_PHOTOS, LiveServer, write_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("facenet_pytorch") is None or not SHARED_PHOTOS.is_dir(),
    reason="facenet-pytorch (make install) or ../shared/photos is missing")]

GRACE_HOPPER_FACE = (174, 120, 356, 340)  # measured once on grace_hopper.jpg (512x600)


@pytest.fixture(scope="module")
def server(tmp_path_factory, rtmdet_checkpoint):
    ini = write_config(tmp_path_factory.mktemp("faces"),
                       {"rtmdet_tiny": rtmdet_checkpoint, "faces": None})
    live = LiveServer(ini).start()
    yield live
    live.stop()
    live.kill_worker()


def photo(name: str) -> bytes:
    return (SHARED_PHOTOS / name).read_bytes()


def faces(server: LiveServer, data: bytes, threshold: str = "0.5") -> dict:
    response = server.upload(data, model="faces", threshold=threshold)
    assert response.status_code == 202, response.text
    status = server.wait_until_finished(response.json()["sid"])
    assert status["state"] == "done", status
    return status


def test_grace_hoppers_face_is_found_with_its_five_landmarks_and_drawn(server):
    status = faces(server, photo("grace_hopper.jpg"))
    assert status["model"] == "faces" and len(status["detections"]) == 1
    face = status["detections"][0]
    assert face["label"] == "face" and face["score"] > 0.99
    assert iou(face["bbox"], GRACE_HOPPER_FACE) >= 0.5
    x1, y1, x2, y2 = face["bbox"]
    assert len(face["landmarks"]) == 5
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face["landmarks"])
    drawn = np.asarray(Image.open(io.BytesIO(requests.get(
        server.url + status["result_url"], timeout=10).content)))
    original = np.asarray(Image.open(io.BytesIO(photo("grace_hopper.jpg"))).convert("RGB"))
    left_eye = [round(v) for v in face["landmarks"][0]]
    assert (drawn[left_eye[1], left_eye[0]] != original[left_eye[1], left_eye[0]]).any()


@pytest.mark.parametrize("name, size, least", [("grace_hopper.jpg", None, 1),
                                               ("grace_hopper.jpg", (1280, 960), 1),
                                               ("person.jpg", None, 0)])
def test_the_faces_are_facenet_pytorchs_own(name, size, least):
    """The worker's MTCNN (its networks channels-last) finds what facenet-pytorch's ``detect``
    does, the oracle, to within 1e-3 px."""
    from detection.models import load_registry
    from detection.worker.detectors import load_detector
    from detection.worker.detectors.face_detector import _import_mtcnn

    image = Image.open(io.BytesIO(photo(name))).convert("RGB")
    rgb = np.asarray(image.resize(size) if size else image)
    spec = load_registry(ROOT / "configs" / "models.toml", ROOT / "checkpoints")["faces"]
    ours = load_detector(spec, "cpu").detect(rgb, threshold=0.0)
    boxes, scores, points = _import_mtcnn()(keep_all=True, device="cpu").detect(
        rgb, landmarks=True)
    assert len(ours) == (0 if boxes is None else len(boxes)) >= least
    if boxes is not None:
        order = np.argsort(-scores, kind="stable")
        for face, box, score, landmarks in zip(ours, boxes[order], scores[order], points[order]):
            height, width = rgb.shape[:2]
            clipped = np.clip(box, 0, [width, height, width, height])
            assert np.abs(np.array(face.bbox) - clipped).max() < 1e-3
            assert abs(face.score - score) < 1e-4
            assert np.abs(np.array(face.landmarks) - landmarks).max() < 1e-3


def test_an_image_too_small_for_a_face_has_none(server):
    tiny = io.BytesIO()
    Image.new("RGB", (10, 10), (200, 150, 120)).save(tiny, format="PNG")
    assert faces(server, tiny.getvalue())["detections"] == []


@pytest.mark.parametrize("name", ["dog.jpg", "eagle.jpg"])
def test_photos_without_people_have_no_face(server, name):
    assert faces(server, photo(name), threshold="0.9")["detections"] == []


def test_rotated_and_scaled_uploads_give_the_same_face(server):
    upright = Image.open(io.BytesIO(photo("grace_hopper.jpg"))).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated, doubled = io.BytesIO(), io.BytesIO()
    stored.save(rotated, format="JPEG", exif=exif.tobytes(), quality=95)
    upright.resize((upright.width * 2, upright.height * 2)).save(doubled, format="PNG")
    face = faces(server, rotated.getvalue())["detections"][0]
    assert iou(face["bbox"], GRACE_HOPPER_FACE) >= 0.5
    big = faces(server, doubled.getvalue())["detections"][0]
    assert iou([v / 2 for v in big["bbox"]], GRACE_HOPPER_FACE) >= 0.5


@pytest.mark.parametrize("files", [
    lambda data: {"image": data},  # deepstack-python: file name "image", no Content-Type
    lambda data: {"image": (None, data)},  # no file name at all
], ids=["deepstack-python", "no file name"])
def test_the_deepstack_face_route_as_its_clients_call_it(server, files):
    response = requests.post(server.url + "/v1/vision/face", files=files(photo("grace_hopper.jpg")),
                             timeout=60)
    body = response.json()
    assert response.status_code == 200 and body["success"] is True, body
    [prediction] = body["predictions"]
    assert set(prediction) == {"confidence", "x_min", "y_min", "x_max", "y_max"}
    assert all(isinstance(prediction[k], int) for k in ("x_min", "y_min", "x_max", "y_max"))
    box = [prediction[k] for k in ("x_min", "y_min", "x_max", "y_max")]
    assert prediction["confidence"] > 0.9 and iou(box, GRACE_HOPPER_FACE) >= 0.5


def test_faces_is_listed_as_installed_with_its_one_class(server):
    listed = requests.get(server.url + "/models", timeout=10).json()["models"]
    models = {model["name"]: model for model in listed}
    assert models["faces"]["available"] and models["faces"]["classes"] == ["face"]
