#!/usr/bin/env bash
# Set up (if needed) and run the default test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The review-page test renders index.html in headless Chromium; without it that one test skips.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[test] chromium not installed: the browser test will skip"
fi
export NO_ALBUMENTATIONS_UPDATE=1
exec .venv/bin/python -m pytest -q "$@"
