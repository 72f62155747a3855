"""Measurements behind a grade: label volumes, the biomarker ratio, lesion counts."""

from __future__ import annotations

from typing import Any

import numpy as np

from segkit.config import TaskConfig


def label_volumes_ml(mask: np.ndarray, voxel_ml: float, labels: tuple[str, ...]) -> dict[str, float]:
    """Volume in mL of every non-background label."""
    # one count per label: no int64 copy of a CT-sized mask
    return {name: float(np.count_nonzero(mask == i) * voxel_ml) for i, name in enumerate(labels) if i > 0}


def total_ml(volumes_ml: dict[str, float], names: tuple[str, ...]) -> float:
    """The summed volume of the named labels (a biomarker's numerator or denominator); absent labels count 0."""
    return sum(volumes_ml.get(n, 0.0) for n in names)


def biomarker_value(volumes_ml: dict[str, float], task: TaskConfig) -> float | None:
    """Volume(numerator labels) / volume(denominator labels); None when the denominator is empty."""
    den = total_ml(volumes_ml, task.denominator)
    return None if den <= 0 else total_ml(volumes_ml, task.numerator) / den


def grade_from_biomarker(value: float | None, task: TaskConfig) -> str | None:
    """The grade the biomarker implies under the task's thresholds (None when undefined)."""
    if value is None:
        return None
    idx = int(np.searchsorted(np.asarray(task.thresholds), value, side="right"))
    return task.grades[idx]


def lesion_components(mask: np.ndarray, label_index: int, voxel_ml: float) -> dict[str, Any]:
    """Count and sizes (mL, largest first) of the 26-connected components of one label."""
    from skimage.measure import label as connected_components  # scipy and all: only for a lesion task

    where = np.nonzero(mask == label_index)
    if not where[0].size:
        return {"count": 0, "sizes_ml": []}
    box = tuple(slice(int(w.min()), int(w.max()) + 1) for w in where)  # label only the lesions' box
    comp, n = connected_components(mask[box] == label_index, connectivity=3, return_num=True)
    sizes = np.bincount(comp.ravel())[1:] * voxel_ml if n else np.zeros(0)
    return {"count": int(n), "sizes_ml": [round(float(s), 3) for s in sorted(sizes, reverse=True)]}


def measure(mask: np.ndarray, voxel_ml: float, task: TaskConfig) -> dict[str, Any]:
    """Everything predict reports about a mask: volumes, biomarker, its grade, lesion counts."""
    volumes = label_volumes_ml(mask, voxel_ml, task.labels)
    value = biomarker_value(volumes, task)
    out: dict[str, Any] = {
        "volumes_ml": {k: round(v, 3) for k, v in volumes.items()},
        "biomarker": {
            "name": task.biomarker,
            "value": None if value is None else round(value, 6),
            "grade": grade_from_biomarker(value, task),
            "thresholds": list(task.thresholds),
            "definition": f"volume({'+'.join(task.numerator)}) / volume({'+'.join(task.denominator)})",
        },
    }
    if task.name == "liver-cyst":
        out["lesions"] = {name: lesion_components(mask, task.labels.index(name), voxel_ml) for name in task.numerator}
    return out
