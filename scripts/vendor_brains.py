"""Vendor SynthSeg's 16 real head label maps into segkit/data/assets/brains (run once; output committed).

Each map is cropped to the head plus a 2-voxel margin (the affine moves with the crop, so world
positions are unchanged) and its FreeSurfer labels are stored as uint8 codes; labels.json holds the
code -> FreeSurfer label table. Usage: python scripts/vendor_brains.py [SOURCE_DIR]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/datasets/synthseg-label-maps"
OUT = ROOT / "segkit/data/assets/brains"


def main() -> None:
    files = sorted(SOURCE.glob("training_seg_*.nii.gz"))
    maps = {f: np.rint(np.asarray(nib.load(str(f)).dataobj)).astype(np.int32) for f in files}
    table = sorted({int(v) for m in maps.values() for v in np.unique(m)})
    assert table[0] == 0 and len(table) < 256, table
    code = np.zeros(max(table) + 1, dtype=np.uint8)
    code[table] = np.arange(len(table), dtype=np.uint8)
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for f, m in maps.items():
        src = nib.load(str(f))
        nz = np.argwhere(m > 0)
        lo, hi = np.maximum(nz.min(axis=0) - 2, 0), np.minimum(nz.max(axis=0) + 3, m.shape)
        crop = code[m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]]
        affine = src.affine.copy()
        affine[:3, 3] += affine[:3, :3] @ lo
        name = "subject_" + f.name.split("_")[-1].split(".")[0]
        img = nib.Nifti1Image(crop, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        nib.save(img, str(OUT / f"{name}.nii.gz"))
        lv = int(np.isin(m, (4, 43)).sum())
        brain = int(((m > 0) & (m < 100)).sum())
        rows.append({"subject": name, "source": f.name, "lateral_ventricles_ml": lv / 1000, "brain_ml": brain / 1000,
                     "ratio": round(lv / brain, 4)})  # fmt: skip
    meta = {
        "codes_to_freesurfer": table,
        "subjects": rows,
        "spacing_mm": 1.0,
        "source": "github.com/BBillot/SynthSeg data/training_label_maps (commit 66342c1f05e5)",
        "licence": "Apache-2.0 (LICENSE.txt beside this file); SynthSeg, Billot et al., Medical Image Analysis 2023",
    }
    (OUT / "labels.json").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.copy(SOURCE / "LICENSE.txt", OUT / "LICENSE.txt")
    print(f"wrote {len(rows)} subjects to {OUT}")


if __name__ == "__main__":
    main()
