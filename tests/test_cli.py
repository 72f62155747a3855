"""End to end through the CLI: train a tiny model, predict, evaluate; bad input gets exit 2."""

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import GEOMETRIES, ROOT, TINY, run_cli, write_nifti

from segkit.checkpoint import load_checkpoint
from segkit.config import load_config
from segkit.errors import CheckpointError
from segkit.models import build_model


def test_train_writes_a_complete_run(tiny_run):
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.csv", "curves.png", "run.json"):
        assert (tiny_run / name).is_file(), name
    assert any((tiny_run / "tb").iterdir())
    rows = list(csv.DictReader((tiny_run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "val_dice", "val_dice_pooled", "val_grade_acc", "val_dice_lateral_ventricles"} <= set(rows[0])
    info = json.loads((tiny_run / "run.json").read_text())
    assert info["seed"] == 0 and info["torch"] == torch.__version__
    ck = load_checkpoint(tiny_run / "best.pt")  # weights_only=True
    assert ck["config"]["task"]["name"] == "ventricle"


def test_predict_keeps_input_shape_and_affine_for_every_geometry(tiny_run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, affine in GEOMETRIES.items():
        data = rng.normal(100, 20, (24, 20, 14)).astype(np.float32)
        write_nifti(inputs / f"{name}.nii.gz", data, affine)
    write_nifti(
        inputs / "qform_only.nii.gz", rng.random((20, 20, 10)).astype(np.float32), GEOMETRIES["LPS"], sform=False
    )
    write_nifti(
        inputs / "sform_only.nii.gz", rng.random((20, 20, 10)).astype(np.float32), GEOMETRIES["oblique"], qform=False
    )
    out = tmp_path / "out"
    code, stdout, err = run_cli(["predict", str(inputs), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 0, err
    for src in inputs.iterdir():
        name = src.name.replace(".nii.gz", "")
        img, mask = nib.load(src), nib.load(out / f"{name}_mask.nii.gz")
        assert mask.shape == img.shape and mask.get_data_dtype() == np.uint8
        assert np.allclose(mask.affine, img.affine, atol=1e-5), name
        assert nib.aff2axcodes(mask.affine) == nib.aff2axcodes(img.affine)
        report = json.loads((out / f"{name}_report.json").read_text())
        assert set(report["probabilities"]) == {"healthy", "moderate", "severe"}
        assert abs(sum(report["probabilities"].values()) - 1) < 1e-3
        assert report["grade"] in report["probabilities"]
        assert set(report["volumes_ml"]) == {"brain", "lateral_ventricles"}
        assert (out / f"{name}_overlay.png").stat().st_size > 1000
    sheared = json.loads((out / "sheared_report.json").read_text())
    assert sheared["spacing_mm"] == [0.9, 0.9, 4.0]  # the slices' gap, not the 4.26 mm step along the tilted axis
    assert (out / "ventricle_labels.itksnap.txt").is_file() and (out / "ventricle_labels.ctbl").is_file()


def test_all_zero_volume_gets_an_all_zero_mask(tiny_run, tmp_path, capsys):
    src = write_nifti(tmp_path / "zeros.nii.gz", np.zeros((16, 16, 8), np.float32), np.eye(4))
    code, _, err = run_cli(["predict", str(src), "--model", str(tiny_run), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    assert not np.asarray(nib.load(tmp_path / "o" / "zeros_mask.nii.gz").dataobj).any()
    report = json.loads((tmp_path / "o" / "zeros_report.json").read_text())
    assert report["grade"] is None and report["warnings"]


def _bad_inputs(d: Path) -> dict[str, Path]:
    good = nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 8)).astype(np.float32), np.eye(4))
    nib.save(good, str(d / "good.nii.gz"))
    raw = (d / "good.nii.gz").read_bytes()
    files = {
        "missing": d / "missing.nii.gz",
        "zero_byte": d / "empty.nii.gz",
        "text": d / "text.nii",
        "truncated": d / "truncated.nii.gz",
        "four_d": d / "four_d.nii.gz",
        "two_d": d / "two_d.nii.gz",
        "all_nan": d / "nan.nii.gz",
        "all_inf": d / "inf.nii.gz",
        "singular": d / "singular.nii.gz",
        "huge_header": d / "huge.nii",
        "spacing_in_cm": d / "cm.nii.gz",  # 40 mm voxels: 33 G voxels on a 1.5 mm grid, refused before any memory
    }
    files["zero_byte"].write_bytes(b"")
    files["text"].write_text("this is not an image\n")
    files["truncated"].write_bytes(raw[: len(raw) // 2])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), str(files["four_d"]))
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(files["two_d"]))
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), np.nan, np.float32), np.eye(4)), str(files["all_nan"]))
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), np.inf, np.float32), np.eye(4)), str(files["all_inf"]))
    sing = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4))
    sing.set_qform(None, code=0)
    sing.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    nib.save(sing, str(files["singular"]))
    hdr = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    hdr.header.set_data_shape((900, 900, 900))
    files["huge_header"].write_bytes(hdr.header.binaryblock + b"\0" * 4 + b"\1" * 64)
    scan = np.random.default_rng(1).random((128, 128, 96)).astype(np.float32)
    nib.save(nib.Nifti1Image(scan, np.diag([40.0, 40.0, 40.0, 1.0])), str(files["spacing_in_cm"]))
    return files


def test_bad_input_gets_one_line_exit_2_and_no_output(tiny_run, tmp_path, capsys):
    for kind, path in _bad_inputs(tmp_path).items():
        out = tmp_path / f"out_{kind}"
        code, _, err = run_cli(["predict", str(path), "--model", str(tiny_run), "--out", str(out)], capsys)
        assert code == 2, (kind, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("segkit: error:"), (kind, err)
        assert "Traceback" not in err and path.name in err, (kind, err)
        assert not out.exists() or not any(out.iterdir()), kind


def test_predict_refuses_to_overwrite_its_input(tiny_run, tmp_path, capsys):
    src = write_nifti(
        tmp_path / "x_mask.nii.gz", np.random.default_rng(0).random((16, 16, 8)).astype(np.float32), np.eye(4)
    )
    (tmp_path / "x.nii.gz").symlink_to(src)
    before = src.read_bytes()
    code, _, err = run_cli(
        ["predict", str(tmp_path / "x.nii.gz"), "--model", str(tiny_run), "--out", str(tmp_path)], capsys
    )
    assert code == 2 and "overwrite" in err
    assert src.read_bytes() == before


def test_config_errors_exit_2(tmp_path, phantom_ventricle, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    code, _, err = run_cli(["train", "--config", str(bad), "--data", str(phantom_ventricle)], capsys)
    assert code == 2 and "epochz" in err and len(err.strip().splitlines()) == 1


def test_resume_continues_from_last_complete_epoch(tiny_run, phantom_ventricle, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = [
        "train",
        "--config",
        str(ROOT / "configs/ventricle.yaml"),
        "--data",
        str(phantom_ventricle),
        "--out",
        str(run),
    ]
    tiny = [a for s in TINY if not s.startswith("train.epochs") for a in ("--set", s)]
    code, _, err = run_cli([*args, *tiny, "--epochs", "3", "--resume"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[:2] == list(csv.DictReader((tiny_run / "metrics.csv").open()))


def test_init_fine_tunes_from_a_run_and_refuses_another_network(tiny_run, phantom_ventricle, tmp_path, capsys):
    args = ["train", "--config", str(ROOT / "configs/ventricle.yaml"), "--data", str(phantom_ventricle)]
    tiny = [a for s in TINY if not s.startswith("train.epochs") for a in ("--set", s)]
    run = tmp_path / "ft"
    code, _, err = run_cli([*args, *tiny, "--epochs", "1", "--out", str(run), "--init", str(tiny_run)], capsys)
    assert code == 0, err
    init = json.loads((run / "run.json").read_text())["init"]
    assert init["path"] == str(tiny_run / "best.pt") and init["fresh_layers"] == []
    # the fine-tuned network started from the source's weights, not a fresh draw: epoch 1 differs from
    # the source run's own epoch 1 (which started from the seed's initialisation)
    first = next(csv.DictReader((run / "metrics.csv").open()))["train_loss"]
    assert first != next(csv.DictReader((tiny_run / "metrics.csv").open()))["train_loss"]
    wide = [a if a != "model.channels=[8,16,32]" else "model.channels=[8,16,64]" for a in tiny]
    other = tmp_path / "other"
    code, _, err = run_cli([*args, *wide, "--epochs", "1", "--out", str(other), "--init", str(tiny_run)], capsys)
    assert code == 2 and "differs from this config" in err and len(err.strip().splitlines()) == 1
    assert "model.channels [8, 16, 32] here [8, 16, 64]" in err  # both sides named (was the source's alone)
    assert not (other / "best.pt").exists()
    # batch norm from an instance-norm source (how the liver model moved to it): only the norm layers start fresh
    bn = tmp_path / "bn"
    code, _, err = run_cli(
        [*args, *tiny, "--epochs", "1", "--out", str(bn), "--init", str(tiny_run), "--set", "model.norm=batch"], capsys
    )
    assert code == 0, err
    fresh = json.loads((bn / "run.json").read_text())["init"]["fresh_layers"]
    assert fresh
    source = torch.load(tiny_run / "best.pt", weights_only=True)["model"]
    start = build_model(load_config(ROOT / "configs/ventricle.yaml", [*TINY, "model.norm=batch"])).state_dict()
    assert {k for k in start if k not in source and not k.endswith("num_batches_tracked")} == set(fresh)


def test_tampered_checkpoint_is_refused(tiny_run, tmp_path):
    state = torch.load(tiny_run / "best.pt", weights_only=True)
    state["evil"] = Path("/etc/passwd")  # any pickled object that is not plain data
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")


def test_evaluate_writes_the_report(tiny_run, phantom_ventricle, tmp_path, capsys):
    out = tmp_path / "eval"
    code, stdout, err = run_cli(
        ["evaluate", "--model", str(tiny_run), "--data", str(phantom_ventricle), "--split", "test", "--out", str(out)],
        capsys,
    )
    assert code == 0, err
    for name in (
        "per_case.csv",
        "report.json",
        "report.md",
        "confusion.png",
        "roc.png",
        "calibration.png",
        "dice_by_case.png",
    ):
        assert (out / name).is_file(), name
    assert "Dice lateral_ventricles" in stdout
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert len(rows) == len(json.loads((phantom_ventricle / "dataset.json").read_text())["split"]["test"])
    by_grade = json.loads((out / "report.json").read_text())["subgroups"]["grade_true"]
    assert sum(g["num_cases"] for g in by_grade.values()) == len(rows)


def test_a_dataset_of_freesurfer_mgz_files_evaluates_as_its_nifti(tiny_run, phantom_ventricle, tmp_path, capsys):
    """Images and labels as .mgz (FreeSurfer's format) in dataset.json: the same per-case figures as the NIfTI."""
    mgz = tmp_path / "mgz"
    shutil.copytree(phantom_ventricle, mgz)
    spec = json.loads((mgz / "dataset.json").read_text())
    for row in spec["training"]:
        for key in ("image", "label"):
            src = mgz / row[key]
            img = nib.load(src)
            nib.save(nib.MGHImage(np.asarray(img.dataobj), img.affine), src.with_name(src.name[:-7] + ".mgz"))
            src.unlink()
            row[key] = row[key][:-7] + ".mgz"
    (mgz / "dataset.json").write_text(json.dumps(spec))
    rows = {}
    for name, data in (("nifti", phantom_ventricle), ("mgz", mgz)):
        out = tmp_path / name
        args = ["evaluate", "--model", str(tiny_run), "--data", str(data), "--split", "test", "--out", str(out)]
        code, _, err = run_cli(args, capsys)
        assert code == 0, err
        rows[name] = list(csv.DictReader((out / "per_case.csv").open()))
    assert rows["mgz"] == rows["nifti"] and len(rows["mgz"]) > 0


def test_same_seed_and_config_give_identical_metrics(tiny_run, phantom_ventricle, tmp_path):
    from segkit.config import load_config
    from segkit.train import fit

    run = tmp_path / "again"
    fit(load_config(ROOT / "configs/ventricle.yaml", TINY), phantom_ventricle, run)
    strip = lambda p: [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(p.open())]  # noqa: E731
    assert strip(run / "metrics.csv") == strip(tiny_run / "metrics.csv")


def test_a_new_run_is_not_written_over_an_old_one_and_a_resume_keeps_its_config(
    tiny_run, phantom_ventricle, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    args = ["train", "--config", str(ROOT / "configs/ventricle.yaml"), "--data", str(phantom_ventricle)]
    tiny = [a for s in TINY if not s.startswith("train.epochs") for a in ("--set", s)]
    code, _, err = run_cli([*args, "--out", str(run), *tiny, "--epochs", "1"], capsys)
    assert code == 2 and "holds a run already (last.pt, best.pt, metrics.csv)" in err
    assert "--resume" in err and len(err.strip().splitlines()) == 1
    # a resume that changes what the run learns from: refused before any epoch, nothing touched
    code, _, err = run_cli(
        [*args, "--out", str(run), *tiny, "--epochs", "3", "--set", "train.lr=0.5", "--resume"], capsys
    )
    assert code == 2 and "changes train.lr 0.001 -> 0.5" in err, err
    code, _, err = run_cli([*args, "--out", str(run), *tiny, "--set", "augment.flip_lr=0", "--resume"], capsys)
    assert code == 2 and "augment.flip_lr 0.5 -> 0.0" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # an empty folder is a fresh run's, and so is one whose run stopped in its first epoch (nothing to resume)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "run.json").write_text("{}")
    code, _, err = run_cli([*args, "--out", str(tmp_path / "empty"), *tiny, "--epochs", "1", "--resume"], capsys)
    assert code == 2 and "nothing to resume" in err
    code, _, err = run_cli([*args, "--out", str(tmp_path / "empty"), *tiny, "--epochs", "1"], capsys)
    assert code == 0, err
