"""Where a ventricle model's lateral-ventricle errors are: volumes, false positives near and far, the
atlas's choroid plexus, what the model grid allows, and what a decision threshold would change.

Run:  .venv/bin/python scripts/ventricle_errors.py DATA_DIR PREDICTIONS_DIR [--split test] [--sweep MODEL]

DATA_DIR is an MSD dataset (`segkit data make ventricle-real`, `segkit data make ventricle`);
PREDICTIONS_DIR holds `<case>_mask.nii.gz` from `segkit evaluate` (its `predictions/` folder).
Prints per case: reference and predicted ventricle volume, false positive (all, and more than 2 mm
from the reference), false negative, Dice; for the real templates also the false positive inside the
Desikan-Killiany choroid plexus labels (31/63, dilated by one voxel), which the reference leaves out;
and the brain label (brain + ventricles) predicted more than 5 and 10 mm outside the reference brain
(on the real head, mni152_fsl_t1_head_2mm: tissue outside the skull labelled brain would show here).
For the real templates also where each boundary lies on the image's CSF-to-white-matter intensity scale
(0: the median of the reference's core, 1: the median of the atlas's cerebral white matter, 2/41): a
partial-volume voxel that is mostly CSF lies below 0.5, so a boundary well below 0.5 marks a reference
that keeps only near-pure CSF, and false positives below 0.5 are voxels that are mostly CSF.
Then the ceiling of the model grid: a perfect network on the configured spacing (and finer ones),
i.e. the reference taken to the grid (nearest) and back through segkit's own inverse.
--sweep MODEL: predicts every case again (`--model` names: ventricle, a run folder) and prints the mean
Dice when the ventricle probability is scaled by 0.5-1.25 before the argmax (a decision threshold).
A diagnostic for issue #9, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from segkit.data.msd import read_dataset
from segkit.data.ventricle_real import IMAGES as REAL_IMAGES
from segkit.data.ventricle_real import _atlas_on
from segkit.io import read_volume
from segkit.transforms import plan_grid, preprocess_label, probs_to_mask

LV = 2
CHOROID = (31, 63)
WHITE_MATTER = (2, 41)  # Desikan-Killiany (FreeSurfer aseg) left/right cerebral white matter
SCALES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def errors(case: str, ref: np.ndarray, pred: np.ndarray, affine: np.ndarray, atlas: np.ndarray | None) -> str:
    """One line: volumes, false positives near and far, false negatives, Dice (and, given the real templates'
    atlas on the case's grid, the choroid plexus share)."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    ml = float(np.prod(zooms)) / 1000
    fp, fn = pred & ~ref, ref & ~pred
    far = fp & (ndi.distance_transform_edt(~ref, sampling=zooms) > 2)
    line = (
        f"{case}: reference {ref.sum() * ml:.1f} mL, predicted {pred.sum() * ml:.1f} mL, false positive "
        f"{fp.sum() * ml:.1f} mL ({far.sum() * ml:.1f} > 2 mm away), false negative {fn.sum() * ml:.1f} mL, "
        f"Dice {dice(ref, pred):.3f}"
    )
    if atlas is not None:
        plexus = ndi.binary_dilation(np.isin(atlas, CHOROID), iterations=1)
        line += f"; false positive in the atlas's choroid plexus (+1 voxel) {(fp & plexus).sum() * ml:.1f} mL"
    return line


def outside_brain(case: str, ref: np.ndarray, pred: np.ndarray, affine: np.ndarray) -> str:
    """One line: the brain label (any foreground) predicted more than 5 and 10 mm from the reference brain."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    ml = float(np.prod(zooms)) / 1000
    away = ndi.distance_transform_edt(~ref, sampling=zooms)
    return (
        f"{case}: brain label outside the reference brain {(pred & ~ref).sum() * ml:.1f} mL, "
        f"{(pred & (away > 5)).sum() * ml:.1f} mL > 5 mm away, {(pred & (away > 10)).sum() * ml:.1f} mL > 10 mm away"
    )


def contrast_scale(case: str, image: np.ndarray, ref: np.ndarray, pred: np.ndarray, atlas: np.ndarray) -> str:
    """One line: the reference's and the prediction's boundary voxels and the false positives, as medians on
    the CSF (0) to white matter (1) intensity scale, and the share of false positives below its midpoint."""
    csf = float(np.median(image[ndi.binary_erosion(ref, iterations=2)]))
    wm = float(np.median(image[np.isin(atlas, WHITE_MATTER)]))

    def position(m: np.ndarray) -> float:
        return (float(np.median(image[m])) - csf) / (wm - csf) if m.any() else float("nan")

    fp = pred & ~ref
    ref_edge, pred_edge = ref & ~ndi.binary_erosion(ref), pred & ~ndi.binary_erosion(pred)
    below = float((image[fp] < (csf + wm) / 2).mean()) if fp.any() else float("nan")
    return (
        f"{case}: on the CSF (0) to white matter (1) scale the reference boundary lies at "
        f"{position(ref_edge):.2f}, the predicted at {position(pred_edge):.2f}; "
        f"false positives at {position(fp):.2f}, {below:.0%} of them mostly CSF (below 0.5)"
    )


def grid_ceiling(label: np.ndarray, affine: np.ndarray, pre, spacing: float) -> float:
    """Dice of a perfect network on a grid of this spacing, after segkit's inverse to the input grid."""
    grid = plan_grid(label.shape, affine, dataclasses.replace(pre, spacing=(spacing,) * 3))
    on_grid = preprocess_label(label, grid)
    onehot = np.stack([(on_grid == k).astype(np.float32) for k in range(int(label.max()) + 1)])
    return dice(probs_to_mask(onehot, grid) == LV, label == LV)


def sweep(model: str, cases: list) -> None:
    """Mean lateral-ventricle Dice with the ventricle probability scaled before the argmax."""
    from segkit.forward import predict_preprocessed
    from segkit.infer import load_model
    from segkit.postprocess import apply_rules
    from segkit.transforms import preprocess_image

    net, cfg, _ = load_model(model, "cpu")
    rows = []
    for c in cases:
        img, ref = read_volume(c.image), np.asarray(read_volume(c.label, "label").data) == LV
        pre, grid = preprocess_image(img.data, img.affine, cfg)
        probs = predict_preprocessed(net, pre, cfg)[0]
        row = []
        for s in SCALES:
            scaled = probs.copy()
            scaled[LV] *= s
            row.append(dice(apply_rules(probs_to_mask(scaled, grid), cfg.eval.keep_components) == LV, ref))
        rows.append(row)
        print(f"{c.case_id}: " + ", ".join(f"x{s} {d:.3f}" for s, d in zip(SCALES, row, strict=True)), flush=True)
    print("mean: " + ", ".join(f"x{s} {d:.4f}" for s, d in zip(SCALES, np.mean(rows, 0), strict=True)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("predictions", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--sweep", metavar="MODEL", help="also sweep a decision threshold with this model")
    args = ap.parse_args()
    from segkit.config import load_config

    pre = load_config(Path(__file__).resolve().parents[1] / "configs" / "ventricle.yaml").preprocess
    ds = read_dataset(args.data)
    cases = ds.split(args.split)
    ceilings = []
    for c in cases:
        lab_img = nib.load(str(c.label))
        label = np.asarray(lab_img.dataobj).astype(np.uint8)
        pred_path = args.predictions / f"{c.case_id}_mask.nii.gz"
        if pred_path.is_file():
            pred_label = np.asarray(nib.load(str(pred_path)).dataobj)
            atlas = _atlas_on(label.shape, lab_img.affine) if c.case_id in REAL_IMAGES else None  # resampled once
            print(errors(c.case_id, label == LV, pred_label == LV, lab_img.affine, atlas))
            print(outside_brain(c.case_id, label > 0, pred_label > 0, lab_img.affine))
            if atlas is not None:
                image = np.asarray(nib.load(str(c.image)).dataobj, dtype=np.float32)
                print(contrast_scale(c.case_id, image, label == LV, pred_label == LV, atlas))
        ceilings.append([grid_ceiling(label, lab_img.affine, pre, s) for s in (pre.spacing[0], 1.25, 1.0)])
    spacings = (pre.spacing[0], 1.25, 1.0)
    print(
        "perfect network on the model grid, mean Dice: "
        + ", ".join(f"{s} mm {d:.3f}" for s, d in zip(spacings, np.mean(ceilings, 0), strict=True))
    )
    if args.sweep:
        sweep(args.sweep, cases)


if __name__ == "__main__":
    main()
