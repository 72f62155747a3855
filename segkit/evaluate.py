"""segkit evaluate: predict a dataset split through the predict path, then score and report it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from segkit import __version__
from segkit.data.msd import read_case, read_dataset
from segkit.errors import InputError
from segkit.infer import load_model, predict_volume, write_prediction
from segkit.measure import measure
from segkit.metrics import segmentation_metrics
from segkit.render import write_label_descriptions
from segkit.report import write_evaluation
from segkit.tasks import TASKS

log = logging.getLogger(__name__)


def evaluate_split(
    model: str | Path | None,
    data: Path,
    split: str,
    out: Path | None,
    device: str = "auto",
    engine: str = "auto",
    tta: bool | None = None,
    settings: list[str] | None = None,
) -> dict[str, Any]:
    """Score one split of a dataset (model None: its task's shipped model); writes predictions/ and reports into out."""
    ds = read_dataset(data)
    cases = ds.split(split)
    if not cases:
        raise InputError(f"{data}: the {split} split has no cases; pick another --split")
    if model is None:
        if ds.task not in TASKS:
            raise InputError(
                f"{data}/dataset.json: task {ds.task!r} has no shipped model ({', '.join(TASKS)}); pass --model"
            )
        model = ds.task
    net, cfg, info = load_model(model, device, engine, tta, settings)
    if tuple(ds.labels) != cfg.task.labels:
        raise InputError(
            f"{data}: dataset labels {list(ds.labels)} differ from the model's {list(cfg.task.labels)}; "
            "evaluate a model trained for this task"
        )
    if out is None:  # never into the installed package's weights folder
        out = Path(f"eval-{split}") if info["kind"] == "shipped" else Path(info["checkpoint"]).parent / f"eval-{split}"
    out = Path(out)
    grades = cfg.task.grades
    rows, probs, y_true = [], [], []
    for case in tqdm(cases, desc=f"evaluating {split}", leave=False, disable=not sys.stderr.isatty()):
        vol, truth = read_case(case, cfg.task.labels)
        pred = predict_volume(net, cfg, vol)
        write_prediction(pred, vol, out / "predictions", cfg, info)
        row: dict[str, Any] = {"case": case.case_id}
        row.update(segmentation_metrics(pred.mask, truth, vol.spacing, cfg.task.labels, cfg.eval.nsd_tolerance_mm))
        row["biomarker_true"] = measure(truth, vol.voxel_ml, cfg.task)["biomarker"]["value"]
        row["biomarker_pred"] = pred.measurements["biomarker"]["value"]
        row["grade_true"] = case.grade
        row["grade_pred"] = pred.grade
        row["grade_biomarker"] = pred.measurements["biomarker"]["grade"]
        p = [pred.grade_probs.get(g, np.nan) for g in grades]
        row.update({f"p_{g}": v for g, v in zip(grades, p, strict=True)})
        rows.append(row)
        probs.append(p)
        y_true.append(grades.index(case.grade) if case.grade in grades else -1)
    write_label_descriptions(out / "predictions", cfg.task.labels)
    meta = {
        "model": info["checkpoint"],
        "model_kind": info["kind"],
        "model_sha256": info["sha256"],
        "epoch": info["epoch"],
        "arch": info["arch"],
        "dataset": str(Path(data).resolve()),
        "split": split,
        "cases": len(rows),
        "task": cfg.task.name,
        "segkit": __version__,
    }
    report = write_evaluation(
        rows,
        np.array(probs),
        np.array(y_true),
        grades,
        cfg.task.labels,
        out,
        meta,
        cfg.eval.bootstrap,
        cfg.eval.nsd_tolerance_mm,
    )
    report["out"] = str(out)
    report["summary_line"] = summary_line(report, cfg.task.labels, split)
    return report


def summary_line(report: dict[str, Any], labels: tuple[str, ...], split: str) -> str:
    """One line: Dice per label with CI, grade accuracy and balanced accuracy."""
    parts = []
    for name in labels[1:]:
        d = report["segmentation"][name]["dice"]
        pooled = report["segmentation"][name]["dice_pooled"]
        pooled_txt = "" if pooled is None else f" (pooled {pooled:.3f})"
        parts.append(f"Dice {name} {d['mean']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]{pooled_txt}")
    g = report.get("grading")
    if g:
        parts.append(f"grade accuracy {g['accuracy']:.3f} (balanced {g['balanced_accuracy']:.3f})")
    return f"{split} split, {report['num_cases']} cases: " + "; ".join(parts)
