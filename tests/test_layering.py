"""The web process stays small: importing the app (with either queue backend) never imports
torch, mmdet or worker code."""
import subprocess
import sys

from tests.support import ROOT

import pytest

WORKER_ONLY = ("torch", "mmdet", "mmcv", "mmengine", "onnxruntime", "detection.worker",
               "detection.detector", "detection.drawing", "detection.supervisor",
               "detection.rq_worker")


@pytest.mark.parametrize("modules", ["web", "web, detection.rq_queue"])
def test_importing_the_web_app_imports_no_model_or_worker_code(modules):
    check = (f"import sys, {modules}\n"
             f"bad = [m for m in sys.modules if m.split('.')[0] in {WORKER_ONLY[:5]!r} "
             f"or m in {WORKER_ONLY[5:]!r}]\n"
             "print(','.join(sorted(bad)))")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
