"""Multi-process training on torch's own engine: torchrun with 2 CPU processes (gloo) trains like one process."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, run_cli

from segkit import distributed
from segkit.data.msd import read_dataset
from segkit.infer import load_model, predict_preprocessed
from segkit.metrics import dice_per_label
from segkit.train import load_cases

RUN_FILES = [
    *("best.grade.onnx", "best.onnx", "best.onnx.json", "best.pt"),
    *("config.yaml", "curves.png", "grade_head.json", "last.pt", "metrics.csv", "run.json", "tb"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _masks(run, data) -> list[tuple[np.ndarray, np.ndarray]]:
    """(class probabilities (K, X, Y, Z), mask) of run's best.pt on the val and test cases."""
    net, cfg, _ = load_model(run, "cpu")
    ds = read_dataset(data)
    cases = load_cases(ds.split("val") + ds.split("test"), cfg, "cases")
    out = []
    for c in cases:
        probs = predict_preprocessed(net, c.image, cfg)[0]
        out.append((probs, probs.argmax(0).astype(np.uint8)))
    return out


def _train_two_processes(data, run, sets: list[str]) -> subprocess.CompletedProcess:
    """`segkit train` of the ventricle config with `sets` under torchrun, 2 gloo processes, in run's folder."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        "-m", "segkit.cli", "train", "--config", str(ROOT / "configs/ventricle.yaml"),
        "--data", str(data), "--out", str(run), *[a for s in sets for a in ("--set", s)],
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "SEGKIT_PAUSE_AT"}
    res = subprocess.run(cmd, cwd=run.parent, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_two_processes_train_like_one_with_the_same_seed(tiny_run, phantom_ventricle, tmp_path):
    run = tmp_path / "ddp"
    res = _train_two_processes(phantom_ventricle, run, TINY)
    # (fit checks after each epoch that both ranks hold the same weights: check_in_sync raises otherwise)
    info = json.loads((run / "run.json").read_text())
    assert info["world_size"] == 2 and info["backend"] == "gloo"
    # one set of outputs, written by rank 0 alone: one tensorboard file, one row per epoch, one summary line
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    assert sorted(p.name for p in run.iterdir()) == RUN_FILES
    assert len(list((run / "tb").iterdir())) == 1
    assert res.stdout.count("done:") == 1
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    ref = list(csv.DictReader((tiny_run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    # Each rank draws its half of the cases of the 1-process batch (the same rows) and runs them; the loss is
    # the whole batch's (outputs and labels gathered), so the losses agree to float32 rounding (the first
    # step's loss is the same number).
    for key in ("train_loss", "train_seg_loss", "train_grade_loss"):
        assert float(rows[0][key]) == pytest.approx(float(ref[0][key]), rel=1e-4), key
    # The gradients agree to ~1e-6 (float sums in another order), but Adam's first steps move each weight
    # by about lr * sign(gradient): weights whose gradient is near zero step +-lr differently in the two runs.
    # Measured after these 6 steps: probabilities within 3e-3, mask Dice >= 0.9995 between the runs; a run
    # from the same initial weights on other batches: probabilities off by 0.95, mask Dice 0.72-0.79.
    # Tolerance: probabilities within 0.02, mask Dice >= 0.995 per label and case.
    for (p2, m2), (p1, m1) in zip(_masks(run, phantom_ventricle), _masks(tiny_run, phantom_ventricle), strict=True):
        assert np.abs(p2 - p1).max() < 0.02
        assert dice_per_label(m2, m1, 3).min() >= 0.995


def test_two_processes_train_like_one_with_slices_from_outside_the_organ(phantom_ventricle, tmp_path):
    """The liver recipe's extra seg-only rows (train.outside_slices) under torchrun: each rank's rows go back to
    their places in the whole batch, so the grade head pools each case's own slices and the first epoch's losses,
    the grade loss included, are one process's (before shard_rows knew of these rows, the grade loss differed)."""
    from segkit.config import load_config
    from segkit.train import fit

    sets = [*TINY, "train.outside_slices=1", "train.epochs=1", "train.steps_per_epoch=1"]
    one = tmp_path / "one"
    fit(load_config(ROOT / "configs/ventricle.yaml", sets), phantom_ventricle, one)
    run = tmp_path / "ddp"
    _train_two_processes(phantom_ventricle, run, sets)
    [row] = list(csv.DictReader((run / "metrics.csv").open()))
    [ref] = list(csv.DictReader((one / "metrics.csv").open()))
    for key in ("train_loss", "train_seg_loss", "train_grade_loss"):
        assert float(row[key]) == pytest.approx(float(ref[key]), rel=1e-4), key


def test_nproc_starts_torchrun_with_the_same_arguments(phantom_ventricle, tmp_path, capsys, monkeypatch):
    import torch.distributed.run

    seen = []
    monkeypatch.setattr(torch.distributed.run, "run", seen.append)  # torchrun's parsed arguments
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = str(ROOT / "configs/ventricle.yaml")
    args = ["train", "--config", config, "--data", str(phantom_ventricle), "--out", str(tmp_path)]
    code, _, err = run_cli([*args, "--nproc", "2", "--epochs", "3", "--set", "train.lr=1e-4", "--resume"], capsys)
    assert code == 0, err
    [ns] = seen
    assert (ns.nproc_per_node, ns.standalone, ns.module, ns.training_script) == ("2", True, True, "segkit.cli")
    assert ns.training_script_args == [*args, "--set", "train.lr=1e-4", "--set", "train.epochs=3", "--resume"]
    # a batch of 4 cases does not split over 3 processes: exit 2 before anything starts
    code, _, err = run_cli([*args, "--nproc", "3"], capsys)
    assert code == 2 and "cases_per_batch=4" in err and len(seen) == 1


def test_shard_rows_split_each_case_with_its_slices():
    # 4 cases x (3 graded + 2 seg-only) slices: rows 0-11 graded, case-major; rows 12-19 two per case
    halves = [distributed.shard_rows(20, 4, 3, r, 2).tolist() for r in range(2)]
    assert halves == [[0, 1, 2, 3, 4, 5, 12, 13, 14, 15], [6, 7, 8, 9, 10, 11, 16, 17, 18, 19]]
    assert sorted(halves[0] + halves[1]) == list(range(20))
    # with one slice from outside the organ per case (the liver recipe): 3 seg-only rows per case
    halves = [distributed.shard_rows(24, 4, 3, r, 2).tolist() for r in range(2)]
    assert halves == [[0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17], [6, 7, 8, 9, 10, 11, 18, 19, 20, 21, 22, 23]]


def test_one_process_has_no_group_and_needs_no_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.join_group(torch.device("cpu"), 3) == torch.device("cpu")
    assert (distributed.world_size(), distributed.rank(), distributed.backend()) == (1, 0, None)
    assert distributed.share({"a": 1}) == {"a": 1}
