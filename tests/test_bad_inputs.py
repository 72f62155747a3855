"""The bad-input corpus through data, train and evaluate: one line, exit 2, no traceback, no output."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT, TINY, run_cli

TRAIN = ["train", "--config", str(ROOT / "configs/ventricle.yaml"), *[a for s in TINY for a in ("--set", s)]]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _break(kind: str, root: Path) -> str:
    """Damage a dataset copy one way; returns text the error must name."""
    meta = json.loads((root / "dataset.json").read_text())
    case = meta["training"][0]
    label = root / case["label"]
    if kind == "missing_grade":
        del case["grade"]
    elif kind == "missing_file":
        case["image"] = "./imagesTr/nope.nii.gz"
    elif kind == "label_shape":
        nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), str(label))
    elif kind == "label_affine":
        img = nib.load(label)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine @ np.diag([2.0, 1, 1, 1])), str(label))
    elif kind == "label_values":
        img = nib.load(label)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 7, img.affine), str(label))
    elif kind == "spacing_in_cm":  # image and label alike: 30 mm voxels make a 1.3 G-voxel model grid
        for path in (root / case["image"], label):
            img = nib.load(path)
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine @ np.diag([30.0, 30, 30, 1])), str(path))
        (root / "dataset.json").write_text(json.dumps(meta))
        return Path(case["image"]).name
    elif kind == "bad_json":
        (root / "dataset.json").write_text("{ not json")
        return "dataset.json"
    (root / "dataset.json").write_text(json.dumps(meta))
    if kind == "missing_file":
        return "nope.nii.gz"
    return Path(case["label"]).name if kind.startswith("label") else "dataset.json"


@pytest.mark.parametrize(
    "kind",
    ["missing_grade", "missing_file", "label_shape", "label_affine", "label_values", "spacing_in_cm", "bad_json"],
)
def test_broken_dataset_is_refused_by_train_and_evaluate(kind, phantom_ventricle, tiny_run, tmp_path, capsys):
    data = _copy(phantom_ventricle, tmp_path / "data")
    needle = _break(kind, data)
    out = tmp_path / "run"
    code, _, err = run_cli([*TRAIN, "--data", str(data), "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    assert not out.exists()
    if kind in ("missing_grade",):
        return  # evaluate of a split without that case is fine
    code, _, err = run_cli(
        ["evaluate", "--model", str(tiny_run), "--data", str(data), "--split", "all", "--out", str(tmp_path / "ev")],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err


def test_missing_dataset_and_unwritable_output_exit_2(phantom_ventricle, tiny_run, tmp_path, capsys):
    code, _, err = run_cli([*TRAIN, "--data", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "dataset.json" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli([*TRAIN, "--data", str(phantom_ventricle), "--out", str(blocker / "run")], capsys)
    assert code == 2 and "cannot create output folder" in err
    img = next((phantom_ventricle / "imagesTr").iterdir())
    code, _, err = run_cli(["predict", str(img), "--model", str(tiny_run), "--out", str(blocker / "p")], capsys)
    assert code == 2 and "output folder" in err


def test_data_make_rejects_unknown_task_and_empty_split(phantom_ventricle, tiny_run, tmp_path, capsys):
    code, _, err = run_cli(["data", "make", "kidney", "--out", str(tmp_path / "d")], capsys)
    assert code == 2 and "ventricle" in err and not (tmp_path / "d").exists()
    data = _copy(phantom_ventricle, tmp_path / "data")
    meta = json.loads((data / "dataset.json").read_text())
    for r in meta["training"]:
        r["split"] = "train"
    (data / "dataset.json").write_text(json.dumps(meta))
    code, _, err = run_cli(["evaluate", "--model", str(tiny_run), "--data", str(data), "--split", "test"], capsys)
    assert code == 2 and "no cases" in err


def test_evaluate_by_a_field_no_case_has_is_refused(phantom_ventricle, tiny_run, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ["evaluate", "--model", str(tiny_run), "--data", str(phantom_ventricle), "--out", str(out), "--by", "site"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "no case of the split has field 'site'" in err and "Traceback" not in err
    assert not out.exists()
