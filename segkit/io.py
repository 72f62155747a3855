"""Read NIfTI (and FreeSurfer MGH) volumes as (array, affine, header), checked; write NIfTI atomically."""

from __future__ import annotations

import gzip
import logging
import os
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segkit import __version__
from segkit.errors import InputError, OutputError

# `import nibabel` imports pydicom (with Pillow: 0.1-0.3 s of every predict's start-up) only to parse the DICOM
# extensions a NIfTI header may carry, which segkit never reads. Imported here first (as predict does) while
# pydicom is blocked, nibabel keeps such extensions as raw bytes and writes them back unchanged; segkit.dicom
# imports pydicom itself when it reads DICOM.
_block_pydicom = "nibabel" not in sys.modules and "pydicom" not in sys.modules
if _block_pydicom:
    sys.modules["pydicom"] = None  # type: ignore[assignment]
try:
    import nibabel as nib
finally:
    if _block_pydicom:
        del sys.modules["pydicom"]

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MGH_SUFFIXES = (".mgz", ".mgh")  # FreeSurfer's format (orig.mgz, norm.mgz, aseg.mgz), read by nibabel
MAX_VOXELS = 1024**3  # a header claiming more than this is treated as corrupt


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume in millilitres of one voxel of a grid with this (4, 4) affine."""
    return float(abs(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0


@dataclass(frozen=True)
class Volume:
    """A 3-D image in its own voxel grid: data (X, Y, Z), the voxel-to-world affine, its header."""

    data: np.ndarray  # (X, Y, Z)
    affine: np.ndarray  # (4, 4) voxel -> world (RAS+, mm)
    header: nib.Nifti1Header
    path: Path
    series_uid: str | None = None  # SeriesInstanceUID when read from a DICOM folder
    modality: str | None = None  # "CT" or "MRI" where a DICOM series' Modality says so
    warnings: tuple[str, ...] = ()  # what reading changed (NaN voxels filled): predict reports them

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return voxel_sizes(self.affine)

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return voxel_volume_ml(self.affine)


ORTHOGONAL_COS = 1e-4  # columns of an affine closer to a right angle than this are taken as perpendicular


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis of an affine.

    The length of each column, except in a sheared (gantry-tilted) affine: there the slices' axis, the column
    off the right angle to the two perpendicular in-plane axes, gets the gap between its planes (5 mm slices
    tilted 20 degrees are 5 mm apart, though each step along the column is 5.3 mm). Of two candidates, the
    longer column is the slices' axis."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    sizes = np.sqrt((cols**2).sum(axis=0))
    unit = cols / np.where(sizes > 0, sizes, 1.0)
    cos = np.abs(unit.T @ unit)
    sheared = [
        k
        for k in range(3)
        if cos[k - 2, k - 1] < ORTHOGONAL_COS and max(cos[k, k - 1], cos[k, k - 2]) >= ORTHOGONAL_COS
    ]
    if sheared:
        k = max(sheared, key=lambda a: (sizes[a], a))
        normal = np.cross(unit[:, k - 2], unit[:, k - 1])
        sizes[k] = abs(float(cols[:, k] @ normal))
    return (float(sizes[0]), float(sizes[1]), float(sizes[2]))


def is_volume_file(path: Path) -> bool:
    """True for a file name segkit reads as a volume: .nii, .nii.gz, or FreeSurfer's .mgz and .mgh."""
    return path.name.endswith(NIFTI_SUFFIXES + MGH_SUFFIXES)


def stem(path: Path) -> str:
    """File name without .nii/.nii.gz (or .mgz/.mgh)."""
    name = path.name
    for suf in (".nii.gz", ".nii", *MGH_SUFFIXES):
        if name.endswith(suf):
            return name[: -len(suf)]
    return path.stem


def read_volume(path: str | Path, kind: str = "image") -> Volume:
    """Read a 3-D NIfTI image (or FreeSurfer MGH: .mgz/.mgh, whose outputs are written as NIfTI on its grid);
    any problem raises InputError naming the file and the fix."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found; check the path")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected a .nii or .nii.gz {kind}")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes); re-export the {kind}")
    if not is_volume_file(p):
        raise InputError(
            f"{p}: not a NIfTI file name; segkit reads .nii and .nii.gz {kind}s (and FreeSurfer .mgz/.mgh): "
            "convert it to .nii.gz (e.g. SimpleITK, 3D Slicer, dcm2niix for DICOM files)"
        )
    fmt = "MGH" if p.name.endswith(MGH_SUFFIXES) else "NIfTI"
    try:
        img = nib.load(str(p))
    except (gzip.BadGzipFile, zlib.error, EOFError) as e:
        raise InputError(f"{p}: damaged or truncated gzip ({e}); re-copy or re-export it") from None
    except Exception as e:  # nibabel raises many types for non-NIfTI bytes
        raise InputError(f"{p}: not a readable {fmt} {kind} ({_short(e)}); check the file") from None
    if isinstance(img, nib.MGHImage):
        img = _as_nifti(img)
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{p}: not a NIfTI-1/2 image; convert it to .nii.gz")
    dtype = img.get_data_dtype()
    if dtype.kind == "c":
        raise InputError(
            f"{p}: complex-valued {kind} (real and imaginary parts, as MRI reconstructions store); segkit reads "
            "magnitude images: pass the magnitude image (e.g. fslcomplex -realabs)"
        )
    if dtype.fields or dtype.kind == "V":
        raise InputError(f"{p}: colour (RGB) {kind}; segkit reads greyscale CT or MRI: pass the scan itself")
    _check_pixdim(p, img.header)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        fix = (
            "split a 4-D series into 3-D files first"
            if len(shape) > 3
            else "save a single slice as X x Y x 1, its thickness in the header"
        )
        raise InputError(f"{p}: {len(shape)}-D image of shape {shape}; segkit needs one 3-D volume ({fix})")
    if min(shape) < 1 or int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise InputError(f"{p}: header declares an impossible size {shape}; the file is corrupt")
    affine = np.asarray(img.affine, dtype=np.float64)
    _check_affine(p, affine)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (gzip.BadGzipFile, zlib.error, EOFError) as e:
        raise InputError(f"{p}: damaged or truncated gzip ({e}); re-copy or re-export it") from None
    except Exception as e:
        raise InputError(
            f"{p}: data is shorter than its header declares or unreadable ({_short(e)}); "
            "the file is truncated or corrupt"
        ) from None
    finite = np.isfinite(data)
    if not finite.any():
        raise InputError(f"{p}: every voxel is NaN or Inf; the {kind} holds no image")
    notes: tuple[str, ...] = ()
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        notes = (
            f"{bad} voxel{'s' if bad > 1 else ''} ({100.0 * bad / finite.size:.2g}%) NaN or Inf in the file, set "
            "to the image minimum: check the scan's export",
        )
        data = np.where(finite, data, data[finite].min()).astype(np.float32)
    return Volume(data=data, affine=affine, header=img.header, path=p, warnings=notes)


def _as_nifti(img: nib.MGHImage) -> nib.Nifti1Image:
    """An MGH image as the NIfTI image of the same voxels and affine (scanner RAS, as nibabel gives it), both
    forms set: every output is written as NIfTI on this grid. Its data stay on disk until read (MGH holds only
    uint8, int16, int32 or float32 voxels: the checks below pass it as they pass a NIfTI of those)."""
    affine = np.asarray(img.affine, dtype=np.float64)
    out = nib.Nifti1Image(img.dataobj, affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    return out


def _check_pixdim(p: Path, header: nib.Nifti1Header) -> None:
    """Without an sform the affine comes from pixdim, where nibabel makes a voxel size of 0 into 1 mm while it
    loads the header (a brain of 6.5 mm slices then came out at 286 mL and was graded): the header as the file
    holds it is read again, and such a voxel size refused."""
    from nibabel.openers import ImageOpener

    if int(header["sform_code"]) > 0:
        return
    with ImageOpener(str(p)) as f:  # 348 or 540 bytes, unchecked: nibabel's checks fix pixdim
        raw = type(header).from_fileobj(f, check=False)
    zooms = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    if not (np.isfinite(zooms).all() and (zooms != 0).all()):
        raise InputError(
            f"{p}: voxel size {tuple(float(z) for z in zooms)} mm in the header (pixdim) and no sform: the voxels' "
            "size is unknown; fix the header (e.g. nibabel set_zooms) or re-export the scan"
        )


def _check_affine(p: Path, affine: np.ndarray) -> None:
    if not np.all(np.isfinite(affine)):
        raise InputError(f"{p}: affine holds NaN/Inf; fix the header (qform/sform)")
    sizes = voxel_sizes(affine)
    det = abs(np.linalg.det(affine[:3, :3]))
    if min(sizes) < 1e-6 or det < 1e-9 * max(sizes) ** 3:
        raise InputError(
            f"{p}: affine is singular (voxel sizes {tuple(round(s, 4) for s in sizes)}); "
            "the header has no usable geometry, fix its qform/sform"
        )


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]


def check_same_grid(a: Volume, b: Volume, atol: float = 1e-3) -> None:
    """Raise InputError unless two volumes share shape and affine (e.g. image and label)."""
    if a.data.shape != b.data.shape:
        raise InputError(
            f"{b.path}: shape {b.data.shape} differs from {a.path.name} {a.data.shape}; "
            "image and label must share one voxel grid"
        )
    if not np.allclose(a.affine, b.affine, atol=atol):
        raise InputError(
            f"{b.path}: affine differs from {a.path.name}; image and label must share one grid "
            "(resample the label onto the image)"
        )


def ensure_dir(folder: Path) -> Path:
    """Create an output folder, or raise OutputError saying why it cannot be used."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{folder}: cannot create output folder ({e.strerror}); choose another --out") from None
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{folder}: output folder is not writable; choose another --out")
    return folder


def label_array(lab: Volume, labels: tuple[str, ...]) -> np.ndarray:
    """A label volume as uint8, refusing values that are not one of the task's label indices."""
    values = np.unique(lab.data)
    fractional = values[values != values.round()]
    if len(fractional):  # a label map resampled with linear interpolation, or an image given as the label
        shown = ", ".join(f"{v:g}" for v in fractional[:4]) + (", ..." if len(fractional) > 4 else "")
        raise InputError(
            f"{lab.path}: {len(fractional)} label values are not whole numbers ({shown}): a label map holds the "
            "indices 0, 1, 2, ...; resample labels with nearest-neighbour interpolation, or check it is not an image"
        )
    wrong = values[(values < 0) | (values >= len(labels))]
    if len(wrong):
        raise InputError(
            f"{lab.path}: label values {wrong[:8].astype(int).tolist()} outside 0..{len(labels) - 1} "
            f"({', '.join(labels)}); fix the label or task.labels"
        )
    return lab.data.astype(np.uint8)


def _temp_beside(path: Path) -> Path:
    """A new empty temp file in path's folder, named after it (hidden), with the usual permissions."""
    folder = ensure_dir(path.parent)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    os.chmod(tmp_name, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs get the usual permissions
    return Path(tmp_name)


def current_umask() -> int:
    """The process's umask (read by setting it, then put back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Run write(tmp) on a temp file in path's folder, fsync it, then rename it onto path."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_all(writes: list[tuple[Path, Callable[[Path], None]]]) -> None:
    """Write files as one set: each write(tmp) to a temp file beside its path, all renamed only when all succeeded.

    On any failure every temp file (and any file of the set already renamed) is removed, then the error raised;
    an OSError (disk full, no permission) as OutputError.
    """
    temps: list[tuple[Path, Path]] = []
    done: list[Path] = []
    current = None  # the file being written or renamed, named if that fails
    try:
        for path, write in writes:
            current = Path(path)
            temps.append((_temp_beside(current), current))
            write(temps[-1][0])
            _fsync(temps[-1][0])
        for tmp, path in temps:
            current = path
            os.replace(tmp, path)
            done.append(path)
    except BaseException as e:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        for path in done:
            path.unlink(missing_ok=True)
        if isinstance(e, OSError) and current is not None:
            raise OutputError(
                f"{current}: cannot write it ({e.strerror or e}); nothing of its set was kept: check that folder "
                "(free space, permissions, a folder of that name) or choose another --out"
            ) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(Path(path), lambda t: t.write_text(text))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a binary file atomically."""
    atomic_write(Path(path), lambda t: t.write_bytes(data))


def write_volume(
    path: Path, data: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None = None, slope: float = 1.0
) -> None:
    """Write a NIfTI volume atomically; readers multiply the stored values by slope (a probability map stores 0-255
    with slope 1/255).

    With the input's header, on the input's grid (affine is the header's): the output keeps the header's qform and
    sform exactly as they are, each with its code (an input whose qform differs from its sform is placed by each
    reader where that reader places the input: nibabel takes the sform, some readers the qform), and the input's
    shape where it has a trailing singleton dimension (X, Y, Z, 1); the image's display range, intent and
    description are not carried over (a mask drawn with the image's cal_max 3000 looks black)."""
    data = np.asarray(data)
    if header is not None:
        hdr = header.copy()
        shape = tuple(int(n) for n in hdr.get_data_shape())
        if shape != data.shape and shape[: data.ndim] == data.shape and all(n == 1 for n in shape[data.ndim :]):
            data = data.reshape(shape)
        hdr.set_data_dtype(data.dtype)
        hdr["cal_min"], hdr["cal_max"] = 0.0, 0.0
        hdr.set_intent("none")
        hdr["descrip"] = f"segkit {__version__}".encode()[:80]
        if np.allclose(hdr.get_best_affine(), affine, atol=1e-5):
            img = nib.Nifti1Image(data, None, header=hdr)  # the header's qform and sform, untouched
        else:  # another grid: both forms set to it, with the header's codes
            img = nib.Nifti1Image(data, affine, header=hdr)
            img.set_qform(affine, code=int(header["qform_code"]) or 1)
            img.set_sform(affine, code=int(header["sform_code"]) or 1)
    else:
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    img.header.set_slope_inter(slope, 0.0)
    img.header.set_xyzt_units("mm")
    atomic_write(Path(path), lambda t: nib.save(img, str(t)))


def check_not_input(out: Path, inputs: list[Path]) -> None:
    """Refuse an output path that is one of the inputs."""
    out_r = Path(out).resolve()
    for p in inputs:
        if Path(p).resolve() == out_r:
            raise OutputError(f"{out}: output would overwrite the input; choose another --out")
