"""Ship what is tested: a wheel built from the project holds every subpackage, and the service's
modules import from a plain (not editable) install of it."""
import shutil
import subprocess
import sys
import zipfile

import pytest

import detection
from tests.support import ROOT

pytestmark = pytest.mark.slow


def test_the_wheel_holds_every_module_and_imports_without_the_checkout(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT / "detection", source / "detection",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "web.py", "mmdetectionl.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(source)],
                   check=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    assert f"-{detection.__version__}-" in wheel.name  # the version, stated once
    shipped = set(zipfile.ZipFile(wheel).namelist())
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "detection").rglob("*.py")}
    assert modules - shipped == set(), "modules missing from the wheel"
    assert {"web.py", "mmdetectionl.py"} <= shipped

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
                    str(site), str(wheel)], check=True, timeout=300)
    check = ("import detection, detection.web.views, detection.worker.spool_worker, "
             "detection.worker.rq_worker, detection.jobs.records, detection.finetune, "
             "detection.telemetry, web, mmdetectionl; print(detection.__file__)")
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={"PYTHONPATH": str(site),
                                                         "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(site)), result.stdout
