"""A synthetic abdomen drawn around a real liver: tissue codes on a scanner grid, then HU per phase.

The scene lives in a *body frame* (mm; x to the patient's right, y anterior, z to the head; origin on
the midline at the body's centre, z = 0 at the liver's centroid). Every voxel of the output grid
carries its body-frame position (X, Y, Z); each structure is an implicit shape evaluated only in the
index box its body-frame bounding box maps to, and writes its tissue code. This module holds the
body, the scene and its drawing primitives, the body wall and the thorax; segkit.data.organs paints
the organs. Painting order encodes anatomy: the liver (painted by segkit.data.liver_scene between
`organs.paint_viscera` and `organs.paint_retroperitoneum`) covers bowel, stomach and spleen, and is
itself indented by the kidneys, great vessels, spine and ribs. `draw_hu` then draws one mean HU and
texture per tissue for the case's contrast phase.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

CODES = (
    "air", "fat", "skin", "muscle", "bone", "marrow", "disc", "csf", "artery", "vein",
    "kidney_cortex", "kidney_medulla", "urine", "spleen", "pancreas", "gut_wall", "gut_fluid",
    "gut_air", "gut_contrast", "stool", "lung", "blood", "myocardium", "bile", "table", "rib",
    "liver", "tumour", "cyst",
)  # fmt: skip
C = {name: i for i, name in enumerate(CODES)}
PHASES = ("native", "arterial", "portal", "delayed")
# Mean HU range per tissue and phase (native, arterial, portal venous, delayed); one range = any phase.
HU: dict[str, tuple[tuple[float, float], ...]] = {
    "air": ((-1010.0, -990.0),),
    "fat": ((-125.0, -80.0),),
    "skin": ((10.0, 50.0),),
    "muscle": ((35.0, 55.0), (40.0, 60.0), (45.0, 65.0), (45.0, 60.0)),
    "bone": ((450.0, 900.0),),
    "marrow": ((130.0, 300.0),),
    "disc": ((60.0, 110.0),),
    "csf": ((0.0, 25.0),),
    "artery": ((30.0, 50.0), (220.0, 450.0), (140.0, 220.0), (100.0, 150.0)),
    "vein": ((30.0, 50.0), (60.0, 130.0), (130.0, 200.0), (100.0, 140.0)),
    "kidney_cortex": ((25.0, 40.0), (140.0, 260.0), (140.0, 220.0), (100.0, 170.0)),
    "kidney_medulla": ((25.0, 40.0), (50.0, 110.0), (130.0, 210.0), (110.0, 180.0)),
    "urine": ((0.0, 15.0), (0.0, 15.0), (5.0, 30.0), (250.0, 900.0)),
    "spleen": ((40.0, 55.0), (90.0, 150.0), (100.0, 140.0), (80.0, 110.0)),
    "pancreas": ((35.0, 50.0), (90.0, 150.0), (80.0, 120.0), (60.0, 90.0)),
    "gut_wall": ((30.0, 45.0), (60.0, 120.0), (70.0, 110.0), (60.0, 90.0)),
    "gut_fluid": ((-5.0, 25.0),),
    "gut_air": ((-1000.0, -850.0),),
    "gut_contrast": ((150.0, 500.0),),
    "stool": ((-60.0, 40.0),),
    "lung": ((-900.0, -800.0),),
    "blood": ((30.0, 50.0), (200.0, 400.0), (130.0, 200.0), (100.0, 140.0)),
    "myocardium": ((35.0, 50.0), (90.0, 140.0), (80.0, 120.0), (70.0, 100.0)),
    "bile": ((0.0, 25.0),),
    "table": ((-250.0, 50.0),),
    "rib": ((250.0, 650.0),),
    "liver": ((45.0, 65.0), (65.0, 90.0), (95.0, 130.0), (75.0, 100.0)),
    "tumour": ((30.0, 50.0), (50.0, 85.0), (50.0, 90.0), (50.0, 80.0)),
    "cyst": ((0.0, 20.0),),
}
# Texture (smooth, ~8 mm blobs) standard deviation range per tissue, HU; the rest get 2-8 HU.
TEXTURE = {
    "fat": (4.0, 12.0), "stool": (40.0, 90.0), "lung": (20.0, 50.0), "bone": (60.0, 160.0),
    "marrow": (20.0, 60.0), "rib": (40.0, 120.0), "spleen": (4.0, 14.0), "gut_contrast": (20.0, 80.0),
}  # fmt: skip
NTHETA = 360


@dataclass(frozen=True)
class Body:
    """One patient's body outline, wall layers and the positions the organs hang on (mm)."""

    r0: np.ndarray  # (NTHETA,) outline radius per polar angle at z = 0
    fat: np.ndarray  # (NTHETA,) subcutaneous fat thickness
    wall: np.ndarray  # (NTHETA,) muscle thickness (abdominal wall; paraspinal muscles posteriorly)
    zcoef: tuple[float, float]  # outline scale 1 + c1 z/200 + c2 (z/200)^2 (not posteriorly)
    vb: tuple[float, float, float]  # vertebral body semi-axes x, y and its y centre
    z_top: float  # liver dome (body z)
    z_bottom: float  # lowest liver (body z)

    def r_out(self, theta_bin: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Outline radius at each (polar bin, z)."""
        c1, c2 = self.zcoef
        t = np.clip(z / 200.0, -1.5, 1.5)
        s = np.clip(1.0 + c1 * t + c2 * t * t, 0.8, 1.2)
        ant = self._ant[theta_bin]  # 0 posteriorly, 1 anteriorly: the back lies flat on the table
        return self.r0[theta_bin] * (1.0 + (s - 1.0) * ant)

    @property
    def _ant(self) -> np.ndarray:
        return (1.0 + np.sin(THETA)) / 2.0

    def r_in(self, theta_bin: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Radius of the abdominal cavity (inside the muscle wall)."""
        return self.r_out(theta_bin, z) - self.fat[theta_bin] - self.wall[theta_bin]

    def scaled(self, k_lat: float, k_ant: float, k_post: float) -> Body:
        """The same body with its outline scaled laterally, in front and behind (wall and fat kept)."""
        c2, s = np.cos(THETA) ** 2, np.sin(THETA)
        k = k_lat * c2 + np.where(s > 0, k_ant, k_post) * (1.0 - c2)
        return replace(self, r0=self.r0 * k)

    @property
    def y_spine(self) -> float:
        """y of the vertebral body's centre: its front half bulges into the cavity from behind."""
        post = NTHETA // 4  # bin of theta = -90 degrees
        return float(-(self.r0[post] - self.fat[post] - self.wall[post]) - 0.3 * self.vb[1])


# centre angle of each polar bin (radians, -pi..pi): 0 to the patient's right, pi/2 anterior
THETA = (np.arange(NTHETA) + 0.5) * (2 * np.pi / NTHETA) - np.pi


def theta_bin(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Polar-angle bin of body-frame points."""
    b = ((np.arctan2(y, x) + np.pi) * (NTHETA / (2 * np.pi))).astype(np.int16)
    return np.minimum(b, NTHETA - 1)


def draw_body(rng: np.random.Generator) -> Body:
    """A random adult outline: 280-400 mm wide, flatter behind, with fat and muscle layers."""
    a = rng.uniform(128.0, 175.0)
    b_ant, b_post = a * rng.uniform(0.62, 0.85), a * rng.uniform(0.55, 0.7)
    c, s = np.cos(THETA), np.sin(THETA)
    n = np.where(s > 0, rng.uniform(2.0, 2.6), rng.uniform(2.6, 3.4))  # the back is squarer than the front
    bb = np.where(s > 0, b_ant, b_post)
    r0 = 1.0 / (np.abs(c / a) ** n + np.abs(s / bb) ** n) ** (1.0 / n)
    for k in (2, 3, 4):  # gentle irregularity of the outline
        r0 *= 1.0 + rng.normal(0.0, 0.015) * np.cos(k * THETA + rng.uniform(0, 2 * np.pi))
    obese = rng.uniform(0.0, 1.0) ** 1.5
    f_ant, f_lat, f_post = 8 + 45 * obese * rng.uniform(0.7, 1.3), 6 + 35 * obese, 5 + 20 * obese
    fat = f_lat + (f_ant - f_lat) * np.clip(s, 0, 1) ** 2 + (f_post - f_lat) * np.clip(-s, 0, 1) ** 2
    w_ant, w_lat = rng.uniform(7.0, 13.0), rng.uniform(9.0, 16.0)
    paraspinal = rng.uniform(50.0, 70.0) * np.exp(-(((THETA + np.pi / 2) / 0.42) ** 2))
    wall = w_lat + (w_ant - w_lat) * np.clip(s, 0, 1) ** 2 + paraspinal
    vb = (rng.uniform(19.0, 25.0), rng.uniform(14.0, 18.0), 0.0)
    return Body(r0, fat, wall, (rng.uniform(-0.08, 0.05), rng.uniform(-0.12, 0.04)), vb, 0.0, 0.0)


@dataclass
class Scene:
    """Body-frame coordinates of every output voxel and the tissue code painted there."""

    X: np.ndarray  # (X, Y, Z) float32 body-frame mm
    Y: np.ndarray
    Z: np.ndarray
    code: np.ndarray  # uint8 tissue code
    lattice: np.ndarray  # (3, a, b, c) body-frame position of the coarse lattice nodes
    nodes: tuple[np.ndarray, ...]  # voxel index of the lattice nodes along each axis
    r: np.ndarray | None = None  # distance from the body axis, filled by paint_body
    tb: np.ndarray | None = None  # polar-angle bin
    r_in: np.ndarray | None = None  # radius of the cavity wall along the same ray

    def box(self, lo: np.ndarray, hi: np.ndarray, margin: float = 12.0) -> tuple[slice, ...] | None:
        """Index box of the voxels whose body position may fall in [lo, hi] (None: out of view)."""
        lat = self.lattice
        inside = np.ones(lat.shape[1:], dtype=bool)
        for k in range(3):
            inside &= (lat[k] >= lo[k] - margin) & (lat[k] <= hi[k] + margin)
        if not inside.any():
            return None
        out = []
        for k in range(3):
            hit = np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != k)))
            nodes = self.nodes[k]
            a = nodes[max(hit[0] - 1, 0)]
            b = nodes[min(hit[-1] + 1, len(nodes) - 1)]
            out.append(slice(int(np.floor(a)), int(np.ceil(b)) + 1))
        return tuple(out)

    def at(self, box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Body coordinates inside an index box (views)."""
        return self.X[box], self.Y[box], self.Z[box]


def ellipsoid(
    scene: Scene, center: np.ndarray, radii: np.ndarray, rot: np.ndarray | None = None
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """(box, normalised radius u) of an ellipsoid: u < 1 inside. rot: columns are its axes."""
    ext = np.full(3, float(radii.max()))
    box = scene.box(center - ext, center + ext)
    if box is None:
        return None
    x, y, z = scene.at(box)
    p = (x - center[0], y - center[1], z - center[2])
    rot = np.eye(3) if rot is None else rot
    u2 = np.zeros(x.shape, dtype=np.float32)
    for k in range(3):
        q = p[0] * np.float32(rot[0, k]) + p[1] * np.float32(rot[1, k]) + p[2] * np.float32(rot[2, k])
        u2 += (q / np.float32(radii[k])) ** 2
    return box, np.sqrt(u2)


def tube(scene: Scene, points: np.ndarray, radii: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """(box, normalised distance u) to a polyline with a radius per vertex: u < 1 inside."""
    lo, hi = (points - radii[:, None]).min(axis=0), (points + radii[:, None]).max(axis=0)
    box = scene.box(lo, hi)
    if box is None:
        return None
    x, y, z = scene.at(box)
    u = np.full(x.shape, np.inf, dtype=np.float32)
    for (a, b), (ra, rb) in zip(
        zip(points[:-1], points[1:], strict=True), zip(radii[:-1], radii[1:], strict=True), strict=True
    ):
        d = b - a
        sub = scene.box(np.minimum(a, b) - max(ra, rb), np.maximum(a, b) + max(ra, rb))
        if sub is None:
            continue
        sl = tuple(
            slice(max(s.start - o.start, 0), min(s.stop, o.stop) - o.start) for s, o in zip(sub, box, strict=True)
        )
        px, py, pz = x[sl] - a[0], y[sl] - a[1], z[sl] - a[2]
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / max(float(d @ d), 1e-6), 0.0, 1.0)
        dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
        np.minimum(u[sl], dist / (ra + t * (rb - ra)), out=u[sl])
    return box, u


def paint(scene: Scene, box: tuple[slice, ...], mask: np.ndarray, name: str, over: tuple[str, ...] = ()) -> None:
    """Write a tissue code where mask holds (only over the listed codes when given)."""
    code = scene.code[box]
    if over:
        mask = mask & np.isin(code, [C[o] for o in over])
    code[mask] = C[name]


def paint_body(rng: np.random.Generator, scene: Scene, body: Body) -> np.ndarray:
    """Air, table, skin, subcutaneous fat, muscle wall; returns the cavity mask (visceral fat)."""
    scene.r = r = np.sqrt(scene.X**2 + scene.Y**2)
    scene.tb = tb = theta_bin(scene.X, scene.Y)
    r_out = body.r_out(tb, scene.Z)
    r_fat = r_out - body.fat[tb]
    scene.r_in = r_in = r_fat - body.wall[tb]
    code = scene.code
    code[:] = C["air"]
    if rng.random() < 0.6:  # the scanner table under the patient
        y_table = -body.r0[NTHETA // 4] - rng.uniform(2.0, 15.0) + scene.X**2 / rng.uniform(900.0, 2500.0)
        code[(np.abs(scene.Y - y_table) < rng.uniform(2.0, 4.0)) & (np.abs(scene.X) < 230.0)] = C["table"]
    code[r < r_out] = C["skin"]
    code[r < r_out - 2.0] = C["fat"]
    code[r < r_fat] = C["muscle"]
    cavity = r < r_in
    code[cavity] = C["fat"]
    # fat septum behind the spine between the paraspinal muscles
    code[(np.abs(scene.X) < 2.5) & (scene.Y < body.y_spine - 40.0) & (r < r_fat)] = C["fat"]
    return cavity


def paint_thorax(
    rng: np.random.Generator, scene: Scene, body: Body, cavity: np.ndarray, dome: np.ndarray, dome_lo: np.ndarray,
    step: float,
) -> None:  # fmt: skip
    """Lung bases above the diaphragm (dome: (1, nx, ny) height map every step mm from dome_lo), heart."""
    recess = rng.uniform(40.0, 70.0)  # how far the posterior costophrenic recesses reach below the dome
    above = cavity & (scene.Z > float(dome[0].min()) - recess)
    if not above.any() or scene.r is None or scene.tb is None or scene.r_in is None:
        return
    idx = np.nonzero(above)
    x, y, z = scene.X[idx], scene.Y[idx], scene.Z[idx]
    zd = _lookup2d(dome[0], dome_lo, x, y, step)
    code = scene.code[idx]
    cav = code == C["fat"]
    below = np.clip((zd - z) / recess, 0.0, None)  # 0 at the dome, 1 at the recess' lowest point
    depth = scene.r_in[idx] - scene.r[idx]  # mm inside the wall
    back = np.sin(THETA[scene.tb[idx]]) < 0.3
    in_recess = back & (below < 1.0) & (depth < rng.uniform(20.0, 35.0) * (1.0 - below))
    code[cav & ((z > zd) | in_recess)] = C["muscle"]  # the diaphragm
    lung = cav & ((z > zd + 4.0) | (in_recess & (depth < rng.uniform(15.0, 30.0) * (1.0 - below) - 4.0)))
    code[lung] = C["lung"]
    # mediastinum: fat between the lungs in front of the spine
    med = lung & (np.abs(x + 8.0) < 22.0) & (y < body.y_spine + body.vb[1] + 45.0)
    code[med] = C["fat"]
    hx, hy, hz = rng.uniform(65.0, 80.0), rng.uniform(50.0, 62.0), rng.uniform(50.0, 60.0)
    hc = np.array([rng.uniform(-35.0, -15.0), body.y_spine + body.vb[1] + hy + rng.uniform(15.0, 30.0)])
    base = _lookup2d(dome[0], dome_lo, np.array([hc[0]]), np.array([hc[1]]), step)[0]
    a = np.deg2rad(rng.uniform(20.0, 40.0))
    px, py = (x - hc[0]) * np.cos(a) + (y - hc[1]) * np.sin(a), -(x - hc[0]) * np.sin(a) + (y - hc[1]) * np.cos(a)
    u = np.sqrt((px / hx) ** 2 + (py / hy) ** 2 + ((z - base - hz - 4.0) / hz) ** 2)
    heart = (z > zd + 4.0) & (code != C["muscle"]) & ~np.isin(code, [C["skin"], C["air"], C["table"]])
    code[heart & (u < 1.12) & (code == C["lung"])] = C["fat"]  # pericardial fat
    code[heart & (u < 1.0)] = C["myocardium"]
    code[heart & (u < 0.8)] = C["blood"]
    scene.code[idx] = code


def _lookup2d(grid: np.ndarray, lo: np.ndarray, x: np.ndarray, y: np.ndarray, step: float) -> np.ndarray:
    """Bilinear lookup of a 2-D body-frame map (x, y) sampled every step mm from lo."""
    t = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None, None]  # (1, 1, nx, ny)
    gx = (y - lo[1]) / step / max(grid.shape[1] - 1, 1) * 2 - 1  # grid_sample wants (W, H) = (y, x)
    gy = (x - lo[0]) / step / max(grid.shape[0] - 1, 1) * 2 - 1
    g = torch.from_numpy(np.stack([gx, gy], axis=-1).astype(np.float32)).reshape(1, 1, -1, 2)
    return F.grid_sample(t, g, mode="bilinear", padding_mode="border", align_corners=True).reshape(-1).numpy()


def draw_hu(rng: np.random.Generator, phase: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean HU and texture SD per tissue code for one case in one contrast phase."""
    p = PHASES.index(phase)
    mean = np.zeros(len(CODES), np.float32)
    std = np.zeros(len(CODES), np.float32)
    for name, ranges in HU.items():
        lo, hi = ranges[p] if len(ranges) > 1 else ranges[0]
        mean[C[name]] = rng.uniform(lo, hi)
        std[C[name]] = rng.uniform(*TEXTURE.get(name, (2.0, 8.0)))
    return mean, std
