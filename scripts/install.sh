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
# With a CUDA torch that sees a GPU and nvcc on the PATH, mmcv's CUDA ops are built too, for
# the local cards' compute capabilities (about 4 minutes on 16 cores).
GPU_ARCH=$("$VENV/bin/python" -c "import torch
if torch.version.cuda and torch.cuda.is_available():
    print(';'.join(sorted({'%d.%d' % torch.cuda.get_device_capability(i)
                           for i in range(torch.cuda.device_count())})))" 2>/dev/null || true)
if [ -n "$GPU_ARCH" ] && ! command -v nvcc >/dev/null; then
    echo "install: a GPU is present but nvcc is not: mmcv is built without its CUDA ops" >&2
    GPU_ARCH=""
fi
if [ -n "$GPU_ARCH" ]; then
    MMCV_READY="from mmcv.ops import get_compiling_cuda_version as v; assert v() != 'not available'"
else
    MMCV_READY="import mmcv.ops"
fi
if ! "$VENV/bin/python" -c "$MMCV_READY" 2>/dev/null; then
    if [ -n "$GPU_ARCH" ]; then
        echo "Building mmcv 2.1.0 from source with CUDA ops for compute capability $GPU_ARCH..."
        FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$GPU_ARCH" MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
            $PIP install --no-build-isolation --no-cache-dir --force-reinstall --no-deps "mmcv==2.1.0"
    else
        echo "Building mmcv 2.1.0 from source (about 5-9 minutes on 2 cores; pip caches the wheel)..."
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} $PIP install --no-build-isolation "mmcv==2.1.0"
    fi
fi
$PIP install -r requirements.txt
# The faces model: MTCNN with the weights facenet-pytorch's wheel ships. Without its dependencies:
# it pins torch < 2.3; what its detection uses is here (torch, numpy, Pillow, requests; mmcv
# stands in for torchvision's batched_nms: detection/worker/detectors/face_detector.py).
$PIP install --no-deps "facenet-pytorch==2.6.0"
# Editable install: pserve (and anything else) can import web.py and the detection package.
$PIP install --no-deps --no-build-isolation -e .
touch "$VENV/.installed"
echo "Installed into $VENV"
