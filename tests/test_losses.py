import torch

from segkit.losses import SegGradeLoss, grade_class_weights


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
