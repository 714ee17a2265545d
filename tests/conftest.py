"""Fixtures: settings in a temp dir, random-weights checkpoints built from mmdet's real configs,
the app under WebTest, and a live server (waitress + the real daemon) on a free port. The helpers
behind them are in tests/support.py."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from detection.settings import METRICS_PREFIX, metrics_base
from tests.random_weights import build_random_checkpoint
from tests.support import LiveServer, app_for, write_config


@pytest.fixture(scope="session", autouse=True)
def no_metrics_left_behind():
    """Every server counts into a directory of its own in /dev/shm (Settings.metrics_dir): the
    ones the tests made go when they end."""
    pattern = f"{METRICS_PREFIX}*"
    before = set(metrics_base().glob(pattern))
    yield
    for directory in set(metrics_base().glob(pattern)) - before:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def checkpoints_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def rtmdet_checkpoint(checkpoints_dir) -> Path:
    return build_random_checkpoint("rtmdet/rtmdet_tiny_8xb32-300e_coco.py",
                                   checkpoints_dir / "rtmdet_tiny_random.pth")


@pytest.fixture
def make_config(tmp_path):
    return lambda checkpoints, **overrides: write_config(tmp_path, checkpoints, **overrides)


@pytest.fixture
def fake_checkpoint(tmp_path) -> Path:
    """A file standing in for weights, for tests that never load a model."""
    path = tmp_path / "fake.pth"
    path.write_bytes(b"not loaded by these tests")
    return path


@pytest.fixture
def testapp(make_config, fake_checkpoint):
    """The app under WebTest, with no worker (jobs stay queued)."""
    import webtest
    ini = make_config({"rtmdet_tiny": fake_checkpoint}, spawn_worker="false", max_queue=5)
    return webtest.TestApp(app_for(ini))


@pytest.fixture
def live_server(make_config, rtmdet_checkpoint):
    """Start servers with ``live_server(**overrides)``; all are stopped, workers killed, after."""
    servers = []

    def start(checkpoints: dict | None = None, **overrides) -> LiveServer:
        ini = make_config(checkpoints or {"rtmdet_tiny": rtmdet_checkpoint}, **overrides)
        server = LiveServer(ini).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        server.kill_worker()
