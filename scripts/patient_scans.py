"""The shipped models on real scans of other patients (tests/data/pyradiomics and tests/data/totalsegmentator, see
data_cards/pyradiomics.md and data_cards/totalsegmentator.md).

    .venv/bin/python scripts/patient_scans.py [--out runs/patient-scans] [--model RUN_OR_PT | --model-dir DIR]

Runs `segkit predict` as a user would (no --model: the shipped model picked by modality) on each scan and prints,
per scan, the grade, the volumes and the warnings; for lung2, abdomen_ct and dicom_ct (a DICOM series folder),
whole-liver Dice (liver + cyst + tumour) against their liver references and how much of the mask lies outside
them; for brain1 and brain2, lateral-ventricle Dice against their semi-automatic ventricle references;
lung2_above_liver, lung2's slices above its liver (heart and lungs: any liver found there is false); abdomen_mr,
an abdominal MRI (no head: the ventricle model must not grade it). A reference on a grid of its own (abdomen_ct's
covers its top 30 slices; dicom_ct's is on the grid TotalSegmentator read the series to) is compared on the mask's
grid, in world coordinates, where it covers the scan. Writes results.json and one <scan>_slices.png per scan (up
to 16 slices through the organ; with a reference, also the mask drawn outside it and the reference missed).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from segkit.data.show import CT_WINDOW

ROOT = Path(__file__).resolve().parents[1]
SCANS = ROOT / "tests" / "data" / "pyradiomics"
TOTALSEG = ROOT / "tests" / "data" / "totalsegmentator"
ABOVE_LIVER = 19  # lung2 slices 19-34: heart and lungs (its liver reference ends at 17; 18 holds the vena cava)


def against_reference(part: np.ndarray, ref: np.ndarray, voxel_ml: float, name: str, digits: int) -> dict[str, float]:
    """Dice of the mask's part (a boolean array) against the reference, named dice_<name>, and the volumes (mL,
    `digits` decimals) of both, of the part outside the reference and of the reference it missed."""
    ref = ref > 0
    return {
        f"dice_{name}": round(float(2 * (part & ref).sum() / (part.sum() + ref.sum())), 4),
        "reference_ml": round(float(ref.sum() * voxel_ml), digits),
        "mask_ml": round(float(part.sum() * voxel_ml), digits),
        "mask_outside_reference_ml": round(float((part & ~ref).sum() * voxel_ml), digits),
        "reference_missed_ml": round(float((ref & ~part).sum() * voxel_ml), digits),
    }


def liver_figures(mask: np.ndarray, ref: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Whole-liver Dice against the reference, the mask's volumes inside and outside it, and its lesions outside."""
    out = against_reference(mask > 0, ref, voxel_ml, "whole_liver", 1)
    out["lesion_outside_reference_ml"] = round(float(((mask >= 2) & (ref == 0)).sum() * voxel_ml), 2)
    return out


def ventricle_figures(mask: np.ndarray, ref: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Lateral-ventricle (label 2) Dice against the reference, and the mask's ventricle inside and outside it."""
    return against_reference(mask == 2, ref, voxel_ml, "lateral_ventricles", 2)


REFERENCES = {  # the part of the mask a task's reference is compared with, and the figures
    "liver-cyst": (lambda m: m > 0, liver_figures),
    "ventricle": (lambda m: m == 2, ventricle_figures),
}
# scan -> (input: a NIfTI file or a DICOM series folder, its reference or None); lung2_above_liver is cut from lung2
PATIENT_SCANS = {
    "lung2": (SCANS / "lung2.nii.gz", SCANS / "lung2_liver_reference.nii.gz"),
    "lung2_above_liver": (None, None),
    "abdomen_ct": (TOTALSEG / "abdomen_ct.nii.gz", TOTALSEG / "abdomen_ct_liver_reference.nii.gz"),
    "dicom_ct": (TOTALSEG / "dicom_ct", TOTALSEG / "dicom_ct_liver_reference.nii.gz"),
    "abdomen_mr": (TOTALSEG / "abdomen_mr.nii.gz", None),
    "brain1": (SCANS / "brain1.nii.gz", SCANS / "brain1_ventricles_reference.nii.gz"),
    "brain2": (SCANS / "brain2.nii.gz", SCANS / "brain2_ventricles_reference.nii.gz"),
}
NOT_COVERED = 255  # a reference resampled onto a mask's grid: voxels outside the reference's own grid


def reference_on(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """A 0/1 reference on a mask's grid (shape, affine), taken in world coordinates (nearest voxel), with
    NOT_COVERED where the mask's voxels lie outside the reference's own grid; on the same grid, unchanged."""
    from nibabel.processing import resample_from_to

    ref = nib.load(path)
    if ref.shape == tuple(shape) and np.allclose(ref.affine, affine, atol=1e-4):
        return np.asarray(ref.dataobj, dtype=np.uint8)
    return np.asarray(resample_from_to(ref, (shape, affine), order=0, cval=NOT_COVERED).dataobj, dtype=np.uint8)


def compare(mask: np.ndarray, ref: np.ndarray, task: str, voxel_ml: float) -> dict[str, float]:
    """The task's figures of a mask against a reference on its grid, where the reference covers the scan."""
    covered = ref != NOT_COVERED
    compared, figures = REFERENCES[task]
    row = figures(np.where(covered, mask, 0), np.where(covered, ref, 0), voxel_ml)
    if not covered.all():  # what the mask draws where the reference has nothing to say
        row["mask_where_no_reference_ml"] = round(float((compared(mask) & ~covered).sum() * voxel_ml), 1)
    return row


def draw_slices(
    image: np.ndarray, mask: np.ndarray, ref: np.ndarray | None, affine: np.ndarray, labels: tuple[str, ...],
    window: tuple[float, float], out: Path, part: np.ndarray | None = None,
) -> None:  # fmt: skip
    """Up to 16 axial slices through the organ, drawn as predict's overlays are (segkit.render: patient's right
    on the left, orientation letters). With a reference, the slices holding it or the mask's `part` compared
    with it (default: all of the mask), and that part drawn outside it and the reference it missed get labels
    of their own."""
    from segkit.render import compose, label_color, label_key, render_view, slice_view, tile_grid, to_ras

    img, zooms = to_ras(image, affine)
    msk, _ = to_ras(mask, affine)
    if ref is not None:
        on_ref, _ = to_ras(ref, affine)
        inside, _ = to_ras((mask > 0) if part is None else part, affine)
        msk = msk.copy()
        msk[(inside > 0) & (on_ref == 0)] = len(labels)
        msk[(inside == 0) & (on_ref > 0)] = len(labels) + 1
        labels = (*labels, "outside the reference", "reference missed")
    shown = msk if ref is None else (inside > 0) | (on_ref > 0)  # with a reference: the slices compared
    zs = [z for z in range(msk.shape[2]) if shown[:, :, z].any()] or [msk.shape[2] // 2]
    zs = zs[:: max(1, -(-len(zs) // 16))]
    colors = [label_color(k) for k in range(len(labels))]
    tiles = [
        np.asarray(compose([render_view(slice_view("axial", img[:, :, z], msk[:, :, z], zooms), window, colors,
                                        size=240)], [f"slice {z}"], "", []))
        for z in zs
    ]  # fmt: skip
    sheet = compose([tile_grid(tiles, per_row=4)], [""], out.stem, label_key(labels))
    sheet.save(out, format="PNG")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "patient-scans")
    parser.add_argument("--model-dir", help="SEGKIT_WEIGHTS_DIR: a folder of shipped-model files to try instead")
    parser.add_argument("--model", type=Path, help="a run folder or .pt to try on the scans of its task instead")
    args = parser.parse_args()
    if args.model_dir:
        os.environ["SEGKIT_WEIGHTS_DIR"] = args.model_dir
    from segkit.infer import predict_paths, read_input, shipped_model_for

    own_task = None
    if args.model:
        from segkit.checkpoint import load_checkpoint, resolve_model

        own_task = load_checkpoint(resolve_model(args.model).path)["config"]["task"]["name"]

    results = {}
    args.out.mkdir(parents=True, exist_ok=True)
    above = args.out / "lung2_above_liver.nii.gz"
    nib.save(nib.load(SCANS / "lung2.nii.gz").slicer[:, :, ABOVE_LIVER:], above)
    for scan, (src, ref_path) in PATIENT_SCANS.items():
        src = src or above
        vol = read_input(src)
        task = shipped_model_for(vol.data)
        (report,), failed = predict_paths(src, args.model if task == own_task else None, args.out)
        assert failed is None
        mask_img = nib.load(args.out / report["mask"])
        mask = np.asarray(mask_img.dataobj)
        row = {k: report[k] for k in ("grade", "probabilities", "volumes_ml", "warnings")}
        row["model"] = f"{report['model']['name']} ({report['model']['sha256']})"
        ref, part = None, None
        if ref_path is not None:
            ref = reference_on(ref_path, mask.shape, mask_img.affine)
            row.update(compare(mask, ref, report["task"], vol.voxel_ml))
            covered = ref != NOT_COVERED  # the sheet shows the slices compared, and only where compared
            part, ref = REFERENCES[report["task"]][0](mask) & covered, np.where(covered, ref, 0)
        labels = tuple(report["labels"][str(k)] for k in range(len(report["labels"])))
        image = vol.data.astype(np.float32)
        window = CT_WINDOW if report["task"] == "liver-cyst" else (0.0, float(np.percentile(image, 99.5)))
        draw_slices(image, mask, ref, vol.affine, labels, window, args.out / f"{scan}_slices.png", part)
        results[scan] = row
        shown = {k: v for k, v in row.items() if k != "warnings"}
        print(f"{scan}: {json.dumps(shown)}")
        for w in row["warnings"]:
            if "(preview)" not in w:  # the model's standing limits, the same on every scan
                print(f"  warning: {w}")
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}/results.json and {args.out}/<scan>_slices.png")


if __name__ == "__main__":
    main()
