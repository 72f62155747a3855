"""What a QA pass of 2026-11-29 found a user could hit: each test fails on the code before its fix."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest
from conftest import run_cli, write_nifti


@pytest.mark.parametrize("name", ["dataset.json", "imagesTr", "montage.jpg"])
def test_data_show_writes_only_a_png_and_never_over_the_dataset(phantom_ventricle, tmp_path, capsys, name):
    data = shutil.copytree(phantom_ventricle, tmp_path / "data")
    target = data / name
    before = target.read_bytes() if target.is_file() else None
    code, _, err = run_cli(["data", "show", str(data), "--out", str(target)], capsys)
    assert code == 2 and err.count("\n") == 1 and "ending in .png" in err, err  # was: a PNG written over it
    if before is not None:
        assert target.read_bytes() == before
    else:
        assert target.is_dir() or not target.exists()


@pytest.mark.parametrize("device", ["tpu", "gpu", "CPU", "cuda:x"])
def test_an_unknown_device_is_one_line_and_exit_2(tiny_run, tmp_path, capsys, device):
    image = write_nifti(tmp_path / "v.nii.gz", np.random.default_rng(0).random((24, 24, 8)) * 100, np.eye(4))
    code, _, err = run_cli(["predict", str(image), "--model", str(tiny_run), "--device", device], capsys)
    assert code == 2 and err.count("\n") == 1 and f"--device {device}" in err, err  # was a torch traceback


def test_a_folder_predicted_into_itself_does_not_predict_its_masks(tiny_run, tmp_path, capsys, caplog):
    folder = tmp_path / "scans"
    folder.mkdir()
    write_nifti(folder / "c.nii.gz", np.random.default_rng(0).random((24, 24, 8)) * 100, np.eye(4))
    args = ["predict", str(folder), "--model", str(tiny_run), "--out", str(folder)]
    assert run_cli(args, capsys)[0] == 0
    code, _, err = run_cli(args, capsys)  # was refused: "c_mask.nii.gz: output would overwrite the input"
    assert code == 0, err
    code, _, err = run_cli(["predict", str(folder), "--model", str(tiny_run), "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and "skipping 1 file(s) segkit predict wrote" in caplog.text, err
    assert sorted(p.name for p in (tmp_path / "o").glob("*_report.json")) == ["c_report.json"]  # no c_mask_report
    # a scan whose name happens to end in _mask, with no report beside it, is still a scan
    shutil.copy(folder / "c.nii.gz", folder / "d_mask.nii.gz")
    assert run_cli(["predict", str(folder), "--model", str(tiny_run), "--out", str(tmp_path / "p")], capsys)[0] == 0
    assert (tmp_path / "p" / "d_mask_report.json").is_file()


def test_the_read_time_is_reported_when_the_file_was_read_to_pick_the_model(tmp_path, capsys):
    """Without --model the input is read once to pick the shipped model by modality; its report said read 0.0."""
    image = write_nifti(tmp_path / "v.nii.gz", np.random.default_rng(0).random((40, 40, 20)) * 100, np.eye(4))
    assert run_cli(["predict", str(image), "--out", str(tmp_path / "o")], capsys)[0] == 0
    assert json.loads((tmp_path / "o" / "v_report.json").read_text())["seconds"]["read"] > 0


def test_review_page_shows_a_models_limits_once_and_encodes_its_links(tiny_run, tmp_path, capsys):
    pred = tmp_path / "pred"
    write_nifti(tmp_path / "a#1 ü.nii.gz", np.random.default_rng(0).random((24, 24, 8)) * 100, np.eye(4))
    code, _, err = run_cli(
        ["predict", str(tmp_path / "a#1 ü.nii.gz"), "--model", str(tiny_run), "--out", str(pred)], capsys
    )
    assert code == 0, err
    report_path = pred / "a#1 ü_report.json"
    report = json.loads(report_path.read_text())
    limits = "this model (preview): Dice 0.5 on real scans; check every mask"
    report["model"]["limits"] = [limits]  # as a shipped model's checkpoint declares them
    report["warnings"] = [*report["warnings"], limits]
    report_path.write_text(json.dumps(report))
    code, _, err = run_cli(["export", str(pred), "--out", str(tmp_path / "review")], capsys)
    assert code == 0, err
    page = (tmp_path / "review" / "index.html").read_text()
    assert page.count(limits) == 1 and 'class="limits"' in page  # once, above the table
    assert f"warning: {limits}" not in page  # was a flag on every case of a shipped model
    assert 'href="../pred/a%231%20%C3%BC_mask.nii.gz"' in page  # was a raw '#': a link to "../pred/a"


def test_export_refuses_options_that_do_not_apply_or_make_no_sense(tiny_run, tmp_path, capsys):
    write_nifti(tmp_path / "v.nii.gz", np.random.default_rng(0).random((24, 24, 8)) * 100, np.eye(4))
    assert (
        run_cli(
            ["predict", str(tmp_path / "v.nii.gz"), "--model", str(tiny_run), "--out", str(tmp_path / "p")], capsys
        )[0]
        == 0
    )
    for extra in (
        ["--low-confidence", "1.5"],
        ["--tiny-ml", "-1"],
        ["--format", "dicom-seg", "--model", str(tiny_run)],
    ):
        code, _, err = run_cli(["export", str(tmp_path / "p"), "--out", str(tmp_path / "r"), *extra], capsys)
        assert code == 2 and err.count("\n") == 1, (extra, err)  # were accepted (or ignored) with exit 0
    assert not (tmp_path / "r").exists()


def test_evaluate_predictions_folder_has_the_usual_permissions(tiny_run, phantom_ventricle, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--model",
        str(tiny_run),
        "--data",
        str(phantom_ventricle),
        "--split",
        "train",
        "--out",
        str(out),
    ]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((out / "predictions").stat().st_mode) == 0o777 & ~umask  # was 0700 (mkdtemp's)
    assert "its own training cases" in (out / "report.md").read_text()  # the train split says what it measures


def test_more_epochs_on_resume_run_on_the_cosine_and_a_finished_run_is_not_redone(
    tiny_run, phantom_ventricle, tmp_path, capsys
):
    """tiny_run trained 2 epochs; resumed to 4, its epochs 3 and 4 had the floor lr (2% of train.lr) because the
    scheduler steps each lr from the one before: they get the lr of a run begun with 4 epochs."""
    import csv
    import math

    from conftest import ROOT, TINY

    run = shutil.copytree(tiny_run, tmp_path / "run")
    args = ["train", "--config", str(ROOT / "configs/ventricle.yaml"), "--data", str(phantom_ventricle)]
    tiny = [a for s in TINY if not s.startswith("train.epochs") for a in ("--set", s)]
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, _, err = run_cli([*args, "--out", str(run), *tiny, "--epochs", "2", "--resume"], capsys)
    assert code == 2 and "has trained 2 epochs already" in err, err  # was: the refit and choices redone
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    code, _, err = run_cli([*args, "--out", str(run), *tiny, "--epochs", "4", "--resume"], capsys)
    assert code == 0, err
    lrs = [float(r["lr"]) for r in csv.DictReader((run / "metrics.csv").open())]
    base = 1e-3
    want = [0.02 * base + 0.98 * base * (1 + math.cos(math.pi * t / 4)) / 2 for t in (2, 3)]
    assert lrs[2:] == pytest.approx(want, rel=1e-5), lrs  # were [2e-05, 2e-05] (metrics.csv rounds to 6 digits)


def test_label_values_say_what_is_wrong_with_them(tmp_path):
    """A label map resampled linearly holds 0.7: it was called 'outside 0..2'; an out-of-range one lists only the
    values that are out of range (it listed every value, all of an image's intensities for an image)."""
    import nibabel as nib

    from segkit.errors import InputError
    from segkit.io import label_array, read_volume

    labels = ("background", "organ", "lesion")
    data = np.zeros((6, 6, 4), np.float32)
    data[1, 1, 1], data[2, 2, 2] = 0.7, 2.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "frac.nii.gz"))
    with pytest.raises(InputError, match=r"1 label values are not whole numbers \(0\.7\).*nearest-neighbour"):
        label_array(read_volume(tmp_path / "frac.nii.gz", kind="label"), labels)
    data[1, 1, 1] = 7.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "big.nii.gz"))
    with pytest.raises(InputError, match=r"label values \[7\] outside 0\.\.2"):
        label_array(read_volume(tmp_path / "big.nii.gz", kind="label"), labels)


@pytest.mark.parametrize("name", ["ventricle", "liver-cyst", "ventricle-3d", "liver-cyst-3d"])
def test_each_shipped_config_lists_every_key(name):
    """README: the configs list every key (train.outside_slices was in none, train.target_sampling not in the 3-D)."""
    import yaml
    from conftest import ROOT

    from segkit.config import Config, config_to_dict

    written = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    for section, keys in config_to_dict(Config()).items():
        assert section in written, section
        if isinstance(keys, dict):
            assert sorted(set(keys) - set(written[section] or {})) == [], section


def test_a_config_error_names_the_file_and_what_to_do(capsys):
    from conftest import ROOT

    config = ROOT / "configs" / "ventricle.yaml"
    code, _, err = run_cli(["train", "--config", str(config), "--set", "train.lr=fast"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{config}: train.lr: 'fast' is not a valid float; fix it in {config}" in err  # was the check alone


def test_evaluate_reports_a_split_holding_a_constant_image(tiny_run, phantom_ventricle, tmp_path, capsys):
    """predict gives a constant image no grade probabilities; evaluate filled them with NaN and its AUC (or, with one
    grade in the split, its calibration) crashed with a traceback after writing predictions/."""
    import nibabel as nib

    data = shutil.copytree(phantom_ventricle, tmp_path / "data")
    meta = json.loads((data / "dataset.json").read_text())
    test = [r for r in meta["training"] if r["split"] == "test"]
    img = nib.load(data / test[0]["image"])
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine), str(data / test[0]["image"]))
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(tiny_run), "--data", str(data), "--split", "test", "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["num_cases"] == len(test) and report["num_graded"] == len(test) - 1
    assert "1 of the" in (out / "report.md").read_text()


def test_a_resume_of_a_run_whose_patience_ran_out_says_how_to_go_on(tmp_path):
    import dataclasses

    from conftest import ROOT

    from segkit.config import load_config
    from segkit.errors import InputError
    from segkit.train import _check_more_to_train

    cfg = load_config(ROOT / "configs" / "ventricle.yaml", ["train.epochs=10", "train.patience=3"])
    _check_more_to_train({"epoch": 5, "bad_epochs": 2}, cfg, tmp_path)  # epochs and patience left: trains on
    with pytest.raises(InputError, match="stopped early after 3 epochs without improvement.*train.patience=N above 3"):
        _check_more_to_train({"epoch": 5, "bad_epochs": 3}, cfg, tmp_path)
    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, patience=6))
    _check_more_to_train({"epoch": 5, "bad_epochs": 3}, more, tmp_path)  # patience raised on resume: trains on


def test_epochs_given_twice_is_refused(capsys):
    """`--set train.epochs=abc --epochs 1` trained 1 epoch: the option's value replaced the bad one unchecked."""
    from conftest import ROOT

    args = ["train", "--config", str(ROOT / "configs" / "ventricle.yaml"), "--set", "train.epochs=abc", "--epochs", "1"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "--epochs and --set train.epochs both given" in err, err
