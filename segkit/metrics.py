"""Pure metric functions: Dice, IoU, HD95, ASSD, NSD, volumes, grading, calibration, bootstrap.

Surface metrics come from monai.metrics, grading metrics from scikit-learn; this module only
applies segkit's rules for empty masks and undefined values (None, never a silent 0 or 0.5).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_hausdorff_distance,
    compute_surface_dice,
)
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

EMPTY_RULE = (
    "A label absent from both truth and prediction counts as Dice 1, IoU 1 and NSD 1, and such cases "
    "are listed separately. A label present in only one of them counts as Dice 0, IoU 0, NSD 0. Surface "
    "distances (HD95, ASSD) need the label in both: otherwise they are left blank and excluded from means "
    "(a lesion-free case no longer adds a 0 that pulls the mean down), so a missed lesion shows in Dice and "
    "in the empty-case counts, not in the mean HD95. Predicted volume outside the true label is reported as "
    "the false-positive volume, which for healthy cases is the volume wrongly segmented."
)


SURFACE_RULE = (
    "HD95 is the larger of the two directed 95th percentiles of boundary-to-boundary distances and ASSD the mean "
    "of both directions' distances, each boundary voxel counted alike (MONAI's). NSD is the surface-area NSD of "
    "Nikolov et al. (MSD, Metrics Reloaded): the share of both boundaries' area within the tolerance of the other "
    "(MONAI's use_subvoxels, DeepMind's surface-distance)."
)


LESION_RULE = (
    "A lesion is one 26-connected component of a lesion label (each label on its own). A true lesion is found "
    "when the prediction gives any of its voxels that label; a predicted lesion is false when none of its voxels "
    "has that label in the truth (the any-overlap rule of the WMH challenge's lesion recall). Recall = found / "
    "true lesions, precision = predicted lesions that are not false / predicted lesions, both over all cases; "
    "lesions.csv lists every lesion with the share of it the other side covers, for a stricter rule."
)


def confusion_counts(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) voxel counts, rows = truth label, columns = predicted label."""
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}")
    p = np.asarray(pred).ravel().astype(np.int64)
    t = np.asarray(truth).ravel().astype(np.int64)
    for name, a in (("pred", p), ("truth", t)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} holds labels outside 0..{num_classes - 1}")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _dice_iou(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU of labels 1..K-1 from a confusion count matrix; both-empty gives 1."""
    tp = np.diag(counts)[1:].astype(np.float64)
    in_truth = counts.sum(axis=1)[1:].astype(np.float64)
    in_pred = counts.sum(axis=0)[1:].astype(np.float64)
    union = in_truth + in_pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(in_truth + in_pred > 0, 2 * tp / (in_truth + in_pred), 1.0)
        iou = np.where(union > 0, tp / union, 1.0)
    return dice, iou


def dice_per_label(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of labels 1..K-1 (length K-1) from label maps; a label empty in both scores 1.0."""
    return dice_from_counts(confusion_counts(pred, truth, num_classes))


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    """Dice of labels 1..K-1 from confusion_counts. Summed over cases first, it is the pooled Dice (nnU-Net's
    pseudo-Dice): every voxel weighs the same, so a small false lesion in a lesion-free case costs its
    voxels, not the whole 1.0 that the mean of per-case Dice takes off."""
    return _dice_iou(counts)[0]


def _surface_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], tolerance_mm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HD95, symmetric ASSD and NSD (MONAI) for M binary masks, each non-empty in both; their conventions are
    SURFACE_RULE's (stated in every report). medpy's HD95 pools both directions first and comes out a little lower.
    NSD was MONAI's default, which counts boundary voxels alike, until 2026-11-29: on 0.7 x 0.9 x 3 mm voxels it
    differed from the surface-area NSD by up to 0.17 either way (tests/test_metrics.py holds boxes against the
    exact surface integral)."""
    yp = torch.from_numpy(pred[None].astype(np.float32))  # (1, M, *spatial)
    yt = torch.from_numpy(truth[None].astype(np.float32))
    sp = [float(s) for s in spacing]
    kw: dict[str, Any] = {"include_background": True, "spacing": sp}
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal deprecated argument
        warnings.filterwarnings("ignore", "monai.metrics.utils", FutureWarning)
        hd95 = compute_hausdorff_distance(yp, yt, percentile=95, **kw)[0]
        assd = compute_average_surface_distance(yp, yt, symmetric=True, **kw)[0]
        thresholds = [tolerance_mm] * pred.shape[0]
        nsd = compute_surface_dice(yp, yt, class_thresholds=thresholds, use_subvoxels=True, **kw)[0]
    return hd95.numpy(), assd.numpy(), nsd.numpy()


def segmentation_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: tuple[float, float, float],
    labels: tuple[str, ...],
    nsd_tolerance_mm: float,
) -> dict[str, float | str | None]:
    """Per-case Dice, IoU, HD95, ASSD, NSD (mm) and volumes (mL) for each non-background label."""
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} does not match a {pred.ndim}-D mask")
    num_classes = len(labels)
    counts = confusion_counts(pred, truth, num_classes)  # (K, K) rows = truth
    dice, iou = _dice_iou(counts)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    in_truth, in_pred = counts.sum(axis=1), counts.sum(axis=0)

    both = [c for c in range(1, num_classes) if in_truth[c] > 0 and in_pred[c] > 0]
    surface: dict[int, tuple[float, float, float]] = {}
    if both:
        masks_p = np.stack([pred == c for c in both])  # (M, *spatial)
        masks_t = np.stack([truth == c for c in both])
        hd95, assd, nsd = _surface_metrics(masks_p, masks_t, spacing, nsd_tolerance_mm)
        surface = {c: (float(hd95[i]), float(assd[i]), float(nsd[i])) for i, c in enumerate(both)}

    out: dict[str, float | str | None] = {}
    for c in range(1, num_classes):
        name = labels[c]
        t_empty, p_empty = in_truth[c] == 0, in_pred[c] == 0
        empty = "both" if t_empty and p_empty else "truth" if t_empty else "pred" if p_empty else ""
        if empty:  # HD95 / ASSD need the label in both (a 0 for both-empty pulled means down); NSD as Dice
            hd, ad, ns = None, None, 1.0 if empty == "both" else 0.0  # type: ignore[assignment]
        else:
            hd, ad, ns = surface[c]
        out[f"dice_{name}"] = float(dice[c - 1])
        out[f"iou_{name}"] = float(iou[c - 1])
        out[f"hd95_{name}"] = hd
        out[f"assd_{name}"] = ad
        out[f"nsd_{name}"] = ns
        out[f"vol_true_ml_{name}"] = float(in_truth[c] * voxel_ml)
        out[f"vol_pred_ml_{name}"] = float(in_pred[c] * voxel_ml)
        out[f"vol_diff_ml_{name}"] = float((int(in_pred[c]) - int(in_truth[c])) * voxel_ml)
        out[f"vol_fp_ml_{name}"] = float((int(in_pred[c]) - int(counts[c, c])) * voxel_ml)
        out[f"empty_{name}"] = empty
    return out


def calibration_bins(probs: np.ndarray, y_true: np.ndarray, num_bins: int = 10) -> dict[str, list]:
    """Top-label reliability table: per equal-width confidence bin, confidence, accuracy, count."""
    probs = np.asarray(probs, dtype=np.float64)  # (N, G)
    y_true = np.asarray(y_true).astype(np.int64)  # (N,)
    conf = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == y_true) if len(probs) else np.zeros(0, dtype=bool)
    # bins are [lo, hi); confidence 1.0 falls into the last bin
    idx = np.minimum((conf * num_bins).astype(np.int64), num_bins - 1)
    count = np.bincount(idx, minlength=num_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=num_bins)
    acc_sum = np.bincount(idx, weights=correct.astype(np.float64), minlength=num_bins)
    nz = count > 0
    mean_conf = np.where(nz, conf_sum / np.maximum(count, 1), np.nan)
    acc = np.where(nz, acc_sum / np.maximum(count, 1), np.nan)
    return {
        "edges": np.linspace(0.0, 1.0, num_bins + 1).tolist(),
        "confidence": [None if np.isnan(v) else float(v) for v in mean_conf],
        "accuracy": [None if np.isnan(v) else float(v) for v in acc],
        "count": count.astype(int).tolist(),
    }


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, num_bins: int = 10) -> float:
    """Top-label ECE: count-weighted mean |accuracy - confidence| over equal-width bins."""
    bins = calibration_bins(probs, y_true, num_bins)
    total = sum(bins["count"])
    if total == 0:
        return float("nan")
    gaps = [n * abs(a - c) for n, a, c in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True) if n]
    return float(sum(gaps) / total)


def _auc_ovr(
    y_true: np.ndarray, probs: np.ndarray, grades: tuple[str, ...]
) -> tuple[dict[str, float | None], dict[str, str]]:
    """One-vs-rest AUC per grade; None plus a reason when a grade lacks positives or negatives."""
    auc: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for g, name in enumerate(grades):
        pos = y_true == g
        if not pos.any():
            auc[name], reasons[name] = None, f"no {name} cases in this split"
        elif pos.all():
            auc[name], reasons[name] = None, f"every case is {name}; no negatives to rank against"
        else:
            auc[name] = float(roc_auc_score(pos, probs[:, g]))
    return auc, reasons


def grading_metrics(y_true: np.ndarray, probs: np.ndarray, grades: tuple[str, ...]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class/macro P/R/F1, one-vs-rest AUC, confusion, ECE.

    Macro precision/recall/F1 follow scikit-learn over all grades (zero_division=0): a grade with
    no cases counts as 0. auc_macro is the mean over the grades whose AUC is defined (listed in
    auc_macro_over); None when no grade's AUC is defined.
    """
    y_true = np.asarray(y_true).astype(np.int64)  # (N,)
    probs = np.asarray(probs, dtype=np.float64)  # (N, G)
    num_grades = len(grades)
    if probs.ndim != 2 or probs.shape != (len(y_true), num_grades):
        raise ValueError(f"probs shape {probs.shape} != ({len(y_true)}, {num_grades})")
    if len(y_true) == 0:
        raise ValueError("grading_metrics needs at least one case")
    if y_true.min() < 0 or y_true.max() >= num_grades:
        raise ValueError(f"y_true holds grades outside 0..{num_grades - 1}")
    y_pred = probs.argmax(axis=1)
    labels = list(range(num_grades))
    prec, rec, f1, sup = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected here
        warnings.simplefilter("ignore", UserWarning)
        bal = balanced_accuracy_score(y_true, y_pred)
    auc, reasons = _auc_ovr(y_true, probs, grades)
    defined = [g for g in grades if auc[g] is not None]
    return {
        "num_cases": int(len(y_true)),
        "grades": list(grades),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(bal),
        "per_class": {
            g: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(sup[i]),
            }
            for i, g in enumerate(grades)
        },
        "macro": {"precision": float(mp), "recall": float(mr), "f1": float(mf)},
        "auc_ovr": auc,
        "auc_undefined": reasons,
        "auc_macro": float(np.mean([auc[g] for g in defined])) if defined else None,
        "auc_macro_over": defined,
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist(),
        "ece": expected_calibration_error(probs, y_true),
        "calibration": calibration_bins(probs, y_true),
    }


def bootstrap_ci(
    values: np.ndarray, num_samples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap (1 - alpha) interval; NaN/None ignored, NaNs when empty."""
    v = np.asarray(
        [np.nan if x is None else x for x in np.asarray(values, dtype=object).ravel()],
        dtype=np.float64,
    )
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if v.size == 1 or num_samples < 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = np.empty(num_samples)
    chunk = max(1, 1_000_000 // v.size)  # bound memory for large case counts
    for start in range(0, num_samples, chunk):
        stop = min(num_samples, start + chunk)
        means[start:stop] = v[rng.integers(0, v.size, (stop - start, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return mean, float(lo), float(hi)


def grade_agreement(
    classifier: list[str | None], biomarker: list[str | None], grades: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Agreement of two gradings: fraction equal, Cohen's kappa, undefined count, cross-table."""
    if len(classifier) != len(biomarker):
        raise ValueError("classifier and biomarker grade lists differ in length")
    pairs = [(a, b) for a, b in zip(classifier, biomarker, strict=True) if a and b]
    out: dict[str, Any] = {
        "num_cases": len(classifier),
        "num_compared": len(pairs),
        "num_undefined": len(classifier) - len(pairs),
        "num_agree": sum(a == b for a, b in pairs),
        "agreement": None,
        "kappa": None,
        "kappa_note": "",
    }
    if not pairs:
        out["kappa_note"] = "no case has both grades"
        return out
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    out["agreement"] = out["num_agree"] / len(pairs)
    if len(set(a) | set(b)) < 2:
        out["kappa_note"] = "undefined: both gradings use a single grade"
    else:
        out["kappa"] = float(cohen_kappa_score(a, b))
    if grades is not None:
        out["grades"] = list(grades)
        out["table"] = confusion_matrix(a, b, labels=list(grades)).astype(int).tolist()
    return out


def lesion_table(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], labels: tuple[str, ...], lesions: tuple[str, ...]
) -> list[dict[str, Any]]:
    """One record per lesion (LESION_RULE) of each label in `lesions`: the truth's lesions, then the
    prediction's; label, source, lesion number, volume (mL), overlap (the share of its voxels the other side
    gives the same label) and matched (any overlap: found, or not false)."""
    from scipy import ndimage as ndi

    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    structure = np.ones((3,) * pred.ndim, dtype=bool)  # 26-connected in 3-D
    out: list[dict[str, Any]] = []
    for name in lesions:
        c = labels.index(name)
        t, p = truth == c, pred == c
        for source, own, other in (("truth", t, p), ("prediction", p, t)):
            comp, n = ndi.label(own, structure=structure)
            if not n:
                continue
            size = np.bincount(comp.ravel(), minlength=n + 1)[1:]
            hit = np.bincount(comp[other], minlength=n + 1)[1:]  # voxels of each lesion the other side labels c
            out += [
                {
                    "label": name,
                    "source": source,
                    "lesion": i + 1,
                    "volume_ml": float(size[i] * voxel_ml),
                    "overlap": float(hit[i] / size[i]),
                    "matched": bool(hit[i] > 0),
                }
                for i in range(n)
            ]
    return out


def lesion_counts(table: list[dict[str, Any]], lesions: tuple[str, ...]) -> dict[str, int]:
    """A case's lesion counts per label from its lesion_table: true, found, predicted, false."""
    out = {}
    for name in lesions:
        true = [r for r in table if r["label"] == name and r["source"] == "truth"]
        pred = [r for r in table if r["label"] == name and r["source"] == "prediction"]
        out[f"lesions_true_{name}"] = len(true)
        out[f"lesions_found_{name}"] = sum(r["matched"] for r in true)
        out[f"lesions_pred_{name}"] = len(pred)
        out[f"lesions_false_{name}"] = sum(not r["matched"] for r in pred)
    return out
