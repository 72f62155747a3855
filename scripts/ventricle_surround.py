"""How much a ventricle model's masks depend on what lies around the brain (skull, scalp, neck, air).

    .venv/bin/python scripts/ventricle_surround.py [--model ventricle] [--data DIR [--split test]] [--out DIR]
        [--set eval.KEY=VALUE ...]

Predicts each scan as it is, then twice more with everything further than 1.6 mm outside the model's own
brain mask (brain + ventricles of that first prediction) replaced: by the image's minimum ("stripped", as a
skull-stripped scan) and by the median intensity inside the brain mask ("flat": no edges and no contrast
around the brain). Prints lateral-ventricle Dice per variant for PyRadiomics' brain1 and brain2 against their
semi-automatic references (tests/data/pyradiomics) and, with --data, the mean over a split of an MSD ventricle
dataset (`segkit evaluate` on the scans as they are, then on the two variants, written beside them in --out).
--set passes inference settings to every prediction (`--set eval.strip_to_organ=false`: one pass, as the shipped
model predicted before 2026-11-28). A diagnostic for issue #9: on 2026-11-28, in one pass, the flat surround
lifted the two patients' Dice from 0.24 / 0.30 to 0.63 / 0.69 and lowered the unseen-subject draws' (README); the
stripped one became the shipped model's second pass (eval.strip_to_organ).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from segkit.transforms import beyond_margin

ROOT = Path(__file__).resolve().parents[1]
SCANS = ROOT / "tests" / "data" / "pyradiomics"
VARIANTS = ("stripped", "flat")


def surround(image: np.ndarray, brain: np.ndarray, zooms: tuple[float, ...], how: str) -> np.ndarray:
    """image with every voxel further than STRIP_MARGIN_MM outside `brain` set to the image's minimum (stripped) or
    to the median inside `brain` (flat)."""
    fill = float(image.min()) if how == "stripped" else float(np.median(image[brain]))
    return np.where(beyond_margin(brain, zooms), np.float32(fill), image).astype(np.float32)


def write_variant(src: Path, mask: Path, dst: Path, how: str) -> None:
    """The scan at src, its surround replaced as `how` says, written to dst with src's header."""
    img = nib.load(src)
    brain = np.asarray(nib.load(mask).dataobj) > 0
    data = surround(np.asarray(img.dataobj, dtype=np.float32), brain, img.header.get_zooms()[:3], how)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), dst)


def patients(model: str, out: Path, settings: list[str]) -> dict[str, dict[str, float]]:
    """Lateral-ventricle Dice of brain1 and brain2 as they are and in each variant."""
    from patient_scans import ventricle_figures  # scripts/, this script's own folder, is first on sys.path

    from segkit.infer import predict_paths

    def predict(src: Path, folder: Path) -> Path:
        (report,), failed = predict_paths(src, model, folder, settings=settings)
        if failed is not None:
            raise SystemExit(f"{src}: {failed}")
        return folder / report["mask"]

    results: dict[str, dict[str, float]] = {}
    for name in ("brain1", "brain2"):
        ref = nib.load(SCANS / f"{name}_ventricles_reference.nii.gz")
        voxel_ml = float(np.prod(ref.header.get_zooms()[:3])) / 1000
        masks = {"as it is": predict(SCANS / f"{name}.nii.gz", out / "patients" / "as_it_is")}
        for how in VARIANTS:
            src = out / "patients" / f"{name}_{how}.nii.gz"
            write_variant(SCANS / f"{name}.nii.gz", masks["as it is"], src, how)
            masks[how] = predict(src, out / "patients" / how)
        results[name] = {
            how: ventricle_figures(np.asarray(nib.load(m).dataobj), np.asarray(ref.dataobj), voxel_ml)[
                "dice_lateral_ventricles"
            ]
            for how, m in masks.items()
        }
    return results


def evaluate(model: str, data: Path, split: str, out: Path, settings: list[str]) -> float:
    """Mean lateral-ventricle Dice of `segkit evaluate` on one dataset's split (its masks in out/predictions)."""
    cmd = [sys.executable, "-m", "segkit.cli", "evaluate", "--model", model, "--data", str(data), "--split", split]
    sets = [x for setting in settings for x in ("--set", setting)]
    subprocess.run([*cmd, *sets, "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return float(json.loads((out / "report.json").read_text())["segmentation"]["lateral_ventricles"]["dice"]["mean"])


def dataset(model: str, data: Path, split: str, out: Path, settings: list[str]) -> dict[str, float]:
    """Mean lateral-ventricle Dice over a split as it is and in each variant (the variants' other splits are links
    to the originals: only the split's images are rewritten)."""
    results = {"as it is": evaluate(model, data, split, out / "as_it_is", settings)}
    records = json.loads((data / "dataset.json").read_text())["training"]
    for how in VARIANTS:
        root = out / f"data_{how}"
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        if not (root / "labelsTr").exists():
            os.symlink((data / "labelsTr").resolve(), root / "labelsTr")
        (root / "dataset.json").write_text((data / "dataset.json").read_text())
        for r in records:
            src, dst = data / r["image"], root / r["image"]
            if r.get("split") == split:
                write_variant(src, out / "as_it_is" / "predictions" / f"{r['case']}_mask.nii.gz", dst, how)
            elif not dst.exists():
                os.symlink(src.resolve(), dst)
        results[how] = evaluate(model, root, split, out / how, settings)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ventricle", help="shipped model name, run folder or .pt")
    ap.add_argument("--data", type=Path, help="an MSD ventricle dataset to measure too")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", type=Path, default=Path("/tmp/ventricle-surround"))
    ap.add_argument("--set", action="append", default=[], help="eval.KEY=VALUE for every prediction")
    a = ap.parse_args()
    for name, row in patients(a.model, a.out, a.set).items():
        print(f"{name}: lateral-ventricle Dice " + ", ".join(f"{how} {d:.3f}" for how, d in row.items()))
    if a.data:
        row = dataset(a.model, a.data, a.split, a.out / a.data.name, a.set)
        print(f"{a.data} ({a.split}): mean lateral-ventricle Dice " + ", ".join(f"{h} {d:.3f}" for h, d in row.items()))


if __name__ == "__main__":
    main()
