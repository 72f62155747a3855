#!/usr/bin/env bash
# Measure here what scripts/device_train.sh trained on a lent GPU, as the shipped models are measured:
#
#   bash scripts/device_eval.sh PARTS_DIR [RUNS_DIR]
#
# Unpacks PARTS_DIR/runs.tar.part-* into RUNS_DIR (default runs/gpu), then per run: the post-processing chosen
# on a local val split (scripts/choose_postprocess.py: a run cut short by its time limit never chose one; a
# finished one chose on its own pool, and is judged here like the others), the ONNX files predict uses, and
# `segkit evaluate` on the real-image set first, then on the unseen test split: ventricles on REAL_V
# (data/ventricle-real) and TEST_V (data/ventricle-s1, the 30 draws every shipped model was measured on), with
# mirror TTA for the 2-D model as the shipped one predicts; liver on REAL_L (data/liver-real) and TEST_L
# (data/liver-cyst). Each evaluation's summary line goes to RUNS_DIR/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
parts=${1:?usage: bash scripts/device_eval.sh PARTS_DIR [RUNS_DIR]}
runs=${2:-runs/gpu}
PY=.venv/bin/python
SK=.venv/bin/segkit
mkdir -p "$runs"
cat "$parts"/runs.tar.part-* | tar xf - -C "$runs"
: >"$runs/summary.txt"
for run in "$runs"/*/; do
  run=${run%/}
  [ -f "$run/best.pt" ] || continue
  read -r task dims < <($PY -c "import sys; from segkit.config import load_config; \
c = load_config(sys.argv[1]); print(c.task.name, c.spatial_dims)" "$run/config.yaml")
  if [ "$task" = ventricle ]; then
    sets=("${REAL_V:-data/ventricle-real}" "${TEST_V:-data/ventricle-s1}")
    tta=$([ "$dims" = 2 ] && echo --tta || echo --no-tta)
  else
    sets=("${REAL_L:-data/liver-real}" "${TEST_L:-data/liver-cyst}")
    tta=--no-tta
  fi
  $PY scripts/choose_postprocess.py "$run" "${sets[1]}"
  $PY -c "import sys; from pathlib import Path; from segkit.train import export_best; export_best(Path(sys.argv[1]))" \
    "$run/best.pt"
  for data in "${sets[@]}"; do
    out="$run/eval-$(basename "$data")"
    line=$($SK evaluate --model "$run" --data "$data" --split test $tta --out "$out" | grep "split,")
    echo "$(basename "$run") on $(basename "$data") ($tta): $line" | tee -a "$runs/summary.txt"
  done
done
