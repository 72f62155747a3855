"""Pictures of a mask on its image in the radiological convention, and the label files viewers read.

Used by predict (overlays), export (the review page embeds those overlays) and data show (montages);
drawn with numpy and Pillow, so a predict never imports a plotting library.
Axial and coronal views put the patient's right on the image's left, as radiologists read them;
sagittal views put anterior on the left. Every view carries its orientation letters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkit.io import atomic_write, atomic_write_text, voxel_sizes
from segkit.transforms import canonical_ornt

RGB = tuple[int, int, int]

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
MARKER = (255, 225, 77)  # orientation letters


def label_color(index: int) -> RGB:
    """Colour of a label index (cycles past the palette)."""
    return PALETTE[index] if index < len(PALETTE) else PALETTE[1 + (index - 1) % (len(PALETTE) - 1)]


def label_key(labels: tuple[str, ...]) -> list[tuple[str, RGB]]:
    """(name, colour) of every foreground label, for a picture's colour key."""
    return [(name, label_color(i)) for i, name in enumerate(labels) if i]


LABEL_FILE_SUFFIXES = {"itksnap": "_labels.itksnap.txt", "slicer": "_labels.ctbl"}  # after the task's name
LEGACY_LABEL_FILES = {"itksnap": "labels.itksnap.txt", "slicer": "labels.ctbl"}  # one pair per folder, before 27ef8ac


def label_file_names(task: str) -> dict[str, str]:
    """The names of a task's label files: one pair per task, so two tasks predicted into one folder keep both."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", task).strip(".-") or "task"
    return {kind: slug + suffix for kind, suffix in LABEL_FILE_SUFFIXES.items()}


def write_label_descriptions(folder: Path, task: str, labels: tuple[str, ...]) -> dict[str, str]:
    """<task>_labels.itksnap.txt (ITK-SNAP label description) and <task>_labels.ctbl (3D Slicer colour table);
    returns their names."""
    names = label_file_names(task)
    snap = [
        "# ITK-SNAP Label Description File",
        f"# segkit task {task}",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
    ]
    ctbl = [f"# Color table file {names['slicer']} (3D Slicer, segkit task {task})", f"# {len(labels)} values"]
    for i, name in enumerate(labels):
        r, g, b = label_color(i)
        alpha, vis = (0, 0) if i == 0 else (1, 1)
        snap.append(f'{i:5d} {r:5d} {g:4d} {b:4d} {alpha:6d} {vis:4d} {vis:3d}    "{name}"')
        ctbl.append(f"{i} {name} {r} {g} {b} {0 if i == 0 else 255}")
    atomic_write_text(Path(folder) / names["itksnap"], "\n".join(snap) + "\n")
    atomic_write_text(Path(folder) / names["slicer"], "\n".join(ctbl) + "\n")
    return names


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


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (FreeType)
    except (TypeError, ImportError, OSError):  # a Pillow built without FreeType: its bitmap font
        return ImageFont.load_default()


def _outline(inside: np.ndarray) -> np.ndarray:
    """Pixels of a region that touch a pixel outside it (4-neighbours; the picture's border is not an edge)."""
    p = np.pad(inside, 1, mode="edge")
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return inside & ~interior


def render_view(
    view: View, window: tuple[float, float], colors: list[RGB], fill: float = 0.35, size: int = 320
) -> np.ndarray:
    """A view as an RGB picture (rows, cols, 3) uint8: grey image, label fills (alpha `fill`) and outlines,
    orientation letters; drawn to scale in mm with its longer side `size` pixels."""
    from PIL import Image, ImageDraw

    rows, cols = view.image.shape
    scale = size / max(rows * view.aspect, cols)
    h, w = max(1, round(rows * view.aspect * scale)), max(1, round(cols * scale))
    ri = np.minimum(((np.arange(h) + 0.5) * rows / h).astype(int), rows - 1)  # nearest source row of each pixel
    ci = np.minimum(((np.arange(w) + 0.5) * cols / w).astype(int), cols - 1)
    lo, hi = window
    grey = np.clip((view.image[np.ix_(ri, ci)].astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    mask = view.mask[np.ix_(ri, ci)]
    for i in range(1, len(colors)):
        inside = mask == i
        if not inside.any():
            continue
        color = np.asarray(colors[i], dtype=np.float32)
        rgb[inside] = (1 - fill) * rgb[inside] + fill * color
        rgb[_outline(inside)] = color
    picture = Image.fromarray(rgb.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    font = _font(max(10, size // 24))
    left, right, top, bottom = view.markers
    for text, xy, anchor in (
        (left, (3, h / 2), "lm"),
        (right, (w - 3, h / 2), "rm"),
        (top, (w / 2, 2), "mt"),
        (bottom, (w / 2, h - 2), "mb"),
    ):
        draw.text(xy, text, fill=MARKER, font=font, anchor=anchor)
    return np.asarray(picture)


def compose(panels: list[np.ndarray], captions: list[str], title: str, footer: list[tuple[str, RGB]]) -> Any:
    """Panels side by side on black, a caption above each, a title above all, a colour key below. -> PIL Image."""
    from PIL import Image, ImageDraw

    font, gap, line = _font(13), 8, 18
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) + 1)
    top = line * (1 + len(title.splitlines())) + gap
    sheet = Image.new("RGB", (max(width, 200), top + height + 2 * line + gap), "black")
    draw = ImageDraw.Draw(sheet)
    draw.multiline_text((sheet.width / 2, gap / 2), title, fill="white", font=font, anchor="ma", align="center")
    x = gap
    for panel, caption in zip(panels, captions, strict=True):
        sheet.paste(Image.fromarray(panel), (x, top))
        draw.text((x + panel.shape[1] / 2, top - 2), caption, fill="white", font=font, anchor="md")
        x += panel.shape[1] + gap
    x, y = gap, top + height + gap
    for name, color in footer:
        draw.rectangle((x, y + 3, x + 12, y + 15), fill=color)
        draw.text((x + 17, y + 9), name, fill="white", font=font, anchor="lm")
        x += 30 + int(draw.textlength(name, font=font))
    return sheet


def tile_grid(tiles: list[np.ndarray], per_row: int) -> np.ndarray:
    """Tiles (H, W, 3) in rows of per_row, each padded with black to the largest tile."""
    h, w = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    padded = [np.pad(t, ((0, h - t.shape[0]), (0, w - t.shape[1]), (0, 0))) for t in tiles]
    padded += [np.zeros_like(padded[0])] * (-len(padded) % per_row)
    return np.vstack([np.hstack(padded[r : r + per_row]) for r in range(0, len(padded), per_row)])


def render_overlay(image: np.ndarray, mask: np.ndarray, affine: np.ndarray, labels: tuple[str, ...], title: str) -> Any:
    """A PIL Image of a mask on its image: one panel per drawable view, a colour key for the labels."""
    views = display_views(image, mask, affine)
    lo, hi = np.percentile(image[::2, ::2, ::2], [1, 99.5])  # display window; a subsample is plenty
    colors = [label_color(i) for i in range(len(labels))]
    panels = [render_view(v, (float(lo), float(hi)), colors) for v in views]
    return compose(panels, [v.plane for v in views], title, label_key(labels))


def write_overlay(
    image: np.ndarray, mask: np.ndarray, affine: np.ndarray, labels: tuple[str, ...], out: Path, title: str
) -> None:
    """Overlay PNG of a mask on its image (coloured fills with outlines), radiological views with letters."""
    picture = render_overlay(image, mask, affine, labels, title)
    atomic_write(Path(out), lambda tmp: picture.save(tmp, format="PNG"))
