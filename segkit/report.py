"""Evaluation reports: per_case.csv, report.json, report.md and four figures, written atomically."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from segkit.io import atomic_write_text
from segkit.metrics import EMPTY_RULE, LESION_RULE, SURFACE_RULE, bootstrap_ci, grade_agreement, grading_metrics
from segkit.plots import plot_calibration, plot_confusion, plot_dice_by_case, plot_roc, save_figure

SEG_SUMMARY = ("dice", "iou", "hd95", "assd", "nsd", "vol_diff_ml")  # averaged with bootstrap CIs
NUM_BINS = 3  # a numeric case field with more values than this is reported by thirds of the cases
SEG_COLUMNS = SEG_SUMMARY[:5] + ("vol_true_ml", "vol_pred_ml", "vol_diff_ml", "vol_fp_ml", "empty")
FILES = (
    "per_case.csv",
    "report.json",
    "report.md",
    "confusion.png",
    "roc.png",
    "calibration.png",
    "dice_by_case.png",
)
LESION_FILE = "lesions.csv"  # written when lesion labels are scored
# Lesion sizes reported apart (mL): under ~1 cm across, ~1-2 cm, over ~2 cm (a sphere of 0.5 mL is 9.8 mm wide)
LESION_BINS_ML = (0.5, 5.0)
LESION_COLUMNS = ("case", "label", "source", "lesion", "volume_ml", "overlap", "matched")


def write_evaluation(
    rows: list[dict],
    probs: np.ndarray,
    y_true: np.ndarray,
    grades: tuple[str, ...],
    labels: tuple[str, ...],
    out: Path,
    meta: dict,
    bootstrap: int = 1000,
    nsd_tolerance_mm: float | None = None,
    by: tuple[str, ...] = (),
    lesions: tuple[str, ...] = (),
    lesion_rows: list[dict] | None = None,
) -> dict[str, Any]:
    """Write the seven evaluation files into out (and lesions.csv when lesions are scored); return the report.

    rows: one dict per case (segmentation_metrics keys plus case, biomarker_*, grade_*, p_*, and the fields in by).
    probs: (N, G) grade probabilities; y_true: (N,) true grade index, -1 where unknown.
    by: case fields to break the results down by (the true grade always is, when cases are graded).
    lesions: labels scored lesion by lesion, from lesion_rows (metrics.lesion_table's records plus "case").
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(len(rows), len(grades))  # (N, G)
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)  # (N,)
    if len(y_true) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(y_true)} true grades")
    out = Path(out)
    report = build_report(rows, probs, y_true, grades, labels, meta, bootstrap, by)
    report["nsd_tolerance_mm"] = nsd_tolerance_mm
    report["files"] = list(FILES)
    if lesions:
        lesion_rows = lesion_rows or []
        report["lesions"] = lesion_summary(lesion_rows, lesions, len(rows))
        report["files"].append(LESION_FILE)
        write_per_case_csv(out / LESION_FILE, lesion_rows, list(LESION_COLUMNS))
    write_per_case_csv(out / "per_case.csv", rows, per_case_columns(rows, grades, labels))
    atomic_write_text(out / "report.json", json.dumps(_plain(report), indent=2, allow_nan=False))
    atomic_write_text(out / "report.md", render_markdown(report))
    graded = _graded(y_true, probs)
    save_figure(out / "confusion.png", plot_confusion(report["grading"], grades))
    save_figure(out / "roc.png", plot_roc(y_true[graded], probs[graded], grades, report["grading"]))
    save_figure(out / "calibration.png", plot_calibration(report["grading"]))
    save_figure(out / "dice_by_case.png", plot_dice_by_case(rows, labels))
    return report


def build_report(
    rows: list[dict],
    probs: np.ndarray,
    y_true: np.ndarray,
    grades: tuple[str, ...],
    labels: tuple[str, ...],
    meta: dict,
    bootstrap: int = 1000,
    by: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The report dict: segmentation means with CIs, empty cases, grading, agreement, subgroups."""
    graded = _graded(y_true, probs)
    grading = None
    if graded.any():
        grading = grading_metrics(y_true[graded], probs[graded], grades)
        correct = probs[graded].argmax(axis=1) == y_true[graded]
        grading["accuracy_ci"] = _ci(correct.astype(float), bootstrap)
    col = lambda key: [r.get(key) for r in rows]  # noqa: E731
    return {
        "meta": meta,
        "num_cases": len(rows),
        "num_graded": int(graded.sum()),
        "empty_case_rule": EMPTY_RULE,
        "surface_rule": SURFACE_RULE,
        "segmentation": {name: _seg_summary(rows, name, bootstrap) for name in labels[1:]},
        "healthy_false_positive_ml": _healthy_fp(rows, labels, grades[0]),
        "grading": grading,
        "agreement": {
            "classifier_vs_biomarker": grade_agreement(col("grade_pred"), col("grade_biomarker"), grades),
            "biomarker_vs_truth": grade_agreement(col("grade_true"), col("grade_biomarker"), grades),
        },
        "subgroups": {
            key: _subgroups(rows, key, labels, bootstrap) for key in (("grade_true",) if graded.any() else ()) + by
        },
    }


def _graded(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The cases the grade metrics score: a known true grade and grade probabilities (a constant image gets none:
    predict leaves it ungraded, and its NaNs crashed the AUC and calibration)."""
    return (y_true >= 0) & np.isfinite(probs).all(axis=1)


def _subgroups(rows: list[dict], key: str, labels: tuple[str, ...], num_samples: int) -> dict[str, Any]:
    """Per value of one case field: cases, per-case Dice per label (mean with CI) and grade accuracy."""
    names, order = group_names([r.get(key) for r in rows])
    out = {}
    for value in order:
        members = [r for r, n in zip(rows, names, strict=True) if n == value]
        right = [r.get("grade_pred") == r["grade_true"] for r in members if r.get("grade_true") is not None]
        out[value] = {
            "num_cases": len(members),
            "dice": {name: _ci([r.get(f"dice_{name}") for r in members], num_samples) for name in labels[1:]},
            "grade_accuracy": float(np.mean(right)) if right else None,
        }
    return out


def group_names(values: list[Any]) -> tuple[list[str], list[str]]:
    """Each case's subgroup for one field, and the groups in report order: the value itself (groups sorted),
    or for a number with more than NUM_BINS values (a slice thickness, an age) its third of the cases, named
    by the range of the values in it (groups ascending)."""
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(nums) < len(values) or len(set(nums)) <= NUM_BINS:
        names = [_group_name(v) for v in values]
        return names, sorted(set(names))
    edges = np.quantile(nums, np.linspace(0, 1, NUM_BINS + 1)[1:-1])
    bins = np.searchsorted(edges, nums, side="right").tolist()
    span = {b: [v for v, i in zip(nums, bins, strict=True) if i == b] for b in sorted(set(bins))}
    label = {b: f"{min(v):g}" if min(v) == max(v) else f"{min(v):g} to {max(v):g}" for b, v in span.items()}
    return [label[b] for b in bins], list(label.values())


def _group_name(v: Any) -> str:
    """A case field's value as a subgroup name: text as it is, anything else as JSON (true, null, 3)."""
    return v if isinstance(v, str) else json.dumps(v)


def _ci(values: list | np.ndarray, num_samples: int) -> dict[str, Any]:
    """Mean with bootstrap 95% CI and the number of defined values."""
    v = np.asarray([np.nan if x is None or x == "" else float(x) for x in values], dtype=float)
    mean, lo, hi = bootstrap_ci(v, num_samples=num_samples)
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "n": int(np.isfinite(v).sum())}


def _seg_summary(rows: list[dict], name: str, num_samples: int) -> dict[str, Any]:
    """Per-label means with CIs, plus the cases in each empty category."""
    out: dict[str, Any] = {m: _ci([r.get(f"{m}_{name}") for r in rows], num_samples) for m in SEG_SUMMARY}
    present = [r.get(f"dice_{name}") for r in rows if r.get(f"empty_{name}") not in ("both", "truth")]
    out["dice_truth_present"] = _ci(present, num_samples)
    out["dice_pooled"] = _pooled_dice(rows, name)
    out["empty"] = {
        kind: [str(r.get("case")) for r in rows if r.get(f"empty_{name}") == kind] for kind in ("both", "truth", "pred")
    }
    return out


def _pooled_dice(rows: list[dict], name: str) -> float | None:
    """The label's Dice over all cases at once (nnU-Net's pooled Dice; volumes in mL summed, so each mL weighs
    the same): unlike the per-case mean, a lesion-free case adds only its false volume, never a free 1.0 or a
    whole 0. None when the label is in no truth and no prediction."""
    true = sum(float(r.get(f"vol_true_ml_{name}") or 0.0) for r in rows)
    pred = sum(float(r.get(f"vol_pred_ml_{name}") or 0.0) for r in rows)
    false = sum(float(r.get(f"vol_fp_ml_{name}") or 0.0) for r in rows)
    return 2 * (pred - false) / (true + pred) if true + pred > 0 else None


def _healthy_fp(rows: list[dict], labels: tuple[str, ...], healthy: str) -> dict[str, Any]:
    """Volume predicted outside the true label, over the cases whose true grade is healthy."""
    cases = [r for r in rows if r.get("grade_true") == healthy]
    out: dict[str, Any] = {"grade": healthy, "num_cases": len(cases), "labels": {}}
    for name in labels[1:]:
        fp = [float(r[f"vol_fp_ml_{name}"]) for r in cases if r.get(f"vol_fp_ml_{name}") is not None]
        out["labels"][name] = {
            "mean": float(np.mean(fp)) if fp else None,
            "max": float(np.max(fp)) if fp else None,
            "num_with_fp": sum(v > 0 for v in fp),
        }
    return out


def lesion_summary(records: list[dict], lesions: tuple[str, ...], num_cases: int) -> dict[str, Any]:
    """Lesion-wise detection over all cases (metrics.LESION_RULE), per label: recall (overall and by the true
    lesion's size, LESION_BINS_ML), precision, F1, false lesions per case."""
    edges = (0.0, *LESION_BINS_ML, math.inf)
    out: dict[str, Any] = {"rule": LESION_RULE, "num_cases": num_cases, "labels": {}}
    for name in lesions:
        true = [r for r in records if r["label"] == name and r["source"] == "truth"]
        pred = [r for r in records if r["label"] == name and r["source"] == "prediction"]
        found, false = sum(r["matched"] for r in true), sum(not r["matched"] for r in pred)
        recall = _share(found, len(true))
        precision = _share(len(pred) - false, len(pred))
        f1 = None if recall is None or precision is None else (2 * recall * precision / (recall + precision or 1.0))
        by_size = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            inside = [r for r in true if lo <= r["volume_ml"] < hi]
            hits = sum(r["matched"] for r in inside)
            by_size.append(
                {
                    "min_ml": lo,
                    "max_ml": hi if math.isfinite(hi) else None,
                    "true": len(inside),
                    "found": hits,
                    "recall": _share(hits, len(inside)),
                }
            )
        out["labels"][name] = {
            "true": len(true),
            "found": found,
            "recall": recall,
            "recall_by_size": by_size,
            "predicted": len(pred),
            "false": false,
            "precision": precision,
            "f1": f1,
            "false_per_case": false / num_cases if num_cases else None,
            "false_ml_largest": max((r["volume_ml"] for r in pred if not r["matched"]), default=None),
        }
    return out


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def per_case_columns(rows: list[dict], grades: tuple[str, ...], labels: tuple[str, ...]) -> list[str]:
    """per_case.csv columns: fixed order first, then any extra keys the rows carry."""
    base = ["case"] + [f"{m}_{name}" for name in labels[1:] for m in SEG_COLUMNS]
    base += ["biomarker_true", "biomarker_pred", "grade_true", "grade_pred", "grade_biomarker"]
    base += [f"p_{g}" for g in grades]
    extra = [k for r in rows for k in r if k not in base]
    return base + list(dict.fromkeys(extra))


def write_per_case_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """One row per case; undefined values are left blank."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([_cell(r.get(c)) for c in columns])
    atomic_write_text(path, buf.getvalue())


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    return str(v)


def _plain(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/Inf to null, paths to strings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


# ---------------------------------------------------------------- Markdown


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "undefined"
    return f"{v:.{digits}f}"


def _mean_ci(s: dict[str, Any], digits: int = 3) -> str:
    if s["n"] == 0:
        return "undefined (no defined values)"
    if s["n"] == 1:
        return f"{_num(s['mean'], digits)} (single case, no interval)"
    return f"{_num(s['mean'], digits)} ({_num(s['ci_low'], digits)} to {_num(s['ci_high'], digits)})"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in body]


def _cases(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … (+{len(names) - limit} more)" if len(names) > limit else "")


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: metadata, summary, segmentation, empty cases, grading, calibration, agreement."""
    n, g, tol = report["num_cases"], report["grading"], report.get("nsd_tolerance_mm")
    nsd = f"NSD at {tol:g} mm" if tol is not None else "NSD"
    lines = ["# segkit evaluation report", ""]
    lines += _table(["", ""], [[f"**{k}**", _meta_value(v)] for k, v in report["meta"].items()])
    small = f" This split has only {n} cases." if n < 30 else ""
    split = report["meta"].get("split")
    lines += [
        "",
        f"> **{n} cases.** Means are given with bootstrap 95% confidence intervals. On a "
        f"small split these intervals are wide; differences inside them are not evidence "
        f"that one model is better.{small}",
        "",
    ]
    if split in ("train", "all"):
        lines += [
            f"> **Split `{split}`**: if the model was trained on this dataset, these are its own training cases, and "
            "the figures overstate what it does on scans it never saw; use the `test` split for that.",
            "",
        ]

    lines += ["## Summary", ""]
    body = []
    for name, s in report["segmentation"].items():
        body += [
            [f"Dice, {name}", _mean_ci(s["dice"])],
            [f"HD95, {name} (mm)", _mean_ci(s["hd95"], 2)],
            [f"{nsd}, {name}", _mean_ci(s["nsd"])],
        ]
    if g:
        body += [
            ["Grade accuracy", _mean_ci(g["accuracy_ci"])],
            ["Grade balanced accuracy", _num(g["balanced_accuracy"])],
            ["Grade macro ROC-AUC", _auc_macro(g)],
        ]
    lines += _table(["Measure", "Mean (95% CI)"], body) + [""]

    lines += ["## Segmentation", ""]
    head = ["Label", "Dice", "IoU", "HD95 (mm)", "ASSD (mm)", nsd, "Volume pred − true (mL)"]
    body = [
        [name] + [_mean_ci(s[m], 2 if m in ("hd95", "assd", "vol_diff_ml") else 3) for m in SEG_SUMMARY]
        for name, s in report["segmentation"].items()
    ]
    lines += _table(head, body)
    lines += [
        "",
        "Dice over cases where the label is present in the truth (both-empty cases left "
        "out): " + "; ".join(f"{k} {_mean_ci(s['dice_truth_present'])}" for k, s in report["segmentation"].items()),
        "",
        "Pooled Dice (all cases' voxels together, each mL weighing the same): "
        + "; ".join(f"{k} {_num(s['dice_pooled'])}" for k, s in report["segmentation"].items()),
        "",
    ]
    lines += [f"**Distances.** {report['surface_rule']}", ""]

    lines += _empty_section(report)
    if "lesions" in report:
        lines += _lesion_section(report["lesions"])
    if g:
        lines += _grading_section(g)
        if report["num_graded"] < n:
            lines += [
                f"{n - report['num_graded']} of the {n} cases are not in the grade figures: no true grade, or no "
                "grade probabilities (a constant image, which predict leaves ungraded).",
                "",
            ]
    else:
        lines += ["## Grading", "", "No case has a ground-truth grade; grading not evaluated.", ""]
    lines += _agreement_section(report["agreement"])
    lines += _subgroup_section(report.get("subgroups", {}))
    lines += [
        "## Figures",
        "",
        "![Confusion matrix](confusion.png)",
        "",
        "![ROC curves](roc.png)",
        "",
        "![Calibration](calibration.png)",
        "",
        "![Dice by case](dice_by_case.png)",
        "",
        "Per-case values: `per_case.csv` (blank = undefined). Machine-readable summary: `report.json`.",
        "",
    ]
    return "\n".join(lines)


def _subgroup_section(subgroups: dict[str, Any]) -> list[str]:
    if not subgroups:
        return []
    lines = [
        "## By subgroup",
        "",
        "Mean per-case Dice (95% CI) and grade accuracy within the cases that share a value of a dataset.json "
        "field (`segkit evaluate --by FIELD`; `grade_true` is the reference grade; a number with more than "
        f"{NUM_BINS} values is cut into thirds of the cases). A group of a few cases varies widely: read the "
        "intervals.",
        "",
    ]
    for key, groups in subgroups.items():
        names = list(next(iter(groups.values()))["dice"])
        body = [
            [f"`{value}`", str(g["num_cases"])]
            + [_mean_ci(g["dice"][n]) for n in names]
            + [_num(g["grade_accuracy"]) if g["grade_accuracy"] is not None else "-"]
            for value, g in groups.items()
        ]
        lines += [f"### {key}", ""]
        lines += _table([key, "Cases"] + [f"Dice, {n}" for n in names] + ["Grade accuracy"], body) + [""]
    return lines


def _meta_value(v: Any) -> str:
    if v is None:  # a model soup's epoch: its weights are several checkpoints' mean
        return "none recorded"
    if isinstance(v, dict | list | tuple):
        return "`" + json.dumps(_plain(v), separators=(", ", ": ")) + "`"
    return str(v)


def _auc_macro(g: dict[str, Any]) -> str:
    if g["auc_macro"] is None:
        return "undefined (" + "; ".join(g["auc_undefined"].values()) + ")"
    if len(g["auc_macro_over"]) < len(g["grades"]):
        return f"{_num(g['auc_macro'])} (over {', '.join(g['auc_macro_over'])} only)"
    return _num(g["auc_macro"])


def _empty_section(report: dict[str, Any]) -> list[str]:
    lines = ["## Empty cases", "", f"**Rule.** {report['empty_case_rule']}", ""]
    body = []
    for name, s in report["segmentation"].items():
        e = s["empty"]
        body.append(
            [
                name,
                f"{len(e['both'])}: {_cases(e['both'])}" if e["both"] else "0",
                f"{len(e['truth'])}: {_cases(e['truth'])}" if e["truth"] else "0",
                f"{len(e['pred'])}: {_cases(e['pred'])}" if e["pred"] else "0",
            ]
        )
    head = [
        "Label",
        "Both empty (Dice 1)",
        "Truth empty, predicted (false positive)",
        "Truth present, nothing predicted (missed)",
    ]
    lines += _table(head, body) + [""]
    fp = report["healthy_false_positive_ml"]
    lines += [
        f"False-positive volume (predicted outside the true label) in the {fp['num_cases']} {fp['grade']} cases:",
        "",
    ]
    body = [
        [name, _num(v["mean"], 2), _num(v["max"], 2), f"{v['num_with_fp']} / {fp['num_cases']}"]
        for name, v in fp["labels"].items()
    ]
    return lines + _table(["Label", "Mean (mL)", "Max (mL)", "Cases with any"], body) + [""]


def _lesion_section(lesions: dict[str, Any]) -> list[str]:
    first = next(iter(lesions["labels"].values()), None)
    sizes = [_size_range(b["min_ml"], b["max_ml"]) for b in first["recall_by_size"]] if first else []
    head = ["Label", "True lesions", "Found (recall)", *[f"Recall, {s}" for s in sizes]]
    head += ["Predicted", "False", "Precision", "F1", "False per case"]
    body = []
    for name, v in lesions["labels"].items():
        row = [name, str(v["true"]), f"{v['found']} ({_num(v['recall'])})"]
        row += [f"{_num(b['recall'])} ({b['found']} / {b['true']})" if b["true"] else "-" for b in v["recall_by_size"]]
        row += [str(v["predicted"]), str(v["false"]), _num(v["precision"]), _num(v["f1"]), _num(v["false_per_case"], 2)]
        body.append(row)
    lines = ["## Lesions (detection)", "", f"**Rule.** {lesions['rule']}", ""]
    return lines + _table(head, body) + [""]


def _size_range(lo: float, hi: float | None) -> str:
    if hi is None:
        return f">= {lo:g} mL"
    return f"< {hi:g} mL" if lo == 0 else f"{lo:g}-{hi:g} mL"


def _grading_section(g: dict[str, Any]) -> list[str]:
    grades = g["grades"]
    lines = [
        "## Grading",
        "",
        f"{g['num_cases']} graded cases. Accuracy {_mean_ci(g['accuracy_ci'])}; balanced "
        f"accuracy (mean recall over grades present) {_num(g['balanced_accuracy'])}.",
        "",
    ]
    body = [
        [k, _num(v["precision"]), _num(v["recall"]), _num(v["f1"]), str(v["support"])]
        for k, v in g["per_class"].items()
    ]
    m = g["macro"]
    body.append(["**macro**", _num(m["precision"]), _num(m["recall"]), _num(m["f1"]), str(g["num_cases"])])
    lines += _table(["Grade", "Precision (PPV)", "Recall (sensitivity)", "F1", "Support"], body)
    lines += [
        "",
        "A grade never predicted has precision 0, and a grade with no cases counts as 0 in "
        "the macro averages (scikit-learn convention).",
        "",
        "Confusion matrix (rows: actual grade, columns: predicted grade):",
        "",
    ]
    body = [[f"**{a}**"] + [str(c) for c in row] for a, row in zip(grades, g["confusion"], strict=True)]
    lines += _table(["Actual \\ Predicted"] + grades, body) + [""]
    body = [[k, _num(v) if v is not None else f"undefined ({g['auc_undefined'][k]})"] for k, v in g["auc_ovr"].items()]
    body.append(["**macro**", _auc_macro(g)])
    lines += ["ROC-AUC, each grade against the rest:", ""]
    lines += _table(["Grade", "ROC-AUC"], body) + [""]
    lines += [
        "### Calibration",
        "",
        f"Expected calibration error (top-label, 10 bins): **{_num(g['ece'])}**. It is the "
        "average gap between how confident the grader is and how often it is right "
        "(0 = perfectly calibrated).",
        "",
    ]
    c = g["calibration"]
    body = [
        [
            f"{c['edges'][i]:.1f}–{c['edges'][i + 1]:.1f}",
            str(n),
            _num(c["confidence"][i]),
            _num(c["accuracy"][i]),
        ]
        for i, n in enumerate(c["count"])
        if n
    ]
    return lines + _table(["Confidence", "Cases", "Mean confidence", "Accuracy"], body) + [""]


def _agreement_section(agreement: dict[str, Any]) -> list[str]:
    lines = ["## Classifier grade vs biomarker grade", ""]
    for key, title in (
        (
            "classifier_vs_biomarker",
            "Classifier grade vs grade implied by the predicted mask's biomarker",
        ),
        ("biomarker_vs_truth", "Biomarker grade vs true grade"),
    ):
        a = agreement[key]
        if a["agreement"] is None:
            lines += [f"- {title}: undefined ({a['kappa_note']}).", ""]
            continue
        kappa = _num(a["kappa"]) if a["kappa"] is not None else a["kappa_note"]
        lines += [
            f"- {title}: {a['num_agree']} / {a['num_compared']} agree "
            f"({100 * a['agreement']:.1f}%), Cohen's kappa {kappa}; "
            f"{a['num_undefined']} cases without both grades.",
            "",
        ]
    a = agreement["classifier_vs_biomarker"]
    if a.get("table"):
        body = [[f"**{k}**"] + [str(c) for c in row] for k, row in zip(a["grades"], a["table"], strict=True)]
        lines += ["Rows: classifier grade; columns: biomarker grade.", ""]
        lines += _table(["Classifier \\ Biomarker"] + a["grades"], body) + [""]
    return lines
