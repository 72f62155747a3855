"""After each epoch and at the end of training: val metrics, the grade-head refit, the post-processing choice."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.checkpoint import load_checkpoint, save_checkpoint
from segkit.config import Config
from segkit.forward import Network, predict_preprocessed
from segkit.io import atomic_write_text
from segkit.losses import grade_class_weights
from segkit.metrics import confusion_counts, dice_from_counts
from segkit.models import SegGrader
from segkit.postprocess import apply_rules, choose_cyst_max_hu, choose_rules, cyst_rule_applies
from segkit.transforms import first_argmax, unwindow

log = logging.getLogger(__name__)
REFIT_CASES = 60  # the grade-head refit reads at most this many training volumes (3-D: ~8 s each)


@dataclass
class CaseData:
    """One case on the model grid, held in memory for fast slice sampling."""

    case_id: str
    image: np.ndarray  # (X, Y, Z) float32, normalised
    label: np.ndarray  # (X, Y, Z) uint8
    grade: int
    organ_z: np.ndarray  # slices holding the biomarker's denominator labels
    target_z: np.ndarray  # slices holding the biomarker's numerator labels (lesion, ventricles)
    spacing_mm: float = 0.0  # the scan's coarsest voxel spacing before resampling (thick slices' gap)
    target_parts: list[np.ndarray] = field(default_factory=list)  # the slices of each 3-D piece of the target


@torch.no_grad()
def evaluate(
    net: Network, cases: list[CaseData], cfg: Config, masks: list[np.ndarray] | None = None
) -> dict[str, float]:
    """Whole-volume validation on the model grid: Dice per label, grade accuracy and loss.

    masks: a list that receives each case's predicted mask (model grid), for the post-processing choice.
    """
    if isinstance(net, torch.nn.Module):
        net.eval()
    dices, correct, nll = [], 0, 0.0
    pooled = np.zeros((cfg.num_classes, cfg.num_classes), dtype=np.int64)
    for c in cases:
        probs, grade_p, _ = predict_preprocessed(net, c.image, cfg)
        mask = first_argmax(probs)
        counts = confusion_counts(mask, c.label, cfg.num_classes)
        pooled += counts
        dices.append(dice_from_counts(counts))
        if masks is not None:
            masks.append(mask)
        correct += int(grade_p.argmax() == c.grade)
        nll += -float(np.log(max(grade_p[c.grade], 1e-8)))
    d = np.mean(dices, axis=0)
    out = {f"val_dice_{n}": float(v) for n, v in zip(cfg.task.labels[1:], d, strict=True)}
    out["val_dice"] = float(d.mean())
    out["val_dice_pooled"] = float(dice_from_counts(pooled).mean())
    out["val_grade_acc"] = correct / len(cases)
    out["val_grade_loss"] = nll / len(cases)
    out["val_score"] = (out["val_dice"] + out["val_grade_acc"]) / 2
    return out


def refit_grade_head(net: SegGrader, cases: list[CaseData], cfg: Config, steps: int = 1000) -> None:
    """Refit the grade head on whole-volume pooled features of the training cases.

    During joint training the head sees a few slices per case; predict pools every organ
    slice. This last step fits the head on exactly what predict will feed it (the encoder
    and masks are frozen), one vector per training volume.
    """
    net.eval()
    pooled = torch.from_numpy(np.stack([predict_preprocessed(net, c.image, cfg)[2] for c in cases]))  # (N, F + K)
    y = torch.tensor([c.grade for c in cases])
    dev = next(net.parameters()).device
    pooled, y = pooled.to(dev), y.to(dev)
    weights = grade_class_weights(y.tolist(), len(cfg.task.grades)).to(dev)
    opt = torch.optim.Adam(net.grade_head.parameters(), lr=cfg.train.lr * 3, weight_decay=1e-2)
    torch.manual_seed(cfg.train.seed)
    net.grade_head.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net.pool_grade(pooled, len(cases)), y, weight=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()


def finish_run(
    net: SegGrader, train: list[CaseData], val: list[CaseData], cfg: Config, run_dir: Path
) -> dict[str, Any]:
    """Refit best.pt's grade head on whole training volumes (record val grade accuracy before/after), and
    choose the connected-component post-processing on val."""
    ck = load_checkpoint(run_dir / "best.pt")
    net.load_state_dict(ck["model"])
    masks: list[np.ndarray] = []  # the refit changes grades only: these masks serve the post-processing choice
    # a whole-volume pass per case (seconds each for a 3-D model): at most REFIT_CASES
    record = refit_if_better(net, spread(train, REFIT_CASES), val, cfg, masks)
    rules, ck["postprocess_val_dice"] = _choose(masks, val, cfg)
    ck["config"]["eval"]["keep_components"] = list(rules)
    choose_density(ck, masks, val, cfg, rules)
    log.info("post-processing chosen on val: %s (mean val Dice per rule: %s)", rules, ck["postprocess_val_dice"])
    save_refit(net, ck, record, run_dir)
    return record


def spread(items: list, limit: int) -> list:
    """At most about limit of items, evenly spread (every k-th)."""
    return items[:: max(1, -(-len(items) // limit))]


def save_refit(net: SegGrader, ck: dict[str, Any], record: dict[str, Any], run_dir: Path) -> None:
    """best.pt with net's weights and the refit record, and the record as grade_head.json."""
    ck["model"] = net.state_dict()
    ck["grade_head_refit"] = record
    save_checkpoint(run_dir / "best.pt", ck)
    atomic_write_text(run_dir / "grade_head.json", json.dumps(record, indent=2))


def refit_if_better(
    net: SegGrader, train: list[CaseData], val: list[CaseData], cfg: Config, masks: list[np.ndarray] | None = None
) -> dict[str, Any]:
    """Refit the grade head on the train volumes; keep it only if the val grade loss (smoother than accuracy on
    a few cases) falls, else restore the head. Returns the record; masks receives val masks from before."""
    before = evaluate(net, val, cfg, masks)
    head = {k: v.clone() for k, v in net.grade_head.state_dict().items()}
    refit_grade_head(net, train, cfg)
    after = evaluate(net, val, cfg)
    kept = after["val_grade_loss"] < before["val_grade_loss"]
    if not kept:
        net.grade_head.load_state_dict(head)
    record = {
        "kept": kept,
        "train_volumes": len(train),
        "val_volumes": len(val),
        "val_grade_acc_before": before["val_grade_acc"],
        "val_grade_acc_after": after["val_grade_acc"],
        "val_grade_loss_before": before["val_grade_loss"],
        "val_grade_loss_after": after["val_grade_loss"],
    }
    log.info(
        "grade head refit on %d whole training volumes: val grade acc %.3f -> %.3f, loss %.3f -> %.3f (%s)",
        len(train),
        before["val_grade_acc"],
        after["val_grade_acc"],
        before["val_grade_loss"],
        after["val_grade_loss"],
        "kept" if kept else "discarded: val grade loss did not improve",
    )
    return record


def choose_on_val(
    net: Network, cases: list[CaseData], cfg: Config, masks: list[np.ndarray] | None = None
) -> tuple[tuple[str, ...], dict]:
    """Rules chosen on val cases already on the model grid; the predicted val masks are appended to masks."""
    masks = [] if masks is None else masks
    evaluate(net, cases, cfg, masks)
    return _choose(masks, cases, cfg)


def choose_density(
    ck: dict[str, Any], masks: list[np.ndarray], cases: list[CaseData], cfg: Config, rules: tuple[str, ...]
) -> None:
    """For a CT task with cyst and tumour labels, eval.cyst_max_hu chosen on the val masks after the component
    rules (HU from the window-normalised val images); its val cyst Dice per limit goes into the checkpoint."""
    t = cfg.task
    if not cyst_rule_applies(t.modality, t.labels):
        return
    pre = cfg.preprocess
    triples = [
        (apply_rules(m, rules), c.label, unwindow(c.image, pre.window_low, pre.window_high))
        for m, c in zip(masks, cases, strict=True)
    ]
    limit, table = choose_cyst_max_hu(triples, t.labels)
    ck["config"]["eval"]["cyst_max_hu"] = limit
    ck["cyst_max_hu_val_dice"] = table
    log.info("cyst density limit chosen on val: %s HU (mean val cyst Dice per limit: %s)", limit or "none", table)


def _choose(masks: list[np.ndarray], cases: list[CaseData], cfg: Config) -> tuple[tuple[str, ...], dict]:
    """The post-processing rules for predicted val masks against their cases' labels."""
    one_piece = tuple(cfg.task.labels.index(n) for n in cfg.task.one_piece)
    lesions = tuple(cfg.task.labels.index(n) for n in cfg.task.lesions)
    pairs = [(m, c.label) for m, c in zip(masks, cases, strict=True)]
    return choose_rules(pairs, cfg.num_classes, one_piece, lesions)
