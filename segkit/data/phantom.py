"""Procedural phantoms (seeded, tiny, fast): the test datasets for both tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segkit.data.msd import check_new_dataset_dir, write_case, write_dataset_json
from segkit.measure import biomarker_value, grade_from_biomarker, label_volumes_ml
from segkit.tasks import get_task


def _ellipsoid(shape: tuple[int, int, int], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return (((grid - centre) / radii) ** 2).sum(-1) <= 1.0


def _ventricle_case(shape: tuple[int, int, int], k: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    s = np.array(shape, dtype=float)
    centre = s / 2 + rng.uniform(-1, 1, 3)
    brain = _ellipsoid(shape, centre, s * rng.uniform(0.36, 0.42, 3))
    vent = np.zeros(shape, bool)
    for side in (-1, 1):
        c = centre + np.array([side * s[0] * 0.1, 0, 0])
        vent |= _ellipsoid(shape, c, s * np.array([0.07, 0.2, 0.12]) * k)
    vent &= brain
    label = brain.astype(np.uint8) + vent
    image = np.where(vent, 0.2, np.where(brain, 0.8, 0.05)) + rng.normal(0, 0.05, shape)
    return image.astype(np.float32), label


def _liver_case(shape: tuple[int, int, int], r: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    s = np.array(shape, dtype=float)
    centre = s / 2 + rng.uniform(-1, 1, 3)
    liver = _ellipsoid(shape, centre, s * rng.uniform(0.32, 0.4, 3))
    label = liver.astype(np.uint8)
    if r > 0.02:
        cyst = _ellipsoid(shape, centre + s * np.array([0.08, 0.05, 0]), s * r * np.array([1, 1, 0.8]))
        label[cyst & liver] = 2
    tumour = _ellipsoid(shape, centre - s * np.array([0.15, 0.1, 0]), s * 0.06)
    label[tumour & (label == 1)] = 3
    hu = np.array([-80.0, 110.0, 10.0, 60.0])
    image = hu[label] + rng.normal(0, 8, shape)
    return image.astype(np.float32), label


def _affine(spacing: tuple[float, float, float], lps: bool) -> np.ndarray:
    aff = np.diag([*spacing, 1.0])
    if lps:
        aff[0, 0], aff[1, 1] = -spacing[0], -spacing[1]
    return aff


def make_phantom(
    task: str, out: Path, cases: int = 12, seed: int = 0, shape: tuple[int, int, int] = (40, 40, 24)
) -> Path:
    """Write a tiny MSD dataset of ellipsoid phantoms with balanced grades."""
    check_new_dataset_dir(out)
    spec = get_task(task)
    rng = np.random.default_rng(seed)
    maker = _ventricle_case if task == "ventricle" else _liver_case
    spacing = (4.0, 4.0, 6.0) if task == "ventricle" else (6.0, 6.0, 8.0)
    voxel_ml = float(np.prod(spacing)) / 1000
    t = spec.thresholds
    targets = [t[0] * 0.5, (t[0] + t[1]) / 2, t[1] * 1.6]  # mid-class biomarker per grade
    records = []
    for i in range(cases):
        case_seed = int(rng.integers(2**31))
        lo, hi = 0.0, 3.0
        for _ in range(14):  # bisect the disease knob until the biomarker hits the target
            knob = (lo + hi) / 2
            image, label = maker(shape, knob, np.random.default_rng(case_seed))
            value = biomarker_value(label_volumes_ml(label, voxel_ml, spec.labels), spec)
            lo, hi = (knob, hi) if (value or 0.0) < targets[i % 3] else (lo, knob)
        affine = _affine(spacing, lps=bool(i % 2))
        cid = f"{task.replace('-', '_')}_{i:03d}"
        write_case(out, cid, image, label, affine)
        records.append({"case": cid, "grade": grade_from_biomarker(value, spec), "biomarker": value})
    return write_dataset_json(out, spec, records, seed, {"description": "procedural phantom (tests only)"})
