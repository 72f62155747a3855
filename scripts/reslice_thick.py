"""A labelled MSD dataset re-acquired with thick axial slices, to see whether slice thickness explains a failure.

    .venv/bin/python scripts/reslice_thick.py data/ventricle-real /tmp/ventricle-real-6mm 6
    .venv/bin/segkit evaluate --model ventricle --data /tmp/ventricle-real-6mm --split test

Each 1 mm case's M axial slices are averaged into one (a 2-D acquisition's slab, segkit.data.synth.slab_average)
and its reference cut at each slab's centre (slab_centre), the affine's head-foot step made M times longer.
Cases not at 1 mm head-foot are left out (and out of dataset.json's splits).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from segkit.data.synth import slab_average, slab_centre


def reslice(image: nib.Nifti1Image, label: nib.Nifti1Image, m: int) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Image and label on M-times-thicker axial slices (trailing slices that fill no slab dropped)."""
    axis = int(np.argmax(np.abs(image.affine[2, :3])))  # the array axis that runs head-foot
    n = image.shape[axis] // m * m
    x = np.take(np.asarray(image.dataobj, dtype=np.float32), range(n), axis=axis)
    y = np.take(np.asarray(label.dataobj), range(n), axis=axis)
    affine = image.affine.copy()
    affine[:3, 3] += image.affine[:3, axis] * (m - 1) / 2  # slab k is centred on thin slices m*k .. m*k+m-1
    affine[:3, axis] *= m
    return (
        nib.Nifti1Image(slab_average(x, axis, m), affine),
        nib.Nifti1Image(slab_centre(y, axis, m).astype(np.uint8), affine),
    )


def main(src: Path, dst: Path, m: int) -> None:
    meta = json.loads((src / "dataset.json").read_text())
    (dst / "imagesTr").mkdir(parents=True, exist_ok=True)
    (dst / "labelsTr").mkdir(exist_ok=True)
    kept = []
    for path in sorted((src / "imagesTr").glob("*.nii.gz")):
        image, label = nib.load(path), nib.load(src / "labelsTr" / path.name)
        if not np.isclose(np.abs(image.affine[2, :3]).max(), 1.0, atol=0.01):
            print(f"{path.name}: not 1 mm head-foot, left out")
            continue
        thick_image, thick_label = reslice(image, label, m)
        nib.save(thick_image, dst / "imagesTr" / path.name)
        nib.save(thick_label, dst / "labelsTr" / path.name)
        kept.append(path.name.removesuffix(".nii.gz"))
        print(f"{path.name}: {thick_image.shape}, {m} mm slices")
    for key in ("training", "test"):
        if isinstance(meta.get(key), list):
            meta[key] = [c for c in meta[key] if _case(c) in kept]
    meta["split"] = {k: [c for c in v if c in kept] for k, v in meta["split"].items()}
    meta["numTraining"] = len(meta.get("training", []))
    meta["description"] = f"{meta.get('description', '')}; re-sliced to {m} mm axial slabs (scripts/reslice_thick.py)"
    (dst / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")


def _case(entry: object) -> str:
    """A dataset.json training/test entry's case id (a name, or MSD's {"image": "./imagesTr/x.nii.gz", ...})."""
    if isinstance(entry, dict):
        return Path(str(entry.get("image", ""))).name.removesuffix(".nii.gz")
    return str(entry)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
