"""Choose the post-processing on val for a run trained before segkit chose it itself (new runs do it at the end).

Run:  .venv/bin/python scripts/choose_postprocess.py RUN_DIR DATA_DIR
Writes eval.keep_components and, for CT cyst tasks, eval.cyst_max_hu (and the mean val Dice of every rule and
limit tried) into RUN_DIR/best.pt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.checkpoint import load_checkpoint, save_checkpoint
from segkit.config import config_from_dict
from segkit.data.msd import read_dataset
from segkit.infer import load_weights
from segkit.models import build_model
from segkit.train import load_cases
from segkit.validate import choose_density, choose_on_val


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("data", type=Path)
    a = ap.parse_args()
    path = a.run / "best.pt"
    ck = load_checkpoint(path)
    cfg = config_from_dict(ck["config"])  # load_checkpoint gave an older run its task's one_piece and lesions
    net = build_model(cfg)
    load_weights(net, ck["model"], path)
    net.eval()
    val = load_cases(read_dataset(a.data).split("val"), cfg, "val")
    masks: list = []
    rules, ck["postprocess_val_dice"] = choose_on_val(net, val, cfg, masks)
    ck["config"]["eval"]["keep_components"] = list(rules)
    choose_density(ck, masks, val, cfg, rules)
    save_checkpoint(path, ck)
    print(
        f"{path}: keep_components {list(rules)} on {len(val)} val cases; "
        f"mean Dice per rule {ck['postprocess_val_dice']}; eval.cyst_max_hu {ck['config']['eval'].get('cyst_max_hu')} "
        f"(val cyst Dice per limit {ck.get('cyst_max_hu_val_dice', 'not a cyst task')})"
    )


if __name__ == "__main__":
    main()
