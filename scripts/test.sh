#!/usr/bin/env bash
# Set up (if needed) and run the default test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The review-page test renders index.html in headless Chromium, the DICOM SEG tests validate with dciodvfy
# (Debian's dicom3tools); without them those checks skip.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v dciodvfy >/dev/null || missing+=(dicom3tools)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq || true
  for pkg in "${missing[@]}"; do  # one at a time: a package this mirror lacks must not block the other
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null \
      || echo "[test] $pkg not installed: the tests that need it will skip"
  done
fi
export NO_ALBUMENTATIONS_UPDATE=1
exec .venv/bin/python -m pytest -q "$@"
