"""segkit evaluate: predict a dataset split through the predict path, then score and report it."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from segkit import __version__
from segkit.config import Config
from segkit.data.msd import CORE_FIELDS, Case, read_case, read_dataset
from segkit.errors import InputError
from segkit.infer import OUTPUT_SUFFIXES, load_model, predict_volume, write_prediction
from segkit.io import current_umask, ensure_dir
from segkit.measure import measure
from segkit.metrics import lesion_counts, lesion_table, segmentation_metrics
from segkit.render import LABEL_FILE_SUFFIXES, LEGACY_LABEL_FILES, write_label_descriptions
from segkit.report import LESION_FILE, write_evaluation
from segkit.tasks import TASKS

log = logging.getLogger(__name__)
MAX_GROUPS = 8  # a field with more values than this (a case number, an orientation code) is not a subgroup


def evaluate_split(
    model: str | Path | None,
    data: Path,
    split: str,
    out: Path | None,
    device: str = "auto",
    engine: str = "auto",
    tta: bool | None = None,
    settings: list[str] | None = None,
    by: list[str] | None = None,
) -> dict[str, Any]:
    """Score one split of a dataset (model None: its task's shipped model); writes predictions/ and reports into out.

    by: dataset.json case fields to break the results down by; None: each text or yes/no field with 2 to
    MAX_GROUPS values over the split (e.g. a draw's contrast and subject, a user's site or scanner)."""
    ds = read_dataset(data)
    cases = ds.split(split)
    if not cases:
        raise InputError(f"{data}: the {split} split has no cases; pick another --split")
    fields = subgroup_fields(cases, by, data)
    named: dict[str, str] = {}
    for case in cases:  # predictions are named by case: images may share a file name (FreeSurfer's orig.mgz)
        name = prediction_name(case.case_id)
        if name in named:
            raise InputError(
                f"{data}/dataset.json: cases {named[name]} and {case.case_id} would both be written as "
                f"{name}_mask.nii.gz; give them case ids that differ in more than / and \\"
            )
        named[name] = case.case_id
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
    check_replaceable(out / "predictions", data)
    existed = out.exists()
    staging = Path(tempfile.mkdtemp(prefix=".predictions-", dir=ensure_dir(out)))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would keep predictions/ from everyone else
    try:
        found = _score_cases(net, cfg, info, cases, fields, split, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a run that fails part-way leaves the earlier evaluation whole
        if not existed and not any(out.iterdir()):
            out.rmdir()  # and no folder where there was none
        raise
    _replace_folder(out / "predictions", staging)  # no prediction of an earlier evaluation stays beside these
    rows, probs, y_true, lesion_rows = found
    grades, lesions = cfg.task.grades, cfg.task.lesions
    if not lesions:
        (out / LESION_FILE).unlink(missing_ok=True)  # an earlier evaluation's, of a task with lesions
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
        fields,
        lesions,
        lesion_rows,
    )
    report["out"] = str(out)
    report["summary_line"] = summary_line(report, cfg.task.labels, split)
    return report


def prediction_name(case_id: str) -> str:
    """A case's name in predictions/ (its files <name>_mask.nii.gz, ...): its case id, path separators as _,
    so that the review page (segkit export) finds its row of per_case.csv."""
    return case_id.replace("/", "_").replace("\\", "_").lstrip(".") or "case"


def _score_cases(
    net: Any, cfg: Config, info: dict[str, Any], cases: list[Case], fields: tuple[str, ...], split: str, out: Path
) -> tuple[list[dict[str, Any]], list[list[float]], list[int], list[dict[str, Any]]]:
    """Predict every case into `out` and score it: (per-case rows, grade probabilities, true grades, lesion rows)."""
    grades, lesions = cfg.task.grades, cfg.task.lesions
    rows: list[dict[str, Any]] = []
    probs: list[list[float]] = []
    y_true: list[int] = []
    lesion_rows: list[dict[str, Any]] = []
    for case in tqdm(cases, desc=f"evaluating {split}", leave=False, disable=not sys.stderr.isatty()):
        vol, truth = read_case(case, cfg.task.labels)
        pred = predict_volume(net, cfg, vol)
        write_prediction(pred, vol, out, cfg, info, prediction_name(case.case_id))
        row: dict[str, Any] = {"case": case.case_id, **{f: case.info.get(f) for f in fields}}
        row.update(segmentation_metrics(pred.mask, truth, vol.spacing, cfg.task.labels, cfg.eval.nsd_tolerance_mm))
        if lesions:
            table = lesion_table(pred.mask, truth, vol.spacing, cfg.task.labels, lesions)
            row.update(lesion_counts(table, lesions))
            lesion_rows += [{"case": case.case_id, **r} for r in table]
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
    write_label_descriptions(out, cfg.task.name, cfg.task.labels)
    return rows, probs, y_true, lesion_rows


def check_replaceable(folder: Path, data: Path) -> None:
    """InputError unless `folder` (an evaluation's predictions/) is absent, or holds an earlier segkit evaluate's
    predictions and nothing else: evaluate replaces it whole, and must not take a user's files with it."""
    if Path(data).resolve().is_relative_to(folder.resolve()):
        raise InputError(f"{data}: lies in {folder}, which evaluate replaces; pass another --out")
    if not folder.is_dir():
        return
    own = (*OUTPUT_SUFFIXES, *LABEL_FILE_SUFFIXES.values())  # what predict and evaluate write, by name
    foreign = sorted(
        p.name for p in folder.iterdir() if not p.name.endswith(own) and p.name not in LEGACY_LABEL_FILES.values()
    )
    evaluated = (folder.parent / "per_case.csv").is_file() and (folder.parent / "report.json").is_file()
    if foreign or (not evaluated and any(folder.iterdir())):
        what = f"files evaluate did not write ({', '.join(foreign[:3])})" if foreign else "another run's predictions"
        raise InputError(f"{folder}: holds {what}; evaluate replaces that folder, so pass another --out")


def _replace_folder(folder: Path, new: Path) -> None:
    """Put `new` where `folder` is (renames only: the old folder is removed once the new one is in place)."""
    old = folder.with_name(f".{folder.name}-old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    new.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def subgroup_fields(cases: list[Case], asked: list[str] | None, data: Path) -> tuple[str, ...]:
    """The case fields to break results down by: those asked for (each must be in some case of the split), else
    every field whose values over the split are text or yes/no, number 2 to MAX_GROUPS and group some cases."""
    present = list(dict.fromkeys(k for c in cases for k in c.info))
    core = [f for f in asked or [] if f in CORE_FIELDS]
    if core:
        raise InputError(
            f"--by {core[0]}: one of dataset.json's own case keys ({', '.join(CORE_FIELDS)}), not a field to group "
            f"by (the report breaks results down by the true grade already); fields: {', '.join(present) or 'none'}"
        )
    if asked is not None:
        unknown = [f for f in asked if f not in present]
        if unknown:
            have = ", ".join(present) or "none"
            raise InputError(
                f"{data}/dataset.json: no case of the split has field {unknown[0]!r} (fields: {have}); "
                "pick one of those for --by"
            )
        return tuple(dict.fromkeys(asked))
    chosen = []
    for key in present:
        values = [c.info.get(key) for c in cases]
        categorical = all(v is None or isinstance(v, str | bool) for v in values)
        num_values = len(set(values))
        if categorical and 2 <= num_values <= MAX_GROUPS and num_values < len(cases):  # one per case names cases
            chosen.append(key)
    return tuple(chosen)


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
