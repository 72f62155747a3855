"""Pictures of a mask on its image in the radiological convention, and the label files viewers read.

Used by predict (overlays), export (the review page embeds those overlays) and data show (montages).
Axial and coronal views put the patient's right on the image's left, as radiologists read them;
sagittal views put anterior on the left. Every view carries its orientation letters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkit.io import atomic_write, atomic_write_text, voxel_sizes
from segkit.transforms import canonical_ornt

# One colour per label index (RGB 0-255); background first.
PALETTE = [
    (0, 0, 0),
    (255, 196, 0),
    (0, 200, 255),
    (255, 64, 64),
    (120, 255, 120),
    (200, 120, 255),
]

# plane -> (RAS axis held fixed, RAS axis across the image, RAS axis down the image,
#           letters at the image's left, right, top, bottom). The positive end of each RAS axis
# (R, A, S) goes left or up, which is the radiological convention for axial and coronal views.
VIEWS: dict[str, tuple[int, int, int, tuple[str, str, str, str]]] = {
    "axial": (2, 0, 1, ("R", "L", "A", "P")),
    "coronal": (1, 0, 2, ("R", "L", "S", "I")),
    "sagittal": (0, 1, 2, ("A", "P", "S", "I")),
}


def label_color(index: int) -> tuple[int, int, int]:
    """Colour of a label index (cycles past the palette)."""
    return PALETTE[index] if index < len(PALETTE) else PALETTE[1 + (index - 1) % (len(PALETTE) - 1)]


def write_label_descriptions(folder: Path, labels: tuple[str, ...]) -> None:
    """labels.itksnap.txt (ITK-SNAP label description) and labels.ctbl (3D Slicer colour table)."""
    snap = [
        "# ITK-SNAP Label Description File",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
    ]
    ctbl = ["# Color table file labels.ctbl (3D Slicer)", f"# {len(labels)} values"]
    for i, name in enumerate(labels):
        r, g, b = label_color(i)
        alpha, vis = (0, 0) if i == 0 else (1, 1)
        snap.append(f'{i:5d} {r:5d} {g:4d} {b:4d} {alpha:6d} {vis:4d} {vis:3d}    "{name}"')
        ctbl.append(f"{i} {name} {r} {g} {b} {0 if i == 0 else 255}")
    atomic_write_text(Path(folder) / "labels.itksnap.txt", "\n".join(snap) + "\n")
    atomic_write_text(Path(folder) / "labels.ctbl", "\n".join(ctbl) + "\n")


@dataclass(frozen=True)
class View:
    """One slice as drawn: row 0 at the top, the patient directions' letters at its four edges."""

    plane: str
    image: np.ndarray  # (rows, cols)
    mask: np.ndarray  # (rows, cols)
    aspect: float  # mm per row / mm per column, so thick slices are drawn to scale
    markers: tuple[str, str, str, str]  # at the image's left, right, top, bottom


def to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The array on its closest RAS axes (flips and axis swaps: a view, no copy) and its voxel size per RAS axis."""
    import nibabel as nib

    ornt = canonical_ornt(affine)
    spacing = [0.0, 0.0, 0.0]
    for i, (axis, _flip) in enumerate(ornt):
        spacing[int(axis)] = voxel_sizes(affine)[i]
    return nib.orientations.apply_orientation(data, ornt), (spacing[0], spacing[1], spacing[2])


def slice_view(plane: str, image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float]) -> View:
    """A slice of a RAS-oriented volume (its two other axes in RAS order, e.g. ras[:, :, k] for axial) as drawn."""
    _fixed, across, down, markers = VIEWS[plane]
    # (across, down) -> (down, across), each reversed: R (or A) to the left, A (or S) to the top
    return View(plane, image[::-1, ::-1].T, mask[::-1, ::-1].T, spacing[down] / spacing[across], markers)


def display_views(image: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> list[View]:
    """Axial, coronal, sagittal views through the mask's centre; views of a one-voxel-thin volume are left out."""
    img, spacing = to_ras(image, affine)
    msk, _ = to_ras(mask, affine)
    fg = msk > 0
    if fg.any():  # centre of mass from the three marginals, without listing every voxel
        marginals = [fg.sum(axis=tuple(a for a in range(3) if a != i)) for i in range(3)]
        centre = [int(round(np.average(np.arange(len(m)), weights=m))) for m in marginals]
    else:
        centre = [n // 2 for n in msk.shape]
    views = []
    for plane, (fixed, _across, _down, _markers) in VIEWS.items():
        take: list[Any] = [slice(None)] * 3
        take[fixed] = centre[fixed]
        views.append(slice_view(plane, img[tuple(take)], msk[tuple(take)], spacing))
    # A single slice (or a stack 1 voxel wide) has one real view; the others would be 1-pixel lines
    drawable = [v for v in views if min(v.image.shape) >= 2]
    return drawable or [max(views, key=lambda v: v.image.size)]


def draw_view(ax: Any, view: View, window: tuple[float, float], colors: list[Any], fill: float = 0.35) -> None:
    """Draw a view on a matplotlib Axes: image, label fills (alpha `fill`) and outlines, orientation letters."""
    from matplotlib.colors import to_rgba

    ax.imshow(view.image, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest", aspect=view.aspect)
    rgba = np.zeros((*view.mask.shape, 4))
    for i in range(1, len(colors)):
        inside = view.mask == i
        if not inside.any():
            continue
        rgba[inside] = (*to_rgba(colors[i])[:3], fill)
        if min(inside.shape) >= 2:  # contour needs a 2x2 grid; the fill still shows a 1-pixel-thin mask
            ax.contour(inside, levels=[0.5], colors=[colors[i]], linewidths=0.8)
    if fill > 0:
        ax.imshow(rgba, interpolation="nearest", aspect=view.aspect)
    style = {"color": "#ffe14d", "fontsize": 9, "fontweight": "bold", "transform": ax.transAxes}
    left, right, top, bottom = view.markers
    ax.text(0.015, 0.5, left, ha="left", va="center", **style)
    ax.text(0.985, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.985, top, ha="center", va="top", **style)
    ax.text(0.5, 0.015, bottom, ha="center", va="bottom", **style)
    ax.set_xticks([])
    ax.set_yticks([])


def render_overlay(image: np.ndarray, mask: np.ndarray, affine: np.ndarray, labels: tuple[str, ...], title: str) -> Any:
    """A matplotlib Figure (Agg, no pyplot) of a mask on its image: one panel per drawable view."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    views = display_views(image, mask, affine)
    lo, hi = np.percentile(image[::2, ::2, ::2], [1, 99.5])  # display window; a subsample is plenty
    colors = [(r / 255, g / 255, b / 255) for r, g, b in map(label_color, range(len(labels)))]
    fig = Figure(figsize=(4 * len(views), 4.4), facecolor="black")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(views), squeeze=False)[0]
    for ax, view in zip(axes, views, strict=True):
        draw_view(ax, view, (float(lo), float(hi)), colors)
        ax.set_title(view.plane, color="white", fontsize=10)
        ax.set_frame_on(False)
    handles = [Patch(color=colors[i], label=n) for i, n in enumerate(labels) if i]
    fig.legend(handles=handles, loc="lower center", ncol=max(1, len(handles)), frameon=False, labelcolor="white")
    fig.suptitle(title, color="white")
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return fig


def write_overlay(
    image: np.ndarray, mask: np.ndarray, affine: np.ndarray, labels: tuple[str, ...], out: Path, title: str
) -> None:
    """Overlay PNG of a mask on its image (coloured fills with outlines), radiological views with letters."""
    fig = render_overlay(image, mask, affine, labels, title)
    atomic_write(Path(out), lambda tmp: fig.savefig(tmp, format="png", dpi=90, facecolor="black"))
