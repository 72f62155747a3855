"""Which model predict and evaluate use: --model, shipped models by name or modality, never the last training."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_nifti

from segkit.checkpoint import resolve_model
from segkit.errors import CheckpointError
from segkit.infer import load_model, shipped_model_for


@pytest.fixture
def weights(tmp_path, monkeypatch) -> Path:
    """An empty shipped-weights folder ($SEGKIT_WEIGHTS_DIR): no shipped model is installed."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("SEGKIT_WEIGHTS_DIR", str(folder))
    return folder


def mri_like(path: Path) -> Path:
    """A small positive-valued image: MRI by the modality rule."""
    data = np.random.default_rng(0).normal(300, 60, (24, 20, 14)).clip(0).astype(np.float32)
    return write_nifti(path, data, np.diag([4.0, 4.0, 6.0, 1.0]))


def ct_like(path: Path) -> Path:
    """A small image with air at -1000 HU around soft tissue: CT by the modality rule."""
    data = np.full((24, 20, 14), -1000.0, np.float32)
    data[4:20, 4:16, 2:12] = 60.0
    return write_nifti(path, data, np.diag([4.0, 4.0, 6.0, 1.0]))


def test_modality_picks_the_shipped_model():
    assert shipped_model_for(np.full((4, 4, 4), 120.0)) == "ventricle"
    assert shipped_model_for(np.array([[[-3.0, 0.5], [2.0, 900.0]]])) == "ventricle"  # z-scored MRI dips below 0
    assert shipped_model_for(np.full((4, 4, 4), -500.0)) == "ventricle"  # "below -500": -500 itself is not air
    ct = np.full((4, 4, 4), 40.0)
    ct[0, 0, 0] = -1024.0  # one voxel of air is enough
    assert shipped_model_for(ct) == "liver-cyst"
    assert shipped_model_for(np.full((4, 4, 4), -2048, dtype=np.int16)) == "liver-cyst"  # padding value


def test_training_does_not_change_what_predict_uses(tiny_run, weights, tmp_path, capsys):
    # tiny_run was just trained: predict without --model must still not use it
    src = mri_like(tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["predict", str(src), "--out", str(out)], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segkit: error: no --model given"), err
    assert str(weights / "ventricle.pt") in err and "segkit train --config configs/ventricle.yaml" in err
    assert "--model RUN_DIR" in err and str(tiny_run) not in err + stdout
    assert not out.exists()


def test_ct_input_without_model_asks_for_the_liver_model(weights, tmp_path, capsys):
    code, _, err = run_cli(["predict", str(ct_like(tmp_path / "ct.nii.gz")), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and str(weights / "liver-cyst.pt") in err and "configs/liver-cyst.yaml" in err, err
    assert not (tmp_path / "o").exists()


def test_mixed_ct_and_mri_inputs_need_a_model(weights, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    mri_like(inputs / "a.nii.gz")
    ct_like(inputs / "b.nii.gz")
    code, _, err = run_cli(["predict", str(inputs), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "both CT and MRI" in err and "--model" in err, err


def test_shipped_name_resolves_to_the_weights_folder(tiny_run, weights):
    with pytest.raises(CheckpointError, match="liver-cyst.pt is missing"):
        resolve_model("liver-cyst")
    shutil.copy(tiny_run / "best.pt", weights / "ventricle.pt")
    ref = resolve_model("ventricle")
    assert (ref.kind, ref.name, ref.path) == ("shipped", "ventricle", weights / "ventricle.pt")
    run = resolve_model(str(tiny_run))
    assert (run.kind, run.path) == ("checkpoint", tiny_run / "best.pt")
    assert resolve_model(tiny_run / "last.pt").path == tiny_run / "last.pt"


def test_unknown_model_name_lists_the_shipped_names(weights, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="ventricle, liver-cyst"):
        resolve_model("lung")
    src = mri_like(tmp_path / "s.nii.gz")
    code, _, err = run_cli(["predict", str(src), "--model", "lung", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "lung: model not found" in err and "ventricle, liver-cyst" in err, err


def test_shipped_file_holding_another_task_is_refused(tiny_run, weights):
    shutil.copy(tiny_run / "best.pt", weights / "liver-cyst.pt")  # a ventricle model under the liver name
    with pytest.raises(CheckpointError, match="holds a ventricle model, not liver-cyst"):
        load_model("liver-cyst", "cpu")


def sha16(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_predict_without_model_uses_the_shipped_model_and_records_it(tiny_run, weights, tmp_path, capsys):
    shutil.copy(tiny_run / "best.pt", weights / "ventricle.pt")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["predict", str(mri_like(tmp_path / "scan.nii.gz")), "--out", str(out)], capsys)
    assert code == 0, err
    assert f"model: shipped ventricle ({weights / 'ventricle.pt'}; torch " in stdout  # its ONNX files are not there
    used = json.loads((out / "scan_report.json").read_text())["model"]
    assert used["kind"] == "shipped" and used["name"] == "ventricle"
    assert used["checkpoint"] == str((weights / "ventricle.pt").resolve())
    assert used["sha256"] == sha16(weights / "ventricle.pt")
    assert used["arch"] == "monai_unet" and used["epoch"] >= 1


def test_report_records_a_run_folder_model(tiny_run, weights, tmp_path, capsys):
    out = tmp_path / "out"
    src = mri_like(tmp_path / "scan.nii.gz")
    args = ["predict", str(src), "--model", str(tiny_run), "--device", "cpu", "--out", str(out)]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    # on a CPU the run goes through the ONNX files training wrote beside best.pt
    assert f"model: checkpoint {tiny_run} ({(tiny_run / 'best.pt').resolve()}; onnxruntime " in stdout
    used = json.loads((out / "scan_report.json").read_text())["model"]
    assert (used["kind"], used["name"]) == ("checkpoint", str(tiny_run))
    assert used["checkpoint"] == str((tiny_run / "best.pt").resolve()) and used["sha256"] == sha16(tiny_run / "best.pt")


def test_evaluate_without_model_uses_the_datasets_shipped_model(tiny_run, phantom_ventricle, weights, tmp_path, capsys):
    args = ["evaluate", "--data", str(phantom_ventricle), "--split", "test", "--out", str(tmp_path / "ev")]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and str(weights / "ventricle.pt") in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "ev").exists()
    shutil.copy(tiny_run / "best.pt", weights / "ventricle.pt")
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "ev" / "report.json").read_text())["meta"]
    assert meta["model_kind"] == "shipped" and meta["model"] == str((weights / "ventricle.pt").resolve())
    assert meta["model_sha256"] == sha16(weights / "ventricle.pt")


def test_checkpoint_older_than_the_grade_heads_direct_path_loads_unchanged(tiny_run, tmp_path):
    from segkit.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(tiny_run / "best.pt")
    old = {k: v for k, v in state["model"].items() if not k.startswith("grade_head.direct.")}
    save_checkpoint(tmp_path / "old.pt", {**state, "model": old})
    net, _, _ = load_model(tmp_path / "old.pt", device="cpu")
    # zero: the added path contributes nothing, so the grade is the one the old model gave
    assert not net.grade_head.direct.weight.any() and not net.grade_head.direct.bias.any()
    broken = {k: v for k, v in old.items() if not k.startswith("grade_head.out.")}
    save_checkpoint(tmp_path / "broken.pt", {**state, "model": broken})
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path / "broken.pt", device="cpu")
