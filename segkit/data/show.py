"""A montage of a dataset's cases with their masks, grade and biomarker, to check it by eye."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from segkit.data.msd import Case, Dataset, read_dataset  # noqa: E402
from segkit.io import atomic_write, read_volume  # noqa: E402
from segkit.render import draw_view, slice_view  # noqa: E402
from segkit.tasks import TASKS  # noqa: E402

COLOURS = ("#00000000", "#2ca02c", "#ff3030", "#ff00ff", "#00bfff", "#ffa500")
CT_WINDOW = (-160.0, 240.0)  # abdominal soft-tissue window, HU


def _canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Array in the closest RAS orientation (so slices display upright) and its voxel sizes."""
    img = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    return np.asarray(img.dataobj), tuple(float(z) for z in img.header.get_zooms()[:3])  # type: ignore[return-value]


def _pick(ds: Dataset, max_cases: int) -> list[Case]:
    """Up to max_cases cases taken round-robin over the grades, mildest biomarker first."""
    groups = [sorted((c for c in ds.cases if c.grade == g), key=lambda c: c.biomarker or 0.0) for g in ds.grades]
    groups.append([c for c in ds.cases if c.grade not in ds.grades])
    picked: list[Case] = []
    while len(picked) < max_cases and any(groups):
        for g in groups:
            if g and len(picked) < max_cases:
                picked.append(g.pop(len(g) // 2 if len(picked) >= len(ds.grades) else 0))
    return picked


def _structure(ds: Dataset) -> list[int]:
    """Label indices of the graded structure (the biomarker's numerator), to centre the views on."""
    task = TASKS.get(ds.task)
    if task is None:
        return [len(ds.labels) - 1]
    return [ds.labels.index(n) for n in task.numerator if n in ds.labels]


def _slice_through(lab: np.ndarray, targets: list[int], axis: int) -> int:
    """The slice along axis with most of the structure (or of any label when it is absent)."""
    for want in (np.isin(lab, targets), lab > 0):
        area = want.sum(axis=tuple(a for a in range(3) if a != axis))
        if area.any():
            return int(area.argmax())
    return lab.shape[axis] // 2


def _panel(
    ax: Any, plane: str, img: np.ndarray, lab: np.ndarray, zooms: tuple[float, float, float], window: Any, n: int
) -> None:
    """One RAS slice as radiologists read it (segkit.render): a contour per label, orientation letters."""
    draw_view(ax, slice_view(plane, img, lab, zooms), window, [COLOURS[k % len(COLOURS)] for k in range(n)], fill=0)


def show_dataset(root: Path, out_png: Path, max_cases: int = 12) -> Path:
    """Write a PNG montage: per case an axial and a coronal slice through the graded structure."""
    ds = read_dataset(root)
    cases = _pick(ds, max_cases)
    rows_by_case = {r.get("case"): r for r in ds.meta.get("training", [])}
    ct = "CT" in str(ds.meta.get("modality", {}))
    per_row = 3
    nrows = max(1, int(np.ceil(len(cases) / per_row)))
    fig, axes = plt.subplots(nrows, 2 * per_row, figsize=(6 * per_row, 3.4 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    targets = _structure(ds)
    for i, case in enumerate(cases):
        img_v, lab_v = read_volume(case.image), read_volume(case.label or case.image, kind="label")
        img, zooms = _canonical(img_v.data, img_v.affine)
        lab, _ = _canonical(lab_v.data.astype(np.uint8), lab_v.affine)
        if ct:
            window = CT_WINDOW
        else:
            fg = img[img > np.percentile(img, 50)]
            window = (float(np.percentile(img, 1)), float(np.percentile(fg if fg.size else img, 99.5)))
        z = _slice_through(lab, targets, 2)
        y = _slice_through(lab, targets, 1)
        r, c = divmod(i, per_row)
        ax_a, ax_c = axes[r, 2 * c], axes[r, 2 * c + 1]
        _panel(ax_a, "axial", img[:, :, z], lab[:, :, z], zooms, window, len(ds.labels))
        _panel(ax_c, "coronal", img[:, y, :], lab[:, y, :], zooms, window, len(ds.labels))
        ax_a.axis("on")
        ax_c.axis("on")
        row = rows_by_case.get(case.case_id, {})
        value = "n/a" if case.biomarker is None else f"{case.biomarker:.4f}"
        info = " ".join(str(row[k]) for k in ("contrast", "phase", "orientation") if k in row)
        ax_a.set_title(f"{case.case_id}: {case.grade}, {value}\n{info}", fontsize=9, loc="left")
        ax_c.set_title(f"spacing {row.get('spacing', '')}", fontsize=8, loc="left")
    names = ", ".join(f"{n} ({COLOURS[k % len(COLOURS)]})" for k, n in enumerate(ds.labels) if k > 0)
    biomarker = ds.meta.get("biomarker", {})
    fig.suptitle(
        f"{ds.meta.get('name', ds.root.name)}: axial (left) and coronal (right), RAS, patient right on "
        f"image left\nlabels: {names}; biomarker {biomarker.get('name', '')} "
        f"thresholds {biomarker.get('thresholds', '')}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    out_png = Path(out_png)
    atomic_write(out_png, lambda t: fig.savefig(t, format="png", dpi=80))
    plt.close(fig)
    return out_png
