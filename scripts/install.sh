#!/usr/bin/env bash
# Install Elign Studio from nothing: a virtual environment in .venv with every extra, and Debian's
# Chromium for the browser tests (when run as root on a Debian-like system).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[all,dev]"
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
        || echo "warning: chromium could not be installed; the browser tests will be skipped" >&2
fi
echo "installed: $(.venv/bin/python -c 'import elign, torch; print("elign", elign.__version__, "torch", torch.__version__)')"
