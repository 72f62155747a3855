"""DICOM in as PACS exports it: compressed, multi-frame, anonymised, several series, odd stacks, one slice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import ct_like, rotation, run_cli, write_dicom_series
from pydicom import uid

from segkit.dicom import read_series
from segkit.errors import InputError

AXIAL = np.array([[-0.8, 0, 0, 12.0], [0, -0.9, 0, 30.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])  # LPS-stored
SHAPE = (40, 36, 5)  # JPEG 2000 needs about 32 pixels a side for its default 6 resolution levels

LOSSLESS = {
    "rle": uid.RLELossless,
    "jpeg-ls": uid.JPEGLSLossless,
    "jpeg2000-lossless": uid.JPEG2000Lossless,
    "jpeg-lossless-p14": uid.JPEGLossless,
    "jpeg-lossless-sv1": uid.JPEGLosslessSV1,
}


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dicom") / "plain"
    write_dicom_series(folder, ct_like(SHAPE), AXIAL)
    return folder


@pytest.mark.parametrize("syntax", list(LOSSLESS.values()), ids=list(LOSSLESS))
def test_lossless_compressed_series_reads_the_same_voxels(plain, tmp_path, syntax):
    write_dicom_series(tmp_path / "ct", ct_like(SHAPE), AXIAL, syntax=syntax)
    assert pydicom.dcmread(next((tmp_path / "ct").iterdir())).file_meta.TransferSyntaxUID == syntax
    ref, got = read_series(plain).volume, read_series(tmp_path / "ct").volume
    assert np.array_equal(got.data, ref.data) and np.allclose(got.affine, ref.affine)


def test_jpeg_baseline_series_reads_within_the_lossy_error(tmp_path):
    mr = np.clip(ct_like(SHAPE) + 1000, 0, 255) * 0.8 + 20  # 8-bit values: what baseline JPEG carries
    write_dicom_series(tmp_path / "mr", mr, AXIAL, syntax=uid.JPEGBaseline8Bit)
    vol = read_series(tmp_path / "mr").volume
    assert vol.data.shape == SHAPE and np.abs(vol.data - np.round(mr)).mean() < 2.0


@pytest.mark.parametrize("kind", ["CT", "MR"])
def test_enhanced_multiframe_object_reads_like_its_single_frame_slices(plain, tmp_path, kind):
    import highdicom as hd

    sources = [pydicom.dcmread(p) for p in sorted(plain.iterdir())]
    if kind == "MR":
        for ds in sources:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid.MRImageStorage
            ds.Modality, ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "MR", "SE", "NONE", ""
            ds.MRAcquisitionType, ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = "2D", 10, 500, 1
            ds.ImagingFrequency, ds.MagneticFieldStrength = 63.9, 1.5
    convert = hd.legacy.LegacyConvertedEnhancedCTImage if kind == "CT" else hd.legacy.LegacyConvertedEnhancedMRImage
    multi = convert(sources, hd.UID(), 7, hd.UID(), 1, transfer_syntax_uid=uid.RLELossless)
    (tmp_path / "mf").mkdir()
    multi.save_as(tmp_path / "mf" / "ENHANCED")
    series = read_series(tmp_path / "mf")
    ref = read_series(plain).volume
    assert np.array_equal(series.volume.data, ref.data) and np.allclose(series.volume.affine, ref.affine)
    assert len(series.datasets) == 1 and sorted(series.frames or []) == list(range(SHAPE[2]))


def test_anonymised_series_takes_the_sop_class_from_the_file_meta(plain, tmp_path):
    write_dicom_series(tmp_path / "anon", ct_like(SHAPE), AXIAL, syntax=uid.JPEG2000Lossless, anonymise=True)
    assert pydicom.dcmread(next((tmp_path / "anon").iterdir())).SOPClassUID == ""
    series = read_series(tmp_path / "anon")
    assert {ds.SOPClassUID for ds in series.datasets} == {uid.CTImageStorage}
    assert np.array_equal(series.volume.data, read_series(plain).volume.data)


def test_a_missing_geometry_attribute_is_named_in_one_line(plain, tmp_path, capsys):
    folder = tmp_path / "no_position"
    shutil.copytree(plain, folder)
    victim = sorted(folder.iterdir())[2]
    ds = pydicom.dcmread(victim)
    del ds.ImagePositionPatient
    ds.save_as(victim)
    with pytest.raises(InputError, match=f"{victim.name}: ImagePositionPatient is missing or empty"):
        read_series(folder)


def two_series(folder: Path) -> dict[str, str]:
    """Two series of one study in one folder (files mixed); returns {description: SeriesInstanceUID}."""
    study = (pydicom.uid.generate_uid(), pydicom.uid.generate_uid())
    write_dicom_series(folder, ct_like((20, 18, 4)), AXIAL, "arterial", study=study)
    oblique = AXIAL.copy()
    oblique[:3, :3] = rotation(0, 5) @ oblique[:3, :3]  # an oblique series, not a tilted one
    write_dicom_series(folder / "more", ct_like((20, 18, 6), seed=1), oblique, "venous", study=study)
    found = {}
    for p in folder.rglob("IM*"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        found[ds.SeriesDescription] = ds.SeriesInstanceUID
    return found


def test_folder_with_two_series_lists_them_and_series_picks_one(tiny_run, tmp_path, capsys):
    uids = two_series(tmp_path / "study")
    out = tmp_path / "pred"
    args = ["predict", str(tmp_path / "study"), "--model", str(tiny_run), "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "holds 2 DICOM series" in err, err
    assert f"{uids['arterial']} (arterial, 4 slices)" in err and f"{uids['venous']} (venous, 6 slices)" in err
    assert not out.exists()
    code, _, err = run_cli([*args, "--series", "1.2.3.4"], capsys)
    assert code == 2 and "no series with SeriesInstanceUID 1.2.3.4" in err and uids["venous"] in err, err
    code, stdout, err = run_cli([*args, "--series", uids["venous"], "--probabilities"], capsys)
    assert code == 0, err
    name = f"study_{uids['venous']}"
    mask, prob_map = nib.load(out / f"{name}_mask.nii.gz"), nib.load(out / f"{name}_probabilities.nii.gz")
    assert mask.shape == (20, 18, 6) and prob_map.shape == (20, 18, 6, 3)  # a series has no NIfTI header to copy
    assert np.allclose(prob_map.affine, mask.affine) and int(prob_map.header["sform_code"]) > 0
    report = json.loads((out / f"{name}_report.json").read_text())
    assert report["series_uid"] == uids["venous"] and (out / f"{name}_overlay.png").is_file()
    nifti = out / f"{name}_mask.nii.gz"
    code, _, err = run_cli(["predict", str(nifti), "--series", uids["venous"], "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--series picks a series of a DICOM folder" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "case, message",
    [("tilt", "degrees off their normal (gantry tilt)"), ("uneven", "slice spacing varies from 2.5 to 5 mm")],
)
def test_gantry_tilt_and_uneven_spacing_are_refused_in_one_line(tiny_run, tmp_path, capsys, case, message):
    affine, z = AXIAL.copy(), None
    if case == "tilt":
        affine[1, 2] = 2.5 * np.tan(np.radians(12))  # each slice shifted along y: a 12 degree gantry tilt
    else:
        z = [0, 1, 2, 4, 5]  # a missing slice
    write_dicom_series(tmp_path / case, ct_like(SHAPE), affine, z=z)
    out = tmp_path / "pred"
    code, _, err = run_cli(["predict", str(tmp_path / case), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not out.exists()


def test_single_mr_slice_from_pacs_predicts_with_an_overlay(tiny_run, tmp_path, capsys):
    from pydicom.data import get_testdata_file

    folder = tmp_path / "MR_one_slice"
    folder.mkdir()
    shutil.copy(get_testdata_file("examples_overlay.dcm"), folder / "IM0001")  # 484x300, one slice
    out = tmp_path / "pred"
    code, stdout, err = run_cli(["predict", str(folder), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 0 and "Traceback" not in err, err
    mask = nib.load(out / "MR_one_slice_mask.nii.gz")
    assert mask.shape == (484, 300, 1) and np.isclose(mask.header.get_zooms()[2], 4.0)
    assert (out / "MR_one_slice_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["MR_one_slice_mask.nii.gz", "MR_one_slice_report.json", "MR_one_slice_overlay.png", *LABEL_FILES]
    )


LABEL_FILES = ["ventricle_labels.itksnap.txt", "ventricle_labels.ctbl"]


def edited(plain: Path, folder: Path, edit, which: slice = slice(None)) -> Path:
    """A copy of the plain series with `edit(ds)` applied to the files `which` picks (sorted by name)."""
    import warnings

    shutil.copytree(plain, folder)
    for path in sorted(folder.iterdir())[which]:
        ds = pydicom.dcmread(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the invalid values these tests write
            edit(ds)
            ds.save_as(path)
    return folder


def _set(name: str, value: object):
    return lambda ds: setattr(ds, name, value)


@pytest.mark.parametrize(
    "name, value, which, message",
    [
        ("ImageOrientationPatient", [2, 0, 0, 0, 2, 0], slice(None), "2\\0\\0\\0\\2\\0 does not hold two unit vectors"),
        ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0], slice(None), "its row and column are not at right angles"),
        ("PixelSpacing", [0, 0], slice(None), "PixelSpacing 0\\0 is not two positive numbers"),
        ("ImagePositionPatient", ["nan", "0", "0"], slice(2, 3), "holds a value that is not a number"),
    ],
    ids=["orientation-not-unit", "orientation-not-perpendicular", "spacing-zero", "position-nan"],
)
def test_geometry_that_places_no_pixel_in_space_is_refused(plain, tmp_path, name, value, which, message):
    """Before, a doubled ImageOrientationPatient gave voxels twice their size (a liver of 3037 mL for 762) and a
    zero spacing or a NaN position a traceback from nibabel."""
    folder = edited(plain, tmp_path / "bad", _set(name, value), which)
    with pytest.raises(InputError, match="so its pixels have no place in space") as e:
        read_series(folder)
    assert message in str(e.value)


@pytest.mark.parametrize("name", ["StudyInstanceUID", "FrameOfReferenceUID"])
def test_slices_of_two_studies_or_frames_of_reference_are_not_one_volume(plain, tmp_path, name):
    folder = edited(plain, tmp_path / "mixed", _set(name, pydicom.uid.generate_uid()), slice(0, 2))
    with pytest.raises(InputError, match=f"holds slices of 2 different {name}s"):
        read_series(folder)


def test_the_slice_that_does_not_fit_the_others_is_named(plain, tmp_path):
    """A localizer left in a CT series: the message names it and says what differs."""
    folder = edited(plain, tmp_path / "localizer", _set("ImageOrientationPatient", [1, 0, 0, 0, 0, -1]), slice(3, 4))
    odd = sorted(folder.iterdir())[3]
    with pytest.raises(InputError, match=f"{odd.name} differs from .* in orientation .*move the odd slices out"):
        read_series(folder)


def test_slices_written_without_the_dicom_file_header_read_the_same(plain, tmp_path):
    """A .dcm file without preamble and file meta (a raw data set, as some exporters write): read all the same."""
    folder = tmp_path / "raw"
    folder.mkdir()
    for path in sorted(plain.iterdir()):
        ds = pydicom.dcmread(path)
        del ds.file_meta
        ds.preamble = None
        pydicom.dcmwrite(folder / f"{path.name}.dcm", ds, implicit_vr=True, little_endian=True)
    assert pydicom.misc.is_dicom(str(next(folder.iterdir()))) is False  # no DICM prefix
    got, ref = read_series(folder).volume, read_series(plain).volume
    assert np.array_equal(got.data, ref.data) and np.allclose(got.affine, ref.affine)


def test_a_slice_without_pixel_data_is_named_in_one_line(plain, tmp_path):
    folder = edited(plain, tmp_path / "no_pixels", lambda ds: delattr(ds, "PixelData"), slice(1, 2))
    with pytest.raises(InputError, match="holds no pixel data .*re-export or remove the file"):
        read_series(folder)


def test_pixel_data_no_decoder_reads_gets_one_line_naming_each_decoders_reason(tiny_run, tmp_path, capsys):
    """12-bit JPEG Extended (pydicom's own sample): no installed decoder reads it. pydicom logs each decoder's
    traceback; segkit prints one line of its own, with the reasons, and no traceback."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    (tmp_path / "jpeg12").mkdir()
    ds.save_as(tmp_path / "jpeg12" / "IM0001")
    out = tmp_path / "pred"
    code, _, err = run_cli(["predict", str(tmp_path / "jpeg12"), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "cannot decode its JPEG Extended (Process 2 and 4) pixel data (" in err and "12-bit" in err, err
    assert not out.exists()


def test_the_series_modality_picks_the_shipped_model_and_warns_against_another_models(plain, tmp_path):
    """The Modality attribute was ignored: a series saying MR went by its values alone."""
    from segkit.checks import modality_warnings
    from segkit.infer import shipped_model_for

    assert read_series(plain).volume.modality == "CT"
    folder = edited(plain, tmp_path / "mr", _set("Modality", "MR"))
    vol = read_series(folder).volume
    assert vol.modality == "MRI" and shipped_model_for(vol.data, vol.modality) == "ventricle"
    assert shipped_model_for(vol.data) == "liver-cyst"  # its values alone (CT values: air at -1000)
    assert modality_warnings(vol.data, "CT", vol.modality)[0].startswith("the DICOM series is MRI (its Modality")
    assert not modality_warnings(vol.data, "CT", "CT")
    other = edited(plain, tmp_path / "pet", _set("Modality", "PT"))
    assert read_series(other).volume.modality is None  # neither: the values decide
