"""Segmentation (Dice + cross-entropy) plus class-weighted grade cross-entropy."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn


class SegGradeLoss(nn.Module):
    """total = DiceCE(mask) + grade_weight * weighted CE(grade); returns (total, seg, grade)."""

    def __init__(self, grade_weight: float, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        # batch=True pools Dice over the batch so slices without the structure stay defined;
        # no background Dice, so a small structure weighs as much as the organ around it
        self.seg = DiceCELoss(
            include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5
        )
        self.grade = nn.CrossEntropyLoss(weight=class_weights)
        self.grade_weight = grade_weight

    def forward(
        self,
        mask_logits: torch.Tensor,  # (N, K, H, W)
        mask: torch.Tensor,  # (N, H, W) int
        grade_logits: torch.Tensor,  # (B, G)
        grade: torch.Tensor,  # (B,) int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seg = self.seg(mask_logits.float(), mask[:, None].long())
        grd = self.grade(grade_logits.float(), grade.long())
        return seg + self.grade_weight * grd, seg, grd


def grade_class_weights(grades: list[int], num_grades: int) -> torch.Tensor:
    """Inverse-frequency weights (mean 1) so a rare grade is not ignored."""
    counts = torch.bincount(torch.as_tensor(grades, dtype=torch.long), minlength=num_grades).float()
    weights = counts.sum() / (num_grades * counts.clamp(min=1))
    return weights / weights.mean()
