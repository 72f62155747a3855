"""Build tests/data/pyradiomics/ from PyRadiomics 3.1.0's source distribution: real scans of other patients.

    curl -sLo /tmp/pyradiomics-3.1.0.tar.gz https://files.pythonhosted.org/packages/03/c1/\
20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4578f2/pyradiomics-3.1.0.tar.gz
    pip install pynrrd   # only this script reads NRRD
    python scripts/vendor_pyradiomics.py /tmp/pyradiomics-3.1.0.tar.gz

Writes brain1/brain2 (two patients' T1 MRI with a brain tumour, 0.78 x 0.78 x 6.5 mm) and lung2 (a patient's chest
CT reaching down through the upper abdomen, 0.63 x 0.63 x 5 mm; kept: the lowest LUNG2_SLICES slices, the liver and
the heart's base) as NIfTI with the NRRD's LPS geometry turned into NIfTI's RAS world, and lung2's liver reference
(`reference_liver`, below), and brain1's and brain2's lateral-ventricle references (`reference_ventricles`,
below). Never used for training or model choice; segkit itself does not need these files.

    python scripts/vendor_pyradiomics.py --ventricle-references

redraws only the two ventricle references, from the vendored brain1/brain2 (no download).
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "pyradiomics"
SHA256 = "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4"  # PyPI's hash of the sdist
LUNG2_SLICES = 35  # of 61: 175 mm from the scan's lower end, the whole liver in view and the heart above it
LIVER_HU = (38.0, 92.0)  # this scan's liver: 60 HU median (5-95th percentile about 26-80 before smoothing)
# Where each brain's lateral ventricles lie (voxel indices, chosen by looking at the slices): the box
# x0:x1, y0:y1, z0:z1 around them; the midline column x (septum, interhemispheric fissure and third ventricle
# are cut MIDLINE_HALF voxels either side); and (z, y) cuts: from slice z up, nothing at y and beyond (brain1's
# fissure in front of the ventricles' bodies). x0 of brain1 stops short of the lateral sulcus, as x1 of brain2.
VENTRICLE_BOXES = {
    "brain1": {"box": (85, 165, 80, 197, 12, 18), "midline": 127, "cuts": ((15, 172),)},
    "brain2": {"box": (95, 185, 80, 200, 11, 15), "midline": 139, "cuts": ((11, 195),)},
}
MIDLINE_HALF = 1  # voxel (0.8 mm) either side of the midline: a 2.3 mm strip
MIN_PIECE_ML = 0.2  # dark pieces smaller than this (sulci, vessels' shadows) are left out


def read_nrrd(path: Path) -> nib.Nifti1Image:
    """An NRRD volume in LPS space as a NIfTI image (RAS world: x and y negated)."""
    import nrrd  # pynrrd: needed only to rebuild the vendored files

    data, header = nrrd.read(str(path))
    if header["space"] != "left-posterior-superior":
        raise SystemExit(f"{path}: space {header['space']!r}, expected left-posterior-superior")
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(header["space directions"], dtype=float).T
    affine[:3, 3] = header["space origin"]
    return scanner_nifti(np.asarray(data, dtype=np.int16), np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine)


def scanner_nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A NIfTI image whose qform and sform both hold the affine, coded as the scanner's own frame."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    return img


def reference_liver(ct: np.ndarray) -> np.ndarray:
    """lung2's liver, semi-automatic: smooth in-plane, keep the liver's HU window, erode 6 voxels in-plane to cut
    thin bridges, keep the largest piece, grow it back inside the window, close and fill each slice (vessels), then
    the cuts below, each made after looking at the slices: nothing from slice 18 up (the region growing runs through
    the diaphragm into the heart; slice 18's piece is the inferior vena cava), at 17 only pieces on the patient's
    right of x = 250, and at 5-10 none right of x = 300 (pancreas and vessels behind the stomach). Checked by eye
    slice by slice; not an expert's tracing. The inferior vena cava, where the window keeps it, counts as liver."""
    smooth = ndi.median_filter(ct.astype(np.float32), size=(5, 5, 1))
    window = (smooth > LIVER_HU[0]) & (smooth < LIVER_HU[1])
    plane = disk(6)[:, :, None]
    lab, n = ndi.label(ndi.binary_erosion(window, structure=plane))
    largest = lab == 1 + int(np.argmax(ndi.sum(lab > 0, lab, range(1, n + 1))))
    liver = ndi.binary_dilation(largest, structure=plane) & window
    liver = ndi.binary_closing(liver, structure=disk(4)[:, :, None])
    for z in range(liver.shape[2]):
        liver[:, :, z] = ndi.binary_fill_holes(liver[:, :, z])
    liver[:, :, 18:] = False
    for zs, keep in ((range(17, 18), lambda x: x < 250), (range(5, 11), lambda x: x <= 300)):
        for z in zs:
            pieces, k = ndi.label(liver[:, :, z])
            for i in range(1, k + 1):
                if not keep(np.argwhere(pieces == i)[:, 0].mean()):
                    liver[:, :, z][pieces == i] = False
    return liver.astype(np.uint8)


def reference_ventricles(t1: np.ndarray, where: dict, voxel_ml: float) -> np.ndarray:
    """A brain's lateral ventricles, semi-automatic: the T1 median-filtered in-plane; inside the box of
    VENTRICLE_BOXES, less the midline strip and the cuts, the voxels darker than halfway between the box's 1st
    percentile (CSF) and its median (tissue); 26-connected pieces of MIN_PIECE_ML or more kept. Enhancing
    choroid plexus and vessels are left out (bright); a ventricle thinner than a 6.5 mm slice, faint in it, is
    left out where it is not darker than halfway. Checked by eye slice by slice; not an expert's tracing."""
    smooth = ndi.median_filter(t1.astype(np.float32), size=(3, 3, 1))
    x0, x1, y0, y1, z0, z1 = where["box"]
    inside = np.zeros(t1.shape, dtype=bool)
    inside[x0:x1, y0:y1, z0:z1] = True
    inside[where["midline"] - MIDLINE_HALF : where["midline"] + MIDLINE_HALF + 1] = False
    for z, y in where["cuts"]:
        inside[:, y:, z:] = False
    csf, tissue = np.percentile(smooth[inside], [1, 50])
    dark = inside & (smooth < (csf + tissue) / 2)
    pieces, n = ndi.label(dark, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(pieces.ravel(), minlength=n + 1) * voxel_ml
    keep = np.nonzero(sizes >= MIN_PIECE_ML)[0]
    return np.isin(pieces, keep[keep > 0]).astype(np.uint8)


def write_ventricle_references() -> None:
    """brain1/brain2_ventricles_reference.nii.gz from the vendored scans (label 1, the scan's grid)."""
    for name, where in VENTRICLE_BOXES.items():
        img = nib.load(OUT / f"{name}.nii.gz")
        voxel_ml = float(np.prod(img.header.get_zooms())) / 1000
        ref = reference_ventricles(np.asarray(img.dataobj), where, voxel_ml)
        nib.save(scanner_nifti(ref, img.affine), OUT / f"{name}_ventricles_reference.nii.gz")
        print(f"{name} lateral-ventricle reference {ref.sum() * voxel_ml:.2f} mL")


def main(sdist: Path) -> None:
    import hashlib

    if hashlib.sha256(sdist.read_bytes()).hexdigest() != SHA256:
        raise SystemExit(f"{sdist}: not PyRadiomics 3.1.0's sdist (sha256 differs)")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(("_image.nrrd", "LICENSE.txt"))]
        tar.extractall(tmp, members=members, filter="data")
        root = Path(tmp) / "pyradiomics-3.1.0"
        (OUT / "LICENSE.txt").write_text((root / "LICENSE.txt").read_text())
        for name in ("brain1", "brain2"):
            nib.save(read_nrrd(root / "data" / f"{name}_image.nrrd"), OUT / f"{name}.nii.gz")
        lung2 = read_nrrd(root / "data" / "lung2_image.nrrd")
        lung2 = lung2.slicer[:, :, :LUNG2_SLICES]
        nib.save(lung2, OUT / "lung2.nii.gz")
    ref = reference_liver(np.asarray(lung2.dataobj))
    nib.save(nib.Nifti1Image(ref, lung2.affine), OUT / "lung2_liver_reference.nii.gz")
    print(f"wrote {OUT}; lung2 liver reference {ref.sum() * np.prod(lung2.header.get_zooms()) / 1000:.0f} mL")
    write_ventricle_references()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    if sys.argv[1] == "--ventricle-references":
        write_ventricle_references()
    else:
        main(Path(sys.argv[1]))
