"""DICOM in and out: one image series as a Volume (pydicom), a mask as a DICOM SEG that references it (highdicom)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from segkit import __version__
from segkit.errors import InputError
from segkit.io import Volume, atomic_write

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM patient space is LPS; NIfTI world space is RAS

# Segment codes (SNOMED CT, via pydicom's code dictionary) for the built-in labels; other names get a private code.
LABEL_CODES: dict[str, tuple[str, str]] = {
    "brain": ("AnatomicalStructure", "Brain"),
    "lateral_ventricles": ("AnatomicalStructure", "LateralVentricle"),
    "liver": ("AnatomicalStructure", "Liver"),
    "cyst": ("MorphologicallyAbnormalStructure", "Cyst"),
    "tumour": ("MorphologicallyAbnormalStructure", "Neoplasm"),
}


@dataclass(frozen=True)
class DicomSeries:
    """A series read as a Volume, plus its slices' datasets in volume order (datasets[k] is data[:, :, k])."""

    volume: Volume
    datasets: list[Any]  # pydicom Datasets without pixel data, sorted along the slice normal


def is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble or a .dcm name."""
    from pydicom.misc import is_dicom

    return path.is_file() and (path.suffix.lower() == ".dcm" or is_dicom(str(path)))


def holds_dicom(folder: Path) -> bool:
    """True when a folder (or its subfolders) holds at least one DICOM file."""
    return any(is_dicom_file(p) for p in _files(folder))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))


def read_dicom_series(folder: str | Path) -> Volume:
    """A folder holding one DICOM image series -> Volume (RAS affine, rescaled intensities, path = the folder)."""
    return read_series(folder).volume


def read_series(folder: str | Path) -> DicomSeries:
    """Read the one image series in a folder; none, several or inconsistent slices raise InputError."""
    import pydicom

    folder = Path(folder)
    headers = _series_headers(folder)
    slices = []
    for path, hdr in headers:
        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
        except Exception as e:  # compressed syntaxes without a decoder, truncated files
            raise InputError(f"{path}: cannot decode the pixel data ({str(e)[:100]}); convert the series") from None
        if pixels.ndim != 2:
            raise InputError(f"{path}: pixel data of shape {pixels.shape}; segkit reads single-frame greyscale slices")
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        slices.append((hdr, (pixels.astype(np.float32) * slope + intercept).T))  # (rows, cols) -> (X, Y)
    affine, order = _geometry(folder, [h for h, _ in slices])
    data = np.stack([slices[k][1] for k in order], axis=-1).astype(np.float32)  # (X, Y, Z)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    vol = Volume(data=data, affine=affine, header=img.header, path=folder)
    return DicomSeries(volume=vol, datasets=[slices[k][0] for k in order])


def _series_headers(folder: Path) -> list[tuple[Path, Any]]:
    """(path, header) of every image slice of the folder's one series."""
    import pydicom

    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass a folder holding one DICOM series")
    series: dict[str, list[tuple[Path, Any]]] = {}
    for path in _files(folder):
        if not is_dicom_file(path):
            continue
        try:
            hdr = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue  # not DICOM after all (a stray .dcm name); other files are ignored too
        # Image slices only: SEG, RTSTRUCT, SR and DICOMDIR files have no per-file plane position.
        if "ImagePositionPatient" not in hdr or "ImageOrientationPatient" not in hdr or "Rows" not in hdr:
            continue
        if int(hdr.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(f"{path}: multi-frame DICOM is not supported; convert the series to NIfTI")
        series.setdefault(str(hdr.get("SeriesInstanceUID", "")), []).append((path, hdr))
    if not series:
        raise InputError(f"{folder}: holds no DICOM image series (and no .nii/.nii.gz files); check the folder")
    if len(series) > 1:
        names = ", ".join(f"{_series_name(v[0][1])} ({len(v)} files)" for v in series.values())
        raise InputError(f"{folder}: holds {len(series)} DICOM series ({names}); put each series in its own folder")
    return next(iter(series.values()))


def _series_name(hdr: Any) -> str:
    return str(hdr.get("SeriesDescription", "") or f"series {hdr.get('SeriesNumber', '?')}")


def _geometry(folder: Path, headers: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """RAS voxel-to-world affine of the stacked slices, and the slice order along the normal."""
    first = headers[0]
    iop = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    for h in headers:
        same_plane = np.allclose(np.asarray(h.ImageOrientationPatient, float), iop, atol=1e-4)
        same_grid = (h.Rows, h.Columns) == (first.Rows, first.Columns)
        if not (same_plane and same_grid and np.allclose(h.PixelSpacing, first.PixelSpacing, atol=1e-4)):
            raise InputError(f"{folder}: slices differ in orientation, size or pixel spacing; not one 3-D volume")
    normal = np.cross(row_dir, col_dir)
    pos = np.array([h.ImagePositionPatient for h in headers], dtype=np.float64)  # (Z, 3) LPS mm
    order = np.argsort(pos @ normal, kind="stable")
    pos = pos[order]
    if len(pos) > 1:
        steps = np.diff(pos, axis=0)
        step = (pos[-1] - pos[0]) / (len(pos) - 1)
        gap = float(np.linalg.norm(step))
        if gap < 1e-3:
            raise InputError(f"{folder}: several slices share one position (repeated acquisitions?); keep one")
        if np.abs(steps - step).max() > max(0.01 * gap, 1e-3):
            raise InputError(f"{folder}: slices are not evenly spaced (missing or extra slices?); check the series")
    else:
        thick = float(first.get("SpacingBetweenSlices", 0) or first.get("SliceThickness", 0) or 1.0)
        step = normal * thick
    row_spacing, col_spacing = (float(s) for s in first.PixelSpacing)  # between rows, between columns
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # array axis 0 runs along a row (column index)
    lps[:3, 1] = col_dir * row_spacing  # array axis 1 runs down a column (row index)
    lps[:3, 2] = step
    lps[:3, 3] = pos[0]
    return LPS_TO_RAS @ lps, order


def _segment_codes(name: str) -> tuple[Any, Any]:
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    if name in LABEL_CODES:
        category, kind = LABEL_CODES[name]
        return getattr(codes.SCT, category), getattr(codes.SCT, kind)
    return codes.SCT.Tissue, Code(name[:16], "99SEGKIT", name.replace("_", " "))


def write_dicom_seg(
    mask: np.ndarray, affine: np.ndarray, series: DicomSeries, labels: tuple[str, ...], out: Path
) -> Path:
    """Mask (X, Y, Z) on the series' grid -> DICOM SEG (one binary segment per label) referencing its slices."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    vol = series.volume
    if mask.shape != vol.data.shape or not np.allclose(affine, vol.affine, atol=1e-3):
        raise InputError(
            f"{out.name}: the mask's grid {mask.shape} differs from the DICOM series {vol.path} {vol.data.shape}; "
            "pass the series the mask was predicted from (--dicom)"
        )
    algorithm = hd.AlgorithmIdentificationSequence(
        name="segkit", family=codes.cid7162.ArtificialIntelligence, version=__version__
    )
    segments = []
    for number, name in enumerate(labels[1:], start=1):
        category, kind = _segment_codes(name)
        segments.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=hd.UID(),
                tracking_id=name,
            )
        )
    frames = np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0))  # (Z, rows, cols): frame k is slice k
    seg = hd.seg.Segmentation(
        source_images=series.datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=int(series.datasets[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="segkit",
        manufacturer_model_name="segkit",
        software_versions=__version__,
        device_serial_number="0",
        series_description="segkit segmentation",
        content_label="SEGKIT",
    )
    atomic_write(out, lambda tmp: seg.save_as(tmp))
    return out


def export_dicom_seg(pred_dir: Path, out: Path, dicom: Path | None = None) -> list[Path]:
    """out/<name>_seg.dcm for each prediction made from a DICOM series (or the one series given by --dicom)."""
    from segkit.export import read_predictions
    from segkit.io import read_volume

    pred_dir, reports = read_predictions(pred_dir)
    if dicom is not None:
        chosen = [r for r in reports if Path(str(r.get("input"))).name == Path(dicom).name] or reports
        if len(chosen) != 1:
            raise InputError(
                f"{pred_dir}: holds {len(reports)} predictions and none is named after {Path(dicom).name}; "
                "pass a predictions folder with one case, or drop --dicom to use each report's input"
            )
        pairs = [(chosen[0], Path(dicom))]
    else:
        pairs = [(r, Path(r["input"])) for r in reports if r.get("input") and Path(r["input"]).is_dir()]
        if not pairs:
            raise InputError(
                f"{pred_dir}: no prediction was made from a DICOM series folder (or it has moved); "
                "predict a DICOM folder, or pass --dicom SERIES_DIR"
            )
    written = []
    for report, folder in pairs:
        mask = read_volume(pred_dir / report["mask"], kind="mask")
        labels = tuple(report["labels"][k] for k in sorted(report["labels"], key=int))
        series = read_series(folder)
        out_path = Path(out) / f"{report['name']}_seg.dcm"
        written.append(write_dicom_seg(mask.data.round().astype(np.uint8), mask.affine, series, labels, out_path))
    return written
