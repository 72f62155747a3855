"""scripts/soup.py: the uniform model soup the shipped ventricle model is (and its model card)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import load_script

from segkit.checkpoint import file_sha256, load_checkpoint, save_checkpoint


def test_soup_averages_floating_tensors_and_keeps_integer_buffers():
    soup = load_script("soup").soup
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3), "h": torch.tensor([0.5], dtype=torch.float16)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(9), "h": torch.tensor([1.5], dtype=torch.float16)}
    c = {"w": torch.tensor([2.0, 1.0]), "n": torch.tensor(0), "h": torch.tensor([1.0], dtype=torch.float16)}
    out = soup([a, b, c])
    assert torch.equal(out["w"], torch.tensor([2.0, 3.0]))
    assert out["n"].item() == 3 and out["n"].dtype == a["n"].dtype  # an integer buffer is the first's
    assert out["h"].dtype == torch.float16 and out["h"].item() == 1.0
    assert torch.equal(a["w"], torch.tensor([1.0, 2.0]))  # the ingredients are not changed


@pytest.mark.parametrize("other", [{"w": torch.zeros(2), "x": torch.zeros(1)}, {"w": torch.zeros(3)}])
def test_soup_refuses_ingredients_with_other_tensors(other):
    with pytest.raises(SystemExit, match="ingredient 2"):
        load_script("soup").soup([{"w": torch.zeros(2)}, other])


def test_soup_of_two_runs_is_a_checkpoint_that_predicts(tiny_run, tmp_path, monkeypatch):
    """Two checkpoints of one run: the soup's weights are their mean, it records both ingredients and no epoch,
    and it loads and predicts as any checkpoint does; its model card names it a soup, not a best epoch."""
    from segkit.infer import load_model

    other = tmp_path / "other.pt"
    ck = load_checkpoint(tiny_run / "best.pt")
    shifted = {k: v + 1.0 if v.is_floating_point() else v for k, v in ck["model"].items()}
    save_checkpoint(other, {**ck, "model": shifted, "epoch": 1})
    out = tmp_path / "soup"
    monkeypatch.setattr(sys, "argv", ["soup.py", str(out), str(tiny_run), str(other), "--about", "two of one run"])
    load_script("soup").main()

    made = load_checkpoint(out / "best.pt")
    assert made["epoch"] is None and made["config"] == ck["config"]
    for k, v in ck["model"].items():
        want = v + 0.5 if v.is_floating_point() else v
        assert torch.allclose(made["model"][k], want, atol=1e-6), k
    run = json.loads((out / "run.json").read_text())
    assert [i["sha256_16"] for i in run["soup"]] == [
        file_sha256(tiny_run / "best.pt")[:16],
        file_sha256(other)[:16],
    ]
    assert run["soup"][1]["epoch"] == 1 and run["about"] == "two of one run"

    net, cfg, info = load_model(out, "cpu")
    assert info["epoch"] is None
    from segkit.forward import predict_preprocessed

    probs, grade, _ = predict_preprocessed(net, np.zeros((32, 32, 8), np.float32), cfg)
    assert probs.shape == (cfg.num_classes, 32, 32, 8) and np.isfinite(grade).all()

    ship = load_script("ship_model")
    figures = {
        "task": "ventricle",
        "command": "bash scripts/ventricle_soup.sh",
        "cases": 0,
        "weights": "ventricle.pt",
        "sha256_16": "0" * 16,
        "epoch": None,
        "data_seconds": 10,
        "train_seconds": 20,
        "soup": {"ingredients": run["soup"], "about": run["about"]},
        "evaluations": [],
    }
    card = ship.model_card(figures, made)
    assert "the mean of 2 checkpoints' weights (a model soup: no single epoch)" in card
    assert "best epoch" not in card and "Trained from a random initialisation" not in card
    assert f"sha256 {run['soup'][0]['sha256_16']}" in card and "two of one run" in card
    assert "the fine-tunes' epochs 20 s" in card
