"""The grade-head refit rule: kept only when it lowers the val grade loss; a discarded refit leaves no trace."""

from __future__ import annotations

import numpy as np
import torch

from segkit import validate
from segkit.data.msd import read_dataset
from segkit.infer import load_model
from segkit.train import load_cases


def _setup(tiny_run, phantom_ventricle):
    net, cfg, _ = load_model(tiny_run, "cpu", engine="torch")
    ds = read_dataset(phantom_ventricle)
    train = load_cases(ds.split("train")[:4], cfg, "train")
    val = load_cases(ds.split("val") + ds.split("test"), cfg, "val")
    return net, cfg, train, val


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_a_refit_that_raises_the_val_grade_loss_is_discarded_and_the_head_restored(
    tiny_run, phantom_ventricle, monkeypatch
):
    net, cfg, train, val = _setup(tiny_run, phantom_ventricle)
    grades = np.bincount([c.grade for c in val], minlength=len(cfg.task.grades))
    wrong = int(grades.argmin())  # a confident vote for the rarest grade: wrong for most val cases

    def bad_refit(net, cases, cfg, steps=1000):
        with torch.no_grad():
            for p in net.grade_head.parameters():
                p.zero_()
            net.grade_head.direct.bias[wrong] = 50.0

    monkeypatch.setattr(validate, "refit_grade_head", bad_refit)
    head, unet = _snapshot(net.grade_head), _snapshot(net.unet)
    record = validate.refit_if_better(net, train, val, cfg)
    assert not record["kept"] and record["val_grade_loss_after"] > record["val_grade_loss_before"]
    assert all(torch.equal(v, net.grade_head.state_dict()[k]) for k, v in head.items())
    assert all(torch.equal(v, net.unet.state_dict()[k]) for k, v in unet.items())


def test_a_kept_refit_changes_the_grade_head_only_and_records_what_val_measured(tiny_run, phantom_ventricle):
    net, cfg, train, val = _setup(tiny_run, phantom_ventricle)
    head, unet = _snapshot(net.grade_head), _snapshot(net.unet)
    record = validate.refit_if_better(net, train, val, cfg)
    assert record["train_volumes"] == len(train) and record["val_volumes"] == len(val)
    assert record["kept"] == (record["val_grade_loss_after"] < record["val_grade_loss_before"])
    now = validate.evaluate(net, val, cfg)
    expected = record["val_grade_loss_after" if record["kept"] else "val_grade_loss_before"]
    assert abs(now["val_grade_loss"] - expected) < 1e-5
    changed = any(not torch.equal(v, net.grade_head.state_dict()[k]) for k, v in head.items())
    assert changed == record["kept"]
    assert all(torch.equal(v, net.unet.state_dict()[k]) for k, v in unet.items())
