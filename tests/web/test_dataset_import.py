"""A dataset sent as a zip (``POST /datasets/NAME/import``): a COCO annotation file and its
images are added whole, and every hostile zip (slips out of its folder, links, bombs, thousands of
files, images named outside it, broken images, limits) is a clear error that leaves nothing
behind: no dataset, no image, no unpacked file."""
import io
import json
import stat
import zipfile
from pathlib import Path

import pytest
import webtest

from tests.shapes import make_dataset
from tests.support import app_for, png_bytes


@pytest.fixture
def app(make_config, fake_checkpoint):
    ini = make_config({"rtmdet_tiny": fake_checkpoint}, spawn_worker="false",
                      max_dataset_images=8, max_import_mb=2)
    return webtest.TestApp(app_for(ini))


def zip_of(files: dict[str, bytes], method=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def shapes_zip(tmp_path: Path, images: int, folder: str = "") -> tuple[bytes, dict]:
    """``images`` shapes as an exported dataset is laid out (under ``folder`` in the zip)."""
    annotations = make_dataset(tmp_path / "shapes", images)
    files = {f"{folder}{path.relative_to(annotations.parent)}": path.read_bytes()
             for path in annotations.parent.rglob("*") if path.is_file()}
    return zip_of(files, zipfile.ZIP_DEFLATED), json.loads(annotations.read_text())


def send(app, name: str, body: bytes, status: int, content_type="application/zip"):
    return app.post(f"/datasets/{name}/import", body, content_type=content_type, status=status)


def leftovers(app) -> list[str]:
    """Every file under the datasets folder but its locks."""
    root = app.app.registry.service.settings.datasets_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.name != ".lock" and p.parent.name != ".locks")


def boxes_of(coco: dict) -> list[tuple]:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    size = {i["id"]: (i["width"], i["height"]) for i in coco["images"]}
    return sorted((names[a["category_id"]], *size[a["image_id"]], *map(float, a["bbox"]))
                  for a in coco["annotations"])


def test_a_zip_of_coco_annotations_and_images_becomes_a_dataset(app, tmp_path):
    body, original = shapes_zip(tmp_path, 6, folder="export/")
    answer = send(app, "shapes", body, 201)
    assert answer.headers["Location"].endswith("/datasets/shapes")
    assert answer.json["imported"] == 6
    summary = answer.json["dataset"]
    assert summary["images"] == 6 and summary["split"] == {"train": 5, "held_out": 1}
    assert sorted(summary["classes"]) == sorted(c["name"] for c in original["categories"])
    assert sum(summary["boxes"].values()) == len(original["annotations"])
    exported = app.get("/datasets/shapes/coco.json").json
    assert boxes_of(exported) == boxes_of(original)  # same boxes, same images' sizes
    # A second zip adds to the dataset; its new classes join the list.
    more = zip_of({"a.json": json.dumps({
        "images": [{"id": 1, "file_name": "one.png", "width": 320, "height": 240}],
        "categories": [{"id": 7, "name": "kite"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 5, 50, 40]}]}),
        "one.png": png_bytes()})
    assert send(app, "shapes", more, 201).json["dataset"]["images"] == 7
    assert "kite" in app.get("/datasets/shapes").json["classes"]
    assert not [f for f in leftovers(app) if f.startswith(".import-")]


COCO_ONE = {"images": [{"id": 1, "file_name": "img.png", "width": 320, "height": 240}],
            "categories": [{"id": 1, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9]}]}


def coco_naming(file_name: str) -> bytes:
    document = json.loads(json.dumps(COCO_ONE))
    document["images"][0]["file_name"] = file_name
    return json.dumps(document).encode()


def corrupt_deflate() -> bytes:
    """A zip whose image's deflated bytes are damaged (its header and directory intact)."""
    body = bytearray(zip_of({"a.json": coco_naming("img.png"), "img.png": png_bytes() * 4},
                            zipfile.ZIP_DEFLATED))
    at = body.index(b"img.png", 40) + len("img.png") + 20  # inside the image's data
    body[at:at + 16] = bytes(range(200, 216))
    return bytes(body)


def symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.json", json.dumps(COCO_ONE))
        link = zipfile.ZipInfo("img.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def hostile_zips(server_image: Path) -> dict[str, tuple[bytes, int, str]]:
    """name: (body, status, a part of the error)."""
    image = png_bytes()
    return {
        "not a zip": (b"PK\x03\x04 truncated" + bytes(100), 400, "not a readable zip"),
        "slip with ..": (zip_of({"a.json": coco_naming("img.png"), "img.png": image,
                                 "../../evil.png": image}), 400, "not a plain relative path"),
        "absolute entry": (zip_of({"a.json": coco_naming("img.png"), "/tmp/evil.png": image}),
                           400, "not a plain relative path"),
        "backslash entry": (zip_of({"a.json": coco_naming("img.png"), "..\\evil.png": image}),
                            400, "not a plain relative path"),
        "drive entry": (zip_of({"a.json": coco_naming("img.png"), "C:/evil.png": image}),
                        400, "not a plain relative path"),
        "symbolic link": (symlink_zip(), 400, "symbolic link"),
        "file_name up and out": (zip_of({"a.json": coco_naming("../../../etc/passwd"),
                                         "img.png": image}), 400, "outside the zip's folder"),
        "file_name of a server image": (zip_of({"a.json": coco_naming(str(server_image)),
                                                "img.png": image}), 400, "outside the zip"),
        "two annotation files": (zip_of({"a.json": coco_naming("img.png"), "b.json": b"{}",
                                         "img.png": image}), 400, "exactly one"),
        "no annotation file": (zip_of({"img.png": image}), 400, "exactly one"),
        "a name twice": (zip_of({"a.json": coco_naming("img.png"), "img.png": image,
                                 "IMG.png": image}), 400, "twice"),
        "file and folder": (zip_of({"a.json": coco_naming("img.png"), "img.png": image,
                                    "img.png/x.png": image}), 400, "both a file and a folder"),
        "bomb": (zip_of({"a.json": coco_naming("img.png"), "img.png": bytes(5 << 20)},
                        zipfile.ZIP_DEFLATED), 413, "inflate to more than 2097152 bytes"),
        "bombs together": (zip_of({"a.json": coco_naming("img.png"),
                                   **{f"{n}.bin": bytes(600_000) for n in range(4)}},
                                  zipfile.ZIP_DEFLATED), 413, "inflate to more than"),
        "thousands of files": (zip_of({f"{n}.png": b"" for n in range(2000)}), 413,
                               "lists more files than the 9"),
        "a few files too many": (zip_of({f"{n}.png": b"" for n in range(10)}), 413,
                                 "has 10 files; at most 9"),
        "a broken image": (zip_of({"a.json": coco_naming("img.png"),
                                   "img.png": image[:60]}), 400, "img.png"),
        "not COCO": (zip_of({"a.json": b"[1, 2]", "img.png": image}), 400,
                     "not a COCO annotation file"),
        "box outside": (zip_of({"a.json": json.dumps({**COCO_ONE, "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [300, 1, 90, 9]}]}),
            "img.png": image}), 400, "outside its image"),
        "over the dataset's images": (zip_of({"a.json": json.dumps({
            **COCO_ONE, "images": [{"id": n, "file_name": f"{n}.png", "width": 320,
                                    "height": 240} for n in range(1, 10)]}),
            "1.png": image}), 409, "lists 9 images; a dataset holds at most 8"),
        "an image named twice": (zip_of({"a.json": json.dumps({
            **COCO_ONE, "images": [{"id": n, "file_name": "img.png", "width": 320,
                                    "height": 240} for n in (1, 2)]}),
            "img.png": image}), 400, "named twice"),
        "not an image format training reads": (zip_of({"a.json": coco_naming("img.gif"),
                                                       "img.gif": png_bytes(format="GIF")}),
                                               422, "img.gif: not an image training reads"),
        "bzip2": (zip_of({"a.json": coco_naming("img.png"), "img.png": image},
                         zipfile.ZIP_BZIP2), 400, "compression method 12"),
        "deep folders": (zip_of({"a.json": coco_naming("img.png"), "img.png": image,
                                 "/".join(["d"] * 12) + "/x.png": image}), 400,
                         "folders deep"),
        "a long name": (zip_of({"a.json": coco_naming("img.png"), "n" * 300 + ".png": image}),
                        400, "over 255 bytes"),
        "a box over the edge": (zip_of({"a.json": json.dumps({**COCO_ONE, "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 321, 240]}]}),
            "img.png": image}), 400, "img.png:"),
        "JSON nested too deep": (zip_of({"a.json": b"[" * 100_000, "img.png": image},
                                        zipfile.ZIP_DEFLATED), 400, "nested too deep"),
        "corrupt deflate data": (corrupt_deflate(), 400, "not a readable zip"),
    }


@pytest.mark.parametrize("case", list(hostile_zips(Path("/x"))))
def test_a_hostile_zip_is_refused_and_leaves_nothing(app, case, tmp_path):
    server_image = tmp_path / "secret.png"
    server_image.write_bytes(png_bytes())
    body, status, error = hostile_zips(server_image)[case]
    refused = send(app, "pets", body, status)
    assert error in refused.json["error"]
    datasets = app.app.registry.service.settings.datasets_dir
    assert str(datasets) not in refused.json["error"]  # no server path in it
    app.get("/datasets/pets", status=404)
    assert leftovers(app) == []
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_a_failed_import_leaves_an_existing_dataset_as_it_was(make_config, fake_checkpoint):
    import numpy as np
    from PIL import Image
    ini = make_config({"rtmdet_tiny": fake_checkpoint}, spawn_worker="false", max_datasets_mb=1)
    app = webtest.TestApp(app_for(ini))
    app.post_json("/datasets", {"name": "pets", "classes": ["cat"]}, status=201)
    noise = io.BytesIO()  # 1.5 MB once stored: past the datasets' 1 MiB
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
                    ).save(noise, format="PNG")
    sizes = {1: (320, 240), 2: (700, 700)}
    two = {"images": [{"id": n, "file_name": f"{n}.png", "width": sizes[n][0],
                       "height": sizes[n][1]} for n in (1, 2)],
           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "zebra"}],
           "annotations": [{"id": n, "image_id": n, "category_id": n, "bbox": [1, 1, 9, 9]}
                           for n in (1, 2)]}
    # The second image does not fit: the first, added already, is taken out again, and the
    # class it brought.
    body = zip_of({"a.json": json.dumps(two), "1.png": png_bytes(), "2.png": noise.getvalue()})
    assert "budget" in send(app, "pets", body, 507).json["error"]
    after = app.get("/datasets/pets").json
    assert after["images"] == 0 and after["classes"] == ["cat"]
    assert leftovers(app) == ["pets/dataset.json"]


def test_the_body_is_bounded_declared_or_not(app, make_config, fake_checkpoint, tmp_path):
    big = zip_of({"a.bin": bytes(2_200_000)})  # stored: the zip itself is over 2 MiB
    assert "2097152" in send(app, "pets", big, 413).json["error"]
    assert "a dataset's name" in send(app, "..", zip_of({}), 400).json["error"]
    assert "application/zip" in send(app, "pets", b"{}", 400, "application/json").json["error"]
    # Undeclared (chunked): counted as it is read.
    from detection.datasets.archive import ArchiveLimits, ArchiveTooLarge
    from detection.datasets.coco_files import import_zip
    store = app.app.registry.service.datasets
    with pytest.raises(ArchiveTooLarge, match="over 1000 bytes"):
        import_zip(store, "pets", io.BytesIO(big), ArchiveLimits(1000, 10), 10**7)
    assert leftovers(app) == []
