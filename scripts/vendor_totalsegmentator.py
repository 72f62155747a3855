"""Build tests/data/totalsegmentator/ from TotalSegmentator 2.18.0's source distribution: more real patients' CTs.

    pip download totalsegmentator==2.18.0 --no-deps --no-binary :all: -d /tmp
    python scripts/vendor_totalsegmentator.py /tmp/totalsegmentator-2.18.0.tar.gz

TotalSegmentator's own test files (`tests/reference_files/` in its sdist, Apache-2.0), each with the liver of
TotalSegmentator's own segmentation of it as reference (its label 5; an nnU-Net's output, not an expert's):
- abdomen_ct.nii.gz: `example_ct.nii.gz`, a contrast CT from the liver's dome down through the pelvis (3 mm,
  122 x 101 x 112, RAS), stored as int16 (HU). Its reference covers only the top 30 slices: TotalSegmentator
  segmented `example_ct_sm.nii.gz`, which is those slices (82-111) with the whole scan's affine left unchanged;
  abdomen_ct_liver_reference.nii.gz holds them on their true place, their own 30-slice grid.
- dicom_ct/: `example_ct_dicom/`, a 20-slice CT series as the scanner wrote it (Siemens Biograph mCT,
  0.98 x 0.98 mm, 2 mm apart, through the liver), the files unchanged; dicom_ct_liver_reference.nii.gz is the
  liver of `example_seg_dicom.nii.gz`, on the grid TotalSegmentator read the series to.
- abdomen_mr.nii.gz: `example_mr_sm.nii.gz`, an abdominal MRI (3 mm, 20 slices, LPS): an MRI that is not a head,
  for what the shipped ventricle model must not do with it. Its liver (`example_seg_mr.nii.gz`) is not kept.
Never used for training or model choice; segkit itself does not need these files.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "totalsegmentator"
SHA256 = "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03"  # the sdist pip downloads from PyPI
ROOT = "totalsegmentator-2.18.0"
REF = f"{ROOT}/tests/reference_files"
LIVER = 5  # TotalSegmentator's "total" task: 5 = liver
SM_FIRST_SLICE = 82  # example_ct_sm.nii.gz is example_ct.nii.gz[:, :, 82:112] (checked below, voxel for voxel)


def shifted(affine: np.ndarray, slices: int) -> np.ndarray:
    """The affine of a grid that starts `slices` slices further along its third axis."""
    out = affine.copy()
    out[:3, 3] += slices * affine[:3, 2]
    return out


def liver_only(seg: nib.Nifti1Image, affine: np.ndarray) -> nib.Nifti1Image:
    """TotalSegmentator's liver (label 5) as a uint8 0/1 image on `affine`."""
    out = nib.Nifti1Image((np.asarray(seg.dataobj) == LIVER).astype(np.uint8), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    return out


def main(sdist: Path) -> None:
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{sdist}: sha256 {digest}, expected {SHA256} (TotalSegmentator 2.18.0's sdist)")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(sdist) as tar:
        wanted = [m for m in tar.getmembers() if m.name == f"{ROOT}/LICENSE" or m.name.startswith(f"{REF}/example_")]
        tar.extractall(tmp, members=wanted, filter="data")
        src = Path(tmp) / REF
        shutil.copyfile(Path(tmp) / ROOT / "LICENSE", OUT / "LICENSE.txt")

        ct = nib.load(src / "example_ct.nii.gz")
        data = np.asarray(ct.dataobj)
        small = np.asarray(nib.load(src / "example_ct_sm.nii.gz").dataobj)
        top = data[:, :, SM_FIRST_SLICE : SM_FIRST_SLICE + small.shape[2]]
        if not np.array_equal(top.astype(np.int32), small.astype(np.int32)):
            raise SystemExit("example_ct_sm.nii.gz is no longer example_ct.nii.gz's slices 82-111")
        out = nib.Nifti1Image(data.astype(np.int16), ct.affine, ct.header)
        out.set_data_dtype(np.int16)
        nib.save(out, OUT / "abdomen_ct.nii.gz")
        seg = nib.load(src / "example_seg.nii.gz")
        nib.save(liver_only(seg, shifted(ct.affine, SM_FIRST_SLICE)), OUT / "abdomen_ct_liver_reference.nii.gz")

        dicom = OUT / "dicom_ct"
        shutil.rmtree(dicom, ignore_errors=True)
        shutil.copytree(src / "example_ct_dicom", dicom)
        seg = nib.load(src / "example_seg_dicom.nii.gz")
        nib.save(liver_only(seg, seg.affine), OUT / "dicom_ct_liver_reference.nii.gz")

        shutil.copyfile(src / "example_mr_sm.nii.gz", OUT / "abdomen_mr.nii.gz")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
