"""DICOM SEG out: coded segments, frames on the referenced slices (read back by highdicom), dciodvfy-clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import ct_like, run_cli, write_dicom_series
from pydicom import uid

from segkit.dicom import LABEL_CODES, read_series, write_dicom_seg
from segkit.io import write_volume

AXIAL = np.array([[-0.8, 0, 0, 12.0], [0, -0.9, 0, 30.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])
SHAPE = (40, 36, 8)


def known_mask(shape: tuple[int, int, int], num_labels: int) -> np.ndarray:
    """Nested boxes, label k inside label k-1, on fewer slices each; first and last slice empty; asymmetric."""
    mask = np.zeros(shape, np.uint8)
    for k in range(1, num_labels):
        lo = [2 + 3 * k, 2 + 2 * k, k]
        hi = [shape[0] - 4 * k, shape[1] - 3 * k, shape[2] - k]
        mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = k
    return mask


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's error lines for a file (dicom3tools; scripts/test.sh installs it where it can)."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools; scripts/test.sh does it as root)")
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]


def read_back(seg_path: Path, series_dir: Path) -> np.ndarray:
    """The SEG's labels on the source grid, (X, Y, Z) like the NIfTI mask, through highdicom's own reader."""
    seg = hd.seg.segread(seg_path)
    series = read_series(series_dir)
    if series.frames is None:  # one source instance per slice, in volume order
        uids = [ds.SOPInstanceUID for ds in series.datasets]
        labels = seg.get_pixels_by_source_instance(uids, combine_segments=True)  # (Z, rows, cols)
    else:  # one multi-frame source: frames in its own order, mapped back to slices
        frames = [f + 1 for f in series.frames]
        labels = seg.get_pixels_by_source_frame(  # empty frames are left out of a SEG: zeros there
            series.datasets[0].SOPInstanceUID, frames, combine_segments=True, assert_missing_frames_are_empty=True
        )
    return np.asarray(labels).transpose(2, 1, 0)


def test_segment_codes_are_the_dicom_snomed_concepts():
    from pydicom.sr.codedict import codes

    categories = {c.value for c in (getattr(codes.cid7150, n) for n in codes.cid7150.dir())}
    types = {c.value: c for c in (getattr(codes.cid7151, n) for n in codes.cid7151.dir())}
    expected = {"brain": "12738006", "lateral_ventricles": "66720007", "liver": "10200004"}
    expected |= {"cyst": "367643001", "tumour": "108369006"}  # DICOM's Cyst, Neoplasm (CID 7159 too)
    assert {name: kind[0] for name, (_, kind) in LABEL_CODES.items()} == expected
    for category, (value, scheme, meaning) in LABEL_CODES.values():
        assert category[0] in categories and scheme == "SCT"
        assert types[value].meaning == meaning and types[value].scheme_designator == "SCT"


def test_anonymised_jpeg2000_series_predict_then_seg_is_valid_and_voxel_exact(tiny_run, tmp_path, capsys):
    series_dir = tmp_path / "CT_anon_j2k"
    write_dicom_series(series_dir, ct_like(SHAPE), AXIAL, syntax=uid.JPEG2000Lossless, anonymise=True)
    pred = tmp_path / "pred"
    code, _, err = run_cli(["predict", str(series_dir), "--model", str(tiny_run), "--out", str(pred)], capsys)
    assert code == 0, err
    mask_path = pred / "CT_anon_j2k_mask.nii.gz"
    affine = nib.load(mask_path).affine
    mask = known_mask(SHAPE, 3)  # a known mask in place of the tiny model's guess: every slice is checked
    write_volume(mask_path, mask, affine)
    code, _, err = run_cli(["export", str(pred), "--format", "dicom-seg", "--out", str(tmp_path / "seg")], capsys)
    assert code == 0 and "Traceback" not in err, err
    seg_path = tmp_path / "seg" / "CT_anon_j2k_seg.dcm"
    assert np.array_equal(read_back(seg_path, series_dir), mask)
    ds = pydicom.dcmread(seg_path)
    source = pydicom.dcmread(next(series_dir.iterdir()), stop_before_pixels=True)
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    codes = [(s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue) for s in ds.SegmentSequence]
    assert codes == [("brain", "12738006"), ("lateral_ventricles", "66720007")]
    assert dciodvfy_errors(seg_path) == []


@pytest.mark.parametrize("syntax", [None, uid.RLELossless], ids=["uncompressed", "rle"])
def test_seg_of_an_enhanced_multiframe_ct_lands_on_its_frames(tmp_path, syntax):
    write_dicom_series(tmp_path / "single", ct_like(SHAPE), AXIAL)
    sources = [pydicom.dcmread(p) for p in sorted((tmp_path / "single").iterdir())]
    multi = hd.legacy.LegacyConvertedEnhancedCTImage(sources, hd.UID(), 7, hd.UID(), 1, transfer_syntax_uid=syntax)
    (tmp_path / "mf").mkdir()
    multi.save_as(tmp_path / "mf" / "ENHANCED")
    series = read_series(tmp_path / "mf")
    labels = ("background", "liver", "cyst", "tumour")
    mask = known_mask(SHAPE, len(labels))
    out = write_dicom_seg(mask, series.volume.affine, series, labels, tmp_path / "seg" / "mf_seg.dcm")
    assert np.array_equal(read_back(out, tmp_path / "mf"), mask)
    ds = pydicom.dcmread(out)
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeMeaning for s in ds.SegmentSequence] == [
        "Liver",
        "Cyst",
        "Neoplasm",
    ]
    assert dciodvfy_errors(out) == []


def test_seg_refuses_a_series_without_its_uids_in_one_line(tmp_path, capsys):
    write_dicom_series(tmp_path / "ct", ct_like(SHAPE), AXIAL)
    for p in (tmp_path / "ct").iterdir():
        ds = pydicom.dcmread(p)
        ds.FrameOfReferenceUID = ""
        ds.save_as(p)
    series = read_series(tmp_path / "ct")
    with pytest.raises(Exception, match="FrameOfReferenceUID is missing or empty; a DICOM SEG must reference it"):
        write_dicom_seg(known_mask(SHAPE, 2), series.volume.affine, series, ("bg", "liver"), tmp_path / "s.dcm")
    assert not (tmp_path / "s.dcm").exists()
