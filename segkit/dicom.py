"""DICOM in and out: one image series as a Volume (pydicom), a mask as a DICOM SEG that references it (highdicom).

Reads what PACS exports: single-frame slices or one enhanced multi-frame object, compressed transfer
syntaxes (decoded by the pydicom plugins pylibjpeg-openjpeg, pyjpegls, python-gdcm, Pillow), anonymised
files with empty attributes, folders holding several series (pick one by SeriesInstanceUID).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from segkit import __version__
from segkit.errors import InputError
from segkit.io import Volume, atomic_write

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM patient space is LPS; NIfTI world space is RAS
MAX_TILT_DEG = 0.1  # slices stacked further off their normal than this are a gantry-tilted (sheared) series
# ImageOrientationPatient holds two unit vectors at right angles (PS3.3 C.7.6.2.1.1); scanners write them rounded
ORIENTATION_TOL = 0.01

# SNOMED CT (value, scheme, meaning) of the segment category and type of each built-in label, as DICOM
# CID 7150 (category) and CID 7151 (type) list them; other label names get Tissue and a private code.
ANATOMY = ("91723000", "SCT", "Anatomical Structure")
ABNORMAL = ("49755003", "SCT", "Morphologically Abnormal Structure")
LABEL_CODES: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "brain": (ANATOMY, ("12738006", "SCT", "Brain")),
    "lateral_ventricles": (ANATOMY, ("66720007", "SCT", "Lateral Ventricle")),
    "liver": (ANATOMY, ("10200004", "SCT", "Liver")),
    "cyst": (ABNORMAL, ("367643001", "SCT", "Cyst")),
    "tumour": (ABNORMAL, ("108369006", "SCT", "Neoplasm")),
}
OTHER_CODE = ("85756007", "SCT", "Tissue")

DICOM_MODALITIES = {"CT": "CT", "MR": "MRI"}  # the Modality attribute's value -> the task modality it names
# Objects in a series folder that are not slices of the image volume: skipped when reading.
NOT_IMAGES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG", "DOC", "PLAN"}
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# Patient and study attributes a SEG copies from its source (Type 2: may be empty, must be present).
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


@dataclass(frozen=True)
class DicomSeries:
    """A series read as a Volume, plus the source instances the SEG references (datasets without pixel data).

    Single-frame slices: datasets[k] is slice data[:, :, k]. One multi-frame instance: datasets is [it]
    and frames[k] is the (0-based) frame that holds slice k.
    """

    volume: Volume
    datasets: list[Any]
    frames: list[int] | None = None


@dataclass(frozen=True)
class _Plane:
    """Where one 2-D frame sits in patient space (LPS mm), and how to scale its stored values."""

    position: np.ndarray  # (3,) centre of the first pixel
    orientation: np.ndarray  # (6,) row direction, then column direction
    spacing: tuple[float, float]  # between rows, between columns (mm)
    size: tuple[int, int]  # rows, columns
    thickness: float
    rescale: tuple[float, float]  # slope, intercept


def is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble or a .dcm name."""
    from pydicom.misc import is_dicom

    return path.is_file() and (path.suffix.lower() == ".dcm" or is_dicom(str(path)))


def holds_dicom(folder: Path) -> bool:
    """True when a folder (or its subfolders) holds at least one DICOM file."""
    return any(is_dicom_file(p) for p in _files(folder))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))


def read_dicom_series(folder: str | Path, series: str | None = None) -> Volume:
    """A folder's DICOM image series (the one there, or the one with SeriesInstanceUID `series`) -> Volume."""
    return read_series(folder, series).volume


def list_series(folder: str | Path) -> dict[str, list[tuple[Path, Any]]]:
    """Image files of a folder (and its subfolders) by SeriesInstanceUID: {uid: [(path, header), ...]}."""
    import pydicom

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass a folder holding a DICOM series")
    found: dict[str, list[tuple[Path, Any]]] = {}
    for path in _files(folder):
        if not is_dicom_file(path):
            continue
        try:  # a .dcm file written without the 128-byte preamble and DICM prefix is still read
            with quiet_pydicom():
                hdr = pydicom.dcmread(path, stop_before_pixels=True, force=path.suffix.lower() == ".dcm")
        except Exception:
            continue  # not DICOM after all (a stray .dcm name); other files are ignored too
        _fill_from_file_meta(hdr)
        # Image slices only: SEG, RTSTRUCT, SR, presentation states and DICOMDIR are not part of the volume
        if "Rows" not in hdr or str(hdr.get("Modality", "")) in NOT_IMAGES or hdr.get("SOPClassUID") == SEG_SOP_CLASS:
            continue
        found.setdefault(str(hdr.get("SeriesInstanceUID", "") or ""), []).append((path, hdr))
    return found


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """pydicom logs each decoder's traceback when none can decode a file, and warns about damaged files: segkit
    says what is wrong in one line of its own instead."""
    log = logging.getLogger("pydicom")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def describe_series(uid: str, files: list[tuple[Path, Any]]) -> str:
    """'UID (description, N slices)' of one series, for messages that let the user pick one."""
    hdr = files[0][1]
    name = str(hdr.get("SeriesDescription", "") or "") or f"series {hdr.get('SeriesNumber', '') or '?'}"
    num = sum(_num_frames(h) for _, h in files)
    return f"{uid or '(no SeriesInstanceUID)'} ({name}, {num} slice{'s' * (num != 1)})"


def _pick_series(
    folder: Path, series: str | None, found: dict[str, list[tuple[Path, Any]]] | None = None
) -> tuple[str, list[tuple[Path, Any]]]:
    found = list_series(folder) if found is None else found
    if not found:
        raise InputError(f"{folder}: holds no DICOM image series (and no .nii/.nii.gz files); check the folder")
    listing = "; ".join(describe_series(uid, files) for uid, files in found.items())
    if series is not None:
        if series not in found:
            raise InputError(f"{folder}: no series with SeriesInstanceUID {series}; it holds: {listing}")
        return series, found[series]
    if len(found) > 1:
        raise InputError(f"{folder}: holds {len(found)} DICOM series; pick one with --series UID: {listing}")
    return next(iter(found.items()))


def read_series(
    folder: str | Path, series: str | None = None, found: dict[str, list[tuple[Path, Any]]] | None = None
) -> DicomSeries:
    """Read one image series of a folder; none, several (without `series`) or inconsistent slices raise InputError.
    found: the folder's list_series, where the caller has it already (its headers are not read again)."""
    folder = Path(folder)
    uid, files = _pick_series(folder, series, found)
    for name in ("StudyInstanceUID", "FrameOfReferenceUID"):  # one volume: one study, one patient space
        values = {str(h.get(name, "") or "") for _, h in files} - {""}
        if len(values) > 1:
            raise InputError(
                f"{folder}: series {uid or '(no SeriesInstanceUID)'} holds slices of {len(values)} different {name}s, "
                "not one 3-D volume; keep the slices of one acquisition in the folder"
            )
    multi = [(p, h) for p, h in files if _num_frames(h) > 1 or "PerFrameFunctionalGroupsSequence" in h]
    if multi and len(files) > 1:
        raise InputError(
            f"{folder}: series {uid} has {len(files)} files, {len(multi)} of them multi-frame; "
            "segkit reads one multi-frame object or a set of single-frame slices: split the series"
        )
    if multi:
        path, hdr = multi[0]
        planes = [_frame_plane(path, hdr, i) for i in range(_num_frames(hdr))]
        pixels = list(_decode(path, len(planes)))
        headers = [hdr]
        names = [f"{path} (frame {i + 1})" for i in range(len(planes))]
    else:
        planes = [_slice_plane(path, hdr) for path, hdr in files]
        pixels = [_decode(path, 1)[0] for path, _ in files]
        headers = [h for _, h in files]
        names = [str(path) for path, _ in files]
    affine, order = _geometry(folder, planes, names)
    slices = [(pixels[k].astype(np.float32) * planes[k].rescale[0] + planes[k].rescale[1]).T for k in order]
    data = np.stack(slices, axis=-1).astype(np.float32)  # (X, Y, Z): (cols, rows) per slice
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    modality = DICOM_MODALITIES.get(str(headers[0].get("Modality", "") or "").upper())
    vol = Volume(data=data, affine=affine, header=img.header, path=folder, series_uid=uid or None, modality=modality)
    if multi:
        return DicomSeries(volume=vol, datasets=headers, frames=[int(k) for k in order])
    return DicomSeries(volume=vol, datasets=[headers[k] for k in order])


def _num_frames(hdr: Any) -> int:
    try:
        return max(1, int(hdr.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _fill_from_file_meta(hdr: Any) -> None:
    """Anonymisers empty SOPClassUID/SOPInstanceUID; the file meta holds the same UIDs (PS3.10 7.1)."""
    meta = getattr(hdr, "file_meta", None)
    for attr in ("SOPClassUID", "SOPInstanceUID"):
        if not hdr.get(attr) and meta is not None and meta.get(f"MediaStorage{attr}"):
            setattr(hdr, attr, meta.get(f"MediaStorage{attr}"))


def _required(ds: Any, name: str, path: Path, where: str = "") -> Any:
    """ds.name, or InputError naming the missing (or empty) attribute."""
    value = ds.get(name) if ds is not None else None
    if value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0):
        raise InputError(
            f"{path}: {name}{where} is missing or empty (anonymised?); segkit needs it to place the slices "
            "in 3-D: re-export the series with it kept, or convert the series to NIfTI"
        )
    return value


def _rescale(ds: Any) -> tuple[float, float]:
    return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)


def _checked(plane: _Plane, path: Path, where: str = "") -> _Plane:
    """The plane, or InputError where its geometry cannot place pixels in space: positions, directions or spacing
    not finite, spacing not positive, directions not two unit vectors at right angles."""
    row, col = plane.orientation[:3], plane.orientation[3:]
    problem = None
    if not (np.isfinite(plane.position).all() and np.isfinite(plane.orientation).all()):
        problem = "ImagePositionPatient or ImageOrientationPatient holds a value that is not a number"
    elif not (np.isfinite(plane.spacing).all() and min(plane.spacing) > 0):
        problem = f"PixelSpacing {_numbers(plane.spacing)} is not two positive numbers"
    elif max(abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(col) - 1)) > ORIENTATION_TOL:
        problem = f"ImageOrientationPatient {_numbers(plane.orientation)} does not hold two unit vectors"
    elif abs(float(row @ col)) > ORIENTATION_TOL:
        problem = f"ImageOrientationPatient {_numbers(plane.orientation)}: its row and column are not at right angles"
    if problem:
        raise InputError(
            f"{path}{where}: {problem}, so its pixels have no place in space; check the export or convert the series"
        )
    return plane


def _numbers(values: Any) -> str:
    return "\\".join(f"{float(v):g}" for v in values)  # as DICOM writes a multi-valued attribute


def _slice_plane(path: Path, hdr: Any) -> _Plane:
    """Geometry of a single-frame slice (Image Plane module)."""
    spacing = _required(hdr, "PixelSpacing", path)
    return _checked(
        _Plane(
            position=np.asarray(_required(hdr, "ImagePositionPatient", path), dtype=np.float64),
            orientation=np.asarray(_required(hdr, "ImageOrientationPatient", path), dtype=np.float64),
            spacing=(float(spacing[0]), float(spacing[1])),
            size=(int(hdr.Rows), int(hdr.Columns)),
            thickness=float(hdr.get("SpacingBetweenSlices", 0) or hdr.get("SliceThickness", 0) or 0),
            rescale=_rescale(hdr),
        ),
        path,
    )


def _frame_plane(path: Path, hdr: Any, i: int) -> _Plane:
    """Geometry of frame i of an enhanced (or legacy-converted) multi-frame object (functional groups)."""
    per = hdr.get("PerFrameFunctionalGroupsSequence")
    shared = hdr.get("SharedFunctionalGroupsSequence")
    if not per:
        raise InputError(
            f"{path}: multi-frame DICOM without per-frame positions (PerFrameFunctionalGroupsSequence); "
            "segkit reads enhanced CT/MR objects or single-frame slices: convert the series to NIfTI"
        )

    def group(name: str) -> Any:  # a functional group macro: this frame's, else the shared one
        for seq in (per[i] if i < len(per) else None, shared[0] if shared else None):
            if seq is not None and seq.get(name):
                return seq.get(name)[0]
        return None

    position, orientation, measures = (
        group("PlanePositionSequence"),
        group("PlaneOrientationSequence"),
        group("PixelMeasuresSequence"),
    )
    where = f" (frame {i + 1})"
    spacing = _required(measures, "PixelSpacing", path, where)
    transform = group("PixelValueTransformationSequence")
    return _checked(
        _Plane(
            position=np.asarray(_required(position, "ImagePositionPatient", path, where), dtype=np.float64),
            orientation=np.asarray(_required(orientation, "ImageOrientationPatient", path, where), dtype=np.float64),
            spacing=(float(spacing[0]), float(spacing[1])),
            size=(int(hdr.Rows), int(hdr.Columns)),
            thickness=float(measures.get("SpacingBetweenSlices", 0) or measures.get("SliceThickness", 0) or 0),
            rescale=_rescale(transform if transform is not None else hdr),
        ),
        path,
        where,
    )


def _decode(path: Path, num_frames: int) -> np.ndarray:
    """The stored pixel values of a file's frames, (F, rows, cols), whatever the transfer syntax."""
    import pydicom

    syntax = "unknown syntax"
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(path, force=True)
            _raw_syntax(ds)
            syntax = ds.file_meta.TransferSyntaxUID.name
            if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                raise InputError(
                    f"{path}: holds no pixel data (a truncated copy, or not an image); re-export or remove the file"
                )
            if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
                raise InputError(
                    f"{path}: colour image ({ds.get('PhotometricInterpretation', '?')}); "
                    "segkit reads greyscale CT/MR slices"
                )
            pixels = ds.pixel_array
    except InputError:
        raise
    except Exception as e:  # no decoder for the syntax, truncated or damaged pixel data
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        hint = "; ".join(lines[1:] if len(lines) > 1 else lines)[:200] or type(e).__name__
        raise InputError(
            f"{path}: cannot decode its {syntax} pixel data ({hint}); convert the series to an uncompressed "
            "syntax (e.g. gdcmconv --raw) or to NIfTI (dcm2niix) and predict that"
        ) from None
    pixels = pixels[None] if pixels.ndim == 2 else pixels  # one frame comes as (rows, cols)
    if pixels.ndim != 3 or pixels.shape[0] != num_frames:
        raise InputError(f"{path}: {syntax} pixel data holds {pixels.shape[0]} frames, its header {num_frames}")
    return pixels


def _raw_syntax(ds: Any) -> None:
    """A file without the DICOM file header (no preamble, no file meta) is a raw dataset: pydicom found its
    encoding while reading it; name that transfer syntax in the file meta so that its pixels can be decoded."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    ds.file_meta = meta if meta is not None else FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _geometry(folder: Path, planes: list[_Plane], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """RAS voxel-to-world affine of the stacked frames (named `names` in messages), and the frame order along the
    slice normal."""
    first = planes[0]
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    for p, name in zip(planes, names, strict=True):
        what = [
            w
            for w, same in (
                ("orientation", np.allclose(p.orientation, first.orientation, atol=1e-4)),
                ("size", p.size == first.size),
                ("pixel spacing", np.allclose(p.spacing, first.spacing, atol=1e-4)),
            )
            if not same
        ]
        if what:
            raise InputError(
                f"{folder}: {name} differs from {names[0]} in {' and '.join(what)} (a localizer or another "
                "reconstruction in the series?); not one 3-D volume: move the odd slices out of the folder"
            )
    normal = np.cross(row_dir, col_dir)
    pos = np.array([p.position for p in planes])  # (Z, 3) LPS mm
    order = np.argsort(pos @ normal, kind="stable")
    pos = pos[order]
    if len(pos) > 1:
        step = (pos[-1] - pos[0]) / (len(pos) - 1)
        gap = float(np.linalg.norm(step))
        if gap < 1e-3:
            raise InputError(f"{folder}: several slices share one position (repeated acquisitions?); keep one")
        tilt = float(np.degrees(np.arccos(min(1.0, abs(float(step @ normal)) / gap))))
        if tilt > MAX_TILT_DEG:
            raise InputError(
                f"{folder}: slices are stacked {tilt:.1f} degrees off their normal (gantry tilt); segkit needs "
                "an untilted stack: convert it with tilt correction (e.g. dcm2niix) and predict the NIfTI"
            )
        gaps = np.diff(pos @ normal)
        if np.abs(gaps - gaps.mean()).max() > max(0.01 * gap, 1e-3):
            raise InputError(
                f"{folder}: slice spacing varies from {gaps.min():.3g} to {gaps.max():.3g} mm (missing or extra "
                "slices?); segkit needs evenly spaced slices: check the series or resample it to NIfTI"
            )
    else:
        step = normal * (first.thickness or 1.0)
    row_spacing, col_spacing = first.spacing  # between rows, between columns
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # array axis 0 runs along a row (column index)
    lps[:3, 1] = col_dir * row_spacing  # array axis 1 runs down a column (row index)
    lps[:3, 2] = step
    lps[:3, 3] = pos[0]
    return LPS_TO_RAS @ lps, order


def segment_codes(name: str) -> tuple[Any, Any]:
    """(category, type) CodedConcepts of a label's segment: SNOMED CT for the built-in labels."""
    from highdicom.sr import CodedConcept

    category, kind = LABEL_CODES.get(name, (OTHER_CODE, (name[:16], "99SEGKIT", name.replace("_", " "))))
    return CodedConcept(*category), CodedConcept(*kind)


def _seg_sources(series: DicomSeries) -> list[Any]:
    """Copies of the source instances with what a SEG needs from them present (or one line saying what is not)."""
    sources = []
    for ds in series.datasets:
        ds = copy.deepcopy(ds)  # a shallow copy would share its elements with the series
        where = Path(str(getattr(ds, "filename", "") or series.volume.path))
        for name in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            if not ds.get(name):
                raise InputError(
                    f"{where}: {name} is missing or empty; a DICOM SEG must reference it: "
                    "re-export the series with its UIDs kept (anonymisers can keep or remap them)"
                )
        for name in TYPE2_COPIED:  # an anonymiser may drop these; the SEG must carry them, empty is allowed
            if name not in ds:
                setattr(ds, name, "")
        sources.append(ds)
    return sources


def write_dicom_seg(
    mask: np.ndarray, affine: np.ndarray, series: DicomSeries, labels: tuple[str, ...], out: Path
) -> Path:
    """Mask (X, Y, Z) on the series' grid -> DICOM SEG file `out` (dicom_seg's), written atomically."""
    seg = dicom_seg(mask, affine, series, labels, out)
    atomic_write(out, seg.save_as)
    return out


def dicom_seg(mask: np.ndarray, affine: np.ndarray, series: DicomSeries, labels: tuple[str, ...], out: Path) -> Any:
    """Mask (X, Y, Z) on the series' grid -> DICOM SEG dataset (one binary segment per label) referencing its
    slices; `out` names it in messages."""
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
    from segkit.render import label_color

    segments = []
    for number, name in enumerate(labels[1:], start=1):
        category, kind = segment_codes(name)
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
                display_color=hd.color.CIELabColor.from_rgb(*label_color(number)),  # the overlay's and label files'
            )
        )
    slices = mask.astype(np.uint8).transpose(2, 1, 0)  # (Z, rows, cols): slice k of the volume
    if series.frames is None:
        frames = np.ascontiguousarray(slices)  # frame k references datasets[k]
    else:
        frames = np.zeros((len(series.frames), *slices.shape[1:]), np.uint8)  # in the source's frame order
        frames[series.frames] = slices
    sources = _seg_sources(series)
    try:
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments,
            series_instance_uid=hd.UID(),
            series_number=_series_number(sources[0]) + 1000,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="segkit",
            manufacturer_model_name="segkit",
            software_versions=__version__,
            device_serial_number="0",
            series_description="segkit segmentation",
            content_label="SEGKIT",
        )
    except ValueError as e:  # highdicom's checks of the sources (e.g. instances of different studies)
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else "ValueError"
        raise InputError(
            f"{out.name}: the series {vol.path} cannot be referenced by a DICOM SEG ({reason}); "
            "use the NIfTI mask segkit predict wrote, or re-export the series from the PACS"
        ) from None


def _series_number(ds: Any) -> int:
    try:
        return int(ds.get("SeriesNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0
