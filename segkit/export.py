"""Review exports: overlay PNGs and label descriptors for ITK-SNAP and 3D Slicer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segkit.io import atomic_write, atomic_write_text

# One colour per label index (RGB 0-255); background first.
PALETTE = [
    (0, 0, 0),
    (255, 196, 0),
    (0, 200, 255),
    (255, 64, 64),
    (120, 255, 120),
    (200, 120, 255),
]


def label_color(index: int) -> tuple[int, int, int]:
    """Colour of a label index (cycles past the palette)."""
    return PALETTE[index] if index < len(PALETTE) else PALETTE[1 + (index - 1) % (len(PALETTE) - 1)]


def write_label_descriptions(folder: Path, labels: tuple[str, ...]) -> None:
    """labels.itksnap.txt (ITK-SNAP label description) and labels.ctbl (3D Slicer colour table)."""
    snap = [
        "# ITK-SNAP Label Description File",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
    ]
    ctbl = ["# 3D Slicer color table", f"# Number of colors: {len(labels)}"]
    for i, name in enumerate(labels):
        r, g, b = label_color(i)
        alpha, vis = (0, 0) if i == 0 else (1, 1)
        snap.append(f'{i:5d} {r:5d} {g:4d} {b:4d} {alpha:6d} {vis:4d} {vis:3d}    "{name}"')
        ctbl.append(f"{i} {name} {r} {g} {b} {0 if i == 0 else 255}")
    atomic_write_text(Path(folder) / "labels.itksnap.txt", "\n".join(snap) + "\n")
    atomic_write_text(Path(folder) / "labels.ctbl", "\n".join(ctbl) + "\n")


def _planes(image: np.ndarray, mask: np.ndarray, affine: np.ndarray):
    """Axial, coronal, sagittal slices through the mask's centre, oriented for display (RAS)."""
    from segkit.transforms import to_canonical

    img, _ = to_canonical(image, affine)
    msk, _ = to_canonical(mask, affine)
    fg = np.argwhere(msk > 0)
    c = fg.mean(0).round().astype(int) if len(fg) else np.array(msk.shape) // 2
    # imshow shows row 0 at the top: transpose so anterior/superior point up, radiological L/R kept as R on left
    return [
        ("axial", np.rot90(img[:, :, c[2]]), np.rot90(msk[:, :, c[2]])),
        ("coronal", np.rot90(img[:, c[1], :]), np.rot90(msk[:, c[1], :])),
        ("sagittal", np.rot90(img[c[0], :, :]), np.rot90(msk[c[0], :, :])),
    ]


def write_overlay(
    image: np.ndarray, mask: np.ndarray, affine: np.ndarray, labels: tuple[str, ...], out: Path, title: str
) -> None:
    """Three-plane overlay PNG of a mask on its image (masks as coloured fills with outlines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    planes = _planes(image, mask, affine)
    lo, hi = np.percentile(image, [1, 99.5])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), facecolor="black")
    for ax, (name, img, msk) in zip(axes, planes, strict=True):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        rgba = np.zeros((*msk.shape, 4))
        for i in range(1, len(labels)):
            rgba[msk == i] = (*np.array(label_color(i)) / 255, 0.35)
            if (msk == i).any():
                ax.contour(msk == i, levels=[0.5], colors=[np.array(label_color(i)) / 255], linewidths=0.8)
        ax.imshow(rgba, interpolation="nearest")
        ax.set_title(name, color="white", fontsize=10)
        ax.axis("off")
    handles = [Patch(color=np.array(label_color(i)) / 255, label=n) for i, n in enumerate(labels) if i]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white")
    fig.suptitle(title, color="white")
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))

    def save(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=90, facecolor="black")

    atomic_write(Path(out), save)
    plt.close(fig)
