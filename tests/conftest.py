"""Shared fixtures: tiny phantom datasets, a tiny trained run, NIfTI writers for geometry tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """scripts/NAME.py as a module (scripts are not a package; tests use their functions)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = [
    "model.channels=[8,16,32]",
    "train.patch_size=[32,32]",
    "train.steps_per_epoch=3",
    "train.slices_per_case=4",
    "train.epochs=2",
    "eval.bootstrap=50",
    # phantom heads hold tens of mL, not a human brain: no human range, so a tiny model's masks are still graded
    "task.denominator_range_ml=[]",
    "task.numerator_range_ml=[]",
    # fp32 on every CPU: train.amp auto trains in bf16 where the CPU has bf16 units (an AVX512-BF16 EPYC), and
    # the tests that compare a run with a reference (2 processes against 1, an epoch's mean loss) then differ there
    "train.amp=off",
]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `segkit ARGS` in-process; returns (exit code, stdout, stderr)."""
    from segkit.cli import main

    old = sys.argv
    sys.argv = ["segkit", *args]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="session")
def phantom_ventricle(tmp_path_factory) -> Path:
    from segkit.data.phantom import make_phantom

    root = tmp_path_factory.mktemp("ph_ventricle")
    make_phantom("ventricle", root, cases=9, seed=0, shape=(32, 32, 16))
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, phantom_ventricle) -> Path:
    """A ventricle model trained for 2 tiny epochs on the phantom dataset."""
    from segkit.config import load_config
    from segkit.train import fit

    run = tmp_path_factory.mktemp("run")
    cfg = load_config(ROOT / "configs" / "ventricle.yaml", TINY)
    fit(cfg, phantom_ventricle, run)
    return run


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation about one world axis."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


GEOMETRIES = {
    "RAS": np.diag([1.5, 1.5, 1.5, 1.0]),
    "LPS": np.diag([-1.5, -1.5, 1.5, 1.0]),
    "LAS": np.diag([-1.5, 1.5, 1.5, 1.0]),
    "PIR-permuted": np.array([[0, 0, 1.5, 0], [-1.5, 0, 0, 0], [0, -1.5, 0, 0], [0, 0, 0, 1.0]]),
    "oblique": np.block(
        [
            [rotation(2, 25) @ rotation(0, 10) @ np.diag([1.5, 1.5, 1.5]), np.array([[5.0], [-7.0], [3.0]])],
            [np.zeros((1, 3)), np.ones((1, 1))],
        ]
    ),
    "anisotropic": np.diag([0.9, 0.9, 4.0, 1.0]),
    # gantry tilt kept in the affine (dcm2niix without tilt correction): 4 mm slices stacked 20 degrees off their
    # normal, each step along the slice axis 4 / cos(20) = 4.26 mm; only the sform can hold it
    "sheared": np.array([[0.9, 0, 0, 0], [0, 0.9, 4.0 * np.tan(np.deg2rad(20)), 0], [0, 0, 4.0, 0], [0, 0, 0, 1.0]]),
}


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, qform: bool = True, sform: bool = True) -> Path:
    """Write a NIfTI with chosen qform/sform codes."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine if qform else None, code=1 if qform else 0)
    img.set_sform(affine if sform else None, code=1 if sform else 0)
    nib.save(img, str(path))
    return path


def ct_like(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A bright ellipsoid in soft tissue, in half-HU steps (exactly representable with slope 0.5)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    body = np.where((grid**2).sum(0) < 0.6, 60.0, -1000.0)
    noise = np.random.default_rng(seed).normal(0, 10, shape)
    return np.round((body + noise) * 2) / 2


def write_dicom_series(
    folder: Path,
    data: np.ndarray,
    affine: np.ndarray,
    description: str = "axial",
    syntax: str | None = None,
    anonymise: bool = False,
    z: list[float] | None = None,
    study: tuple[str, str] | None = None,
) -> dict[int, str]:
    """(X, Y, Z) HU array + RAS affine -> one CT file per slice, opaque names, shuffled; returns {z: SOP UID}.

    syntax: a compressed transfer syntax (RLE, JPEG-LS, JPEG 2000: pydicom's encoders; JPEG lossless: GDCM;
    JPEG baseline: Pillow, on 8-bit values 0-255). anonymise: what anonymisers leave, SOPClassUID empty (the file
    meta keeps it), patient and study attributes removed. z: slice positions in voxels (uneven spacing).
    study: (StudyInstanceUID, FrameOfReferenceUID) shared with another series.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    size = np.linalg.norm(lps[:3, :3], axis=0)
    series = generate_uid()
    study_uid, frame = study or (generate_uid(), generate_uid())
    eight_bit = syntax == JPEGBaseline8Bit
    uids = {}
    for k in np.random.default_rng(0).permutation(data.shape[2]):
        uid = uids[int(k)] = generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "P0", "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "A1"
        ds.ReferringPhysicianName, ds.Manufacturer = "", "test"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = "CT", 3, int(k) + 1, description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*(lps[:3, 0] / size[0]), *(lps[:3, 1] / size[1]))]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in (lps @ [0, 0, z[k] if z else k, 1])[:3]]
        ds.PixelSpacing = [f"{size[1]:.6f}", f"{size[0]:.6f}"]  # between rows, between columns
        ds.SliceThickness = f"{size[2]:.6f}"
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        if eight_bit:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
            ds.PixelData = np.clip(np.round(data[:, :, k].T), 0, 255).astype(np.uint8).tobytes()
        else:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-1024"
            ds.PixelData = np.round((data[:, :, k].T + 1024) / 0.5).astype(np.int16).tobytes()
        if anonymise:
            ds.SOPClassUID = ""
            for name in ("PatientName", "PatientBirthDate", "StudyDate", "StudyTime", "ReferringPhysicianName"):
                delattr(ds, name)
            ds.PatientID = ds.AccessionNumber = ""
            del ds.SeriesDescription, ds.SeriesNumber
        path = folder / f"IM{uid[-10:]}"
        _compress(ds, syntax, path)
    return uids


def _compress(ds, syntax: str | None, path: Path) -> None:
    """Save ds at path in the transfer syntax `syntax` (None: as it is, uncompressed)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, JPEGLossless, JPEGLosslessSV1

    if syntax == JPEGBaseline8Bit:  # no pydicom encoder: Pillow writes the baseline JPEG
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(ds.pixel_array).save(buf, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    elif syntax is not None and syntax not in (JPEGLossless, JPEGLosslessSV1):
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    if syntax in (JPEGLossless, JPEGLosslessSV1):  # no pydicom encoder: GDCM transcodes the file
        import gdcm

        reader = gdcm.ImageReader()
        reader.SetFileName(str(path))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        kind = gdcm.TransferSyntax.JPEGLosslessProcess14_1 if syntax == JPEGLosslessSV1 else None
        change.SetTransferSyntax(gdcm.TransferSyntax(kind or gdcm.TransferSyntax.JPEGLosslessProcess14))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(path))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
