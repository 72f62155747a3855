"""The LiTS liver placed in the synthetic abdomen: placement, fit of the body, painting, HU, cysts.

segkit.data.liver reads the base CT into a `Base` and draws a case by calling these in order: a
per-case `Placement` (scale, tilt, deformation), the placed liver's coarse `profile`, a body grown
to hold it (`fit_body`, `clip_to_cavity`), the diaphragm's `dome`, then on the scanner's grid
`paint_liver`, `gallbladder`, `render` (HU from tissue codes and the real CT) and `add_cysts`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from segkit.data import abdomen, synth
from segkit.data.abdomen import Body, Scene

LIVER_SCALE = (0.75, 1.0, 1.3)  # per-case linear scale (min, mode, max): livers of ~0.6-3.3 L
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
PROFILE_MM = 6.0  # the liver is fitted into the body on a grid this coarse
MAX_HALF_WIDTH_MM = 215.0  # the body grows to hold the liver up to a 430 mm wide abdomen


@dataclass(frozen=True)
class Base:
    """The base CT's liver as the channels every case samples, and where it sits in the base world."""

    channels: np.ndarray  # (3, 128, 128, 128) float32: liver occupancy (smoothed), HU deviation, vessel weight
    tumours: np.ndarray  # float32 tumour component index (0 elsewhere; border-touching ones excluded)
    n_tumours: int
    inv_affine: np.ndarray  # base world (RAS mm) -> voxel
    anchor: np.ndarray  # base world point placed on the body's spine axis at the liver's centroid level
    scale0: float  # scale that brings the base liver to REFERENCE_LIVER_ML
    tissue_hu: dict[str, float]  # median HU of each tissue class of the base CT (portal venous phase)


@dataclass(frozen=True)
class Placement:
    """Where and how the base liver sits in the body frame: body point p maps to base world point
    anchor + rot^T (p - at) / scale + displacement(p)."""

    scale: np.ndarray  # (3,)
    rot: np.ndarray  # (3, 3)
    at: np.ndarray  # body-frame position of the anchor
    disp: np.ndarray  # (3, n, n, n) smooth displacement (base mm) over the box lo..hi of the body frame
    lo: np.ndarray
    hi: np.ndarray

    def base_voxels(self, base: Base, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Base voxel coordinates (3, ...) of body-frame points."""
        p = np.stack([x - self.at[0], y - self.at[1], z - self.at[2]]).reshape(3, -1).astype(np.float32)
        m = (self.rot.T / self.scale[:, None]).astype(np.float32)
        w = m @ p + base.anchor[:, None].astype(np.float32)
        n = np.array(self.disp.shape[1:]) - 1
        vox = (p + self.at[:, None].astype(np.float32) - self.lo[:, None]) / ((self.hi - self.lo) / n)[:, None]
        w += synth.sample(self.disp, vox.astype(np.float32), padding="border")
        v = base.inv_affine[:3, :3].astype(np.float32) @ w + base.inv_affine[:3, 3:4].astype(np.float32)
        return v.reshape(3, *x.shape)


def draw_placement(rng: np.random.Generator, base: Base, y_spine: float) -> Placement:
    """Per-case liver size (0.75-1.3 x a 1.5 L reference), tilt, position and large smooth deformation."""
    scale = base.scale0 * rng.triangular(*LIVER_SCALE) * rng.uniform(0.92, 1.08, size=3)
    at = np.array([rng.uniform(-8.0, 8.0), y_spine + rng.uniform(-10.0, 10.0), rng.uniform(-10.0, 10.0)])
    lo, hi = at + np.array([-120.0, -60.0, -200.0]), at + np.array([280.0, 260.0, 200.0])
    disp = synth.smooth_field(rng, (20, 20, 20), ctrl=4, k=3) * rng.uniform(4.0, 10.0) / base.scale0
    return Placement(scale, synth.rotation(rng, 7.0), at, disp.astype(np.float32), lo, hi)


def _liver_occupancy(base: Base, vox: np.ndarray, cap_vox: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
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


def profile(base: Base, place: Placement, y_spine: float) -> _Profile:
    """Evaluate the placed liver on a coarse grid to fit the body around it."""
    lo = np.array([-150.0, -80.0, -230.0]) + np.array([0.0, y_spine, 0.0])
    axes = [np.arange(lo[k], lo[k] + size, PROFILE_MM) for k, size in enumerate((460.0, 360.0, 460.0))]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    vox = place.base_voxels(base, x.astype(np.float32), y.astype(np.float32), z.astype(np.float32))
    occ, inside = _liver_occupancy(base, vox)
    liver = occ > 0.5
    return _Profile(liver, liver & (inside > 0.5), lo - np.array([0.0, y_spine, 0.0]))


def fit_body(body: Body, prof: _Profile) -> Body:
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


def clip_to_cavity(prof: _Profile, body: Body) -> _Profile:
    """The profile without the parts outside the abdominal cavity (the wall clips the liver)."""
    idx = np.argwhere(prof.occ)
    p = prof.points(prof.occ, body.y_spine)
    tb = abdomen.theta_bin(p[:, 0], p[:, 1])
    out = np.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2) >= body.r_in(tb, p[:, 2]) - 1.0
    occ = prof.occ.copy()
    occ[tuple(idx[out].T)] = False
    return replace(prof, occ=occ, real=prof.real & occ)


def dome(rng: np.random.Generator, body: Body, prof: _Profile) -> tuple[np.ndarray, np.ndarray]:
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


@dataclass
class _LiverPaint:
    """The liver's index box on the fine grid and the base channels sampled in it."""

    box: tuple[slice, ...]
    dev: np.ndarray
    vessel: np.ndarray
    inside: np.ndarray  # weight of the real texture (0 where the liver extends past the crop)
    removed: np.ndarray  # bool: voxels of tumours removed in this case


def paint_liver(
    rng: np.random.Generator, scene: Scene, base: Base, place: Placement, prof: _Profile, body: Body,
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


def gallbladder(rng: np.random.Generator, scene: Scene, body: Body, prof: _Profile) -> bool:
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


def render(
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


def add_cysts(
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
