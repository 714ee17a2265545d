#!/usr/bin/env bash
# redis-server for the queue tests (detection.queue = rq) and for running RQ workers on this
# host: Debian's package. Needs root or sudo; without them the RQ tests skip, except under CI,
# where they fail. The tests start their own server; nothing is left running.
set -euo pipefail
command -v redis-server >/dev/null && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install-redis: no root or sudo; install Debian's redis-server to run the RQ tests" >&2
    exit 0
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    redis-server >/dev/null
# The package starts a system-wide server; the tests don't need it.
$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
