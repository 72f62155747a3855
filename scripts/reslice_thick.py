"""A labelled MSD dataset re-acquired with thick axial slices, to see whether slice thickness explains a failure.

    .venv/bin/python scripts/reslice_thick.py data/ventricle-real /tmp/ventricle-real-6mm 6
    .venv/bin/segkit evaluate --model ventricle --data /tmp/ventricle-real-6mm --split test

Each 1 mm case's M axial slices are averaged into one (a 2-D acquisition's slab, segkit.data.synth.slab_average)
and its reference cut at each slab's centre (slab_centre), the affine's head-foot step made M times longer.
Cases not at 1 mm head-foot are left out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from segkit.data.msd import read_case, read_dataset, write_case, write_dataset_json
from segkit.data.synth import slab_average, slab_centre
from segkit.tasks import get_task


def reslice(image: np.ndarray, label: np.ndarray, affine: np.ndarray, m: int) -> tuple:
    """Image, label and affine on M-times-thicker axial slices (trailing slices that fill no slab dropped)."""
    axis = int(np.argmax(np.abs(affine[2, :3])))  # the array axis that runs head-foot
    n = image.shape[axis] // m * m
    x, y = np.take(image, range(n), axis=axis), np.take(label, range(n), axis=axis)
    thick = affine.copy()
    thick[:3, 3] += affine[:3, axis] * (m - 1) / 2  # slab k is centred on thin slices m*k .. m*k+m-1
    thick[:3, axis] *= m
    return slab_average(x, axis, m), slab_centre(y, axis, m), thick


def main(src: Path, dst: Path, m: int) -> None:
    ds = read_dataset(src)
    records = []
    for case in ds.cases:
        vol, label = read_case(case, ds.labels)
        if not np.isclose(np.abs(vol.affine[2, :3]).max(), 1.0, atol=0.01):
            print(f"{case.case_id}: not 1 mm head-foot, left out")
            continue
        image, label, affine = reslice(np.asarray(vol.data, dtype=np.float32), label, vol.affine, m)
        write_case(dst, case.case_id, image, label, affine)
        records.append({"case": case.case_id, "grade": case.grade, "biomarker": case.biomarker,
                        "split": case.split, **case.info})  # fmt: skip
        print(f"{case.case_id}: {image.shape}, {m} mm slices")
    about = f"{ds.meta.get('description', src.name)}; re-sliced to {m} mm axial slabs (scripts/reslice_thick.py)"
    write_dataset_json(dst, get_task(ds.task), records, int(ds.meta.get("seed", 0)), {"description": about})


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
