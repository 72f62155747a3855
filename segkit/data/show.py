"""A montage of a dataset's cases with their masks, grade and biomarker, to check it by eye."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segkit.data.msd import Case, Dataset, read_case, read_dataset
from segkit.errors import OutputError
from segkit.io import atomic_write
from segkit.render import compose, label_color, label_key, render_view, slice_view, tile_grid, to_ras
from segkit.tasks import TASKS

CT_WINDOW = (-160.0, 240.0)  # abdominal soft-tissue window, HU


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


def _tile(case: Case, row: dict, targets: list[int], ct: bool, labels: tuple[str, ...]) -> np.ndarray:
    """One case: an axial and a coronal slice through the graded structure, outlines only, with its caption."""
    img_v, label = read_case(case, labels)  # the grid and label values checked, as train and evaluate check them
    img, zooms = to_ras(img_v.data, img_v.affine)
    lab, _ = to_ras(label, img_v.affine)
    if ct:
        window = CT_WINDOW
    else:
        fg = img[img > np.percentile(img, 50)]
        window = (float(np.percentile(img, 1)), float(np.percentile(fg if fg.size else img, 99.5)))
    z, y = _slice_through(lab, targets, 2), _slice_through(lab, targets, 1)
    colors = [label_color(k) for k in range(len(labels))]
    panels = [
        render_view(slice_view("axial", img[:, :, z], lab[:, :, z], zooms), window, colors, fill=0, size=220),
        render_view(slice_view("coronal", img[:, y, :], lab[:, y, :], zooms), window, colors, fill=0, size=220),
    ]
    value = "n/a" if case.biomarker is None else f"{case.biomarker:.4f}"
    info = " ".join(str(row[k]) for k in ("contrast", "phase", "orientation", "spacing") if k in row)
    return np.asarray(compose(panels, ["axial", "coronal"], f"{case.case_id}: {case.grade}, {value}\n{info}", []))


def show_dataset(root: Path, out_png: Path, max_cases: int = 12) -> Path:
    """Write a PNG montage: per case an axial and a coronal slice through the graded structure."""
    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png" or out_png.is_dir():  # never over dataset.json, an image or a folder
        what = "is a folder" if out_png.is_dir() else "is not a .png name"
        raise OutputError(f"{out_png}: {what}; the montage is a PNG image: give --out a file name ending in .png")
    ds = read_dataset(root)
    rows_by_case = {r.get("case"): r for r in ds.meta.get("training", [])}
    ct = "CT" in str(ds.meta.get("modality", {}))
    targets = _structure(ds)
    labels = tuple(ds.labels)
    tiles = [_tile(c, rows_by_case.get(c.case_id, {}), targets, ct, labels) for c in _pick(ds, max_cases)]
    grid = tile_grid(tiles, per_row=3) if tiles else np.zeros((32, 32, 3), np.uint8)
    biomarker = ds.meta.get("biomarker", {})
    title = (
        f"{ds.meta.get('name', ds.root.name)}: axial and coronal, patient right on image left; "
        f"biomarker {biomarker.get('name', '')} thresholds {biomarker.get('thresholds', '')}"
    )
    sheet = compose([grid], [""], title, label_key(labels))
    atomic_write(out_png, lambda t: sheet.save(t, format="PNG"))
    return out_png
