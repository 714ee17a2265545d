#!/usr/bin/env bash
# One-step set-up: a virtual environment with torch (CPU), mmcv 2.1.0 built from source,
# mmdet 3.3.0 and the service's own dependencies. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
PIP="$VENV/bin/python -m pip --disable-pip-version-check"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

# mmcv's setup.py imports pkg_resources, which setuptools dropped after 80.x;
# torch needs setuptools >= 77.0.3. ninja lets torch compile mmcv's ops in parallel.
$PIP install --upgrade "pip>=24" "setuptools>=77.0.3,<81" wheel ninja
$PIP install "torch==2.13.0"
$PIP install "mmengine==0.10.7"
if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
    echo "Building mmcv 2.1.0 from source (about 5-9 minutes on 2 cores; pip caches the wheel)..."
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} $PIP install --no-build-isolation "mmcv==2.1.0"
fi
$PIP install -r requirements.txt
# Editable install: pserve (and anything else) can import web.py and the detection package.
$PIP install --no-deps --no-build-isolation -e .
touch "$VENV/.installed"
echo "Installed into $VENV"
