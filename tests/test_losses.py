import dataclasses

import torch
from conftest import ROOT

from segkit.losses import SegGradeLoss, grade_class_weights, per_case


def _perfect_logits(mask: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(mask, k).permute(0, 3, 1, 2).float() * 40 - 20


def test_perfect_prediction_has_near_zero_loss():
    mask = torch.zeros(4, 16, 16, dtype=torch.long)
    mask[:, 4:10, 4:10] = 1
    mask[:2, 6:8, 6:8] = 2
    grade = torch.tensor([0, 2])
    total, seg, grd = SegGradeLoss(0.5)(_perfect_logits(mask, 3), mask, torch.eye(3)[grade] * 40, grade)
    assert seg.item() < 1e-3 and grd.item() < 1e-3 and total.item() < 2e-3


def test_empty_masks_give_finite_loss_and_gradients():
    mask = torch.zeros(3, 16, 16, dtype=torch.long)  # no foreground anywhere
    logits = torch.randn(3, 3, 16, 16, requires_grad=True)
    glog = torch.randn(1, 3, requires_grad=True)
    total, seg, _ = SegGradeLoss(0.5)(logits, mask, glog, torch.tensor([1]))
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logits.grad).all() and torch.isfinite(glog.grad).all()
    perfect, _, _ = SegGradeLoss(0.5)(_perfect_logits(mask, 3), mask, torch.eye(3)[[1]] * 40, torch.tensor([1]))
    assert perfect.item() < 1e-3


def test_wrong_prediction_costs_more_than_right():
    mask = torch.zeros(2, 16, 16, dtype=torch.long)
    mask[:, 4:12, 4:12] = 1
    loss = SegGradeLoss(1.0)
    right = loss(_perfect_logits(mask, 2), mask, torch.tensor([[5.0, 0, 0]]), torch.tensor([0]))[0]
    wrong = loss(_perfect_logits(1 - mask, 2), mask, torch.tensor([[0, 0, 5.0]]), torch.tensor([0]))[0]
    assert wrong > right + 1


def test_class_weights_favour_the_rare_grade():
    w = grade_class_weights([0, 0, 0, 0, 1, 1, 2], 3)
    assert w[2] > w[1] > w[0] and abs(w.mean().item() - 1) < 1e-6


def _batch_of_cases(num_cases: int, slices_per_case: int):
    """A sampled 2-D batch of num_cases cases whose every voxel holds its case's number (segkit.batches)."""
    import numpy as np

    from segkit.batches import sample_batch
    from segkit.config import load_config
    from segkit.validate import CaseData

    cfg = load_config(
        ROOT / "configs" / "ventricle.yaml",
        [f"train.cases_per_batch={num_cases}", f"train.slices_per_case={slices_per_case}", "train.patch_size=[16,16]"],
    )
    cases = []
    for i in range(10):
        image = np.full((16, 16, 12), float(i), np.float32)
        label = np.full((16, 16, 12), i % 3, np.uint8)
        z = np.arange(12)
        cases.append(CaseData(f"c{i}", image, label, 0, z, z))
    return sample_batch(cases, cfg, np.random.default_rng(4), None), cfg


def test_per_case_groups_each_cases_slices_as_the_sampler_lays_them_out():
    (x, _, _), cfg = _batch_of_cases(num_cases=3, slices_per_case=4)
    grouped = per_case(x, 3, 4)  # (3, C, voxels)
    assert grouped.shape == (3, x.shape[1], (4 + 2) * 16 * 16)
    for case in grouped:
        assert torch.unique(case).numel() == 1  # every slice of one case, and only its slices
    assert len({float(case[0, 0]) for case in grouped}) > 1


def test_per_case_dice_weighs_a_small_structure_as_much_as_a_large_one():
    """Two cases, one with a large and one with a small structure; the small one is missed. Pooled over the
    batch the miss costs 0.01 of the Dice; averaged per case, half of it."""
    mask = torch.zeros(2 * 3, 16, 16, dtype=torch.long)  # 2 cases x (1 graded + 2 extra) slices
    rows_a, rows_b = [0, 2, 3], [1, 4, 5]  # the layout of per_case: graded rows first, then extras per case
    mask[rows_a, 1:15, 1:15] = 1  # case a: large
    mask[rows_b, 7:9, 7:9] = 1  # case b: small
    guess = mask.clone()
    guess[rows_b] = 0  # the small one missed
    logits, glog, grade = _perfect_logits(guess, 2), torch.zeros(2, 3), torch.tensor([0, 0])
    pooled = SegGradeLoss(0.0)(logits, mask, glog, grade)[1]
    cases = SegGradeLoss(0.0, cases=2, slices_per_case=1)(logits, mask, glog, grade)[1]
    assert cases.item() - pooled.item() > 0.45  # the cross-entropy half is the same both ways
    perfect = SegGradeLoss(0.0, cases=2, slices_per_case=1)(_perfect_logits(mask, 2), mask, glog, grade)[1]
    assert perfect.item() < 1e-3


def test_dice_over_in_the_config_picks_the_loss():
    (_, _, _), cfg = _batch_of_cases(num_cases=2, slices_per_case=1)
    assert SegGradeLoss.for_config(cfg).cases == 0
    case_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, dice_over="case"))
    assert SegGradeLoss.for_config(case_cfg).cases == 2
