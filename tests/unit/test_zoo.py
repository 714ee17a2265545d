"""The zoo: metafile lookups, and downloads with progress, hash check and atomic writes."""
import concurrent.futures
import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from detection.models import ModelsFile, load_registry, mmdet_configs_dir
from detection.zoo import DownloadError, download, find_metafile_entry, install
from tests.support import ROOT, FileServer, free_port


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


def test_a_download_cut_short_is_refused_and_installs_nothing(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "model.pth").write_bytes(b"w" * 100_000)  # no hash in the name to catch it
    server = FileServer(served, chunk_bytes=4096, truncate=True)
    try:
        with pytest.raises(DownloadError, match="truncated: 5.... of 100000 bytes"):
            download(f"{server.url}/model.pth", tmp_path / "checkpoints" / "model.pth")
    finally:
        server.stop()
    assert not any((tmp_path / "checkpoints").iterdir())


class Redirecting(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", "ftp://127.0.0.1:9/model.pth")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_redirect_is_followed_to_http_only(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DownloadError, match="only http"):
            download(f"http://127.0.0.1:{server.server_address[1]}/m.pth", tmp_path / "m.pth")
    finally:
        server.shutdown()
    assert not (tmp_path / "m.pth").exists()


def test_installs_of_one_file_wait_for_each_other_and_fetch_it_once(tmp_path):
    """The command line and download jobs install through the same lock."""
    served = tmp_path / "served"
    served.mkdir()
    content = b"weights" * 50_000
    (served / "model.pth").write_bytes(content)
    server = FileServer(served, chunk_bytes=8192, pause=0.005)  # about a quarter second
    target = tmp_path / "checkpoints" / "model.pth"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".model.pth.0123abcd.tmp").write_bytes(b"a killed download's")
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            installed = list(pool.map(lambda _: install(f"{server.url}/model.pth", target),
                                      range(3)))
    finally:
        server.stop()
    assert server.requests == 1 and target.read_bytes() == content
    assert sum(result is not None for result in installed) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == [".model.pth.lock", "model.pth"]


def test_a_weights_url_names_the_checkpoint_only_with_a_plain_file_name(tmp_path):
    table = '[{0}]\nconfig = "rtmdet/rtmdet_tiny_8xb32-300e_coco.py"\nweights_url = "{1}"\n'
    (tmp_path / "models.toml").write_text("".join(table.format(name, url) for name, url in [
        ("up", "http://example.org/w/.."), ("query", "http://example.org/get?f=x.pth"),
        ("plain", "https://example.org/w/m_20240101-ab12cd34.pth")]))
    registry = load_registry(tmp_path / "models.toml", tmp_path / "checkpoints")
    assert {name: spec.checkpoint.relative_to(tmp_path / "checkpoints").as_posix()
            for name, spec in registry.items()} == {
        "up": "up.pth", "query": "query.pth", "plain": "m_20240101-ab12cd34.pth"}
    assert all(spec.downloadable for spec in registry.values())
