"""The shipped models on real scans of other patients (tests/data/pyradiomics, see data_cards/pyradiomics.md).

    .venv/bin/python scripts/patient_scans.py [--out runs/patient-scans] [--model RUN_OR_PT | --model-dir DIR]

Runs `segkit predict` as a user would (no --model: the shipped model picked by modality) on each scan and prints,
per scan, the grade, the volumes and the warnings; for lung2, whole-liver Dice (liver + cyst + tumour) against
its semi-automatic liver reference and how much of the mask lies outside it; for brain1 and brain2, lateral-
ventricle Dice against their semi-automatic ventricle references; lung2_above_liver, lung2's slices above its
liver (heart and lungs: any liver found there is false). Writes results.json and one <scan>_slices.png per scan
(up to 16 slices through the organ; with a reference, also the mask drawn outside it and the reference missed).
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


REFERENCES = {  # file suffix, the part of the mask it is compared with, and the figures
    "liver-cyst": ("_liver_reference.nii.gz", lambda m: m > 0, liver_figures),
    "ventricle": ("_ventricles_reference.nii.gz", lambda m: m == 2, ventricle_figures),
}


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
    from segkit.infer import predict_paths

    own_task = None
    if args.model:
        from segkit.checkpoint import load_checkpoint, resolve_model

        own_task = load_checkpoint(resolve_model(args.model).path)["config"]["task"]["name"]

    results = {}
    args.out.mkdir(parents=True, exist_ok=True)
    above = args.out / "lung2_above_liver.nii.gz"
    nib.save(nib.load(SCANS / "lung2.nii.gz").slicer[:, :, ABOVE_LIVER:], above)
    for scan in ("lung2", "lung2_above_liver", "brain1", "brain2"):
        src = above if scan == "lung2_above_liver" else SCANS / f"{scan}.nii.gz"
        task = "liver-cyst" if scan.startswith("lung") else "ventricle"
        (report,), failed = predict_paths(src, args.model if task == own_task else None, args.out)
        assert failed is None
        img = nib.load(src)
        image = np.asarray(img.dataobj, dtype=np.float32)
        mask = np.asarray(nib.load(args.out / report["mask"]).dataobj)
        row = {k: report[k] for k in ("grade", "probabilities", "volumes_ml", "warnings")}
        row["model"] = f"{report['model']['name']} ({report['model']['sha256']})"
        ref, part = None, None
        suffix, compared, figures = REFERENCES[report["task"]]
        if (SCANS / f"{scan}{suffix}").exists():
            ref, part = np.asarray(nib.load(SCANS / f"{scan}{suffix}").dataobj), compared(mask)
            row.update(figures(mask, ref, float(np.prod(img.header.get_zooms())) / 1000))
        labels = tuple(report["labels"][str(k)] for k in range(len(report["labels"])))
        window = CT_WINDOW if report["task"] == "liver-cyst" else (0.0, float(np.percentile(image, 99.5)))
        draw_slices(image, mask, ref, img.affine, labels, window, args.out / f"{scan}_slices.png", part)
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
