"""Segmentation (Dice + cross-entropy) plus class-weighted grade cross-entropy."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn

from segkit.config import Config


class SegGradeLoss(nn.Module):
    """total = DiceCE(mask) + grade_weight * weighted CE(grade); returns (total, seg, grade)."""

    def __init__(
        self,
        grade_weight: float,
        class_weights: torch.Tensor | None = None,
        cases: int = 0,
        slices_per_case: int = 0,
    ) -> None:
        """cases: 0 pools the Dice over the whole batch (slices without the structure stay defined); N > 0
        computes it per training case of the N in a batch, each with slices_per_case graded slices (its slices
        or patches together, laid out as segkit.batches.sample_batch lays them out) and averages: a case with
        small ventricles then weighs as much as one with large ones. No background Dice either way, so a small
        structure weighs as much as the organ around it."""
        super().__init__()
        self.cases, self.slices_per_case = cases, slices_per_case
        self.seg = DiceCELoss(
            include_background=False, to_onehot_y=True, softmax=True, batch=not cases, smooth_nr=1e-5, smooth_dr=1e-5
        )
        self.grade = nn.CrossEntropyLoss(weight=class_weights)
        self.grade_weight = grade_weight

    @classmethod
    def for_config(cls, cfg: Config, class_weights: torch.Tensor | None = None) -> SegGradeLoss:
        """The loss train.grade_loss_weight and train.dice_over ask for."""
        cases = cfg.train.cases_per_batch if cfg.train.dice_over == "case" else 0
        return cls(cfg.train.grade_loss_weight, class_weights, cases, cfg.train.slices_per_case)

    def forward(
        self,
        mask_logits: torch.Tensor,  # (N, K, H, W)
        mask: torch.Tensor,  # (N, H, W) int
        grade_logits: torch.Tensor,  # (B, G)
        grade: torch.Tensor,  # (B,) int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, target = mask_logits.float(), mask[:, None].long()
        if self.cases:
            logits = per_case(logits, self.cases, self.slices_per_case)
            target = per_case(target, self.cases, self.slices_per_case)
        seg = self.seg(logits, target)
        grd = self.grade(grade_logits.float(), grade.long())
        return seg + self.grade_weight * grd, seg, grd


def per_case(rows: torch.Tensor, cases: int, slices_per_case: int) -> torch.Tensor:
    """(N, K, ...) rows of a training batch -> (cases, K, voxels): each case's rows side by side.

    The batch's first rows are the graded slices (or patches), slices_per_case per case in case order, then
    the seg-only ones, as many per case, in case order (segkit.batches.sample_batch, 2-D and 3-D).
    """
    graded = cases * slices_per_case
    extra = (rows.shape[0] - graded) // cases
    index = torch.cat(
        [
            torch.arange(graded, device=rows.device).view(cases, slices_per_case),
            graded + torch.arange(extra * cases, device=rows.device).view(cases, extra),
        ],
        dim=1,
    )  # (cases, rows per case)
    picked = rows[index.ravel()].view(cases, slices_per_case + extra, rows.shape[1], -1)
    return picked.transpose(1, 2).reshape(cases, rows.shape[1], -1)


def grade_class_weights(grades: list[int], num_grades: int) -> torch.Tensor:
    """Inverse-frequency weights (mean 1) so a rare grade is not ignored."""
    counts = torch.bincount(torch.as_tensor(grades, dtype=torch.long), minlength=num_grades).float()
    weights = counts.sum() / (num_grades * counts.clamp(min=1))
    return weights / weights.mean()
