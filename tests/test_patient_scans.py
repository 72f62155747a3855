"""The shipped models on real scans of other patients: lung2, brain1, brain2 (data_cards/pyradiomics.md)."""

import nibabel as nib
import numpy as np
from conftest import ROOT, load_script

SCANS = ROOT / "tests" / "data" / "pyradiomics"


def test_vendored_patient_scans_keep_their_scanner_geometry():
    ct, ref = nib.load(SCANS / "lung2.nii.gz"), nib.load(SCANS / "lung2_liver_reference.nii.gz")
    assert ct.shape == ref.shape == (512, 512, 35) and np.allclose(ct.affine, ref.affine)
    assert nib.aff2axcodes(ct.affine) == ("L", "P", "S")
    assert np.allclose(ct.header.get_zooms(), (0.626953, 0.626953, 5.0), atol=1e-5)
    assert -1100 < float(np.asarray(ct.dataobj).min()) < -900  # Hounsfield units: air
    for name in ("brain1", "brain2"):
        mri = nib.load(SCANS / f"{name}.nii.gz")
        assert nib.aff2axcodes(mri.affine) == ("L", "A", "S") and np.isclose(mri.header.get_zooms()[2], 6.5)
        ref = nib.load(SCANS / f"{name}_ventricles_reference.nii.gz")
        assert ref.shape == mri.shape and np.allclose(ref.affine, mri.affine)


def test_ventricle_references_are_what_the_vendoring_script_draws():
    """The two semi-automatic references redrawn from the vendored scans, voxel for voxel; each a young adult's
    small pair of lateral ventricles (healthy adults: about 7-25 mL), on both sides of the midline."""
    vendor = load_script("vendor_pyradiomics")
    for name, where in vendor.VENTRICLE_BOXES.items():
        mri = nib.load(SCANS / f"{name}.nii.gz")
        voxel_ml = float(np.prod(mri.header.get_zooms())) / 1000
        drawn = vendor.reference_ventricles(np.asarray(mri.dataobj), where, voxel_ml)
        stored = np.asarray(nib.load(SCANS / f"{name}_ventricles_reference.nii.gz").dataobj)
        assert np.array_equal(drawn, stored), name
        assert 5.0 < stored.sum() * voxel_ml < 10.0
        xs = np.nonzero(stored)[0]
        assert (xs < where["midline"]).any() and (xs > where["midline"]).any()


def test_ventricle_figures_count_only_the_ventricle_label_against_the_reference():
    ref = np.zeros((4, 4, 2), np.uint8)
    ref[:2] = 1  # 16 voxels
    mask = np.ones_like(ref)  # brain everywhere
    mask[1:3] = 2  # ventricle: 8 inside the reference, 8 outside
    f = load_script("patient_scans").ventricle_figures(mask, ref, voxel_ml=0.5)
    assert f["dice_lateral_ventricles"] == 0.5
    assert (f["reference_ml"], f["mask_ml"], f["mask_outside_reference_ml"], f["reference_missed_ml"]) == (8, 8, 4, 4)


def test_liver_figures_count_the_mask_against_the_reference():
    ref = np.zeros((4, 4, 2), np.uint8)
    ref[:2] = 1  # 16 voxels
    mask = np.zeros_like(ref)
    mask[1:3] = 1  # 8 inside, 8 outside
    mask[2, 0, 0] = 2  # a cyst outside the reference
    f = load_script("patient_scans").liver_figures(mask, ref, voxel_ml=0.5)
    assert f["dice_whole_liver"] == 0.5
    assert (f["reference_ml"], f["mask_ml"], f["mask_outside_reference_ml"], f["reference_missed_ml"]) == (8, 8, 4, 4)
    assert f["lesion_outside_reference_ml"] == 0.5


def test_shipped_liver_model_finds_another_patients_liver(monkeypatch, tmp_path):
    """Run as a user would (no --model: the shipped model picked for a CT): the liver of a patient whose scans
    never met training, in a chest CT that shows the heart too, against its semi-automatic reference. Measured
    0.936 with the shipped model of 66f6851; 0.90 leaves room for a retrained model, not for a lost liver."""
    from segkit.infer import predict_paths

    monkeypatch.delenv("SEGKIT_WEIGHTS_DIR", raising=False)
    (report,), failed = predict_paths(SCANS / "lung2.nii.gz", None, tmp_path)
    assert failed is None and report["model"]["name"] == "liver-cyst" and report["grade"] is not None
    mask = nib.load(tmp_path / report["mask"])
    ref = nib.load(SCANS / "lung2_liver_reference.nii.gz")
    assert np.allclose(mask.affine, ref.affine, atol=1e-5)
    voxel_ml = float(np.prod(ref.header.get_zooms())) / 1000
    f = load_script("patient_scans").liver_figures(np.asarray(mask.dataobj), np.asarray(ref.dataobj), voxel_ml)
    assert f["dice_whole_liver"] >= 0.90, f
    assert f["lesion_outside_reference_ml"] < 10, f  # no cysts or tumours drawn in the heart, stomach or kidney
    assert any("edge of the image" in w and "inferior" in w for w in report["warnings"])  # the liver is cut there


def test_a_chest_ct_without_the_liver_gets_no_grade(monkeypatch, tmp_path):
    """lung2's slices above its liver (heart and lungs): the model calls about 90 mL of the heart liver (a gap it
    declares in its limits); under a quarter of the smallest liver that is no grade, and the warning says why."""
    from segkit.infer import predict_paths

    monkeypatch.delenv("SEGKIT_WEIGHTS_DIR", raising=False)
    src = tmp_path / "chest.nii.gz"
    nib.save(nib.load(SCANS / "lung2.nii.gz").slicer[:, :, load_script("patient_scans").ABOVE_LIVER :], src)
    (report,), failed = predict_paths(src, None, tmp_path / "out")
    assert failed is None and report["model"]["name"] == "liver-cyst"
    assert report["grade"] is None and report["probabilities"] == {}
    assert any("so no grade" in w for w in report["warnings"]), report["warnings"]


def test_the_ventricle_model_does_not_miss_patients_ventricles_silently(monkeypatch, tmp_path):
    """Two real patients' T1 MRIs after contrast, whose ventricles the shipped model mostly missed in one pass (4.1
    and 4.5 mL drawn; Dice 0.24 and 0.30 against the semi-automatic references of 7.3 and 6.6 mL) and finds with its
    second pass on the scan stripped to its brain (eval.strip_to_organ; Dice 0.55 and 0.72): a poor mask must not be
    a silent one. Below Dice 0.5 the model must say it is unsure (or draw more than 10 mL, beyond doubt of missing
    them); below 0.45 the second pass has lost what it found: a regression."""
    from segkit.infer import predict_paths

    monkeypatch.delenv("SEGKIT_WEIGHTS_DIR", raising=False)
    for name in ("brain1", "brain2"):
        (report,), failed = predict_paths(SCANS / f"{name}.nii.gz", None, tmp_path / name)
        assert failed is None and report["model"]["name"] == "ventricle"
        drawn = report["volumes_ml"]["lateral_ventricles"]
        ref = nib.load(SCANS / f"{name}_ventricles_reference.nii.gz")
        voxel_ml = float(np.prod(ref.header.get_zooms())) / 1000
        mask = np.asarray(nib.load(tmp_path / name / report["mask"]).dataobj)
        f = load_script("patient_scans").ventricle_figures(mask, np.asarray(ref.dataobj), voxel_ml)
        assert f["dice_lateral_ventricles"] >= 0.45, (name, f)
        unsure = any(w.startswith("network unsure about the lateral_ventricles") for w in report["warnings"])
        assert f["dice_lateral_ventricles"] >= 0.5 or drawn > 10.0 or unsure, (name, f, report["warnings"])
        # 6.5 mm slices: coarser than any draw the shipped model trained on (6.0 mm at most), which it says
        assert any(w.startswith("voxels 6.5 mm deep along one axis (thick slices)") for w in report["warnings"])
