"""ONNX Runtime engine: the shipped ONNX files match their checkpoints and give PyTorch's masks and grades."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_nifti

from segkit.checkpoint import file_sha256, load_checkpoint
from segkit.engine import OnnxNet, onnx_files
from segkit.errors import CheckpointError
from segkit.infer import load_model, predict_volume
from segkit.io import read_volume
from segkit.onnx_export import STATE_KEYS
from segkit.tasks import TASKS

SHIPPED = Path(__file__).resolve().parents[1] / "segkit" / "weights"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_shipped_model_has_onnx_files_exported_from_its_own_checkpoint(task):
    pt = SHIPPED / f"{task}.pt"
    if not pt.is_file():
        pytest.skip(f"no shipped {task} model in this checkout")
    files = onnx_files(pt)
    assert all(f.is_file() for f in files.values()), "reship with scripts/ship_model.py or python -m segkit.onnx_export"
    meta = json.loads(files["meta"].read_text())
    assert meta["checkpoint_sha256"] == file_sha256(pt)
    # predict through ONNX Runtime reads these from the JSON instead of the .pt: they must be the .pt's own
    state = load_checkpoint(pt)
    assert meta["checkpoint_state"] == {k: state[k] for k in STATE_KEYS if k in state}


def _brain_like(tmp_path: Path) -> Path:
    """A small oblique MRI-like volume: enough structure that the network's outputs are not flat."""
    rng = np.random.default_rng(3)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (48, 56, 40)), indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    data = np.where(r < 0.9, 600.0, 20.0) - np.where(r < 0.3, 450.0, 0.0) + rng.normal(0, 15, r.shape)
    affine = np.diag([1.2, 1.2, 1.5, 1.0])
    affine[:3, :3] = affine[:3, :3] @ np.array([[1, 0, 0], [0, 0.94, -0.34], [0, 0.34, 0.94]])
    return write_nifti(tmp_path / "vol.nii.gz", data.astype(np.float32), affine)


@pytest.mark.skipif(not (SHIPPED / "ventricle.onnx").is_file(), reason="no shipped ventricle ONNX in this checkout")
def test_onnx_engine_gives_the_pytorch_mask_and_grade(tmp_path):
    vol = read_volume(_brain_like(tmp_path))
    results = {}
    for engine in ("torch", "onnx"):
        net, cfg, info = load_model("ventricle", "cpu", engine)
        assert isinstance(net, OnnxNet) == (engine == "onnx")
        assert info["engine"].startswith("onnxruntime" if engine == "onnx" else "torch")
        results[engine] = predict_volume(net, cfg, vol)
    a, b = results["torch"], results["onnx"]
    assert (a.mask == b.mask).mean() >= 0.9999 and a.grade == b.grade
    for g, p in a.grade_probs.items():
        assert abs(p - b.grade_probs[g]) <= 1e-3


def _weights_copy(tmp_path: Path, monkeypatch) -> Path:
    """The shipped ventricle files in a folder of their own, which SEGKIT_WEIGHTS_DIR points at."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for f in [SHIPPED / "ventricle.pt", *onnx_files(SHIPPED / "ventricle.pt").values()]:
        shutil.copy(f, folder / f.name)
    monkeypatch.setenv("SEGKIT_WEIGHTS_DIR", str(folder))
    return folder


@pytest.mark.skipif(not (SHIPPED / "ventricle.onnx").is_file(), reason="no shipped ventricle ONNX in this checkout")
def test_stale_onnx_files_fall_back_to_pytorch_and_onnx_on_demand_says_why(tmp_path, monkeypatch, capsys):
    folder = _weights_copy(tmp_path, monkeypatch)
    meta = folder / "ventricle.onnx.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "checkpoint_sha256": "0" * 64}))
    net, _, info = load_model("ventricle", "cpu", "auto")
    assert not isinstance(net, OnnxNet) and info["engine"].startswith("torch")
    with pytest.raises(CheckpointError, match="exported from another ventricle.pt"):
        load_model("ventricle", "cpu", "onnx")
    code, out, err = run_cli(
        ["predict", str(_brain_like(tmp_path)), "--out", str(tmp_path / "p"), "--engine", "onnx"], capsys
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--engine torch" in err
    assert not (tmp_path / "p").exists()


def test_an_unknown_engine_is_one_line_and_exit_2(tmp_path, capsys):
    code, out, err = run_cli(
        ["predict", str(_brain_like(tmp_path)), "--out", str(tmp_path / "p"), "--engine", "tvm"], capsys
    )
    assert code == 2 and "--engine 'tvm'" in err and len(err.strip().splitlines()) == 1


def test_training_writes_the_runs_onnx_files_which_give_the_pytorch_mask(tiny_run, tmp_path):
    files = onnx_files(tiny_run / "best.pt")
    assert json.loads(files["meta"].read_text())["checkpoint_sha256"] == file_sha256(tiny_run / "best.pt")
    vol = read_volume(_brain_like(tmp_path))
    results = {}
    for engine in ("torch", "auto"):
        net, cfg, info = load_model(tiny_run, "cpu", engine)
        assert isinstance(net, OnnxNet) == (engine == "auto")
        results[engine] = predict_volume(net, cfg, vol)
    a, b = results["torch"], results["auto"]
    assert (a.mask == b.mask).mean() >= 0.9999 and a.grade == b.grade


def test_an_older_models_onnx_json_gets_its_tasks_newer_keys(tmp_path):
    """ONNX files' JSON written before task.one_piece existed: predict through ONNX Runtime reads the config from
    the JSON, not the .pt, and must fill in the built-in task's keys as load_checkpoint does for a .pt."""
    pt = SHIPPED / "ventricle.pt"
    if not pt.is_file():
        pytest.skip("no shipped ventricle model in this checkout")
    copy = tmp_path / "ventricle.pt"
    shutil.copy(pt, copy)
    for src, dst in zip(onnx_files(pt).values(), onnx_files(copy).values(), strict=True):
        shutil.copy(src, dst)
    meta_path = onnx_files(copy)["meta"]
    meta = json.loads(meta_path.read_text())
    del meta["checkpoint_state"]["config"]["task"]["one_piece"]
    meta_path.write_text(json.dumps(meta))
    net, cfg, _ = load_model(copy, "cpu", "auto", None, None)
    assert isinstance(net, OnnxNet) and cfg.task.one_piece == ("brain",)
