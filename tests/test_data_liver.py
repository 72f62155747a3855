"""The liver-cyst generator: the LiTS liver inside a synthetic abdomen (tiny, coarse draws only)."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest
from scipy import ndimage as ndi

from segkit.data import synth
from segkit.measure import measure
from segkit.tasks import TASKS

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("liver_ct_segmentation_package", "mrcfile")),
    reason="liver-ct-segmentation-package not installed",
)
TASK = TASKS["liver-cyst"]
Case = tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


def _draw(seed: int, grade: str = "moderate", **kw: Any) -> Case:
    from segkit.data.liver import draw_case

    return draw_case(np.random.default_rng(seed), grade, **kw)


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + affine[:3, 3]


@pytest.fixture(scope="module")
def clean() -> Case:
    """A noise-free, blur-free draw at 3 mm: HU can be read off the labels."""
    return _draw(3, "severe", voxel_mm=3.0, clean=True)


def test_labels_sit_on_liver_hu_in_a_clean_draw(clean: Case) -> None:
    img, lab, _aff, rec = clean
    liver = ndi.binary_erosion(lab == 1)
    assert liver.sum() > 1000
    # the parenchyma (with its real vessel texture) is centred on the case's liver HU
    assert abs(float(np.median(img[liver])) - rec["liver_hu"]) < 10.0
    # and the label stops where the liver does: just outside it the HU is not parenchyma
    ring = ndi.binary_dilation(lab > 0, iterations=2) & (lab == 0)
    assert np.mean(np.abs(img[ring] - rec["liver_hu"]) < 15.0) < 0.5


def test_cysts_lie_inside_the_liver_at_fluid_density(clean: Case) -> None:
    img, lab, _aff, rec = clean
    cyst = lab == 2
    assert rec["cyst_count"] > 0 and cyst.any()
    assert not (ndi.binary_dilation(cyst) & (lab == 0)).any()  # wrapped in parenchyma everywhere
    core = ndi.binary_erosion(cyst)
    assert -5.0 < float(np.median(img[core])) < 25.0  # water density, sharp margins: no blur in a clean draw


def test_body_surrounds_the_liver_with_fat_and_air_outside() -> None:
    img, lab, aff, rec = next(
        c for c in (_draw(s, voxel_mm=5.0, clean=True) for s in range(10)) if not c[3]["liver_view"]
    )
    assert img.dtype == np.int16  # integer HU, as scanners store it
    fat = (img >= -130) & (img <= -75)
    assert fat.mean() > 0.03  # subcutaneous and visceral fat
    assert (img <= -990).mean() > 0.05  # air around the body
    # the liver is inside the body: no air outside the body next to it (lung and gut air are inside)
    axial = int(np.abs(aff[2, :3]).argmax())
    body = np.moveaxis(np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(img > -500, axial, 0)]), 0, axial)
    assert not (ndi.binary_dilation(lab > 0) & ~body).any()
    # a whole abdomen, not a liver crop: the body is far wider than the liver
    body_w = np.ptp((aff[:3, :3] @ np.argwhere(img > -500)[::50].T)[0])
    liver_w = np.ptp((aff[:3, :3] @ np.argwhere(lab > 0)[::20].T)[0])
    assert body_w > 260.0 and body_w > 1.4 * liver_w


def test_a_zoomed_liver_view_can_cut_the_liver_at_its_sides() -> None:
    """Zoomed reconstructions (like the LiTS crop itself) show a liver that leaves the field on several sides."""
    from segkit.data.liver import LIVER_VIEW_SIDE_MM

    img, lab, aff, rec = next(
        c
        for c in (_draw(s, voxel_mm=5.0, clean=True) for s in range(60))
        if c[3]["liver_view"] and min(c[3]["fov_mm"][:2]) < 190.0
    )
    assert LIVER_VIEW_SIDE_MM[0] <= min(rec["fov_mm"][:2])
    axial = int(np.abs(aff[2, :3]).argmax())
    cut = [a for a in range(3) if a != axial for i in (0, -1) if np.take(lab > 0, i, axis=a).any()]
    assert len(cut) >= 2  # liver on at least two of the four in-plane faces


def _check_right_side(orientation: int) -> None:
    img, lab, aff, rec = _draw(orientation, orientation=orientation, voxel_mm=10.0, clean=True)
    assert rec["orientation_index"] == orientation
    assert synth.axcodes(aff) == rec["orientation"]
    liver = _world_centroid(lab == 1, aff)
    assert liver[0] > 25.0  # RAS+: +x is the patient's right; the body's axis is within ~25 mm of x = 0
    if not rec["liver_view"]:  # the whole body is in view: the liver is right of its centre
        assert liver[0] > _world_centroid(img > -500, aff)[0] + 20.0


# every axis permutation, with several sign patterns; the slow test below runs all 48
@pytest.mark.parametrize("orientation", range(0, len(synth.SIGNED_PERMUTATIONS), 6))
def test_liver_lies_on_the_patients_right_in_every_orientation(orientation: int) -> None:
    _check_right_side(orientation)


@pytest.mark.slow
@pytest.mark.parametrize("orientation", range(len(synth.SIGNED_PERMUTATIONS)))
def test_liver_lies_on_the_patients_right_in_all_48_orientations(orientation: int) -> None:
    _check_right_side(orientation)


def test_same_seed_gives_the_same_case_and_another_seed_another() -> None:
    a, b, c = (_draw(s, voxel_mm=8.0) for s in (5, 5, 6))
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("grade", TASK.grades)
def test_grade_matches_the_biomarker_of_the_labels(grade: str) -> None:
    img, lab, aff, rec = _draw(11, grade, voxel_mm=4.0)
    meas = measure(lab, float(abs(np.linalg.det(aff[:3, :3]))) / 1000.0, TASK)
    assert rec["grade"] == meas["biomarker"]["grade"] == grade
    assert rec["biomarker"] == pytest.approx(meas["biomarker"]["value"], abs=1e-6)
    assert set(np.unique(lab)) <= {0, 1, 2, 3}


def test_splits_hold_every_grade_and_use_their_own_seed_streams() -> None:
    from segkit.data.liver import SPLIT_STREAM, plan_cases

    plan = plan_cases(30, seed=0)
    for split in ("train", "val", "test"):
        rows = [p for p in plan if p["split"] == split]
        assert {p["grade"] for p in rows} == set(TASK.grades)
    assert [p["split"] for p in plan_cases(1, 0)] == ["train"]  # case 0 is the same case in any build size
    assert len(set(SPLIT_STREAM.values())) == 3


def test_real_liver_set_is_the_base_ct_with_segkit_labels(tmp_path) -> None:
    """`segkit data make liver-real`: the LiTS crop as one test case, LiTS tumour -> segkit tumour, no cysts,
    on the package's LPS voxel axes."""
    import json

    from segkit.data.liver import base_ct, make_liver_real
    from segkit.io import read_volume

    make_liver_real(tmp_path)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    (rec,) = meta["training"]
    assert rec["split"] == "test" and rec["grade"] == "healthy" and rec["volumes_ml"]["cyst"] == 0
    img, lab = read_volume(tmp_path / rec["image"]), read_volume(tmp_path / rec["label"], kind="label").data
    hu, lits, affine = base_ct()
    assert np.allclose(img.affine, affine) and np.array_equal(img.data, hu)
    assert np.array_equal(lab == 1, lits == 1) and np.array_equal(lab == 3, lits == 2) and not (lab == 2).any()
    assert 1000 < rec["volumes_ml"]["liver"] + rec["volumes_ml"]["tumour"] < 4500
    assert "".join(synth.axcodes(img.affine)) == "LPS"
