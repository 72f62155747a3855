"""The organs of the synthetic abdomen, painted in anatomical order around the liver.

`paint_viscera` (small bowel, colon, stomach, spleen, pancreas, portal and mesenteric vessels) runs
before the liver is painted, which then covers them; `paint_retroperitoneum` (kidneys, psoas, aorta,
IVC, spine, ribs) runs after it and indents it. Shapes and the scene come from segkit.data.abdomen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segkit.data import synth
from segkit.data.abdomen import NTHETA, THETA, Body, C, Scene, ellipsoid, paint, tube


@dataclass(frozen=True)
class Layout:
    """Where the organs of one case sit (body frame, mm), drawn once per case."""

    kidney_z: tuple[float, float]  # centres of the right and left kidney
    stomach_z: float
    bowel_top: float
    oral_contrast: bool


def draw_layout(rng: np.random.Generator, body: Body) -> Layout:
    """Organ heights relative to the liver: right kidney under it, left kidney higher, bowel below."""
    kr = body.z_bottom + rng.uniform(25.0, 60.0)
    kr = min(kr, -20.0)
    kl = kr + rng.uniform(8.0, 25.0)
    return Layout((kr, kl), body.z_top - rng.uniform(45.0, 70.0), kr + rng.uniform(0.0, 30.0), rng.random() < 0.3)


def paint_viscera(rng: np.random.Generator, scene: Scene, body: Body, lay: Layout, cavity: np.ndarray) -> None:
    """Bowel, colon, stomach, spleen, pancreas: the organs the liver lies over."""
    yv, ry = body.y_spine, body.vb[1]
    ant = float(body.r0[NTHETA * 3 // 4] - body.fat[NTHETA * 3 // 4] - body.wall[NTHETA * 3 // 4])
    lat = float(body.r0[NTHETA // 2] - body.fat[NTHETA // 2] - body.wall[NTHETA // 2])
    _small_bowel(rng, scene, yv + ry + 15.0, lay, cavity)
    kz = lay.kidney_z[0]
    pts = np.array([
        [lat - 45, yv + 35, kz - 90], [lat - 45, yv + 50, body.z_bottom + 10], [lat * 0.3, ant - 40, body.z_bottom - 5],
        [-lat * 0.3, ant - 45, body.z_bottom + 5], [-lat + 45, yv + 45, lay.kidney_z[1] + 40],
        [-lat + 40, yv + 35, kz - 90],
    ])  # fmt: skip
    pts += rng.normal(0.0, 10.0, pts.shape)
    _gut(rng, scene, pts, rng.uniform(18.0, 28.0, len(pts)), "stool" if rng.random() < 0.7 else "gut_air", lay)
    zs = lay.stomach_z
    pts = np.array([[-55, yv + 55, zs + 35], [-70, yv + 85, zs], [-25, yv + 110, zs - 35], [15, yv + 95, zs - 45]])
    pts = pts + rng.normal(0.0, 8.0, pts.shape)
    dist = rng.uniform(0.6, 1.2)
    _gut(rng, scene, pts, np.array([35.0, 35.0, 22.0, 12.0]) * dist, "gut_fluid", lay, air_level=True)
    # spleen: posterolateral left, thin along the radius
    th = np.deg2rad(rng.uniform(-160.0, -130.0))
    big = 1.4 if rng.random() < 0.1 else 1.0
    radii = np.array([rng.uniform(20.0, 28.0), rng.uniform(45.0, 60.0) * big, rng.uniform(45.0, 60.0) * big])
    b = int((th + np.pi) / (2 * np.pi) * NTHETA)
    r_c = float(body.r0[b] - body.fat[b] - body.wall[b]) - radii[0] - 4.0
    center = np.array([r_c * np.cos(th), r_c * np.sin(th), body.z_top - rng.uniform(50.0, 80.0)])
    rot = np.array([[np.cos(th), -np.sin(th), 0.0], [np.sin(th), np.cos(th), 0.0], [0.0, 0.0, 1.0]])
    e = ellipsoid(scene, center, radii, rot @ synth.rotation(rng, 12.0))
    if e is not None:
        paint(scene, e[0], e[1] < 1.0, "spleen", over=("fat", "stool", "gut_air", "gut_wall", "gut_fluid"))
    pts = np.array([[32, yv + ry + 35, kz + 5], [5, yv + ry + 45, kz + 15], [-30, yv + ry + 35, kz + 22],
                    [-65, yv + ry + 12, lay.kidney_z[1] + 25]])  # fmt: skip
    pts = pts + rng.normal(0.0, 5.0, pts.shape)
    t = tube(scene, pts, np.array([16.0, 10.0, 11.0, 9.0]) * rng.uniform(0.8, 1.2))
    if t is not None:
        paint(scene, t[0], t[1] < 1.0, "pancreas", over=("fat",))
    # portal vein from the confluence to the porta hepatis, and the mesenteric vessels below
    pv = np.array([[8, yv + ry + 32, kz + 10], [45, yv + ry + 45, kz + 45]]) + rng.normal(0.0, 5.0, (2, 3))
    for pts, r, name in (
        (pv, 7.0, "vein"),
        (np.array([[8, yv + ry + 38, kz + 10], [12, yv + ry + 45, kz - 150]]), 5.0, "vein"),
        (
            np.array([[-8, yv + ry + 12, kz + 20], [-6, yv + ry + 35, kz + 5], [-2, yv + ry + 40, kz - 150]]),
            3.5,
            "artery",
        ),
    ):
        t = tube(scene, pts, np.full(len(pts), r))
        if t is not None:
            paint(scene, t[0], t[1] < 1.0, name, over=("fat", "pancreas", "gut_wall", "gut_fluid", "gut_air", "stool"))


def _small_bowel(rng: np.random.Generator, scene: Scene, y_back: float, lay: Layout, cavity: np.ndarray) -> None:
    """Loops of small bowel: the tubes where two smooth random fields both cross zero."""
    lo = np.array([-260.0, -200.0, -420.0])
    hi = np.array([260.0, 200.0, lay.bowel_top + 10.0])
    box = scene.box(lo, hi)
    if box is None:
        return
    x, y, z = scene.at(box)
    region = cavity[box] & (z < lay.bowel_top) & (y > y_back)
    if not region.any():
        return
    cell = 9.0
    shape = tuple(int(np.ceil((h - lo_) / cell)) + 1 for lo_, h in zip(lo, hi, strict=True))
    from scipy import ndimage as ndi

    fields = np.stack([ndi.gaussian_filter(rng.standard_normal(shape), 1.3) for _ in range(3)]).astype(np.float32)
    fields /= fields.reshape(3, -1).std(axis=1)[:, None, None, None]
    idx = np.nonzero(region)
    pts = np.stack([x[idx], y[idx], z[idx]])
    vox = (pts - lo[:, None]) / cell
    s = synth.sample(fields, vox, padding="border")  # (3, N)
    width = rng.uniform(0.45, 0.7)
    u = np.maximum(np.abs(s[0]), np.abs(s[1])) / width
    code = scene.code[box]
    sub = code[idx]
    sub[u < 1.0] = C["gut_wall"]
    lumen = u < 0.7
    content = np.where(s[2] > rng.uniform(0.6, 1.4), C["gut_air"], C["gut_fluid"])
    if lay.oral_contrast:
        content = np.where(s[2] < -0.3, C["gut_contrast"], content)
    if rng.random() < 0.3:  # collapsed loops: wall only
        content = np.where(s[2] < 0.0, C["gut_wall"], content)
    sub[lumen] = content[lumen]
    code[idx] = sub


def _gut(
    rng: np.random.Generator, scene: Scene, pts: np.ndarray, radii: np.ndarray, content: str, lay: Layout,
    air_level: bool = False,
) -> None:  # fmt: skip
    """A hollow viscus along a polyline: wall, then contents (an air cap on top when air_level)."""
    t = tube(scene, pts, radii)
    if t is None:
        return
    box, u = t
    over = ("fat", "gut_wall", "gut_fluid", "gut_air", "gut_contrast", "muscle")
    wall = rng.uniform(3.0, 5.0) / float(radii.mean())
    paint(scene, box, u < 1.0, "gut_wall", over=over)
    lumen = u < 1.0 - wall
    if content == "gut_fluid" and lay.oral_contrast and rng.random() < 0.6:
        content = "gut_contrast"
    paint(scene, box, lumen, content, over=("gut_wall",))
    if content == "stool":  # gas bubbles in faeces
        bub = synth.correlated_noise(rng, u.shape, 1.0, 0.8)
        paint(scene, box, lumen & (bub > 1.2), "gut_air", over=("stool",))
    if air_level and rng.random() < 0.7:
        y = scene.Y[box]
        level = float(pts[:, 1].max()) - rng.uniform(0.0, 0.6) * float(radii.max())
        paint(scene, box, lumen & (y > level), "gut_air", over=("gut_fluid", "gut_contrast"))


def paint_retroperitoneum(rng: np.random.Generator, scene: Scene, body: Body, lay: Layout) -> None:
    """Kidneys, psoas, aorta, IVC, spine and ribs: painted over the liver, which they indent."""
    yv, (rx, ry, _) = body.y_spine, body.vb
    for side, zc in zip((1.0, -1.0), lay.kidney_z, strict=True):
        radii = np.array([rng.uniform(24.0, 30.0), rng.uniform(20.0, 25.0), rng.uniform(48.0, 60.0)])
        center = np.array([side * (rx + radii[0] + rng.uniform(18.0, 35.0)), yv + rng.uniform(0.0, 12.0), zc])
        a, b = np.deg2rad(rng.uniform(20.0, 40.0)) * side, np.deg2rad(rng.uniform(8.0, 20.0)) * side
        rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        ry_ = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        rot = ry_ @ rz
        e = ellipsoid(scene, center, radii, rot)
        if e is None:
            continue
        box, u = e
        x = scene.X[box]
        medial = -side * ((x - center[0]) * np.float32(rot[0, 0]) + (scene.Y[box] - center[1]) * np.float32(rot[1, 0]))
        inside = u < 1.0
        paint(scene, box, inside, "kidney_cortex")
        paint(scene, box, inside & (u < 0.72), "kidney_medulla")
        sinus = inside & (u < 0.6) & (medial > -0.1 * radii[0])
        paint(scene, box, sinus, "fat")
        paint(scene, box, sinus & (u < 0.4), "urine")
    for side in (1.0, -1.0):  # psoas: grows from the kidneys' level downwards
        ztop = lay.kidney_z[0] + 30.0
        zz = np.array([ztop, ztop - 250.0])
        pts = np.array([[side * (rx + 6.0), yv - 2.0, zz[0]], [side * (rx + 22.0), yv + 5.0, zz[1]]])
        t = tube(scene, pts, np.array([2.0, rng.uniform(22.0, 30.0)]))
        if t is not None:
            paint(scene, t[0], t[1] < 1.0, "muscle", over=("fat", "gut_wall", "gut_fluid", "gut_air", "stool", "liver"))
    zb = lay.kidney_z[0] - rng.uniform(90.0, 130.0)  # aortic bifurcation
    r_ao, r_ivc = rng.uniform(9.0, 14.0), rng.uniform(10.0, 14.0)
    x_ao, x_ivc = -rng.uniform(10.0, 22.0), rng.uniform(18.0, 28.0)
    y_ao = yv + ry + r_ao + 2.0
    for pts, r, name in (
        (np.array([[x_ao, y_ao, 400.0], [x_ao, y_ao, zb]]), r_ao, "artery"),
        (np.array([[x_ao, y_ao, zb], [x_ao - 45.0, y_ao - 10.0, zb - 150.0]]), r_ao * 0.6, "artery"),
        (np.array([[x_ao, y_ao, zb], [x_ao + 45.0, y_ao - 10.0, zb - 150.0]]), r_ao * 0.6, "artery"),
        (np.array([[x_ivc, yv + ry + r_ivc * 0.8, 400.0], [20.0, yv + ry + r_ivc, zb - 20.0]]), r_ivc, "vein"),
    ):  # fmt: skip
        t = tube(scene, pts, np.full(2, r))
        if t is not None:
            paint(
                scene,
                t[0],
                t[1] < 1.0,
                name,
                over=("fat", "liver", "gut_wall", "gut_fluid", "gut_air", "stool", "pancreas", "lung", "muscle"),
            )
    _spine(rng, scene, body)
    _ribs(rng, scene, body)


def _spine(rng: np.random.Generator, scene: Scene, body: Body) -> None:
    """Vertebral bodies with discs, spinal canal, laminae, spinous and transverse processes."""
    rx, ry, _ = body.vb
    yv = body.y_spine
    box = scene.box(np.array([-70.0, yv - ry - 70.0, -1e4]), np.array([70.0, yv + ry, 1e4]))
    if box is None:
        return
    x, y, z = scene.at(box)
    period, disc = rng.uniform(30.0, 37.0), rng.uniform(7.0, 10.0)
    frac = np.mod(z / period + rng.uniform(0.0, 1.0), 1.0)
    is_disc = frac < disc / period
    u = np.sqrt((x / rx) ** 2 + ((y - yv) / ry) ** 2)
    code = scene.code[box]
    vert = u < 1.0
    code[vert] = C["bone"]
    code[vert & (u < 0.82)] = C["marrow"]
    code[vert & is_disc] = C["disc"]
    yc = yv - ry - 9.0
    rc = np.sqrt(x**2 + (y - yc) ** 2)
    f0 = disc / period
    post = (frac > f0 + 0.05) & (frac < f0 + 0.6)
    code[post & (rc < 15.0) & (rc >= 9.0)] = C["bone"]  # pedicles and laminae
    spinous = (frac > f0 + 0.25) & (frac < f0 + 0.75)  # the spinous process leans down
    code[spinous & (np.abs(x) < 3.5) & (y < yc) & (y > yc - rng.uniform(30.0, 42.0))] = C["bone"]
    transverse = (frac > f0 + 0.15) & (frac < f0 + 0.4)
    code[transverse & (np.abs(y - yc - 2.0) < 4.0) & (np.abs(x) < rng.uniform(30.0, 42.0)) & (np.abs(x) > 12.0)] = C[
        "bone"
    ]
    code[rc < 9.0] = C["csf"]


def _ribs(rng: np.random.Generator, scene: Scene, body: Body) -> None:
    """Lower ribs: bony bands in the wall that run down and forward from the spine."""
    top = body.z_top + 80.0
    box = scene.box(np.array([-400.0, -400.0, body.z_bottom - 40.0]), np.array([400.0, 400.0, top]))
    if box is None or scene.r is None or scene.tb is None or scene.r_in is None:
        return
    z, r, tb, r_in = scene.Z[box], scene.r[box], scene.tb[box], scene.r_in[box]
    width = rng.uniform(8.0, 12.0)
    ring = (r > r_in + 1.0) & (r < r_in + 1.0 + width)
    idx = np.nonzero(ring)
    z, tb = z[idx], tb[idx]
    theta = THETA[tb]
    arc = np.abs(np.mod(theta + np.pi / 2 + np.pi, 2 * np.pi) - np.pi) * 120.0  # mm along the wall from the spine
    ant = (1.0 + np.sin(theta)) / 2.0
    z_low = body.z_bottom + rng.uniform(10.0, 40.0) + ant * rng.uniform(40.0, 70.0)  # the costal margin
    period = rng.uniform(30.0, 40.0)
    band = np.mod((z + rng.uniform(0.55, 0.8) * arc) / period + rng.uniform(0.0, 1.0), 1.0) < width / period
    keep = (
        band
        & (z > z_low)
        & (np.abs(theta - np.pi / 2) > np.deg2rad(28.0))
        & (np.abs(theta + np.pi / 2) > np.deg2rad(12.0))
    )
    code = scene.code[box]
    sub = code[idx]
    sub[keep & np.isin(sub, [C["muscle"], C["fat"]])] = C["rib"]
    code[idx] = sub
