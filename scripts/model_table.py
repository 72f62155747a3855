"""The model table (issue 11): each model kind of a task on the unseen-subject test split and the real set.

    python scripts/model_table.py --task ventricle --data data/ventricle-s1 --real data/ventricle-real \
        --model "2.5-D U-Net=runs/ventricle-s1" --model "3-D U-Net=runs/ventricle-3d" --out runs/model-table-ventricle

Every model is evaluated with `segkit evaluate` (in-process, the one predict path) in each of its inference
variants: TTA off and on; 3-D models also with MONAI's default sliding window (constant blending, overlap
0.25) beside segkit's (Gaussian, 0.5). Per variant and evaluation set: Dice and HD95 per label, grade
macro-AUC and macro-F1, and the median wall time per volume of predict's stages (read excluded: preprocess,
network, inverse, post-processing, write). Per model: parameters and training wall time (the epochs of
the run and of the runs it was fine-tuned from, from their metrics.csv). Writes OUT/table.json and
OUT/table.md; an evaluation already in OUT for the same checkpoint (sha256) is reused, so a rerun only
rebuilds the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def variants(spatial_dims: int) -> list[tuple[str, bool, list[str]]]:
    """(name, tta, eval settings) per inference variant of a model kind."""
    if spatial_dims == 2:
        return [("no TTA", False, []), ("TTA", True, [])]
    gauss = ["eval.window_blend=gaussian", "eval.window_overlap=0.5"]
    monai = ["eval.window_blend=constant", "eval.window_overlap=0.25"]
    return [
        ("Gaussian 0.5, no TTA", False, gauss),
        ("constant 0.25 (MONAI default)", False, monai),
        ("Gaussian 0.5, TTA", True, gauss),
    ]


def evaluate_variant(model: str, data: Path, split: str, out: Path, tta: bool, settings: list[str]) -> dict[str, Any]:
    """report.json of one evaluation, from OUT when it was made with the same checkpoint."""
    from segkit.checkpoint import file_sha256, resolve_model
    from segkit.evaluate import evaluate_split

    sha = file_sha256(resolve_model(model).path)[:16]
    done = out / "report.json"
    if done.is_file():
        report = json.loads(done.read_text())
        if report["meta"]["model_sha256"] == sha:
            return report
    evaluate_split(model, data, split, out, "cpu", "auto", tta, settings)
    return json.loads(done.read_text())


def summarise(report: dict[str, Any], out: Path) -> dict[str, Any]:
    """Dice and HD95 per label, grade AUC and F1, median seconds per volume."""
    seg = report["segmentation"]
    row: dict[str, Any] = {
        label: {"dice": m["dice"]["mean"], "hd95": m["hd95"]["mean"]} for label, m in seg.items() if "dice" in m
    }
    grading = report.get("grading") or {}
    row["grade_auc_macro"] = grading.get("auc_macro")
    row["grade_f1_macro"] = (grading.get("macro") or {}).get("f1")
    row["grade_accuracy"] = grading.get("accuracy")
    seconds = []
    for f in sorted((out / "predictions").glob("*_report.json")):
        s = json.loads(f.read_text())["seconds"]
        seconds.append(sum(v for k, v in s.items() if k not in ("total", "read")))
    row["seconds_per_volume"] = statistics.median(seconds) if seconds else None
    row["cases"] = report["num_cases"]
    return row


def train_record(run: Path) -> tuple[float | None, int, bool]:
    """(seconds, epochs, complete) over the run and the runs it was fine-tuned from (run.json "init"):
    the sum of their epoch wall times from metrics.csv (loading and the final refit not included).
    complete is False when the chain starts from a checkpoint file without its run folder."""
    seconds, epochs, complete = 0.0, 0, True
    while (run / "metrics.csv").is_file():
        with (run / "metrics.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        seconds += sum(float(r["seconds"]) for r in rows)
        epochs += len(rows)
        init = json.loads((run / "run.json").read_text()).get("init") if (run / "run.json").is_file() else None
        if not init:
            return seconds, epochs, complete
        parent = Path(init["path"]).parent
        if not (parent / "metrics.csv").is_file():
            return seconds, epochs, False
        run = parent
    return (seconds or None), epochs, complete


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--data", type=Path, required=True, help="dataset whose test split holds unseen subjects")
    ap.add_argument("--real", type=Path, help="real-image set (all its cases are in its test split)")
    ap.add_argument("--model", action="append", required=True, help="NAME=RUN_FOLDER, repeatable")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from segkit.allocator import tune_allocator
    from segkit.checkpoint import load_checkpoint, resolve_model
    from segkit.config import config_from_dict
    from segkit.models import build_model, num_parameters

    tune_allocator()
    sets = [("test split", args.data)] + ([("real", args.real)] if args.real else [])
    table: dict[str, Any] = {
        "task": args.task,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU used",
        "models": [],
    }
    for item in args.model:
        name, _, run = item.partition("=")
        ck = load_checkpoint(resolve_model(run).path)
        cfg = config_from_dict(ck["config"])
        seconds, epochs, complete = train_record(Path(run))
        entry: dict[str, Any] = {
            "train_seconds": seconds,
            "train_epochs": epochs,
            "train_record_complete": complete,
            "name": name,
            "run": run,
            "arch": cfg.model.arch,
            "parameters": num_parameters(build_model(cfg)),
            "variants": [],
        }
        for vname, tta, settings in variants(cfg.spatial_dims):
            results = {}
            for set_name, data in sets:
                slug = "".join(c if c.isalnum() else "-" for c in f"{name}-{vname}-{set_name}").strip("-").lower()
                out = args.out / slug
                print(f"[table] {name} / {vname} / {set_name}", flush=True)
                results[set_name] = summarise(evaluate_variant(run, data, "test", out, tta, settings), out)
            entry["variants"].append({"name": vname, "tta": tta, "settings": settings, "results": results})
        table["models"].append(entry)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(table, indent=2))
    (args.out / "table.md").write_text(markdown(table, [s for s, _ in sets]))
    print((args.out / "table.md").read_text())


def markdown(table: dict[str, Any], set_names: list[str]) -> str:
    """One row per model and inference variant; Dice (HD95 mm) per label on each set."""
    first = table["models"][0]["variants"][0]["results"][set_names[0]]
    labels = [k for k, v in first.items() if isinstance(v, dict)]
    head = ["Model", "Inference"]
    for s in set_names:
        head += [f"{s}: {label} Dice (HD95 mm)" for label in labels]
    head += ["grade AUC / F1 (test)", "s per volume (test)", "parameters", "train"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in table["models"]:
        for v in m["variants"]:
            cells = [m["name"], v["name"]]
            for s in set_names:
                r = v["results"][s]
                cells += [f"{r[lab]['dice']:.3f} ({_num(r[lab]['hd95'], '.1f')})" for lab in labels]
            t = v["results"][set_names[0]]
            cells.append(f"{_num(t['grade_auc_macro'], '.2f')} / {_num(t['grade_f1_macro'], '.2f')}")
            cells.append(_num(t["seconds_per_volume"], ".1f"))
            cells.append(f"{m['parameters'] / 1e6:.2f} M")
            train, more = m["train_seconds"], "" if m["train_record_complete"] else " + earlier stages"
            cells.append("-" if train is None else f"{train / 60:.0f} min ({m['train_epochs']} epochs){more}")
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Machine: {table['machine']}. Seconds per volume: median over the set of predict's stages after "
        "reading (preprocess, network, inverse, post-processing, write). Train: the epochs of the run and of "
        "the runs it was fine-tuned from, validation included, loading excluded."
    )
    return "\n".join(lines) + "\n"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None or x != x else format(x, fmt)


if __name__ == "__main__":
    main()
