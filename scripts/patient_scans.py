"""The shipped models on real scans of other patients (tests/data/pyradiomics, see data_cards/pyradiomics.md).

    .venv/bin/python scripts/patient_scans.py [--out runs/patient-scans] [--model RUN_OR_PT | --model-dir DIR]

Runs `segkit predict` as a user would (no --model: the shipped model picked by modality) on each scan and prints,
per scan, the grade, the volumes and the warnings; for lung2, whole-liver Dice (liver + cyst + tumour) against
its semi-automatic liver reference and how much of the mask lies outside it; lung2_above_liver, lung2's slices
above its liver (heart and lungs: any liver found there is false). Writes results.json and one <scan>_slices.png
per scan (up to 16 slices through the organ; the reference dashed red, the mask in colour).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCANS = ROOT / "tests" / "data" / "pyradiomics"
ABOVE_LIVER = 19  # lung2 slices 19-34: heart and lungs (its liver reference ends at 17; 18 holds the vena cava)


def liver_figures(mask: np.ndarray, ref: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Whole-liver Dice against the reference, and the mask's volumes inside and outside it."""
    organ, ref = mask > 0, ref > 0
    return {
        "dice_whole_liver": round(float(2 * (organ & ref).sum() / (organ.sum() + ref.sum())), 4),
        "reference_ml": round(float(ref.sum() * voxel_ml), 1),
        "mask_ml": round(float(organ.sum() * voxel_ml), 1),
        "mask_outside_reference_ml": round(float((organ & ~ref).sum() * voxel_ml), 1),
        "reference_missed_ml": round(float((ref & ~organ).sum() * voxel_ml), 1),
        "lesion_outside_reference_ml": round(float(((mask >= 2) & ~ref).sum() * voxel_ml), 2),
    }


def _axial(a: np.ndarray, z: int) -> np.ndarray:
    """Slice z of a RAS-ordered array as shown: rows run anterior to posterior, columns patient's right to left."""
    return a[:, :, z].T[::-1, ::-1]


def draw_slices(image: np.ndarray, mask: np.ndarray, ref: np.ndarray | None, out: Path, window: tuple) -> None:
    """A grid of up to 16 axial slices through the organ (arrays in RAS order), shown as radiologists do: anterior
    up, the patient's right on the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = ["#ffd23f", "#00c8ff", "#ff3030"]
    held = (mask > 0) | (ref > 0) if ref is not None else mask > 0
    zs = [z for z in range(image.shape[2]) if held[:, :, z].any()] or [image.shape[2] // 2]
    zs = zs[:: max(1, -(-len(zs) // 16))]
    cols = 4
    fig, axes = plt.subplots((len(zs) + cols - 1) // cols, cols, figsize=(4 * cols, 4 * ((len(zs) + cols - 1) // cols)))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, z in zip(np.ravel(axes), zs, strict=False):
        ax.imshow(np.clip(_axial(image, z), *window), cmap="gray")
        for label, colour in enumerate(colours, start=1):
            if (mask[:, :, z] == label).any():
                ax.contour(_axial(mask == label, z), [0.5], colors=colour, linewidths=0.8)
        if ref is not None and ref[:, :, z].any():
            ax.contour(_axial(ref, z), [0.5], colors="red", linewidths=0.8, linestyles="dashed")
        ax.set_title(f"slice {z}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=60)
    plt.close(fig)


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
        from segkit.checkpoint import load_checkpoint

        pt = args.model / "best.pt" if args.model.is_dir() else args.model
        own_task = load_checkpoint(pt)["config"]["task"]["name"]

    results = {}
    args.out.mkdir(parents=True, exist_ok=True)
    above = args.out / "lung2_above_liver.nii.gz"
    nib.save(nib.load(SCANS / "lung2.nii.gz").slicer[:, :, ABOVE_LIVER:], above)
    for scan in ("lung2", "lung2_above_liver", "brain1", "brain2"):
        src = above if scan == "lung2_above_liver" else SCANS / f"{scan}.nii.gz"
        task = "liver-cyst" if scan.startswith("lung") else "ventricle"
        (report,), failed = predict_paths(src, args.model if task == own_task else None, args.out)
        assert failed is None
        img = nib.as_closest_canonical(nib.load(src))  # RAS order for drawing; figures do not depend on it
        image = np.asarray(img.dataobj, dtype=np.float32)
        mask = np.asarray(nib.as_closest_canonical(nib.load(args.out / report["mask"])).dataobj)
        row = {k: report[k] for k in ("grade", "probabilities", "volumes_ml", "warnings")}
        row["model"] = f"{report['model']['name']} ({report['model']['sha256'][:16]})"
        ref = None
        if (SCANS / f"{scan}_liver_reference.nii.gz").exists():
            ref = np.asarray(nib.as_closest_canonical(nib.load(SCANS / f"{scan}_liver_reference.nii.gz")).dataobj)
            row.update(liver_figures(mask, ref, float(np.prod(img.header.get_zooms())) / 1000))
        window = (-160.0, 240.0) if report["task"] == "liver-cyst" else (0.0, float(np.percentile(image, 99.5)))
        draw_slices(image, mask, ref, args.out / f"{scan}_slices.png", window)
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
