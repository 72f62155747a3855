"""Warnings when a result is unsure: grade vs biomarker, low confidence, volumes, inputs unlike the training data."""

import dataclasses
import json

import numpy as np
import pytest
import yaml
from conftest import GEOMETRIES, ROOT, rotation, run_cli, write_nifti

from segkit.checkpoint import load_checkpoint
from segkit.checks import (
    confidence_warnings,
    expected_ml,
    field_of_view_warnings,
    foreground_confidence,
    gradable,
    grade_warnings,
    guess_modality,
    modality_warnings,
    spacing_warnings,
    target_warnings,
    volume_warnings,
)
from segkit.config import TaskConfig, config_from_dict, config_to_dict, load_config
from segkit.errors import ConfigError
from segkit.io import voxel_sizes
from segkit.tasks import TASKS
from segkit.train import with_spacing

VENTRICLE, LIVER = TASKS["ventricle"], TASKS["liver-cyst"]
PROBS = {"healthy": 0.8, "moderate": 0.15, "severe": 0.05}


def biomarker(grade: str | None, value: float | None = 0.01) -> dict:
    return {"name": "ventricle_ratio", "value": value, "grade": grade}


def test_grade_that_disagrees_with_the_biomarker_warns():
    (w,) = grade_warnings("healthy", PROBS, biomarker("severe", 0.05), 0.6)
    assert "grade healthy disagrees with the ventricle_ratio of 0.0500, which means severe" in w
    assert grade_warnings("healthy", PROBS, biomarker("healthy"), 0.6) == []
    assert grade_warnings("healthy", PROBS, biomarker(None, None), 0.6) == []  # no organ: volume_warnings says so


def test_low_grade_probability_warns():
    probs = {"healthy": 0.45, "moderate": 0.35, "severe": 0.2}
    (w,) = grade_warnings("healthy", probs, biomarker("healthy"), 0.6)
    assert w.startswith("low-confidence grade: healthy has probability 0.45 (below 0.60)")
    assert grade_warnings("healthy", {**probs, "healthy": 0.6}, biomarker("healthy"), 0.6) == []  # "below" is strict
    assert len(grade_warnings("healthy", probs, biomarker("severe"), 0.6)) == 2
    assert grade_warnings(None, {}, biomarker(None, None), 0.6) == []  # constant volume: no grade to doubt


def test_volume_outside_the_human_range_warns():
    assert volume_warnings({"brain": 1200.0, "lateral_ventricles": 25.0}, VENTRICLE) == []
    (w,) = volume_warnings({"brain": 400.0, "lateral_ventricles": 10.0}, VENTRICLE)
    assert w.startswith("brain+lateral_ventricles volume 410.0 mL is below the human range 900-2100 mL")
    (w,) = volume_warnings({"brain": 1300.0, "lateral_ventricles": 300.0}, VENTRICLE)
    assert w.startswith("lateral_ventricles volume 300.0 mL is above the human range 3-250 mL")
    assert len(volume_warnings({"brain": 2500.0, "lateral_ventricles": 10.0}, VENTRICLE)) == 1
    assert len(volume_warnings({"brain": 800.0, "lateral_ventricles": 1.0}, VENTRICLE)) == 2
    # the whole liver is liver + cyst + tumour; a liver without cysts is healthy, not out of range
    assert volume_warnings({"liver": 1500.0, "cyst": 0.0, "tumour": 0.0}, LIVER) == []
    assert volume_warnings({"liver": 500.0, "cyst": 80.0, "tumour": 40.0}, LIVER) == []
    (w,) = volume_warnings({"liver": 4000.0, "cyst": 600.0, "tumour": 0.0}, LIVER)
    assert "liver+cyst+tumour volume 4600.0 mL is above" in w
    # a task without ranges (e.g. an old checkpoint's config) checks nothing
    assert volume_warnings({"brain": 5.0, "lateral_ventricles": 0.01}, TaskConfig()) == []


def test_nothing_of_the_organ_found_warns():
    (w,) = volume_warnings({"brain": 0.0, "lateral_ventricles": 0.0}, VENTRICLE)
    assert w.startswith("no brain+lateral_ventricles found, so no biomarker") and "MRI" in w
    (w,) = volume_warnings(
        {"liver": 0.0, "cyst": 0.0, "tumour": 0.0}, dataclasses.replace(LIVER, denominator_range_ml=())
    )
    assert w.startswith("no liver+cyst+tumour found")


def test_a_few_ml_of_organ_are_too_little_to_grade():
    """Real chest CTs of other patients: with no liver in view the liver model found 2 mL of "liver" (PyRadiomics'
    lung1) and 90 mL of it in the heart (lung2's slices above its liver), and its head graded both; under a
    quarter of the smallest human organ there is no grade."""
    assert gradable({"liver": 150.0, "cyst": 0.0, "tumour": 0.0}, LIVER)  # a quarter of 600 mL: a liver cut off
    assert not gradable({"liver": 90.0, "cyst": 0.0, "tumour": 0.0}, LIVER)
    assert not gradable({"liver": 0.0, "cyst": 0.0, "tumour": 0.0}, LIVER)
    assert gradable({"brain": 225.0, "lateral_ventricles": 0.5}, VENTRICLE)
    assert not gradable({"brain": 200.0, "lateral_ventricles": 0.5}, VENTRICLE)
    assert gradable({"liver": 2.0}, dataclasses.replace(LIVER, denominator_range_ml=()))  # no range: any organ
    (w,) = volume_warnings({"liver": 90.0, "cyst": 0.0, "tumour": 0.0}, LIVER)
    assert w.startswith("only 90.0 mL of liver+cyst+tumour found (a quarter of the smallest human one is 150 mL)")
    assert "so no grade" in w


def test_an_organ_too_large_that_holds_too_little_target_is_other_anatomy_and_gets_no_grade():
    """An abdominal MRI given to the ventricle model came out as 2564 mL of "brain" holding 0.05 mL of ventricle:
    beyond both human ranges at once the mask is not the anatomy, so no grade, and the one warning says why."""
    abdomen = {"brain": 2564.1, "lateral_ventricles": 0.05}
    assert not gradable(abdomen, VENTRICLE)
    (w,) = volume_warnings(abdomen, VENTRICLE)
    assert w.startswith("2564.2 mL of brain+lateral_ventricles, more than any human one (2100 mL), holding 0.05 mL")
    assert "not the anatomy this ventricle model segments, so no grade" in w
    # either range alone keeps the grade (a large brain; a brain whose ventricles the model missed), as does a task
    # without a target range (the liver: no cyst is healthy)
    assert gradable({"brain": 2500.0, "lateral_ventricles": 10.0}, VENTRICLE)
    assert gradable({"brain": 1500.0, "lateral_ventricles": 0.5}, VENTRICLE)
    assert gradable({"liver": 9000.0, "cyst": 0.0, "tumour": 0.0}, LIVER)


def test_a_target_the_network_half_sees_but_leaves_out_warns():
    """On two real patients' MRIs the ventricle model's probabilities held 13.2 and 8.5 mL of ventricle where its
    masks drew 4.1 and 4.5; on the drawn test scans and the templates at most 1.44 times the drawn volume."""
    probs = np.zeros((3, 10, 10, 10), np.float32)
    probs[0] = 1.0
    probs[:, :5] = [[[[0.5]]], [[[0.2]]], [[[0.3]]]]  # 500 voxels, 0.3 ventricle each: 150 of them
    assert expected_ml(probs, 0.1, ("lateral_ventricles",), VENTRICLE) == pytest.approx(15.0)
    assert expected_ml(probs, 0.1, ("brain", "lateral_ventricles"), VENTRICLE) == pytest.approx(25.0)
    (w,) = target_warnings(13.2, {"brain": 1900.0, "lateral_ventricles": 4.1}, VENTRICLE)
    assert w.startswith("network unsure about the lateral_ventricles: its probabilities hold 13.2 mL of it, the mask")
    assert "ventricle_ratio are unsure, likely too low" in w
    assert target_warnings(8.5, {"brain": 1700.0, "lateral_ventricles": 4.5}, VENTRICLE)  # 1.9 times
    assert target_warnings(8.2, {"brain": 1700.0, "lateral_ventricles": 5.7}, VENTRICLE) == []  # 1.44: a draw's
    assert target_warnings(2.5, {"brain": 1700.0, "lateral_ventricles": 1.0}, VENTRICLE) == []  # 1.5 mL more only
    assert target_warnings(30.0, {"brain": 1.0}, dataclasses.replace(VENTRICLE, numerator=())) == []
    (w,) = target_warnings(57.1, {"liver": 3600.0, "cyst": 3.0, "tumour": 190.0}, LIVER)  # the real LiTS crop
    assert "about the cyst" in w and "cyst_burden" in w


def test_organ_cut_by_the_field_of_view_warns_and_names_the_side():
    mask = np.zeros((40, 40, 30), dtype=np.uint8)
    mask[10:30, 10:30, 5:25] = 1  # 2 mm voxels: 40 x 40 mm of liver in every section
    lps = np.diag([-2.0, -2.0, 2.0, 1.0])  # axis 0 runs to the patient's left, axis 2 up
    assert field_of_view_warnings(mask, lps, LIVER) == []  # well inside the image
    mask[30:, 10:30, 5:25] = 1  # the liver now runs out at the high end of axis 0: the patient's left
    (w,) = field_of_view_warnings(mask, lps, LIVER)
    assert w.startswith("the liver+cyst+tumour reaches the edge of the image (16 cm2 of it on the left side)")
    assert "cyst_burden cover only the part in view" in w
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    assert "on the right side)" in field_of_view_warnings(mask, ras, LIVER)[0]
    mask[10:30, 10:30, :5] = 3  # tumour (part of the organ) reaching the bottom face too
    assert "(32 cm2 of it on the right, inferior sides)" in field_of_view_warnings(mask, ras, LIVER)[0]
    # a sliver on the face (1 x 10 voxels, 0.4 cm2) is not a cut organ
    small = np.zeros_like(mask)
    small[10:30, 10:30, 5:25] = 1
    small[39, 10:20, 10] = 1
    assert field_of_view_warnings(small, ras, LIVER) == []
    assert field_of_view_warnings(np.zeros_like(mask), ras, LIVER) == []  # no organ: volume_warnings says so


def test_modality_unlike_the_training_data_warns():
    mri = np.random.default_rng(0).normal(300, 50, (8, 8, 8)).clip(0)
    ct = np.where(np.arange(8)[:, None, None] < 2, -1000.0, 40.0) * np.ones((8, 8, 8))
    assert (guess_modality(mri), guess_modality(ct)) == ("MRI", "CT")
    assert modality_warnings(mri, "MRI") == [] and modality_warnings(ct, "CT") == []
    (w,) = modality_warnings(ct, "MRI")
    assert "CT-like values below -500" in w and "trained on MRI" in w
    (w,) = modality_warnings(mri, "CT")
    assert "no values below -500 HU" in w and "trained on CT" in w


def test_scans_coarser_than_any_training_scan_warn():
    las = np.diag([-0.78, 0.78, 6.5, 1.0])  # PyRadiomics' brain1: 6.5 mm slices; the ventricle draws reach 6.0
    (w,) = spacing_warnings(las, 6.0)
    assert w.startswith("voxels 6.5 mm deep along one axis (thick slices), coarser than any scan this model was ")
    assert "(6.0 mm at most)" in w
    assert spacing_warnings(las, 6.48) == []  # within the header-rounding slack
    assert spacing_warnings(las, 0.0) == []  # a model with no record (trained before it existed): no check
    tilted = np.eye(4)
    tilted[:3, :3] = rotation(0, 30) @ np.diag([1.0, 7.0, 1.0])  # oblique: the slice gap is along voxel axis 1
    assert spacing_warnings(tilted, 6.0) and not spacing_warnings(tilted, 7.0)
    sheared = GEOMETRIES["sheared"]  # 4 mm apart, though each step along the slice axis is 4.26 mm
    assert voxel_sizes(sheared) == pytest.approx((0.9, 0.9, 4.0)) and spacing_warnings(sheared, 4.0) == []
    assert spacing_warnings(sheared, 3.5)[0].startswith("voxels 4.0 mm deep")


def test_training_records_the_coarsest_spacing_of_its_scans(tiny_run, phantom_ventricle):
    import nibabel as nib

    from segkit.data.msd import read_dataset
    from segkit.validate import CaseData

    coarsest = max(max(nib.load(c.image).header.get_zooms()) for c in read_dataset(phantom_ventricle).split("train"))
    onnx = json.loads((tiny_run / "best.onnx.json").read_text())["checkpoint_state"]  # what a CPU predict reads
    for ck in (load_checkpoint(tiny_run / "best.pt"), onnx):
        assert ck["config"]["eval"]["max_spacing_mm"] == pytest.approx(coarsest, abs=1e-3)
    cfg = load_config(ROOT / "configs" / "ventricle.yaml")
    case = CaseData("c", np.zeros((2, 2, 2), np.float32), np.zeros((2, 2, 2), np.uint8), 0, np.arange(2), np.arange(2))
    thin = dataclasses.replace(case, spacing_mm=1.2)
    assert with_spacing(cfg, [thin, dataclasses.replace(case, spacing_mm=3.5)]).eval.max_spacing_mm == 3.5
    assert with_spacing(cfg, [thin], earlier=6.0).eval.max_spacing_mm == 6.0  # --init: the source model's scans too


def test_foreground_confidence_is_the_mean_top_probability_where_the_model_sees_tissue():
    # 4 voxels, 3 classes: one confident background voxel (ignored), three foreground voxels
    probs = np.array(
        [
            [0.9, 0.1, 0.3, 0.0],  # background
            [0.05, 0.6, 0.6, 0.2],  # brain
            [0.05, 0.3, 0.1, 0.8],  # ventricles
        ],
        dtype=np.float32,
    ).reshape(3, 2, 2, 1)
    assert foreground_confidence(probs) == pytest.approx((0.6 + 0.6 + 0.8) / 3)
    assert foreground_confidence(np.array([[0.7, 0.9], [0.3, 0.1]]).reshape(2, 2, 1, 1)) is None
    (w,) = confidence_warnings(0.62, 0.75)
    assert w.startswith("network unsure over the structure (mean probability 0.62, below 0.75)")
    assert confidence_warnings(0.9, 0.75) == [] and confidence_warnings(None, 0.75) == []


def test_configs_hold_the_tasks_ranges_and_old_checkpoints_still_load():
    for name, task in TASKS.items():
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.task == task, name
        assert cfg.eval.min_confidence_fg == 0.75
    old = config_to_dict(load_config(ROOT / "configs" / "ventricle.yaml"))
    for section, key in (
        ("task", "denominator_range_ml"),
        ("task", "numerator_range_ml"),
        ("eval", "min_confidence_fg"),
    ):
        del old[section][key]
    cfg = config_from_dict(old)
    assert (
        cfg.task.denominator_range_ml == () and cfg.task.numerator_range_ml == () and cfg.eval.min_confidence_fg == 0.75
    )
    for bad in ("[900]", "[2100, 900]", "[-1, 5]"):
        with pytest.raises(ConfigError, match="denominator_range_ml"):
            load_config(ROOT / "configs" / "ventricle.yaml", [f"task.denominator_range_ml={bad}"])
    assert (
        load_config(ROOT / "configs" / "ventricle.yaml", ["task.numerator_range_ml=[]"]).task.numerator_range_ml == ()
    )
    assert yaml.safe_load((ROOT / "configs" / "liver-cyst.yaml").read_text())["task"]["numerator_range_ml"] == []


def test_predict_puts_warnings_in_the_report_and_on_the_console(tiny_run, tmp_path, capsys):
    # a CT-like scan given to the MRI ventricle model
    data = np.random.default_rng(0).normal(300, 60, (24, 20, 14)).astype(np.float32)
    data[:, :3] = -1000.0
    src = write_nifti(tmp_path / "ct.nii.gz", data, np.diag([4.0, 4.0, 6.0, 1.0]))
    out = tmp_path / "out"
    code, stdout, err = run_cli(["predict", str(src), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 0, err
    warnings = json.loads((out / "ct_report.json").read_text())["warnings"]
    assert any("trained on MRI" in w for w in warnings)
    # every warning is on the console, one line each, after the case's result line
    lines = stdout.splitlines()
    assert [ln for ln in lines if ln.startswith("warning:")] == [f"warning: ct.nii.gz: {w}" for w in warnings]
    assert lines.index(f"warning: ct.nii.gz: {warnings[0]}") > next(i for i, ln in enumerate(lines) if "grade" in ln)


def test_nan_voxels_filled_on_reading_are_reported_once(tiny_run, tmp_path, capsys):
    data = np.random.default_rng(0).random((24, 24, 8)).astype(np.float32) * 100
    data[3, 4, 5] = np.nan
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):  # a folder run reads its first inputs twice (the shipped model is picked first)
        write_nifti(folder / f"{name}.nii.gz", data, np.eye(4))
    code, stdout, err = run_cli(
        ["predict", str(folder), "--model", str(tiny_run), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 0, err
    for name in ("a", "b"):
        report = json.loads((tmp_path / "o" / f"{name}_report.json").read_text())
        assert report["warnings"][0].startswith("1 voxel (0.022%) NaN or Inf in the file, set to the image minimum")
        assert (stdout + err).count(f"warning: {name}.nii.gz: 1 voxel (0.022%) NaN or Inf") == 1
