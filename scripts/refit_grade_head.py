"""Refit a run's grade head on more whole training volumes than training's own last step reads.

Run:  .venv/bin/python scripts/refit_grade_head.py RUN_DIR DATA_DIR [--cases 120]

The head is refit on at most --cases training volumes of DATA_DIR (every k-th, k = ceil(total / cases)) and
kept only if the grade loss on DATA_DIR's whole val split falls (segkit.validate.refit_if_better, the rule
training applies); the record goes into RUN_DIR/best.pt (grade_head_refit) and RUN_DIR/grade_head.json.
Encoder and masks are unchanged. Refit on a pool the network never trained on: the liver model's head, refit
on the volumes it had just trained on, got worse on new scenes; refit on another pool, it generalised (README).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from segkit.checkpoint import load_checkpoint
from segkit.config import config_from_dict
from segkit.data.msd import read_dataset
from segkit.infer import load_weights
from segkit.models import build_model
from segkit.train import load_cases
from segkit.validate import refit_if_better, save_refit, spread


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument(
        "--cases",
        type=int,
        default=120,
        help="at most this many training volumes, every k-th (k = ceil(total / cases)): 160 of 240 reads 120",
    )
    a = ap.parse_args()
    path = a.run / "best.pt"
    ck = load_checkpoint(path)
    cfg = config_from_dict(ck["config"])
    net = build_model(cfg)
    load_weights(net, ck["model"], path)
    net.eval()
    ds = read_dataset(a.data)
    train = load_cases(spread(ds.split("train"), a.cases), cfg, "train")  # spread before loading: no wasted reads
    record = refit_if_better(net, train, load_cases(ds.split("val"), cfg, "val"), cfg)
    record["data"] = str(a.data)
    save_refit(net, ck, record, a.run)
    print(f"{path}: {json.dumps(record)}")


if __name__ == "__main__":
    main()
