"""The web process stays small: importing the app (with either queue backend) never imports
torch, mmdet or the worker package (detection/worker/)."""
import subprocess
import sys

import pytest

from tests.support import ROOT

MODEL_LIBRARIES = ("torch", "mmdet", "mmcv", "mmengine", "onnxruntime")


@pytest.mark.parametrize("modules", [
    "web", "web, detection.jobs.rq_queue",
    "web, detection.web.views, detection.web.deepstack, detection.web.dataset_views, "
    "detection.web.teaching_views, detection.web.errors"])
def test_importing_the_web_app_imports_no_model_or_worker_code(modules):
    check = (f"import sys, {modules}\n"
             f"bad = [m for m in sys.modules if m.split('.')[0] in {MODEL_LIBRARIES!r} "
             "or m == 'detection.worker' or m.startswith('detection.worker.')]\n"
             "print(','.join(sorted(bad)))")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_importing_web_leaves_prometheus_client_to_be_imported_by_main():
    """prometheus-client fixes its (multiprocess) mode when imported: web's main() must point
    it at uploads/.metrics first."""
    check = "import sys, web\nprint('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
