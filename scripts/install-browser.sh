#!/usr/bin/env bash
# Headless Chromium for the browser tests: Debian's chromium package (Playwright drives it and
# downloads no browser of its own). Needs root or sudo; without them the browser tests skip,
# except under CI, where they fail.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install-browser: no root or sudo; install Debian's chromium to run the browser tests" >&2
    exit 0
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >/dev/null
