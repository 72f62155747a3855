"""Install a trained run as a shipped model: segkit/weights/<task>.pt (weights + config) and <task>.json.

    python scripts/ship_model.py TASK RUN_DIR [--data-seconds S] [--train-seconds S] EVAL_REPORT.json ...

The .pt keeps only what predict needs (weights, resolved config, epoch, the grade-head refit
record), so it is a few MB. The .json holds the measured figures of every evaluation report given
(mean Dice per label, each case's Dice, grade accuracy and macro AUC) for the model card.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

from segkit.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
KEEP = ("model", "config", "epoch", "best", "history", "grade_head_refit", "segkit_version")


def summarise(report_path: Path) -> dict:
    """The figures of one `segkit evaluate` report.json (and its per_case.csv)."""
    r = json.loads(report_path.read_text())
    g = r.get("grading") or {}
    rows = list(csv.DictReader((report_path.parent / "per_case.csv").open()))
    dice_cols = [c for c in rows[0] if c.startswith("dice_")] if rows else []
    return {
        "report": str(report_path),
        "data": r["meta"].get("dataset"),
        "split": r["meta"].get("split"),
        "num_cases": r["num_cases"],
        "dice_mean": {k: round(v["dice"]["mean"], 4) for k, v in r["segmentation"].items()},
        "hd95_mean_mm": {k: round(v["hd95"]["mean"], 2) for k, v in r["segmentation"].items() if v.get("hd95")},
        "grade_accuracy": g.get("accuracy"),
        "grade_auc_macro": g.get("auc_macro"),
        "per_case": [
            {
                "case": row["case"],
                "grade_true": row.get("grade_true"),
                "grade_pred": row.get("grade_pred"),
                **{c: row[c] for c in dice_cols},
            }  # fmt: skip
            for row in rows
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("task")
    ap.add_argument("run", type=Path)
    ap.add_argument("reports", type=Path, nargs="+")
    ap.add_argument("--data-seconds", type=int, default=None)
    ap.add_argument("--train-seconds", type=int, default=None)
    a = ap.parse_args()
    ck = load_checkpoint(a.run / "best.pt")
    if ck["config"]["task"]["name"] != a.task:
        raise SystemExit(f"{a.run}: a {ck['config']['task']['name']} model, not {a.task}")
    out = ROOT / "segkit" / "weights" / f"{a.task}.pt"
    save_checkpoint(out, {k: ck[k] for k in KEEP if k in ck})
    figures = {
        "task": a.task,
        "weights": out.name,
        "sha256_16": hashlib.sha256(out.read_bytes()).hexdigest()[:16],
        "epoch": ck["epoch"],
        "data_seconds": a.data_seconds,
        "train_seconds": a.train_seconds,
        "grade_head_refit": ck.get("grade_head_refit"),
        "evaluations": [summarise(p) for p in a.reports],
    }
    (out.with_suffix(".json")).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "evaluations"}, indent=1))
    for e in figures["evaluations"]:
        print(e["data"], e["split"], e["num_cases"], "cases: Dice", e["dice_mean"], "grade acc", e["grade_accuracy"])


if __name__ == "__main__":
    main()
