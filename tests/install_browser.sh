#!/bin/sh
# Install what tests/test_browser.py needs: Debian's Chromium and the Playwright
# Python package (whose wheel carries its own node driver, so no download later).
#
# Usage: tests/install_browser.sh [VENV]     (VENV defaults to .venv)
#
# Idempotent: does nothing when /usr/bin/chromium exists and playwright imports.
# Never fails the build: where it cannot install (no apt-get, not root, offline)
# it says why and exits 0, and the browser test then skips with that reason.
# We never run `playwright install`: its browser download is not reachable in CI,
# and the system Chromium is the browser the test drives.
set -u

venv="${1:-.venv}"
python="$venv/bin/python"
chromium=/usr/bin/chromium

if [ ! -x "$python" ]; then
    echo "install_browser: no python at $python; create the venv first" >&2
    exit 0
fi

if [ -x "$chromium" ]; then
    echo "install_browser: $chromium present"
elif ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: $chromium missing and no apt-get here; browser test will skip"
elif [ "$(id -u)" != 0 ]; then
    echo "install_browser: $chromium missing and not root, cannot apt-get; browser test will skip"
else
    echo "install_browser: installing chromium with apt-get"
    # Non-interactive so a debconf prompt can never hang CI.
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }; then
        echo "install_browser: apt-get failed; browser test will skip"
    fi
fi

if "$python" -c "import playwright.sync_api" >/dev/null 2>&1; then
    echo "install_browser: playwright present in $venv"
else
    echo "install_browser: installing playwright into $venv"
    "$python" -m pip install --quiet playwright \
        || echo "install_browser: pip install playwright failed; browser test will skip"
fi
exit 0
