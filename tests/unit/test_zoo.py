"""The zoo: metafile lookups, and downloads with progress, hash check and atomic writes."""
import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from detection.models import ModelsFile, load_registry, mmdet_configs_dir
from detection.zoo import DownloadError, download, find_metafile_entry
from tests.support import ROOT, free_port


def test_shipped_models_resolve_to_mmdet_configs_and_zoo_urls(tmp_path):
    registry = load_registry(ROOT / "configs" / "models.toml", tmp_path)
    assert {"rtmdet_tiny", "faster_rcnn_r50", "mask_rcnn_r50", "rtmdet_ins_tiny",
            "yolox_nano"} <= set(registry)
    tiny = registry["rtmdet_tiny"]
    assert tiny.config.is_file() and tiny.box_ap and tiny.mask_ap is None
    assert tiny.weights_url.startswith("https://download.openmmlab.com/")
    assert tiny.checkpoint == tmp_path / tiny.weights_url.rsplit("/", 1)[1]
    assert registry["mask_rcnn_r50"].mask_ap and registry["faster_rcnn_r50"].weights_url
    assert registry["rtmdet_ins_tiny"].masks and not tiny.masks


def test_models_toml_is_read_again_when_it_changes_and_kept_when_broken(tmp_path, caplog):
    path = tmp_path / "models.toml"
    path.write_text('[tiny]\nconfig = "rtmdet/rtmdet_tiny_8xb32-300e_coco.py"\n')
    models_file = ModelsFile(path, tmp_path)
    assert list(models_file.models) == ["tiny"]
    path.write_text(path.read_text() + '[nano]\nconfig = "yolox/yolox_nano_8xb8-300e_coco.py"\n')
    assert list(models_file.models) == ["tiny", "nano"]
    path.write_text(path.read_text() + "[broken\n")  # half-edited: the last good models stay
    assert list(models_file.models) == ["tiny", "nano"]
    assert list(models_file.models) == ["tiny", "nano"]
    assert len([r for r in caplog.records if "cannot read" in r.message]) == 1  # once a change


def test_a_config_outside_mmdet_has_no_zoo_entry(tmp_path):
    config = tmp_path / "mine.py"
    config.write_text("")
    assert find_metafile_entry(config, mmdet_configs_dir()) is None


@pytest.fixture
def file_server(tmp_path):
    """A loopback HTTP server for files in tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_checks_the_hash_in_the_name_and_writes_atomically(file_server, tmp_path):
    served, url = file_server
    content = b"weights" * 10_000
    name = f"model_20240101-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    (served / name).write_bytes(content)
    target = tmp_path / "checkpoints" / name
    download(f"{url}/{name}", target)
    assert target.read_bytes() == content
    assert [p.name for p in target.parent.iterdir()] == [name]


def test_a_corrupted_download_is_refused_and_leaves_nothing(file_server, tmp_path):
    served, url = file_server
    name = "model_20240101-deadbeef.pth"
    (served / name).write_bytes(b"not what was published")
    target = tmp_path / "checkpoints" / name
    with pytest.raises(DownloadError, match="corrupted"):
        download(f"{url}/{name}", target)
    assert not any(target.parent.iterdir())


def test_no_network_names_the_url_and_where_to_put_the_file(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/rtmdet.pth"  # nothing listens there
    target = tmp_path / "rtmdet.pth"
    with pytest.raises(DownloadError) as error:
        download(url, target, timeout=5)
    assert url in str(error.value) and str(target) in str(error.value)
    assert not Path(target).exists()
