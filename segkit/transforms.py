"""The ONE preprocessing pipeline used by train, evaluate and predict, plus training augmentation.

Forward: reorient to RAS (axis permutation/flip only, exactly invertible) -> resize to the
config spacing -> modality-aware intensity normalisation. Inverse: resize class
probabilities back to the canonical input shape -> argmax -> undo the reorientation, so the
mask lands on the input's own voxel grid and keeps its affine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from segkit.config import AugmentConfig, Config, PreprocessConfig
from segkit.errors import InputError
from segkit.io import Volume, voxel_sizes

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

RAS = nib.orientations.axcodes2ornt(("R", "A", "S"))
# The most voxels a volume may have on the model grid: 128 M holds a 2 m whole-body CT at the liver model's
# 2.5 mm (about 50 M); beyond it the header's spacing is wrong (cm read as mm, say) and the resampled
# volume with its class probabilities would not fit in memory (a 20 mm-spacing brain header: 2 G voxels).
MAX_MODEL_VOXELS = 128 * 2**20
# eval.strip_to_organ keeps the organ and the voxels within this distance of it: its edge's partial-volume voxels
STRIP_MARGIN_MM = 1.6


@dataclass(frozen=True)
class Grid:
    """How an input volume maps onto the model grid; enough to invert exactly."""

    input_shape: tuple[int, int, int]  # the input's own array shape
    ornt: np.ndarray  # nibabel orientation transform input -> RAS
    canonical_shape: tuple[int, int, int]  # shape after reorientation
    canonical_spacing: tuple[float, float, float]  # mm, after reorientation
    model_shape: tuple[int, int, int]  # shape on the model grid

    @property
    def model_spacing(self) -> tuple[float, float, float]:
        """Actual voxel size on the model grid (the extent is kept, so it is near cfg spacing)."""
        return tuple(  # type: ignore[return-value]
            c * s / m for c, s, m in zip(self.canonical_shape, self.canonical_spacing, self.model_shape, strict=True)
        )


def canonical_ornt(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform from an affine's voxel axes to the closest RAS axes."""
    return nib.orientations.ornt_transform(nib.orientations.io_orientation(affine), RAS)


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient an array to the closest RAS axes; returns (array, input->RAS ornt)."""
    ornt = canonical_ornt(affine)
    return np.ascontiguousarray(nib.orientations.apply_orientation(data, ornt)), ornt


def from_canonical(data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Undo to_canonical on an array (exactly: permutations and flips only)."""
    inverse = np.zeros_like(ornt)
    for i, (axis, flip) in enumerate(ornt):
        inverse[int(axis)] = (i, flip)  # input axis i became RAS axis `axis`
    return np.ascontiguousarray(nib.orientations.apply_orientation(data, inverse))


def plan_grid(shape: tuple[int, ...], affine: np.ndarray, pre: PreprocessConfig) -> Grid:
    """Plan the canonical and model grids for an input of this shape and affine."""
    ornt = canonical_ornt(affine)
    sizes = voxel_sizes(affine)
    canon_shape = [0, 0, 0]
    canon_spacing = [0.0, 0.0, 0.0]
    for i, (axis, _flip) in enumerate(ornt):
        canon_shape[int(axis)] = int(shape[i])
        canon_spacing[int(axis)] = sizes[i]
    # Rounded to 3 decimals first: a field of view on a tie (512 x 0.626953125 mm / 2 mm = 160.5) must not go to
    # 160 or 161 by the float32 rounding of the header's voxel size (the same scan with its spacing x (1 + 2e-7),
    # 160.50003, had its cyst 23% larger); the rounding of a float32 voxel size moves n * s / t by < 1e-4
    model_shape = tuple(
        max(1, int(round(round(n * s / t, 3)))) for n, s, t in zip(canon_shape, canon_spacing, pre.spacing, strict=True)
    )
    if int(np.prod(model_shape)) > MAX_MODEL_VOXELS:
        fov = " x ".join(f"{n * s:.0f}" for n, s in zip(canon_shape, canon_spacing, strict=True))
        raise InputError(
            f"the header's voxel spacing ({', '.join(f'{s:g}' for s in sizes)} mm) makes the scan {fov} mm, "
            f"{np.prod(model_shape) / 2**20:.0f} M voxels on the model's {pre.spacing[0]:g} mm grid (at most "
            f"{MAX_MODEL_VOXELS // 2**20} M): check the spacing in the header (cm written as mm?)"
        )
    return Grid(
        input_shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        ornt=ornt,
        canonical_shape=tuple(canon_shape),  # type: ignore[arg-type]
        canonical_spacing=tuple(canon_spacing),  # type: ignore[arg-type]
        model_shape=model_shape,  # type: ignore[arg-type]
    )


def resize(data: np.ndarray, shape: tuple[int, ...], label: bool = False) -> np.ndarray:
    """Resize (X, Y, Z) or (C, X, Y, Z) to spatial shape: linear per axis for images, nearest-exact for labels.

    The sampling positions of torch's F.interpolate(align_corners=False) (trilinear is linear along each
    axis in turn), in NumPy so that prediction never imports torch (1.3-2.8 s of a 5 s predict).
    """
    lead = data.ndim - len(shape)  # leading channel axes are not resized
    a = np.asarray(data) if label else np.asarray(data, dtype=np.float32)
    # The axis that shrinks most first: every later pass then works on the smallest array.
    for ax in sorted(range(len(shape)), key=lambda i: shape[i] / a.shape[lead + i]):
        if a.shape[lead + ax] != shape[ax]:
            a = _resize_axis(a, shape[ax], lead + ax, label)
    return a


def _resize_axis(a: np.ndarray, size: int, axis: int, label: bool) -> np.ndarray:
    """Resample one axis of a to `size` samples."""
    n = a.shape[axis]
    dst = np.arange(size, dtype=np.float64)
    if label:  # nearest-exact: the source voxel whose centre is nearest
        return np.take(a, np.minimum(np.floor((dst + 0.5) * n / size).astype(np.intp), n - 1), axis=axis)
    return _blend(a, *_linear_taps(dst, n, size), axis)


def _linear_taps(dst: np.ndarray, n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source neighbours and weights of output samples dst when n samples become size (pixel centres aligned)."""
    src = np.maximum((dst + 0.5) * n / size - 0.5, 0.0)  # the edge voxel's value continues past its centre
    i0 = np.minimum(np.floor(src).astype(np.intp), n - 1)
    return i0, np.minimum(i0 + 1, n - 1), (src - i0).astype(np.float32)


def _blend(a: np.ndarray, i0: np.ndarray, i1: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """a[i0] * (1 - w) + a[i1] * w along axis (float32, two temporaries)."""
    lo = np.take(a, i0, axis=axis)
    hi = np.take(a, i1, axis=axis)
    hi -= lo
    hi *= w.reshape([-1 if i == axis else 1 for i in range(a.ndim)])
    lo += hi
    return lo


def normalize(data: np.ndarray, modality: str, pre: PreprocessConfig) -> np.ndarray:
    """Modality-aware intensity normalisation (identical at train and predict time)."""
    x = np.asarray(data, dtype=np.float32)
    if modality == "CT":
        return window(x, pre.window_low, pre.window_high)
    body = x > x.min()  # exclude the flat background of skull-stripped or zero-filled scans
    if not body.any():
        return np.zeros_like(x)
    lo, hi = np.percentile(x[body], [pre.percentile_low, pre.percentile_high])
    if hi > lo:
        x = np.clip(x, lo, hi)
    mean, std = float(x[body].mean()), float(x[body].std())
    if _flat(mean, std):  # a flat foreground (e.g. a binary image): standardise over the whole volume
        mean, std = float(x.mean()), float(x.std())
    if _flat(mean, std):
        return np.zeros_like(x)
    return ((x - mean) / std).astype(np.float32)


def _flat(mean: float, std: float) -> bool:
    """No spread beyond float32 rounding of values of this size; relative, so that a scan stored with a tiny
    scale (values of 1e-9) is standardised like the same scan in other units (an absolute 1e-6 left it empty)."""
    return std == 0.0 or std <= 1e-6 * abs(mean)


def window(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip float32 values to [low, high] and scale to [-1, 1].

    MONAI's ScaleIntensityRange(low, high, -1, 1, clip=True): the same float32 operations in the same order
    (equal to the bit, tested), without importing monai.transforms (2-3 s: all of MONAI) at predict time.
    """
    x = np.asarray(x, dtype=np.float32)
    if high == low:  # as MONAI: shift only, no scaling and no clipping
        return x - np.float32(low) - np.float32(1.0)
    t = (x - np.float32(low)) / np.float32(high - low)
    return np.clip(t * np.float32(2.0) - np.float32(1.0), np.float32(-1.0), np.float32(1.0))


def unwindow(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """The values window() scaled to [-1, 1], back in the image's units (HU for CT); values window() clipped
    come back as low or high."""
    unit = (np.asarray(x, dtype=np.float32) + np.float32(1.0)) / np.float32(2.0)
    return unit * np.float32(high - low) + np.float32(low)


def preprocess_image(data: np.ndarray, affine: np.ndarray, cfg: Config) -> tuple[np.ndarray, Grid]:
    """Input image -> normalised volume on the model grid (X, Y, Z), and the grid to invert."""
    resized, grid = resample_image(data, affine, cfg)
    return normalize(resized, cfg.task.modality, cfg.preprocess), grid


def resample_image(data: np.ndarray, affine: np.ndarray, cfg: Config) -> tuple[np.ndarray, Grid]:
    """preprocess_image before the intensity normalisation: the image on the model grid, and the grid."""
    grid = plan_grid(data.shape, affine, cfg.preprocess)
    canon, _ = to_canonical(data, affine)
    return resize(canon.astype(np.float32, copy=False), grid.model_shape), grid


def beyond_margin(keep: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """The voxels further than STRIP_MARGIN_MM (mm, on a grid of this spacing) outside the boolean mask keep: keep
    dilated by the ball of that radius, inverted (the same voxels as a distance transform's, 0.02 s against 0.4 s
    for a brain on the 1.5 mm grid)."""
    from scipy import ndimage as ndi

    reach = [int(STRIP_MARGIN_MM // s) for s in spacing]
    offsets = np.indices([2 * r + 1 for r in reach]) - np.array(reach).reshape(-1, 1, 1, 1)
    ball = np.sqrt(sum((o * s) ** 2 for o, s in zip(offsets, spacing, strict=True))) <= STRIP_MARGIN_MM
    return ~ndi.binary_dilation(keep, structure=ball)


def preprocess_volume(vol: Volume, cfg: Config) -> tuple[np.ndarray, Grid]:
    """preprocess_image of a volume read from a file (see resample_volume)."""
    resized, grid = resample_volume(vol, cfg)
    return normalize(resized, cfg.task.modality, cfg.preprocess), grid


def resample_volume(vol: Volume, cfg: Config) -> tuple[np.ndarray, Grid]:
    """resample_image of a volume read from a file; an input error (a header whose spacing makes the scan
    implausibly large) names the file."""
    try:
        return resample_image(vol.data, vol.affine, cfg)
    except InputError as e:
        raise InputError(f"{vol.path}: {e}") from None


def preprocess_label(label: np.ndarray, grid: Grid) -> np.ndarray:
    """Label in the input grid -> label on the model grid (nearest)."""
    canon = nib.orientations.apply_orientation(label, grid.ornt)
    return resize(np.ascontiguousarray(canon).astype(np.uint8), grid.model_shape, label=True)


def probs_to_mask(probs: np.ndarray, grid: Grid, slab: int = 32) -> np.ndarray:
    """Class probabilities on the model grid (K, X, Y, Z) -> uint8 mask on the input grid.

    Equal to a whole-volume resize then argmax, computed slab by slab along x so peak memory stays
    low on CT-sized volumes.
    """
    return invert_probs(probs, grid, keep_map=False, slab=slab)[0]


def invert_probs(probs: np.ndarray, grid: Grid, keep_map: bool, slab: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    """probs_to_mask's mask and, with keep_map, the probability map from the same resampling: (X, Y, Z, K) uint8
    on the input grid in steps of 1/255 (a quarter of float32's memory: 0.3 GB for a 512x512x300 CT's 4 classes)."""
    kx, cx = grid.model_shape[0], grid.canonical_shape[0]
    mask = np.empty(grid.canonical_shape, dtype=np.uint8)
    kept = np.empty((*grid.canonical_shape, probs.shape[0]), dtype=np.uint8) if keep_map else None
    for start in range(0, cx, slab):
        rows = slice(start, min(cx, start + slab))
        i0, i1, w = _linear_taps(np.arange(rows.start, rows.stop, dtype=np.float64), kx, cx)
        lo, hi = int(i0.min()), int(i1.max()) + 1
        part = _blend(np.asarray(probs[:, lo:hi], dtype=np.float32), i0 - lo, i1 - lo, w, axis=1)  # (K, slab, Y, Z)
        part = resize(part, grid.canonical_shape[1:])
        mask[rows] = first_argmax(part)
        if kept is not None:
            kept[rows] = np.rint(np.clip(part, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 3, 0)
    return from_canonical(mask, grid.ornt), None if kept is None else from_canonical(kept, grid.ornt)


def first_argmax(scores: np.ndarray) -> np.ndarray:
    """scores.argmax(axis=0) as uint8 (the first maximum wins, as argmax), for K classes (K, ...).

    Elementwise over the classes: an argmax over a leading axis walks memory with a stride (torch's took
    1.0 s for a 182x218x182 brain's 3 classes on 2 cores); this takes under 0.1 s.
    """
    best = scores[0].copy()
    index = np.zeros(scores.shape[1:], dtype=np.uint8)
    for k in range(1, scores.shape[0]):
        better = scores[k] > best
        index[better] = k
        np.maximum(best, scores[k], out=best)
    return index


def context_stack(volume: np.ndarray, z: np.ndarray, context: int) -> np.ndarray:
    """2.5-D input: slices z-context..z+context (edge-clamped) as channels. -> (N, C, X, Y)."""
    offsets = np.arange(-context, context + 1)
    idx = np.clip(z[:, None] + offsets[None, :], 0, volume.shape[2] - 1)  # (N, C)
    return np.ascontiguousarray(np.moveaxis(volume[:, :, idx], (2, 3), (0, 1)))


def pad_to_multiple(x: np.ndarray, multiple: int = 16) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad (N, C, H, W) at the bottom/right to multiples of `multiple` (edge values); returns the original H, W."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
    return x, (h, w)


def build_augment(aug: AugmentConfig, seed: int | None = None):  # -> albumentations Compose
    """Training-only 2-D augmentation; masks move with their images (albumentations).

    Turns OpenCV's own thread pool off in the process that augments: on 128x128 slices its threads only
    contend with torch's (and, in sampling workers, with the other workers). Inline on 2 cores the train
    loop took 0.423 s a step with one OpenCV thread against 0.448 with OpenCV's default 2 (bound 0.358,
    8 alternating rounds in one process, Xeon); the masks are the same."""
    import albumentations as A
    import cv2

    cv2.setNumThreads(1)
    spatial = A.Compose(
        [
            # In the RAS slice layout (X, Y) image rows run left-right: VerticalFlip swaps L/R.
            A.VerticalFlip(p=aug.flip_lr),
            A.Affine(
                scale=aug.scale,
                rotate=(-aug.rotate_deg, aug.rotate_deg),
                shear=(-aug.shear_deg, aug.shear_deg),
                translate_percent=(-0.05, 0.05),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_REFLECT_101,
                p=aug.affine,
            ),
            A.ElasticTransform(alpha=30, sigma=6, border_mode=cv2.BORDER_REFLECT_101, p=aug.elastic),
        ],
    )
    intensity = A.Compose(
        [
            A.RandomBrightnessContrast(0.1, 0.2, p=aug.brightness_contrast),
            A.RandomGamma(gamma_limit=(70, 150), p=aug.gamma),
            A.GaussNoise(std_range=(0.01, 0.05), p=aug.noise),
            A.GaussianBlur(blur_limit=(3, 5), p=aug.blur),
        ],
    )
    return (spatial, intensity) if seed is None else seed_augment((spatial, intensity), seed)


def seed_augment(pipelines: tuple, seed: int) -> tuple:
    """Restart build_augment's random streams: the spatial pipeline's from seed, the intensity one's from
    seed + 1 (reseeding built pipelines costs nothing; building them 8 ms)."""
    spatial, intensity = pipelines
    spatial.set_random_seed(seed)
    intensity.set_random_seed(seed + 1)
    return pipelines


def augment_hwc(image: np.ndarray, mask: np.ndarray, pipelines: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Augment one (H, W, C) slice stack (albumentations' own layout) and its (H, W) mask together:
    (H, W, C) float32 and (H, W) out."""
    spatial, intensity = pipelines
    out = spatial(image=image, mask=mask)
    img, msk = out["image"], out["mask"]
    # Gamma and contrast are defined on [0, 1]: apply them there and map back.
    lo, hi = float(img.min()), float(img.max())
    if hi - lo > 1e-6:  # in place on arrays of our own: the same float32 operations, fewer copies
        unit = np.subtract(img, lo, dtype=np.float32)
        unit /= hi - lo
        img = intensity(image=unit)["image"]
        np.clip(img, 0.0, 1.0, out=img)
        img *= hi - lo
        img += lo
    return np.asarray(img, dtype=np.float32), msk
