"""Domain randomisation shared by the dataset makers: output grids, smooth warps, resampling, artefacts.

Every maker follows the same recipe (in the spirit of SynthSeg): draw an output grid (orientation,
voxel spacing, field of view), map its voxels through a random smooth transform back into the real
base anatomy, resample the anatomy's channels there, then synthesise intensities and add scanner
artefacts (bias field, blur, thick slices, noise). All randomness comes from the numpy Generator
passed in, so a (seed, case) pair always gives the same arrays.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from segkit.errors import InputError

T = TypeVar("T")

# All 48 signed axis permutations: every orientation a scanner can write with a diagonal-ish affine.
SIGNED_PERMUTATIONS: tuple[np.ndarray, ...] = tuple(
    np.diag(signs).astype(np.float64)[:, list(perm)]
    for perm in itertools.permutations(range(3))
    for signs in itertools.product((1.0, -1.0), repeat=3)
)


@dataclass(frozen=True)
class Grid:
    """An output voxel grid: array shape and voxel-to-world (RAS mm) affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray  # (4, 4)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        s = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(s[0]), float(s[1]), float(s[2]))


def _init_worker() -> None:
    """One thread per worker process: the pool supplies the parallelism."""
    torch.set_num_threads(1)


def run_jobs(fn: Callable[[Any], T], jobs: list[Any], workers: int | None = None) -> list[T]:
    """fn over jobs, in order, in this process or a spawn pool; results do not depend on workers.

    Default: one worker per 8 jobs up to the CPU count, so tiny builds skip the pool start-up.
    A spawn pool (not fork: torch's OpenMP is not fork-safe) re-imports the caller's main module,
    so scripts must guard their entry point with `if __name__ == "__main__":`.
    """
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(cores, max(1, len(jobs) // 8))
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    with get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        return list(pool.imap(fn, jobs, chunksize=1))


def rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random 3-D rotation with each Euler angle uniform in [-max_deg, max_deg]."""
    a, b, c = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_grid(
    center: np.ndarray,
    fov_mm: np.ndarray,
    spacing: tuple[float, float, float],
    axes: np.ndarray,
    oblique: np.ndarray | None = None,
) -> Grid:
    """Grid centred on a world point covering fov_mm (world x, y, z) with the given axis directions.

    axes is a signed permutation: column k is the world direction array axis k runs along;
    oblique (a small rotation) tilts the whole grid as an oblique acquisition would.
    """
    dirs = axes if oblique is None else oblique @ axes
    m = dirs @ np.diag(spacing)
    world_axis = np.abs(axes).argmax(axis=0)  # world axis each array axis mostly follows
    shape = tuple(max(8, int(round(fov_mm[w] / s))) for w, s in zip(world_axis, spacing, strict=True))
    affine = np.eye(4)
    affine[:3, :3] = m
    affine[:3, 3] = np.asarray(center) - m @ ((np.asarray(shape) - 1) / 2.0)
    return Grid(shape=(shape[0], shape[1], shape[2]), affine=affine)


def random_spacing(
    rng: np.random.Generator, inplane: tuple[float, float], thick: tuple[float, float], p_thick: float
) -> tuple[tuple[float, float, float], int | None]:
    """In-plane spacing for two axes and, with probability p_thick, thick slices on a random axis."""
    s = float(rng.uniform(*inplane))
    spacing = [s, s, float(rng.uniform(inplane[0], inplane[1] * 1.1))]
    slice_axis = None
    if rng.random() < p_thick:
        spacing[2] = float(rng.uniform(*thick))
        slice_axis = 2
    order = rng.permutation(3)  # the slice axis can be any array axis
    spacing = [spacing[i] for i in order]
    if slice_axis is not None:
        slice_axis = int(np.where(order == 2)[0][0])
    return (spacing[0], spacing[1], spacing[2]), slice_axis


def refine_axis(grid: Grid, axis: int, m: int) -> Grid:
    """The same field of view with each slice along axis split into m thin sub-slices."""
    shape = list(grid.shape)
    shape[axis] *= m
    affine = grid.affine.copy()
    affine[:3, axis] /= m
    # thick voxel k is centred on thin voxels m*k .. m*k+m-1
    affine[:3, 3] = grid.affine[:3, 3] - affine[:3, axis] * (m - 1) / 2.0
    return Grid(shape=(shape[0], shape[1], shape[2]), affine=affine)


def slab_average(img: np.ndarray, axis: int, m: int) -> np.ndarray:
    """Average groups of m thin slices into one thick slice (the slice profile of a 2-D acquisition)."""
    x = np.moveaxis(img, axis, 0)
    x = x.reshape(x.shape[0] // m, m, *x.shape[1:]).mean(axis=1)
    return np.ascontiguousarray(np.moveaxis(x, 0, axis))


def slab_centre(lab: np.ndarray, axis: int, m: int) -> np.ndarray:
    """The thin slice at the centre of each slab: the ground truth drawn on the thick slice."""
    idx = [slice(None)] * 3
    idx[axis] = slice(m // 2, None, m)
    return np.ascontiguousarray(lab[tuple(idx)])


def lattice(shape: tuple[int, ...], step: int) -> tuple[np.ndarray, ...]:
    """Index positions of a coarse lattice spanning each axis end to end (about every step voxels)."""
    return tuple(np.linspace(0, n - 1, max(2, int(np.ceil((n - 1) / step)) + 1)) for n in shape)


def lattice_world(grid: Grid, step: int) -> np.ndarray:
    """World coordinates (3, a, b, c) of the coarse lattice nodes of a grid."""
    ii = np.meshgrid(*lattice(grid.shape, step), indexing="ij")
    ijk = np.stack([i.ravel() for i in ii])
    xyz = grid.affine[:3, :3] @ ijk + grid.affine[:3, 3:4]
    return xyz.reshape(3, *ii[0].shape)


def _bspline_matrix(n: int, c: int) -> np.ndarray:
    """(n, c) weights of a cubic B-spline with c control points spread over n samples."""
    t = np.linspace(0, c - 1, n)[:, None] - np.arange(c)[None, :]
    a = np.abs(t)
    w = np.where(a < 1, 2 / 3 - a**2 + a**3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))
    return w / w.sum(axis=1, keepdims=True)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], ctrl: int, k: int = 1) -> np.ndarray:
    """k smooth random fields (k, *shape), unit-variance control points on a ctrl^3 B-spline."""
    coef = rng.standard_normal((k, ctrl, ctrl, ctrl))
    w0, w1, w2 = (_bspline_matrix(n, ctrl) for n in shape)
    out = np.einsum("kabc,ia,jb,lc->kijl", coef, w0, w1, w2, optimize=True)
    std = out[:, ::3, ::3, ::3].reshape(k, -1).std(axis=1).max()  # a subsample estimates it well
    return (out / max(float(std), 1e-6)).astype(np.float32)


def upsample(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear upsampling of (C, a, b, c) lattice values to (C, *shape) (lattice spans end to end)."""
    t = torch.from_numpy(np.ascontiguousarray(coarse, dtype=np.float32))[None]
    return F.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=True)[0].numpy()


def sample(channels: np.ndarray, vox: np.ndarray, mode: str = "bilinear", padding: str = "border") -> np.ndarray:
    """Resample channels (C, X, Y, Z) at voxel positions vox (3, ...) -> (C, ...); linear or nearest."""
    src = torch.from_numpy(np.ascontiguousarray(channels, dtype=np.float32))[None]
    n = vox[0].size
    grid = np.empty((n, 3), dtype=np.float32)
    for k in range(3):  # grid_sample wants (x, y, z) = (W, H, D), normalised with align_corners=True
        size = channels.shape[1 + k] - 1
        np.multiply(vox[k].reshape(-1), 2.0 / max(size, 1), out=grid[:, 2 - k])
    grid -= 1.0
    g = torch.from_numpy(grid).reshape(1, 1, 1, n, 3)
    out = F.grid_sample(src, g, mode=mode, padding_mode=padding, align_corners=True)
    return out.reshape(channels.shape[0], *vox.shape[1:]).numpy()


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) affine to points (3, ...) -> (3, ...) float32."""
    flat = points.reshape(3, -1)
    out = affine[:3, :3].astype(np.float32) @ flat + affine[:3, 3:4].astype(np.float32)
    return out.reshape(points.shape).astype(np.float32)


def to_voxels(world: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World points (3, ...) to voxel indices (3, ...) of a grid with this affine."""
    return apply_affine(np.linalg.inv(affine), world)


def random_warp(
    rng: np.random.Generator,
    world: np.ndarray,
    center: np.ndarray,
    rot_deg: float,
    scale: tuple[float, float],
    shift_mm: float,
    elastic_mm: float,
) -> np.ndarray:
    """Map output world points (3, ...) back into base-anatomy world space by a random smooth warp.

    A random rotation, per-axis scale and shift about center, plus a smooth B-spline displacement
    of about elastic_mm: a diffeomorphism for these small amplitudes, so anatomy is bent, not torn.
    """
    r = rotation(rng, rot_deg)
    s = rng.uniform(*scale, size=3)
    t = rng.uniform(-shift_mm, shift_mm, size=3)
    inv = np.diag(1.0 / s) @ r.T
    flat = world.reshape(3, -1) - (center + t)[:, None]
    out = (inv @ flat + center[:, None]).reshape(world.shape)
    field = smooth_field(rng, world.shape[1:], ctrl=5, k=3) * elastic_mm
    return (out + field).astype(np.float32)


def bias_field(rng: np.random.Generator, shape: tuple[int, int, int], strength: float) -> np.ndarray:
    """A smooth multiplicative intensity inhomogeneity exp(N(0, strength))."""
    return np.exp(smooth_field(rng, shape, ctrl=4)[0] * strength).astype(np.float32)


def blur(img: np.ndarray, sigma_vox: float | tuple[float, float, float]) -> np.ndarray:
    """Gaussian blur in voxel units (a soft reconstruction kernel)."""
    return ndi.gaussian_filter(img, sigma_vox, mode="nearest").astype(np.float32)


def sharpen(img: np.ndarray, amount: float) -> np.ndarray:
    """Unsharp masking (a sharp reconstruction kernel)."""
    return (img + amount * (img - ndi.gaussian_filter(img, 1.0, mode="nearest"))).astype(np.float32)


def rician_noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude-image noise: |img + complex Gaussian|, as in MRI."""
    re = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    im = rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.sqrt(re * re + im * im).astype(np.float32)


def correlated_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, corr_vox: float) -> np.ndarray:
    """Gaussian noise of standard deviation sigma, correlated over ~corr_vox voxels (CT noise texture)."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), corr_vox)
    return (noise * (sigma / max(float(noise.std()), 1e-6))).astype(np.float32)


def axcodes(affine: np.ndarray) -> str:
    """Orientation letters of an affine, e.g. 'RAS' or 'LPS' (direction each axis increases)."""
    return "".join(str(c) for c in nib.aff2axcodes(affine))


def package_file(package: str, relpath: str, install: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"package {package!r} is not installed; the dataset is built from it: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise InputError(f"{path}: missing from the installed {package}; reinstall it: {install}")
    return path


def package_version(dist: str) -> str:
    """Installed version of a distribution, or 'unknown'."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
