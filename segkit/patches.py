"""3-D training batches: patches of whole volumes, foreground-oversampled, augmented with MONAI.

The layout is sample_batch's (segkit.batches, which draws these per case), so the loss, the grade pooling
and torchrun's sharding are shared: per case S grade windows centred on random organ voxels (pooled for the
case's grade, as predict pools the sliding windows that are mostly organ), then two segmentation-only
patches, one anywhere in the volume and one centred on the small target structure (nnU-Net's oversampling).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segkit.config import AugmentConfig, Config
from segkit.validate import CaseData


def case_patches(
    c: CaseData, cfg: Config, rng: np.random.Generator, aug: Any | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One case's S grade windows centred on random organ voxels, then a patch anywhere and one centred on
    the target: (1, X, Y, Z) float32 image and (X, Y, Z) uint8 label each (segkit.batches.sample_batch)."""
    t = cfg.train
    organ = [cfg.task.labels.index(n) for n in cfg.task.denominator]
    target = [cfg.task.labels.index(n) for n in cfg.task.numerator]
    centres = _centres(c.label, organ, t.slices_per_case, rng)
    centres += [_anywhere(c.label.shape, rng), _centres(c.label, target, 1, rng)[0]]
    out = []
    for centre in centres:
        x, y = crop_patch(c.image, c.label, centre, t.patch_size)
        if aug is not None:
            moved = aug({"image": x[None], "label": y[None]})
            x, y = np.asarray(moved["image"])[0], np.asarray(moved["label"])[0]
        out.append((np.asarray(x, dtype=np.float32)[None], np.asarray(y).round().astype(np.uint8)))
    return out


def _centres(label: np.ndarray, ids: list[int], num: int, rng: np.random.Generator) -> list[np.ndarray]:
    """num random voxels of the labels ids (any voxels where the volume has none); one search of the volume."""
    idx = np.flatnonzero(np.isin(label, ids))
    if not len(idx):
        return [_anywhere(label.shape, rng) for _ in range(num)]
    return [np.array(np.unravel_index(idx[rng.integers(0, len(idx))], label.shape)) for _ in range(num)]


def _anywhere(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.integers(0, n) for n in shape])


def crop_patch(
    image: np.ndarray, label: np.ndarray, centre: np.ndarray, size: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The size patch around centre, shifted to stay inside the volume; edges replicated where the volume is
    smaller than the patch, in the image as the sliding window pads and in the label alike (replicated tissue
    keeps its label; see batches.slice_patch)."""
    short = [max(0, p - n) for n, p in zip(image.shape, size, strict=True)]
    pads = [(k // 2, k - k // 2) for k in short]
    if any(short):
        image = np.pad(image, pads, mode="edge")
        label = np.pad(label, pads, mode="edge")
        centre = centre + np.array([a for a, _ in pads])
    start = [int(np.clip(c - p // 2, 0, n - p)) for c, p, n in zip(centre, size, image.shape, strict=True)]
    sl = tuple(slice(s, s + p) for s, p in zip(start, size, strict=True))
    return image[sl], label[sl]


def build_augment_3d(aug: AugmentConfig, seed: int) -> Any:
    """Training-only 3-D augmentation (MONAI dictionary transforms: the label moves with its image).

    The same knobs as the 2-D pipeline (segkit.transforms.build_augment), at the same strengths; no
    elastic warp (the ventricle and liver draws are already non-linearly deformed, and MONAI's 3-D
    elastic resampling costs more than the network step on 2 cores).
    """
    from monai import transforms as mt

    keys = ["image", "label"]
    rot = np.deg2rad(aug.rotate_deg)
    shear = np.deg2rad(aug.shear_deg)
    scale = (aug.scale[0] - 1.0, aug.scale[1] - 1.0)  # MONAI adds 1
    pipeline = mt.Compose(
        [
            mt.RandFlipd(keys, prob=aug.flip_lr, spatial_axis=0),  # axis 0 of the RAS model grid: left-right
            mt.RandAffined(
                keys,
                prob=aug.affine,
                rotate_range=(rot, rot, rot),
                scale_range=(scale, scale, scale),
                shear_range=(shear,) * 6,
                mode=("bilinear", "nearest"),
                padding_mode="border",
            ),
            mt.RandScaleIntensityd("image", factors=0.2, prob=aug.brightness_contrast),
            mt.RandShiftIntensityd("image", offsets=0.1, prob=aug.brightness_contrast),
            mt.RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=aug.gamma),
            mt.RandGaussianNoised("image", std=0.05, prob=aug.noise),
            mt.RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=aug.blur),
        ]
    )
    return seed_augment_3d(pipeline, seed)


def seed_augment_3d(pipeline: Any, seed: int) -> Any:
    """Restart a built 3-D pipeline's random streams from seed: the draws of build_augment_3d(aug, seed),
    without building it again."""
    return pipeline.set_random_state(seed=seed % 2**32)
