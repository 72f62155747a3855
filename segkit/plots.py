"""Evaluation figures: confusion matrix, ROC curves, calibration, Dice by case (Agg, no pyplot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from sklearn.metrics import roc_curve

from segkit.io import atomic_write


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)  # Agg canvas without pyplot: no global backend state
    return fig


def save_figure(path: Path, fig: Figure) -> None:
    atomic_write(path, lambda t: fig.savefig(t, format="png", dpi=150))


def _no_data(fig: Figure, title: str, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return fig


def plot_confusion(grading: dict[str, Any] | None, grades: tuple[str, ...]) -> Figure:
    """Confusion matrix heat map: counts and row percentages, actual rows, predicted columns."""
    fig = _figure(5.2, 4.4)
    if grading is None:
        return _no_data(fig, "Grade confusion matrix", "No ground-truth grades")
    cm = np.asarray(grading["confusion"])
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(cm.shape):
        pct = f"\n{100 * frac[i, j]:.0f}%" if rows[i, 0] else ""
        ax.text(
            j,
            i,
            f"{cm[i, j]}{pct}",
            ha="center",
            va="center",
            fontsize=11,
            color="white" if frac[i, j] > 0.6 else "black",
        )
    ax.set_xticks(range(len(grades)), grades)
    ax.set_yticks(range(len(grades)), grades)
    ax.set_xlabel("Predicted grade")
    ax.set_ylabel("Actual grade")
    ax.set_title(f"Grade confusion matrix\nn = {cm.sum()}, accuracy {grading['accuracy']:.2f}")
    fig.colorbar(im, ax=ax, label="Fraction of actual grade", shrink=0.85)
    return fig


def plot_roc(y_true: np.ndarray, probs: np.ndarray, grades: tuple[str, ...], grading: dict[str, Any] | None) -> Figure:
    """One-vs-rest ROC curve per grade with AUC in the legend; undefined grades noted, not drawn."""
    fig = _figure(5.6, 5.4)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance (AUC 0.5)")
    if grading is None:
        return _no_data(fig, "ROC", "No ground-truth grades")
    skipped = []
    for k, name in enumerate(grades):
        auc, pos = grading["auc_ovr"][name], y_true == k
        if auc is None:
            skipped.append(f"{name}: {grading['auc_undefined'][name]}")
            continue
        fpr, tpr, _ = roc_curve(pos, probs[:, k])
        ax.plot(
            fpr,
            tpr,
            lw=2,
            ls=("-", "--", ":", "-.")[k % 4],
            drawstyle="steps-post",
            label=f"{name} vs rest: AUC {auc:.2f} ({pos.sum()} cases)",
        )
    if skipped:
        ax.text(
            0.98,
            0.03,
            "Not drawn, AUC undefined:\n" + "\n".join(skipped),
            ha="right",
            va="bottom",
            transform=ax.transAxes,
            fontsize=8,
            color="0.3",
            bbox={"facecolor": "white", "edgecolor": "0.8"},
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.set_xlabel("False positive rate (1 − specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(f"ROC, each grade vs the rest (n = {len(y_true)})")
    ax.legend(loc="upper left" if skipped else "lower right", fontsize=8)
    return fig


def plot_calibration(grading: dict[str, Any] | None) -> Figure:
    """Reliability diagram (accuracy vs confidence per bin) above a histogram of confidences."""
    fig = _figure(5.4, 6.0)
    if grading is None:
        return _no_data(fig, "Calibration", "No ground-truth grades")
    c = grading["calibration"]
    edges = np.asarray(c["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    acc = np.array([np.nan if a is None else a for a in c["accuracy"]])
    conf = np.array([np.nan if a is None else a for a in c["confidence"]])
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(
        centres,
        np.nan_to_num(acc),
        width=width,
        color="tab:blue",
        alpha=0.25,
        edgecolor="tab:blue",
        label="accuracy in bin",
    )
    top.plot([0, 1], [0, 1], ls="--", color="0.4", label="perfect calibration")
    top.plot(conf, acc, "o-", color="tab:orange", label="mean confidence vs accuracy")
    top.set_ylim(0, 1)
    top.set_ylabel("Fraction correct")
    top.set_title(f"Grade calibration (top-label), ECE = {grading['ece']:.3f}")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.bar(centres, c["count"], width=width, edgecolor="white", color="0.5")
    bottom.set_xlim(0, 1)
    bottom.set_ylabel("Cases")
    bottom.set_xlabel("Confidence (probability of the predicted grade)")
    return fig


def plot_dice_by_case(rows: list[dict], labels: tuple[str, ...]) -> Figure:
    """Dice per case, one panel per label, cases sorted worst first; empty cases coloured."""
    names = labels[1:]
    n = len(rows)
    fig = _figure(max(6.0, min(16.0, 2.0 + 0.28 * n)), 2.8 * len(names) + (0.8 if n <= 40 else 0))
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    colours = {"": "tab:blue", "both": "0.7", "truth": "tab:red", "pred": "tab:red"}
    for ax, name in zip(axes, names, strict=True):
        dice = np.array([float(r.get(f"dice_{name}") or 0.0) for r in rows])
        empty = np.array([r.get(f"empty_{name}") or "" for r in rows])
        order = np.argsort(dice, kind="stable")
        ax.bar(range(n), dice[order], color=[colours[e] for e in empty[order]], width=0.8)
        one = np.flatnonzero(np.isin(empty[order], ["truth", "pred"]))
        # Dice 0 bars have no height: mark those cases so they are not mistaken for gaps
        ax.plot(one, np.full(len(one), 0.04), "x", color="tab:red", ms=8, mew=2)
        handles: list[Any] = [Patch(color="tab:blue", label="both masks present")]
        if (empty == "both").any():
            handles.append(Patch(color="0.7", label="both empty (Dice 1 by rule)"))
        if len(one):
            handles.append(
                Line2D(
                    [],
                    [],
                    color="tab:red",
                    marker="x",
                    ls="",
                    mew=2,
                    label="one mask empty (Dice 0)",
                )
            )
        if n:
            mean = float(dice.mean())
            handles.append(ax.axhline(mean, color="k", lw=1, ls="--", label=f"mean {mean:.3f}"))
        ax.set_ylim(0, 1.05)
        ax.set_xlim(-0.6, max(n, 1) - 0.4)
        ax.set_ylabel("Dice")
        ax.set_title(f"Dice by case: {name}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
        if n <= 40:
            ax.set_xticks(range(n), [str(rows[i].get("case")) for i in order], rotation=90, fontsize=8)
        else:
            ax.set_xticks([])
    axes[-1].set_xlabel("Case (sorted by Dice, worst first)")
    return fig
