"""Install a trained run as a shipped model: segkit/weights/<task>.pt (weights + config) and <task>.json.

    python scripts/ship_model.py TASK RUN_DIR [--data-seconds S] [--train-seconds S] EVAL_REPORT.json ...
    python scripts/ship_model.py restate-limits TASK [--limit TEXT ...] [--set eval.KEY=VALUE ...] [--reports R ...]
        [--postprocess PT]
        # new measured limits or inference settings, the same weights (--reports: the evaluations that measured
        # them, replacing the card's figures; --postprocess: the post-processing that scripts/choose_postprocess.py
        # chose on val for a copy of the shipped .pt, with its val tables)

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
from segkit.config import config_from_dict, config_to_dict
from segkit.infer import inference_settings, trained_on_mirrors
from segkit.onnx_export import write_onnx

ROOT = Path(__file__).resolve().parents[1]
KEEP = (
    "model",
    "config",
    "epoch",
    "best",
    "history",
    "grade_head_refit",
    "postprocess_val_dice",
    "cyst_max_hu_val_dice",
    "segkit_version",
    "soup",
)


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(float(v), digits)


def summarise(report_path: Path) -> dict:
    """The figures of one `segkit evaluate` report.json (and its per_case.csv)."""
    r = json.loads(report_path.read_text())
    g = r.get("grading") or {}
    rows = list(csv.DictReader((report_path.parent / "per_case.csv").open()))
    dice_cols = [c for c in rows[0] if c.startswith("dice_")] if rows else []
    return {
        "report": str(report_path),
        "data": Path(str(r["meta"].get("dataset"))).name,
        "split": r["meta"].get("split"),
        "num_cases": r["num_cases"],
        "dice_mean": {k: _round(v["dice"]["mean"], 4) for k, v in r["segmentation"].items()},
        "dice_pooled": {k: _round(v.get("dice_pooled"), 4) for k, v in r["segmentation"].items()},
        "hd95_mean_mm": {k: _round(v["hd95"]["mean"], 2) for k, v in r["segmentation"].items()},
        "grade_accuracy": g.get("accuracy"),
        "grade_auc_macro": g.get("auc_macro"),
        "subgroups": {
            key: {
                v: {"cases": s["num_cases"], **{k: _round(d["mean"], 3) for k, d in s["dice"].items()}}
                for v, s in groups.items()
            }
            for key, groups in (r.get("subgroups") or {}).items()
        },
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


def _fmt(v: object) -> str:
    return "n/a" if v is None or v == "" else f"{float(v):.3f}"


def _group(value: str, s: dict) -> str:
    """One subgroup of the evaluation: its value, case count and mean per-case Dice per label."""
    dice = ", ".join(f"{k} {_fmt(v)}" for k, v in s.items() if k != "cases")
    return f"{value} ({s['cases']}): {dice}"


def model_card(f: dict, ck: dict) -> str:
    """The model card: what the model is, how it was made, what it measured, what it is not for."""
    cfg = ck["config"]
    refit = f.get("grade_head_refit") or {}
    best = ck.get("best")
    lines = [
        f"# Model card: shipped `{f['task']}` model (`segkit/weights/{f['weights']}`)",
        "",
        f"- SHA-256 (first 16): `{f['sha256_16']}`; {_selected(f, cfg, best)}; arch `{cfg['model']['arch']}`, "
        f"channels {cfg['model']['channels']}, spacing {cfg['preprocess']['spacing']} mm, 2.5-D "
        f"({2 * cfg['preprocess']['context_slices'] + 1} slices in).",
        _made_by(f, cfg),
        *(_soup_lines(f["soup"]) if f.get("soup") else _lineage(f.get("init"))),
        "- Post-processing (chosen on val; segkit.validate): "
        + ", ".join(
            f"{n} {r}"
            for n, r in zip(cfg["task"]["labels"][1:], cfg["eval"].get("keep_components") or [], strict=False)
        )
        + (" (none chosen)" if not cfg["eval"].get("keep_components") else "")
        + f"; mean val Dice per rule {ck.get('postprocess_val_dice', 'not measured')}"
        + (
            f"; cysts denser than {cfg['eval'].get('cyst_max_hu') or 'no limit'} HU (median) become tumour, mean val "
            f"cyst Dice per limit {ck['cyst_max_hu_val_dice']}"
            if "cyst_max_hu_val_dice" in ck
            else ""
        )
        + ". Mirror test-time "
        + (
            "augmentation on by default (`--no-tta` halves the network time)."
            if cfg["eval"].get("tta")
            else "augmentation off by default (`--tta`)."
            if trained_on_mirrors(config_from_dict(cfg))
            else "augmentation refused (trained without left-right flips: a mirrored scan is unseen anatomy)."
        ),
        *(
            [
                "- Two passes (`eval.strip_to_organ`, set after training): "
                "the scan is predicted again with everything outside the first pass's organ set to its minimum, as a "
                "skull-stripped scan, and the labels inside the organ come from that pass (none on a scan stripped "
                "already; `--set eval.strip_to_organ=false` for one pass). The figures below are with it."
            ]
            if cfg["eval"].get("strip_to_organ")
            else []
        ),
        *(
            [
                f"- Coarsest voxel spacing of its training scans (`eval.max_spacing_mm`): {spacing:g} mm; predict "
                "warns on an input with coarser voxels (thicker slices) than that."
            ]
            if (spacing := cfg["eval"].get("max_spacing_mm"))
            else []
        ),
        "- Labels: "
        + ", ".join(f"{i} {n}" for i, n in enumerate(cfg["task"]["labels"]))
        + "; grades: "
        + ", ".join(cfg["task"]["grades"])
        + f" by {cfg['task']['biomarker']} thresholds {cfg['task']['thresholds']}.",
        "",
        "## Measured (segkit evaluate; real images first)",
        "",
    ]
    for e in sorted(f["evaluations"], key=lambda e: "real" not in str(e["data"])):
        lines += [
            f"**{e['data']}** (split `{e['split']}`, {e['num_cases']} cases): mean Dice "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in e["dice_mean"].items())
            + (
                "; pooled Dice (all cases' voxels together) "
                + ", ".join(f"{k} {_fmt(v)}" for k, v in e["dice_pooled"].items())
                if e.get("dice_pooled")
                else ""
            )
            + "; HD95 (mm) "
            + ", ".join(f"{k} {v}" for k, v in e["hd95_mean_mm"].items())
            + f"; grade accuracy {_fmt(e['grade_accuracy'])}, macro AUC {_fmt(e['grade_auc_macro'])}.",
            "",
            "| case | true grade | predicted grade | "
            + " | ".join(k for k in e["per_case"][0] if k.startswith("dice_"))
            + " |",
            "|---|---|---|" + "---|" * sum(k.startswith("dice_") for k in e["per_case"][0]),
        ]
        for c in e["per_case"]:
            dice = " | ".join(_fmt(v) for k, v in c.items() if k.startswith("dice_"))
            lines.append(f"| {c['case']} | {c['grade_true']} | {c['grade_pred']} | {dice} |")
        lines.append("")
        lines += [
            f"- by `{key}`: " + "; ".join(_group(v, s) for v, s in groups.items())
            for key, groups in e.get("subgroups", {}).items()
        ]
        lines += [""] if e.get("subgroups") else []
    if f.get("limits"):
        lines += ["## Known limits (repeated as a warning in every report.json)", ""]
        lines += [f"- {x}" for x in f["limits"]] + [""]
    lines += [
        "## Grade head",
        "",
        f"Val grade accuracy of the jointly trained head: {_fmt(refit.get('val_grade_acc_before'))} "
        f"(val grade loss {_fmt(refit.get('val_grade_loss_before'))}; ln 3 = 1.099 is chance). After the post-hoc "
        f"refit on {refit.get('train_volumes')} whole training volumes{_refit_data(refit)}: "
        f"{_fmt(refit.get('val_grade_acc_after'))} "
        f"(loss {_fmt(refit.get('val_grade_loss_after'))}); the refit was "
        f"{'kept' if refit.get('kept') else 'discarded'} (kept only when it lowers the val grade loss).",
        "",
        "## Intended use and limits",
        "",
        "Research and education only; not a medical device; no clinical claims. Trained on synthetic images drawn "
        "from real label maps; measured on a few real images (population templates). Check every mask "
        "(the overlay and the warnings in report.json) before using a volume or grade.",
        "",
    ]
    return "\n".join(lines)


def _refit_data(refit: dict) -> str:
    """Where scripts/refit_grade_head.py refit the head on another dataset than training's: its name (its val
    split judged the refit, and the val accuracies above are that split's)."""
    return f" of `{refit['data']}` (accuracies on its val split)" if refit.get("data") else ""


def _seconds(value: int | None) -> str:
    return "not timed" if value is None else f"{value} s"


def _made_by(f: dict, cfg: dict) -> str:
    """The card line saying how the model was made and how long that took."""
    if f.get("soup"):  # several pools and runs: the command is a script that makes them all
        data = "; the pools, the fine-tunes and the soup are that script's"
        times = f"pools {_seconds(f['data_seconds'])}, the fine-tunes' epochs {_seconds(f['train_seconds'])}"
    else:
        data = f", dataset `segkit data make {f['task']} --cases {f['cases']} --seed {f.get('data_seed', 0)}`"
        times = f"dataset {_seconds(f['data_seconds'])}, training {_seconds(f['train_seconds'])}"
    return (
        f"- Made by `{f['command']}` (seed {cfg['train']['seed']}, config `configs/{f['task']}.yaml`{data}, split "
        f"by subject for ventricles; see the data card). Wall time on 2 CPU cores: {times}."
    )


def _selected(f: dict, cfg: dict, best: object) -> str:
    """The card's words for which weights these are: a run's best epoch, or a soup's ingredients."""
    if f.get("soup"):
        return f"the mean of {len(f['soup']['ingredients'])} checkpoints' weights (a model soup: no single epoch)"
    return f"best epoch {f['epoch']} of {cfg['train']['epochs']} (selected on {cfg['train']['monitor']} = {_fmt(best)})"


def _soup_lines(soup: dict) -> list[str]:
    """The card lines for a model soup (scripts/soup.py): what was averaged."""
    parts = [f"`{i['model']}` (epoch {i['epoch']}, sha256 {i['sha256_16']})" for i in soup["ingredients"]]
    about = f": {soup['about']}" if soup.get("about") else ""
    return [
        f"- A uniform model soup (scripts/soup.py; Wortsman et al. 2022): every weight is the mean of {len(parts)} "
        f"checkpoints'{about}. Ingredients: {', '.join(parts)}. Config, inference settings and the training record "
        "above are the first ingredient's; the grade head refit and the post-processing below were done on the soup."
    ]


def _lineage(init: dict | None) -> list[str]:
    """The card line for a fine-tuned model: which weights it started from."""
    if not init:
        return ["- Trained from a random initialisation."]
    return [
        f"- Fine-tuned: started from `{init['init']}` (epoch {init['epoch']}; sha256 {init.get('sha256_16', '?')}), "
        f"{init.get('about', 'the previously shipped model')}; layers new to this version started fresh: "
        f"{_layers(init['fresh_layers'])}."
    ]


def _layers(tensors: list[str]) -> str:
    """The layers a list of state-dict tensor names belongs to, shortened where there are many."""
    layers = list(dict.fromkeys(t.rsplit(".", 1)[0] for t in tensors))
    if len(layers) <= 4:
        return ", ".join(layers) or "none"
    return f"{len(layers)} layers ({', '.join(layers[:2])}, ..., {layers[-1]})"


def restate_limits(argv: list[str]) -> None:
    """Replace a shipped model's declared limits (measured on data found after it shipped) and/or set eval.*
    inference settings (a record training writes for new runs, say), with the evaluations that measured them, and
    nothing else: the .pt, the ONNX files' JSON, the figures and the card are rewritten; the weights stay as they are
    (the .pt's SHA-256 changes, since the limits and the config travel inside it)."""
    ap = argparse.ArgumentParser(prog="ship_model.py restate-limits")
    ap.add_argument("task")
    ap.add_argument("--limit", action="append", default=None, help="a measured weakness every prediction repeats")
    ap.add_argument("--set", action="append", default=[], help="eval.KEY=VALUE: an inference setting to store")
    ap.add_argument("--reports", type=Path, nargs="+", default=None, help="evaluate report.json files: new figures")
    ap.add_argument("--postprocess", type=Path, help="a .pt whose post-processing choice (and val tables) to take")
    a = ap.parse_args(argv)
    out = ROOT / "segkit" / "weights" / f"{a.task}.pt"
    ck = load_checkpoint(out)
    limits = ck.get("limits", []) if a.limit is None else a.limit
    settings = list(a.set)
    if a.postprocess:
        chosen = load_checkpoint(a.postprocess)
        e = chosen["config"]["eval"]
        settings += [f"eval.keep_components={json.dumps(e['keep_components'])}", f"eval.cyst_max_hu={e['cyst_max_hu']}"]
        ck.update({k: chosen[k] for k in ("postprocess_val_dice", "cyst_max_hu_val_dice") if k in chosen})
    config = config_to_dict(inference_settings(config_from_dict(ck["config"]), settings))
    save_checkpoint(out, {**ck, "limits": limits, "config": config})
    onnx = write_onnx(out)
    figures = json.loads(out.with_suffix(".json").read_text())
    figures.update(limits=limits, sha256_16=onnx["checkpoint_sha256"][:16], onnx_max_abs_diff=onnx["max_abs_diff"])
    if a.reports:
        figures["evaluations"] = [summarise(p) for p in a.reports]
    out.with_suffix(".json").write_text(json.dumps(figures, indent=1) + "\n")
    out.with_suffix(".md").write_text(model_card(figures, load_checkpoint(out)))
    print(f"{out}: restated ({', '.join(settings) or 'limits'}); sha256 {figures['sha256_16']}")


def main() -> None:
    import sys

    if sys.argv[1:2] == ["restate-limits"]:
        return restate_limits(sys.argv[2:])
    ap = argparse.ArgumentParser()
    ap.add_argument("task")
    ap.add_argument("run", type=Path)
    ap.add_argument("reports", type=Path, nargs="+")
    ap.add_argument("--data-seconds", type=int, default=None)
    ap.add_argument("--train-seconds", type=int, default=None)
    ap.add_argument("--limit", action="append", default=[], help="a measured weakness every prediction repeats")
    ap.add_argument("--cases", type=int, default=300, help="cases of the dataset build")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the dataset build")
    ap.add_argument("--command", default=None, help="the command that made the model (default train_shipped.sh TASK)")
    ap.add_argument("--init-about", default=None, help="fine-tuned models: what the starting weights were")
    a = ap.parse_args()
    ck = load_checkpoint(a.run / "best.pt")
    if ck["config"]["task"]["name"] != a.task:
        raise SystemExit(f"{a.run}: a {ck['config']['task']['name']} model, not {a.task}")
    out = ROOT / "segkit" / "weights" / f"{a.task}.pt"
    run = json.loads((a.run / "run.json").read_text())
    init = run.get("init")
    if init:  # before out is replaced: a fine-tune of the shipped model started from the file about to be replaced
        src = Path(init["path"])
        init["sha256_16"] = hashlib.sha256(src.read_bytes()).hexdigest()[:16] if src.is_file() else None
        init["about"] = a.init_about
    save_checkpoint(out, {**{k: ck[k] for k in KEEP if k in ck}, "limits": a.limit})
    onnx = write_onnx(out)  # predict runs it through ONNX Runtime on CPUs (same masks)
    figures = {
        "task": a.task,
        "command": a.command or f"bash scripts/train_shipped.sh {a.task}",
        "cases": a.cases,
        "data_seed": a.data_seed,
        "init": init,
        **({"soup": {"ingredients": run["soup"], "about": run.get("about")}} if run.get("soup") else {}),
        "weights": out.name,
        "sha256_16": onnx["checkpoint_sha256"][:16],
        "onnx_max_abs_diff": onnx["max_abs_diff"],
        "epoch": ck["epoch"],
        "data_seconds": a.data_seconds,
        "train_seconds": a.train_seconds,
        "grade_head_refit": ck.get("grade_head_refit"),
        "limits": a.limit,
        "evaluations": [summarise(p) for p in a.reports],
    }
    (out.with_suffix(".json")).write_text(json.dumps(figures, indent=1) + "\n")
    (out.with_suffix(".md")).write_text(model_card(figures, ck))
    print(json.dumps({k: v for k, v in figures.items() if k != "evaluations"}, indent=1))
    for e in figures["evaluations"]:
        print(e["data"], e["split"], e["num_cases"], "cases: Dice", e["dice_mean"], "grade acc", e["grade_accuracy"])


if __name__ == "__main__":
    main()
