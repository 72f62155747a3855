#!/usr/bin/env bash
# Train a shipped default model from scratch, measure it, and install it as segkit/weights/<task>.pt.
#   bash scripts/train_shipped.sh ventricle        (2-core CPU: about 1.5 h with the dataset build)
# Steps: build the dataset (seeded), train with configs/<task>.yaml, evaluate the unseen-subject
# test split and, for ventricles, the real-image set; then copy best.pt (weights and config only)
# to segkit/weights/<task>.pt and write the figures into segkit/weights/<task>.json for the model card.
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${1:?usage: train_shipped.sh ventricle|liver-cyst [extra segkit train args]}
shift
CASES=${CASES:-300}
SEED=${SEED:-0}  # the dataset's seed: a new seed draws a fresh pool for fine-tuning
DATA=${DATA:-data/$TASK}
RUN=${RUN:-runs/shipped-$TASK}
bash scripts/setup.sh
export NO_ALBUMENTATIONS_UPDATE=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184
SK=.venv/bin/segkit
t0=$(date +%s)
[ -f "$DATA/dataset.json" ] || $SK data make "$TASK" --out "$DATA" --cases "$CASES" --seed "$SEED"
t1=$(date +%s)
$SK train --config "configs/$TASK.yaml" --data "$DATA" --out "$RUN" "$@"
t2=$(date +%s)
$SK evaluate --model "$RUN" --data "$DATA" --split test --out "$RUN/eval-test"
evals=("$RUN/eval-test/report.json")
if [ "$TASK" = ventricle ]; then
  [ -f data/ventricle-real/dataset.json ] || $SK data make ventricle-real --out data/ventricle-real
  $SK evaluate --model "$RUN" --data data/ventricle-real --split test --out "$RUN/eval-real"
  evals+=("$RUN/eval-real/report.json")
fi
.venv/bin/python scripts/ship_model.py "$TASK" "$RUN" --data-seed "$SEED" --data-seconds $((t1 - t0)) --train-seconds $((t2 - t1)) "${evals[@]}"
