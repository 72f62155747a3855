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
    elif kind == "case_twice":  # a val case listed again as train: trained on, then validated on
        meta["training"].append({**case, "split": "val" if case["split"] == "train" else "train"})
    elif kind == "image_twice":
        meta["training"].append({**case, "case": "another_name"})
    elif kind == "grades_text":  # was read letter by letter: grades h, e, a, l, ...
        meta["grades"] = "healthy"
    elif kind == "entry_not_object":
        meta["training"].append("ventricle_099")
    elif kind == "json_labels_list":
        meta["labels"] = ["background", "brain", "lateral_ventricles"]
    elif kind == "other_grade_names":  # the config's grades are healthy/moderate/severe: was a traceback
        names = {"healthy": "normal", "moderate": "mild", "severe": "marked"}
        meta["grades"] = list(names.values())
        for r in meta["training"]:
            r["grade"] = names[r["grade"]]
    elif kind == "constant_image":
        train_case = next(r for r in meta["training"] if r["split"] == "train")
        img = nib.load(root / train_case["image"])
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine), str(root / train_case["image"]))
        return Path(train_case["image"]).name
    (root / "dataset.json").write_text(json.dumps(meta))
    if kind == "missing_file":
        return "nope.nii.gz"
    return Path(case["label"]).name if kind.startswith("label") else "dataset.json"


@pytest.mark.parametrize(
    "kind",
    [
        "missing_grade",
        "missing_file",
        "label_shape",
        "label_affine",
        "label_values",
        "spacing_in_cm",
        "bad_json",
        "case_twice",
        "image_twice",
        "grades_text",
        "entry_not_object",
        "json_labels_list",
        "other_grade_names",
        "constant_image",
    ],
)
def test_broken_dataset_is_refused_by_train_and_evaluate(kind, phantom_ventricle, tiny_run, tmp_path, capsys):
    data = _copy(phantom_ventricle, tmp_path / "data")
    needle = _break(kind, data)
    out = tmp_path / "run"
    code, _, err = run_cli([*TRAIN, "--data", str(data), "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    assert not out.exists()
    if kind in ("missing_grade", "other_grade_names", "constant_image"):
        return  # evaluate: a case without a grade is scored on its mask, any grade names are scored, and a
        # blank image gets a blank mask and a warning
    code, _, err = run_cli(
        ["evaluate", "--model", str(tiny_run), "--data", str(data), "--split", "all", "--out", str(tmp_path / "ev")],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "ev").exists()  # no predictions of the cases before the broken one


def test_evaluate_replaces_an_earlier_evaluation_whole_or_not_at_all(phantom_ventricle, tiny_run, tmp_path, capsys):
    data = _copy(phantom_ventricle, tmp_path / "data")
    out = tmp_path / "ev"
    args = ["evaluate", "--model", str(tiny_run), "--data", str(data), "--split", "test", "--out", str(out)]
    assert run_cli(args, capsys)[0] == 0
    pred = out / "predictions"
    (pred / "gone_case_mask.nii.gz").write_bytes(b"an earlier evaluation's case")
    (pred / "gone_case_report.json").write_text("{}")
    assert run_cli(args, capsys)[0] == 0
    first = {p.name: p.read_bytes() for p in pred.iterdir() if not p.name.endswith("_report.json")}
    assert not (pred / "gone_case_mask.nii.gz").exists() and not (pred / "gone_case_report.json").exists()
    meta = json.loads((data / "dataset.json").read_text())
    last = [r for r in meta["training"] if r["split"] == "test"][-1]
    (data / last["label"]).unlink()  # the split's last case breaks after the others were predicted
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in pred.iterdir() if not p.name.endswith("_report.json")} == first
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no staging folder left
    # a user's own file in predictions/, or a predict run's folder: refused before anything, nothing removed
    (data / last["label"]).write_bytes((phantom_ventricle / last["label"]).read_bytes())
    (pred / "my_notes.txt").write_text("mine")
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "holds files evaluate did not write (my_notes.txt)" in err, err
    assert (pred / "my_notes.txt").read_text() == "mine"
    img = data / last["image"]
    assert (
        run_cli(["predict", str(img), "--model", str(tiny_run), "--out", str(tmp_path / "r" / "predictions")], capsys)[
            0
        ]
        == 0
    )
    code, _, err = run_cli([*args[:-1], str(tmp_path / "r")], capsys)
    assert code == 2 and "holds another run's predictions" in err, err
    assert len(list((tmp_path / "r" / "predictions").glob("*_mask.nii.gz"))) == 1


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


def test_a_file_that_is_no_checkpoint_and_a_cut_short_one_are_told_apart(tiny_run, phantom_ventricle, tmp_path, capsys):
    notes = tmp_path / "notes.pt"
    notes.write_text("my training notes\n")
    cut = tmp_path / "cut.pt"
    raw = (tiny_run / "best.pt").read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    for path, says in ((notes, "not a PyTorch checkpoint"), (cut, "a damaged checkpoint")):
        code, _, err = run_cli(
            [*TRAIN, "--data", str(phantom_ventricle), "--out", str(tmp_path / "r"), "--init", str(path)], capsys
        )
        assert code == 2 and says in err and err.count("\n") == 1, err
        assert not (tmp_path / "r").exists()


def test_data_make_and_show_refuse_what_would_mix_or_mislead(phantom_ventricle, tmp_path, capsys):
    out = tmp_path / "made"
    assert run_cli(["data", "make", "ventricle", "--out", str(out), "--cases", "3", "--phantom"], capsys)[0] == 0
    before = sorted(p.name for p in (out / "imagesTr").iterdir())
    code, _, err = run_cli(["data", "make", "liver-cyst", "--out", str(out), "--cases", "2", "--phantom"], capsys)
    assert code == 2 and "holds files already" in err  # was: liver cases beside the ventricle ones, one dataset.json
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == before
    code, stdout, _ = run_cli(
        ["data", "make", "ventricle", "--out", str(tmp_path / "few"), "--cases", "2", "--phantom"], capsys
    )
    assert code == 0 and "train 2, val 0, test 0" in stdout and "warning: no val or test cases" in stdout
    data = _copy(phantom_ventricle, tmp_path / "data")
    meta = json.loads((data / "dataset.json").read_text())
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), str(data / meta["training"][0]["label"]))
    code, _, err = run_cli(["data", "show", str(data)], capsys)  # was an IndexError traceback
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    code, _, err = run_cli(
        ["data", "show", str(phantom_ventricle), "--max-cases", "0", "--out", str(tmp_path / "m.png")], capsys
    )
    assert code == 2 and not (tmp_path / "m.png").exists()


def test_misused_options_say_what_is_wrong(phantom_ventricle, tiny_run, tmp_path, capsys):
    img = next((phantom_ventricle / "imagesTr").iterdir())
    code, _, err = run_cli(
        ["predict", str(img), "--model", str(tiny_run), "--out", str(tmp_path / "p"), "--set", "tta"], capsys
    )
    assert code == 2 and "--set tta: give KEY=VALUE" in err, err
    args = ["evaluate", "--model", str(tiny_run), "--data", str(phantom_ventricle), "--out", str(tmp_path / "e")]
    code, _, err = run_cli([*args, "--by", "biomarker"], capsys)
    assert code == 2 and "--by biomarker: one of dataset.json's own case keys" in err, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["predict", "x.nii.gz", "--bogus"], "No such option: --bogus"),
        (["data", "make", "ventricle", "--out", "d", "--cases", "1"], "Invalid value for '--cases'"),
        (["train"], "Missing option '--config'; see segkit train --help"),
        (["segment"], "No such command 'segment'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, says, capsys):
    code, _, err = run_cli(args, capsys)  # typer 0.29's own click raised them past the handler: tracebacks
    assert code == 2 and err.startswith("segkit: error: ") and says in err and err.count("\n") == 1, err
