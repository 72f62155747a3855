"""Lateral-ventricle dataset drawn from 16 real subjects' head label maps (the SynthSeg recipe).

Base anatomy: SynthSeg's training label maps (Billot et al. 2023, Apache-2.0), vendored in
segkit/data/assets/brains as uint8 codes of FreeSurfer labels (1 mm, cropped to the head). Per case:
the subject's lateral ventricles are grown or shrunk to a target ventricle ratio (ventricles take
over the nearest growable tissue, so they widen evenly), the map is resampled onto a random scanner
grid (orientation, spacing, thick slices, field of view, oblique) through a random affine plus
smooth deformation, and an image is drawn from it: a random Gaussian per tissue class (fully random
means, or T1/T2/FLAIR-like priors), partial-volume blur, bias field, gamma, noise. Train, val and
test hold different subjects. See data_cards/ventricle.md.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from segkit.data import synth
from segkit.data.msd import SPLITS, write_case, write_dataset_json
from segkit.errors import InputError
from segkit.io import voxel_volume_ml
from segkit.measure import measure
from segkit.tasks import TASKS

TASK = TASKS["ventricle"]
ASSETS = Path(__file__).parent / "assets" / "brains"
LV = (4, 43)  # FreeSurfer Left/Right-Lateral-Ventricle
WM = (2, 41)  # FreeSurfer Left/Right-Cerebral-White-Matter
BRAIN_MAX = 99  # FreeSurfer labels 1-99 are the brain; labels >= 500 are head tissues
# 136/137 and 163/164: thin (1-1.4 mL) structures along the ventricle walls in SynthSeg's maps. They
# are brain: as background they punched dark holes beside the ventricles of skull-stripped draws.
BRAIN_EXTRA = (136, 137, 163, 164)
# Ventricles widen into white matter and deep grey, never into cortex, cerebellum, brainstem or sulcal CSF.
NO_GROWTH = (3, 42, 7, 46, 8, 47, 15, 16, 24)
# Subjects held out of training: test and val span small, medium and large native ventricles.
SPLIT_SUBJECTS = {
    "test": ("subject_03", "subject_06", "subject_16"),
    "val": ("subject_10", "subject_11"),
}
# Right-hemisphere label -> its left twin: both halves of a structure share one intensity class.
PAIRS = {41: 2, 42: 3, 43: 4, 44: 5, 46: 7, 47: 8, 49: 10, 50: 11, 51: 12, 52: 13, 53: 17, 54: 18,
         57: 25, 58: 26, 60: 28, 62: 30, 137: 136, 164: 163}  # fmt: skip
TISSUE = {
    "csf": (4, 5, 14, 15, 24, 72),
    "wm": (2, 7, 16, 28, 85),
    "gm": (3, 8, 17, 18, 26),
    "deep": (10, 11, 12, 13),
}
CONTRASTS = ("random", "T1", "T2", "FLAIR")
P_CONTRAST = (0.4, 0.3, 0.15, 0.15)  # 40 % fully random: no contrast is special; T1 the commonest scan
INTENSITY = {  # relative tissue means per contrast: (low, high) of the draw
    "T1": {"csf": (0.05, 0.25), "gm": (0.38, 0.55), "wm": (0.68, 0.92), "deep": (0.50, 0.72)},
    "T2": {"csf": (0.80, 1.00), "gm": (0.42, 0.58), "wm": (0.25, 0.40), "deep": (0.32, 0.48)},
    "FLAIR": {"csf": (0.02, 0.12), "gm": (0.48, 0.66), "wm": (0.32, 0.46), "deep": (0.40, 0.55)},
}
# Target ventricle ratio per grade, clear of the thresholds (0.02, 0.04).
TARGETS = {"healthy": (0.004, 0.017), "moderate": (0.023, 0.037), "severe": (0.043, 0.075)}
MIN_SHRINK = 0.5  # a subject's ventricles are never shrunk below half their own volume
P_STRIPPED = 0.25  # share of skull-stripped images (head tissues removed)
P_CROP = 0.3  # share of fields of view that cut into the head
SEPTUM_HALF_WIDTH = (1.0, 2.0)  # mm: a tissue wall 2-4 mm thick where the two ventricles meet
BLUR_SIGMA = (0.4, 1.6)  # voxels: the scanner's point spread, from sharp to a soft low-resolution look
# Share of draws with tumour-like lesions (add_lesions). 0 in segkit's own recipe, so its pools and the shipped
# model's test split stay what they were; scripts/ventricle_pool_variant.py --lesions sets it for experiments.
P_LESION = 0.0
LESION_CORE, LESION_RIM, LESION_OEDEMA = 90, 91, 92  # codes <= BRAIN_MAX, unused by FreeSurfer's maps: brain
LESION_RADIUS_MM = (4.0, 18.0)


@functools.lru_cache(maxsize=1)
def subject_table() -> dict[str, Any]:
    """labels.json of the vendored maps: code -> FreeSurfer table and each subject's native ratio."""
    path = ASSETS / "labels.json"
    if not path.is_file():
        raise InputError(f"{path}: the vendored brain label maps are missing; reinstall segkit from its repository")
    return json.loads(path.read_text())


def subjects() -> list[str]:
    """Names of the vendored subjects."""
    return [r["subject"] for r in subject_table()["subjects"]]


def subject_split(name: str) -> str:
    """The split a subject's cases belong to."""
    return next((s for s, names in SPLIT_SUBJECTS.items() if name in names), "train")


@functools.lru_cache(maxsize=4)
def read_subject(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A subject's FreeSurfer label map (X, Y, Z) int16 at 1 mm and its affine."""
    img = nib.Nifti1Image.from_filename(str(ASSETS / f"{name}.nii.gz"))
    table = np.asarray(subject_table()["codes_to_freesurfer"], dtype=np.int16)
    return table[np.asarray(img.dataobj, dtype=np.uint8)], img.affine


def is_brain(fs: np.ndarray) -> np.ndarray:
    """Voxels of a FreeSurfer label map that belong to the brain (the denominator of the ratio)."""
    return ((fs > 0) & (fs <= BRAIN_MAX)) | np.isin(fs, BRAIN_EXTRA)


def resize_ventricles(fs: np.ndarray, target_voxels: int) -> np.ndarray:
    """Grow (into the nearest growable brain tissue) or shrink (from the wall) the lateral ventricles
    to exactly target_voxels voxels; the brain's own volume (labels 1-99) is unchanged."""
    lv = np.isin(fs, LV)
    n = int(lv.sum())
    if target_voxels == n or n == 0:
        return fs
    idx = np.argwhere(lv)
    lo = np.maximum(idx.min(axis=0) - 40, 0)
    hi = np.minimum(idx.max(axis=0) + 41, fs.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    sub, lvs = fs[box].copy(), lv[box]
    if target_voxels > n:
        dist, near = ndi.distance_transform_edt(~lvs, return_indices=True)
        grow = is_brain(sub) & ~lvs & ~np.isin(sub, NO_GROWTH)
        cand = np.flatnonzero(grow)
    else:
        tissue = is_brain(sub) & ~lvs  # the wall: brain tissue, never background
        dist, near = ndi.distance_transform_edt(~tissue, return_indices=True)
        cand = np.flatnonzero(lvs)
    order = cand[np.argsort(dist.ravel()[cand], kind="stable")][: abs(target_voxels - n)]
    src = tuple(near[k].ravel()[order] for k in range(3))
    sub.ravel()[order] = sub[src]  # the label of the nearest ventricle (grow) or tissue (shrink) voxel
    out = fs.copy()
    out[box] = sub
    return out


def carve_septum(fs: np.ndarray, half_width: float) -> np.ndarray:
    """Put a septum back between the left and right lateral ventricles.

    FreeSurfer's maps let labels 4 and 43 touch at the midline (and grown ventricles merge), so draws
    from them showed one fused cavity; a real scan shows a tissue wall (septum pellucidum, fornix)
    between the two. Ventricle voxels within half_width mm (1 mm voxels) of the other side's
    ventricle become that hemisphere's white matter, which then gets its own intensity.
    """
    left, right = fs == LV[0], fs == LV[1]
    if not (left.any() and right.any()):
        return fs
    idx = np.argwhere(left | right)
    lo, hi = np.maximum(idx.min(axis=0) - 2, 0), np.minimum(idx.max(axis=0) + 3, fs.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    sub = fs[box].copy()
    near_right = ndi.distance_transform_edt(sub != LV[1]) <= half_width
    near_left = ndi.distance_transform_edt(sub != LV[0]) <= half_width
    sub[(sub == LV[0]) & near_right] = WM[0]
    sub[(sub == LV[1]) & near_left] = WM[1]
    out = fs.copy()
    out[box] = sub
    return out


def add_lesions(rng: np.random.Generator, fs: np.ndarray) -> tuple[np.ndarray, int]:
    """1-3 tumour-like lesions painted into a 1 mm FreeSurfer label map, centred in cerebral white matter: an
    ellipsoid (radii LESION_RADIUS_MM) with a boundary roughened by smooth noise, half of them with a rim of their
    own (an enhancing ring around a necrotic core) and half with oedema around them in the white matter. Their codes
    are brain labels that the draw gives intensities of their own (random: dark or bright in any contrast), so the
    network sees masses in the brain that are not ventricle; they never take a ventricle voxel or leave the brain.
    Returns the new map and the number of lesions."""
    out = fs.copy()
    centres = np.flatnonzero(np.isin(fs, WM))  # C order, as np.argwhere lists them, at a third of its memory
    n = int(rng.integers(1, 4))
    for _ in range(n):
        centre = np.array(np.unravel_index(centres[int(rng.integers(len(centres)))], fs.shape))
        radii = rng.uniform(*LESION_RADIUS_MM, size=3)
        oedema = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.5 else 0.0
        rim = float(rng.uniform(0.15, 0.35)) if rng.random() < 0.5 else 0.0
        reach = int(np.ceil(radii.max() * (1.3 + oedema))) + 1
        lo, hi = np.maximum(centre - reach, 0), np.minimum(centre + reach + 1, fs.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        offsets = np.ogrid[tuple(slice(a, b) for a, b in zip(lo - centre, hi - centre, strict=True))]  # mm from centre
        shape = np.sqrt(sum((d / r) ** 2 for d, r in zip(offsets, radii, strict=True)))
        rough = ndi.gaussian_filter(rng.standard_normal(shape.shape), 3.0)
        shape = shape + 0.25 * rough / max(float(rough.std()), 1e-6)
        sub, host = out[box], fs[box]
        free = is_brain(host) & ~np.isin(host, LV)
        if oedema:
            sub[free & np.isin(host, WM) & (shape < 1.0 + oedema)] = LESION_OEDEMA
        sub[free & (shape < 1.0)] = LESION_RIM if rim else LESION_CORE
        if rim:
            sub[free & (shape < 1.0 - rim)] = LESION_CORE
    return out, n


def _classes(rng: np.random.Generator, contrast: str, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of every FreeSurfer label (indexed by label) for one draw."""
    top = int(table.max()) + 1
    mean, std = np.zeros(top, np.float32), np.zeros(top, np.float32)
    for lab in table:
        lab = int(lab)
        if lab == 0 or lab in PAIRS:
            continue
        tissue = next((t for t, labs in TISSUE.items() if lab in labs), None)
        if contrast != "random" and tissue is not None:
            mean[lab] = rng.uniform(*INTENSITY[contrast][tissue])
            std[lab] = rng.uniform(0.01, 0.05)
        else:  # random draw, or a head tissue whose look no contrast fixes
            mean[lab] = rng.uniform(0.0, 1.0)
            std[lab] = rng.uniform(0.0, 0.08)
    for right, left in PAIRS.items():
        if right < top:
            mean[right], std[right] = mean[left], std[left]
    # air outside the head is dark on almost every MR image; sometimes not (SynthSeg: anything goes)
    mean[0], std[0] = (rng.uniform(0.0, 0.05), 0.01) if rng.random() < 0.85 else (rng.uniform(0, 1), 0.05)
    return mean, std


def _grid(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> tuple[synth.Grid, int | None, float, str | None]:
    """Random orientation, spacing and a field of view around the head (world box lo..hi).

    Returns the grid, its thick-slice axis (or None), the slice thickness and which side of the
    head the field of view cuts into (e.g. "+z", None when the whole head is in view).
    """
    spacing, slice_axis = synth.random_spacing(rng, (0.9, 1.6), (3.0, 6.0), p_thick=0.3)
    axes = synth.SIGNED_PERMUTATIONS[int(rng.integers(len(synth.SIGNED_PERMUTATIONS)))]
    oblique = synth.rotation(rng, 12.0) if rng.random() < 0.3 else None
    lo, hi = lo - rng.uniform(2, 20, 3), hi + rng.uniform(2, 20, 3)
    cut_side = None
    if rng.random() < P_CROP:  # cut into the head on one side: top, neck, face, back or a side
        ax, side = int(rng.integers(3)), int(rng.integers(2))
        cut_side = ("-", "+")[side] + "xyz"[ax]
        cut = (hi[ax] - lo[ax]) * rng.uniform(0.08, 0.3)
        if side:
            hi[ax] -= cut
        else:
            lo[ax] += cut
    grid = synth.make_grid((lo + hi) / 2, hi - lo, spacing, axes, oblique)
    thickness = spacing[slice_axis] if slice_axis is not None else float(np.mean(spacing))
    return grid, slice_axis, thickness, cut_side


def draw_case(
    rng: np.random.Generator, subject: str, target_ratio: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """One synthetic scan of a subject: image (X, Y, Z) float32, label uint8, affine, record."""
    fs, src_affine = read_subject(subject)
    brain = int(is_brain(fs).sum())
    fs = resize_ventricles(fs, int(round(target_ratio * brain)))
    fs = carve_septum(fs, float(rng.uniform(*SEPTUM_HALF_WIDTH)))
    lesions = 0
    if P_LESION > 0 and rng.random() < P_LESION:  # no draw at all at 0: segkit's own recipe is unchanged
        fs, lesions = add_lesions(rng, fs)
    stripped = rng.random() < P_STRIPPED
    if stripped:
        fs = np.where(is_brain(fs), fs, 0).astype(np.int16)
    nz = np.argwhere(fs > 0)
    corners = src_affine[:3, :3] @ np.stack([nz.min(axis=0), nz.max(axis=0)]).T + src_affine[:3, 3:4]
    grid, slice_axis, thickness, cut_side = _grid(rng, corners.min(axis=1), corners.max(axis=1))
    m = 3 if slice_axis is not None else 1
    fine = synth.refine_axis(grid, slice_axis, m) if slice_axis is not None else grid
    brain_world = src_affine[:3, :3] @ np.argwhere(fs > 0).mean(axis=0) + src_affine[:3, 3]
    q = synth.random_warp(rng, synth.lattice_world(fine, step=3), brain_world, 15.0, (0.85, 1.15), 10.0, 3.0)
    vox = synth.upsample(synth.to_voxels(q, src_affine), fine.shape)
    lab_fs = synth.sample(fs[None].astype(np.float32), vox, mode="nearest", padding="zeros")[0].astype(np.int16)
    del vox
    contrast = str(rng.choice(CONTRASTS, p=P_CONTRAST))
    table = np.asarray(subject_table()["codes_to_freesurfer"])
    if lesions:
        table = np.concatenate([table, [LESION_CORE, LESION_RIM, LESION_OEDEMA]])
    mean, std = _classes(rng, contrast, table)
    img = mean[lab_fs] + std[lab_fs] * rng.standard_normal(lab_fs.shape, dtype=np.float32)
    img = synth.blur(img, float(rng.uniform(*BLUR_SIGMA)))  # partial volume: the scanner's point spread
    label = np.zeros(lab_fs.shape, dtype=np.uint8)
    label[is_brain(lab_fs)] = 1
    label[np.isin(lab_fs, LV)] = 2
    if slice_axis is not None:
        img, label = synth.slab_average(img, slice_axis, m), synth.slab_centre(label, slice_axis, m)
    img = _artefacts(rng, img)
    meas = measure(label, voxel_volume_ml(grid.affine), TASK)
    record = {
        "subject": subject,
        "grade": meas["biomarker"]["grade"],
        "biomarker": meas["biomarker"]["value"],
        "target_ratio": round(target_ratio, 5),
        "contrast": contrast,
        "skull_stripped": stripped,
        "fov_cut": cut_side,
        "spacing": [round(s, 3) for s in grid.spacing],
        "slice_thickness": round(thickness, 3),
        "orientation": synth.axcodes(grid.affine),
        "shape": list(grid.shape),
        "volumes_ml": meas["volumes_ml"],
    }
    if P_LESION > 0:
        record["lesions"] = lesions
    return img, label, grid.affine, record


def _artefacts(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Scanner effects: bias field, gamma, Rician noise, an arbitrary integer intensity scale."""
    img = img.clip(0.0, None) * synth.bias_field(rng, img.shape, strength=float(rng.uniform(0.0, 0.4)))
    img = img ** float(np.exp(rng.normal(0.0, 0.25)))
    img = synth.rician_noise(rng, img, float(rng.uniform(0.0, 0.05)))
    return np.round(img * float(rng.uniform(100.0, 2000.0))).astype(np.float32)


def plan_cases(cases: int, seed: int) -> list[dict[str, Any]]:
    """(case, split, subject, target ratio) per case: ~80/10/10 by held-out subjects, grades cycled."""
    rng = np.random.default_rng([seed, 1_000_003])
    native = {r["subject"]: r["ratio"] for r in subject_table()["subjects"]}
    n_small = max(1, int(round(cases * 0.1))) if cases >= 3 else 0
    splits = ["test"] * n_small + ["val"] * n_small
    splits += ["train"] * (cases - len(splits))
    plan: list[dict[str, Any]] = []
    for i, split in enumerate(splits):
        pool = [s for s in subjects() if subject_split(s) == split]
        k = sum(1 for p in plan if p["split"] == split) + SPLITS.index(split)  # tiny builds: every grade
        grade = TASK.grades[k % len(TASK.grades)]
        lo, hi = TARGETS[grade]
        ok = [s for s in pool if native[s] * MIN_SHRINK <= hi]  # a grade a subject can reach
        subject = ok[int(rng.integers(len(ok)))]
        ratio = float(rng.uniform(max(lo, native[subject] * MIN_SHRINK), hi))
        plan.append({"index": i, "split": split, "subject": subject, "target_ratio": ratio})
    return plan


def _write_one(args: tuple[Path, int, dict[str, Any]]) -> dict[str, Any]:
    out, seed, p = args
    rng = np.random.default_rng([seed, p["index"]])
    img, label, affine, record = draw_case(rng, p["subject"], p["target_ratio"])
    case = f"ventricle_{p['index']:03d}"
    write_case(out, case, img, label, affine)
    return {"case": case, "split": p["split"], **record}


def make_ventricle(out: Path, cases: int, seed: int, workers: int | None = None) -> Path:
    """Build the lateral-ventricle dataset (MSD layout, split by subject) in out; returns dataset.json."""
    out = Path(out)
    jobs = [(out, seed, p) for p in plan_cases(cases, seed)]
    records = synth.run_jobs(_write_one, jobs, workers)
    records.append(_real_val_case(out))
    extra = {
        "description": "images drawn from 16 real subjects' label maps (SynthSeg recipe), split by subject",
        "sources": sources(),
        "split_subjects": {
            s: sorted({r["subject"] for r in records if r["split"] == s}) for s in ("train", "val", "test")
        },
        "contrasts": list(CONTRASTS),
        "grade_targets": {g: list(r) for g, r in TARGETS.items()},
        "card": "data_cards/ventricle.md",
    }
    return write_dataset_json(out, TASK, records, seed, extra)


def _real_val_case(out: Path) -> dict[str, Any]:
    """One real T1 (FSL MNI152) in the val split: model selection sees a real image, not only draws.

    It is one of the three images of `segkit data make ventricle-real`; reports say so.
    """
    from segkit.data.ventricle_real import write_real_case

    return write_real_case(out, "mni152_fsl_t1_brain", "real_mni152_fsl_t1_brain", "val")


def sources() -> list[dict[str, str]]:
    """Provenance of the base anatomy."""
    t = subject_table()
    return [{"files": "segkit/data/assets/brains/subject_*.nii.gz", "source": t["source"], "licence": t["licence"]}]
