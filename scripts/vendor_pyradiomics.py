"""Build tests/data/pyradiomics/ from PyRadiomics 3.1.0's source distribution: real scans of other patients.

    curl -sLo /tmp/pyradiomics-3.1.0.tar.gz https://files.pythonhosted.org/packages/03/c1/\
20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4578f2/pyradiomics-3.1.0.tar.gz
    pip install pynrrd   # only this script reads NRRD
    python scripts/vendor_pyradiomics.py /tmp/pyradiomics-3.1.0.tar.gz

Writes brain1/brain2 (two patients' T1 MRI with a brain tumour, 0.78 x 0.78 x 6.5 mm) and lung2 (a patient's chest
CT reaching down through the upper abdomen, 0.63 x 0.63 x 5 mm; kept: the lowest LUNG2_SLICES slices, the liver and
the heart's base) as NIfTI with the NRRD's LPS geometry turned into NIfTI's RAS world, and lung2's liver reference
(`reference_liver`, below). Never used for training or model choice; segkit itself does not need these files.
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


def read_nrrd(path: Path) -> nib.Nifti1Image:
    """An NRRD volume in LPS space as a NIfTI image (RAS world: x and y negated)."""
    import nrrd  # pynrrd: needed only to rebuild the vendored files

    data, header = nrrd.read(str(path))
    if header["space"] != "left-posterior-superior":
        raise SystemExit(f"{path}: space {header['space']!r}, expected left-posterior-superior")
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(header["space directions"], dtype=float).T
    affine[:3, 3] = header["space origin"]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    img = nib.Nifti1Image(np.asarray(data, dtype=np.int16), affine)
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


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
