"""The shipped models on real scans of other patients: lung2, brain1, brain2 (data_cards/pyradiomics.md); abdomen_ct,
dicom_ct, abdomen_mr (data_cards/totalsegmentator.md)."""

import nibabel as nib
import numpy as np
import pytest
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


TOTALSEG = ROOT / "tests" / "data" / "totalsegmentator"


def test_vendored_totalsegmentator_scans_keep_their_geometry():
    """data_cards/totalsegmentator.md: the CT and its reference on the reference's true place (82 slices up), the
    DICOM series read on its own grid, the abdominal MRI as shipped."""
    from segkit.infer import read_input

    ct, ref = nib.load(TOTALSEG / "abdomen_ct.nii.gz"), nib.load(TOTALSEG / "abdomen_ct_liver_reference.nii.gz")
    assert ct.shape == (122, 101, 112) and ref.shape == (122, 101, 30)
    assert nib.aff2axcodes(ct.affine) == ("R", "A", "S") and np.allclose(ct.header.get_zooms(), 3.0)
    assert np.allclose(ref.affine[:3, :3], ct.affine[:3, :3])
    assert np.allclose(ref.affine[:3, 3], ct.affine[:3, 3] + [0, 0, 82 * 3.0])  # slices 82-111 of the CT
    assert -1300 < float(np.asarray(ct.dataobj).min()) < -900  # Hounsfield units: air
    assert 1000 < np.asarray(ref.dataobj).sum() * 0.027 < 1100  # 1043 mL of liver in those slices
    series = read_input(TOTALSEG / "dicom_ct")
    assert series.data.shape == (512, 512, 20) and np.allclose(series.spacing, (0.9765625, 0.9765625, 2.0))
    assert nib.load(TOTALSEG / "dicom_ct_liver_reference.nii.gz").shape == (512, 512, 20)
    mri = nib.load(TOTALSEG / "abdomen_mr.nii.gz")
    assert mri.shape == (117, 91, 20) and nib.aff2axcodes(mri.affine) == ("L", "P", "S")


def test_a_reference_on_its_own_grid_is_compared_where_it_covers_the_scan(tmp_path):
    """A reference two slices long, one slice up the scan's grid: the mask is scored on those two slices only
    and what it draws elsewhere is reported apart."""
    ps = load_script("patient_scans")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    ref_affine = affine.copy()
    ref_affine[2, 3] = 2.0  # starts at the scan's slice 1
    ref = np.zeros((4, 4, 2), np.uint8)
    ref[:2] = 1  # 8 voxels a slice
    nib.save(nib.Nifti1Image(ref, ref_affine), tmp_path / "ref.nii.gz")
    on_grid = ps.reference_on(tmp_path / "ref.nii.gz", (4, 4, 4), affine)
    assert (on_grid[:, :, [0, 3]] == ps.NOT_COVERED).all() and np.array_equal(on_grid[:, :, 1:3], ref)
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[:2, :, 1:3] = 1  # exactly the reference
    mask[:, :, 0] = 1  # 16 voxels where it has nothing to say
    f = ps.compare(mask, on_grid, "liver-cyst", voxel_ml=0.5)
    assert f["dice_whole_liver"] == 1.0 and f["mask_where_no_reference_ml"] == 8.0
    assert f["mask_outside_reference_ml"] == 0.0 and f["reference_ml"] == 8.0
    same = ps.reference_on(tmp_path / "ref.nii.gz", (4, 4, 2), ref_affine)
    assert np.array_equal(same, ref) and "mask_where_no_reference_ml" not in ps.compare(same, same, "liver-cyst", 1.0)


@pytest.mark.parametrize("scan", ["abdomen_ct", "dicom_ct"])
def test_shipped_liver_model_finds_more_patients_livers_whole_abdomen_and_dicom(scan, monkeypatch, tmp_path):
    """Two more real CTs as a user would give them (no --model): a whole abdomen down through the pelvis (NIfTI, 3 mm)
    and a CT series as the scanner wrote it (DICOM), against TotalSegmentator's own livers. Measured 0.926 and 0.949
    with the shipped model of 33147099; 0.90 leaves room for a retrained model, not for a lost liver. No cyst or
    tumour may lie apart from the liver (eval.keep_components "attached": urine in the bladder was called cyst)."""
    from segkit.infer import predict_paths, read_input

    monkeypatch.delenv("SEGKIT_WEIGHTS_DIR", raising=False)
    ps = load_script("patient_scans")
    src, ref_path = ps.PATIENT_SCANS[scan]
    (report,), failed = predict_paths(src, None, tmp_path)
    assert failed is None and report["model"]["name"] == "liver-cyst" and report["grade"] is not None
    mask_img, vol = nib.load(tmp_path / report["mask"]), read_input(src)
    assert mask_img.shape == vol.data.shape and np.allclose(mask_img.affine, vol.affine, atol=1e-4)
    mask = np.asarray(mask_img.dataobj)
    f = ps.compare(mask, ps.reference_on(ref_path, mask.shape, mask_img.affine), "liver-cyst", vol.voxel_ml)
    assert f["dice_whole_liver"] >= 0.90, f
    assert f["lesion_outside_reference_ml"] < 10, f
    from scipy import ndimage as ndi

    lesions, n = ndi.label(mask >= 2, np.ones((3, 3, 3), bool))
    near_liver = ndi.binary_dilation(mask == 1, np.ones((3, 3, 3), bool))
    assert all(near_liver[lesions == k].any() for k in range(1, n + 1))


def test_an_abdominal_mri_gets_no_brain_grade(monkeypatch, tmp_path):
    """An MRI that is not a head goes, with no --model, to the shipped model for MRI: the ventricle model. It draws
    2564 mL of "brain" with 0.05 mL of ventricle in it (it graded that healthy at 0.90); now no grade, and why."""
    from segkit.infer import predict_paths

    monkeypatch.delenv("SEGKIT_WEIGHTS_DIR", raising=False)
    (report,), failed = predict_paths(TOTALSEG / "abdomen_mr.nii.gz", None, tmp_path)
    assert failed is None and report["model"]["name"] == "ventricle"
    assert report["grade"] is None and report["probabilities"] == {}
    assert report["biomarker"]["grade"] is None  # nor the biomarker's: it read this "brain" as healthy
    assert any("not the anatomy this ventricle model segments, so no grade" in w for w in report["warnings"])
