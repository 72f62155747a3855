"""Metrics against independent references (scipy EDT, MONAI, scikit-learn) on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, compute_iou
from scipy.ndimage import binary_erosion, distance_transform_edt
from skimage.measure import label as skimage_label
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from segkit.metrics import (
    bootstrap_ci,
    confusion_counts,
    dice_from_counts,
    dice_per_label,
    expected_calibration_error,
    grade_agreement,
    grading_metrics,
    lesion_counts,
    lesion_table,
    segmentation_metrics,
)

LABELS = ("background", "organ")
GRADES = ("healthy", "moderate", "severe")


def cube(shape: tuple[int, int, int], start: int, side: int, shift: int = 0, axis: int = 0) -> np.ndarray:
    """A uint8 mask with a cube of `side` voxels at `start`, moved by `shift` along `axis`."""
    m = np.zeros(shape, dtype=np.uint8)
    sl = [slice(start, start + side)] * 3
    sl[axis] = slice(start + shift, start + shift + side)
    m[tuple(sl)] = 1
    return m


def reference_surface(p: np.ndarray, t: np.ndarray, spacing: tuple, tol: float) -> dict[str, float]:
    """HD, HD95, ASSD and a voxel-counting NSD by hand: erosion-XOR surfaces, distances from scipy's EDT."""
    ep, et = p ^ binary_erosion(p), t ^ binary_erosion(t)
    d_pt = distance_transform_edt(~et, sampling=spacing)[ep]  # pred surface -> truth surface
    d_tp = distance_transform_edt(~ep, sampling=spacing)[et]
    both = np.concatenate([d_pt, d_tp])
    return {
        "hd": float(max(d_pt.max(), d_tp.max())),
        "hd95": float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))),
        "assd": float(both.mean()),
        "nsd": float((both <= tol).sum() / both.size),
    }


@pytest.mark.parametrize(
    ("shift", "axis", "spacing"),
    [(1, 0, (1.0, 1.0, 1.0)), (2, 0, (2.0, 0.8, 1.2)), (3, 2, (0.7, 0.9, 2.5))],
)
def test_shifted_cube_matches_analytic_dice_and_edt_distances(shift, axis, spacing):
    side, shape = 10, (24, 24, 24)
    t = cube(shape, 6, side)
    p = cube(shape, 6, side, shift, axis)
    m = segmentation_metrics(p, t, spacing, LABELS, nsd_tolerance_mm=1.5)
    assert m["dice_organ"] == pytest.approx(1 - shift / side)
    assert m["iou_organ"] == pytest.approx(m["dice_organ"] / (2 - m["dice_organ"]))
    ref = reference_surface(p.astype(bool), t.astype(bool), spacing, tol=1.5)
    assert ref["hd"] == pytest.approx(shift * spacing[axis])  # the reference itself is right
    assert m["hd95_organ"] == pytest.approx(ref["hd95"], rel=1e-5)
    assert m["hd95_organ"] <= shift * spacing[axis] + 1e-6
    assert m["assd_organ"] == pytest.approx(ref["assd"], rel=1e-5)
    box = (6, 6 + side)
    moved = tuple((6 + shift * (a == axis), 6 + side + shift * (a == axis)) for a in range(3))
    assert m["nsd_organ"] == pytest.approx(box_nsd(((box,) * 3), moved, spacing, 1.5), abs=0.03)
    assert m["empty_organ"] == ""


def box_nsd(a: tuple, b: tuple, spacing: tuple, tol: float, step: float = 0.05) -> float:
    """The surface-area NSD of two boxes given as ((lo, hi) voxel faces per axis), integrated on their true
    surfaces: each face tiled in squares of about `step` mm, each tile's exact distance to the other box's
    surface, the tiles within `tol` summed by area, both ways, over both areas (Nikolov et al.'s definition)."""
    boxes = [(np.array([lo for lo, _ in x]) * spacing, np.array([hi for _, hi in x]) * spacing) for x in (a, b)]
    within = total = 0.0
    for (lo, hi), (olo, ohi) in (boxes, boxes[::-1]):
        for ax in range(3):
            u, v = (k for k in range(3) if k != ax)
            nu, nv = (max(1, round((hi[k] - lo[k]) / step)) for k in (u, v))
            gu, gv = np.meshgrid(
                lo[u] + (np.arange(nu) + 0.5) * (hi[u] - lo[u]) / nu,
                lo[v] + (np.arange(nv) + 0.5) * (hi[v] - lo[v]) / nv,
                indexing="ij",
            )
            tile = (hi[u] - lo[u]) / nu * (hi[v] - lo[v]) / nv
            for level in (lo[ax], hi[ax]):
                pts = np.empty((gu.size, 3))
                pts[:, u], pts[:, v], pts[:, ax] = gu.ravel(), gv.ravel(), level
                inside = np.all((pts >= olo) & (pts <= ohi), axis=1)
                d_in = np.minimum(pts - olo, ohi - pts).min(axis=1)
                d_out = np.linalg.norm(np.maximum(0, np.maximum(olo - pts, pts - ohi)), axis=1)
                within += tile * np.count_nonzero(np.where(inside, d_in, d_out) <= tol)
                total += tile * gu.size
    return within / total


@pytest.mark.parametrize(
    ("truth", "pred", "spacing", "tol"),
    [
        (((5, 25), (5, 25), (5, 15)), ((5, 25), (5, 25), (6, 16)), (1.0, 1.0, 3.0), 2.5),
        (((5, 25), (5, 25), (5, 15)), ((5, 25), (5, 25), (5, 17)), (1.0, 1.0, 3.0), 2.5),
        (((5, 30), (5, 30), (5, 9)), ((5, 30), (5, 30), (5, 10)), (0.7, 0.7, 5.0), 2.0),
        (((5, 30), (5, 12), (5, 12)), ((5, 33), (5, 12), (5, 12)), (0.5, 2.0, 3.0), 1.0),
    ],
)
def test_nsd_weighs_the_surface_by_area_on_anisotropic_voxels(truth, pred, spacing, tol):
    """NSD is the surface-area one of MSD papers: within 0.03 of the boxes' exact surface integral, where
    counting boundary voxels alike (MONAI's default; segkit's NSD until 2026-11-29) is 0.09-0.21 off."""
    shape = (40, 40, 24)
    t, p = (np.zeros(shape, np.uint8) for _ in range(2))
    t[tuple(slice(*x) for x in truth)] = 1
    p[tuple(slice(*x) for x in pred)] = 1
    exact = box_nsd(truth, pred, spacing, tol)
    m = segmentation_metrics(p, t, spacing, LABELS, nsd_tolerance_mm=tol)
    assert m["nsd_organ"] == pytest.approx(exact, abs=0.03)
    counted = reference_surface(p.astype(bool), t.astype(bool), spacing, tol)["nsd"]
    assert abs(counted - exact) > 0.08  # the case tells the two definitions apart


def test_volumes_use_voxel_spacing():
    t = cube((24, 24, 24), 6, 10)  # 1000 voxels
    p = cube((24, 24, 24), 6, 10, shift=2)
    m = segmentation_metrics(p, t, (1.0, 1.0, 2.5), LABELS, 2.0)
    assert m["vol_true_ml_organ"] == pytest.approx(2.5)  # 1000 * 2.5 mm^3
    assert m["vol_pred_ml_organ"] == pytest.approx(2.5)
    assert m["vol_diff_ml_organ"] == pytest.approx(0.0)
    assert m["vol_fp_ml_organ"] == pytest.approx(200 * 2.5 / 1000)


def test_perfect_prediction_scores_dice_one_and_zero_distance():
    t = cube((24, 24, 24), 6, 10)
    m = segmentation_metrics(t, t, (1.0, 1.0, 1.0), LABELS, 1.0)
    assert (m["dice_organ"], m["iou_organ"], m["nsd_organ"]) == (1.0, 1.0, 1.0)
    assert m["hd95_organ"] == pytest.approx(0.0) and m["assd_organ"] == pytest.approx(0.0)


def test_both_empty_is_defined_as_dice_one():
    e = np.zeros((16, 16, 16), dtype=np.uint8)
    m = segmentation_metrics(e, e, (1.0, 1.0, 1.0), LABELS, 2.0)
    assert m["empty_organ"] == "both"
    assert (m["dice_organ"], m["iou_organ"], m["nsd_organ"]) == (1.0, 1.0, 1.0)
    assert (m["hd95_organ"], m["assd_organ"]) == (None, None)  # no distance: out of the means (a 0 pulled them down)
    assert dice_per_label(e, e, 2).tolist() == [1.0]


def test_a_lesion_free_case_does_not_lower_the_mean_hd95():
    """Three lesion-free cases and one lesion found 7 mm off: the mean HD95 was 1.75 mm, and 0 had the lesion been
    missed altogether (the audit's example); it is the found lesion's own distance."""
    from segkit.report import build_report

    e = np.zeros((24, 24, 24), dtype=np.uint8)
    t = cube((24, 24, 24), 6, 10)
    p = cube((24, 24, 24), 6, 10, shift=7)
    rows = [segmentation_metrics(e, e, (1.0, 1.0, 1.0), LABELS, 1.0) for _ in range(3)]
    rows.append(segmentation_metrics(p, t, (1.0, 1.0, 1.0), LABELS, 1.0))
    rows = [{"case": f"c{i}", "grade_true": None, **r} for i, r in enumerate(rows)]
    report = build_report(rows, np.zeros((4, 3)), np.full(4, -1), GRADES, LABELS, {}, bootstrap=20)
    assert report["segmentation"]["organ"]["hd95"]["mean"] == pytest.approx(rows[3]["hd95_organ"])


@pytest.mark.parametrize("truth_empty", [True, False])
def test_one_empty_gives_dice_zero_and_undefined_distances(truth_empty):
    e = np.zeros((16, 16, 16), dtype=np.uint8)
    c = cube((16, 16, 16), 4, 5)
    p, t = (c, e) if truth_empty else (e, c)
    m = segmentation_metrics(p, t, (1.0, 1.0, 2.0), LABELS, 2.0)
    assert m["empty_organ"] == ("truth" if truth_empty else "pred")
    assert (m["dice_organ"], m["iou_organ"], m["nsd_organ"]) == (0.0, 0.0, 0.0)
    assert m["hd95_organ"] is None and m["assd_organ"] is None
    fp = 125 * 2.0 / 1000 if truth_empty else 0.0
    assert m["vol_fp_ml_organ"] == pytest.approx(fp)


def test_dice_per_label_matches_monai_dicemetric():
    rng = np.random.default_rng(0)
    for num_classes in (2, 3, 4):
        t = rng.integers(0, num_classes, (12, 14, 10))
        p = np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, num_classes, t.shape))
        p[p == num_classes - 1] = 0  # the last label is predicted nowhere: Dice 0
        if num_classes == 4:
            t[t == 2], p[p == 2] = 0, 0  # label 2 absent from both: Dice 1
        oh = [torch.nn.functional.one_hot(torch.from_numpy(a), num_classes).permute(3, 0, 1, 2)[None] for a in (p, t)]
        ref = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(*oh)
        iou = compute_iou(*oh, include_background=False, ignore_empty=False)
        assert np.allclose(dice_per_label(p, t, num_classes), ref[0].numpy())
        names = ("background",) + tuple(f"l{i}" for i in range(1, num_classes))
        m = segmentation_metrics(p, t, (1.0, 1.0, 1.0), names, 1.0)
        assert np.allclose([m[f"iou_l{i}"] for i in range(1, num_classes)], iou[0].numpy())


def test_dice_per_label_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        dice_per_label(np.full((4, 4), 3), np.zeros((4, 4), dtype=int), 3)


def test_pooled_dice_weighs_voxels_not_cases():
    """A 1-voxel false lesion in a lesion-free case: the per-case mean loses half, the pooled Dice a sliver;
    pooling matches MONAI's DiceMetric on the cases laid side by side as one image."""
    truth = np.zeros((2, 10, 10), dtype=np.uint8)
    truth[1, 2:6, 2:6] = 1  # 16 lesion voxels in case 1; case 0 has none
    pred = truth.copy()
    pred[0, 8, 8] = 1  # one false lesion voxel in case 0
    per_case = [dice_per_label(p, t, 2)[0] for p, t in zip(pred, truth, strict=True)]
    assert per_case == [0.0, 1.0]
    pooled = dice_from_counts(sum(confusion_counts(p, t, 2) for p, t in zip(pred, truth, strict=True)))
    assert pooled[0] == pytest.approx(32 / 33)
    metric = DiceMetric(include_background=False)
    one_hot = [
        torch.nn.functional.one_hot(torch.from_numpy(a.reshape(20, 10)).long(), 2).permute(2, 0, 1)[None]
        for a in (pred, truth)
    ]
    assert pooled[0] == pytest.approx(float(metric(*one_hot)[0, 0]))


def random_grading(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def test_grading_metrics_match_sklearn():
    y, probs = random_grading(200, 1)
    pred = probs.argmax(axis=1)
    g = grading_metrics(y, probs, GRADES)
    assert g["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert g["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    p, r, f, s = precision_recall_fscore_support(y, pred)
    for i, name in enumerate(GRADES):
        pc = g["per_class"][name]
        assert (pc["precision"], pc["recall"], pc["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert pc["support"] == s[i]
        assert g["auc_ovr"][name] == pytest.approx(roc_auc_score(y == i, probs[:, i]))
    mp, mr, mf, _ = precision_recall_fscore_support(y, pred, average="macro")
    assert (g["macro"]["precision"], g["macro"]["recall"], g["macro"]["f1"]) == pytest.approx((mp, mr, mf))
    assert g["auc_macro"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    assert g["auc_macro_over"] == list(GRADES) and g["auc_undefined"] == {}
    assert g["confusion"] == confusion_matrix(y, pred).tolist()


def test_single_class_split_reports_auc_undefined_not_half():
    y = np.zeros(6, dtype=int)
    _, probs = random_grading(6, 2)
    g = grading_metrics(y, probs, GRADES)
    assert all(v is None for v in g["auc_ovr"].values())
    assert g["auc_macro"] is None and g["auc_macro_over"] == []
    assert "every case is healthy" in g["auc_undefined"]["healthy"]
    assert "no severe cases" in g["auc_undefined"]["severe"]
    assert np.array(g["confusion"]).shape == (3, 3)
    assert g["per_class"]["severe"]["support"] == 0


def test_missing_grade_keeps_3x3_confusion_and_macro_auc_over_defined():
    y = np.array([0, 0, 2, 0, 0, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]] * 2)
    g = grading_metrics(y, probs, GRADES)
    assert g["confusion"] == [[2, 2, 0], [0, 0, 0], [0, 0, 2]]
    assert g["auc_ovr"]["moderate"] is None and "no moderate" in g["auc_undefined"]["moderate"]
    assert g["auc_macro_over"] == ["healthy", "severe"]
    expect = np.mean([roc_auc_score(y == k, probs[:, k]) for k in (0, 2)])
    assert g["auc_macro"] == pytest.approx(expect)


def test_ece_is_zero_when_calibrated_and_high_when_overconfident_and_wrong():
    y = np.array([0] * 8 + [1] * 2)
    probs = np.tile([0.8, 0.1, 0.1], (10, 1))  # 80% confident, 80% right
    assert expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)
    wrong = np.tile([0.99, 0.005, 0.005], (10, 1))
    assert expected_calibration_error(wrong, np.ones(10, dtype=int)) == pytest.approx(0.99)


def test_ece_matches_a_hand_loop():
    y, probs = random_grading(300, 3)
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    ece = 0.0
    for b in range(10):
        inb = (conf >= b / 10) & ((conf < (b + 1) / 10) | (b == 9))
        if inb.any():
            ece += inb.mean() * abs(correct[inb].mean() - conf[inb].mean())
    assert expected_calibration_error(probs, y) == pytest.approx(ece)


def test_bootstrap_ci_contains_mean_and_narrows_with_more_cases():
    rng = np.random.default_rng(4)
    small, large = rng.normal(0.8, 0.1, 10), rng.normal(0.8, 0.1, 1000)
    m1, lo1, hi1 = bootstrap_ci(small)
    m2, lo2, hi2 = bootstrap_ci(large)
    assert lo1 <= m1 <= hi1 and lo2 <= m2 <= hi2
    assert m1 == pytest.approx(small.mean())
    assert hi2 - lo2 < (hi1 - lo1) / 3
    assert bootstrap_ci(small, seed=7) == bootstrap_ci(small, seed=7)


def test_bootstrap_ci_ignores_undefined_and_handles_empty():
    m, lo, hi = bootstrap_ci(np.array([0.5, None, np.nan, 0.7], dtype=object))
    assert m == pytest.approx(0.6) and 0.5 <= lo <= hi <= 0.7
    assert all(np.isnan(bootstrap_ci(np.array([]))))
    assert bootstrap_ci(np.array([0.3])) == (0.3, 0.3, 0.3)


def test_grade_agreement_matches_sklearn_kappa_and_counts_undefined():
    a = ["healthy", "moderate", "severe", "severe", "healthy", "moderate"]
    b = ["healthy", "severe", "severe", None, "healthy", "healthy"]
    r = grade_agreement(a, b, GRADES)
    kept = [0, 1, 2, 4, 5]
    assert r["num_undefined"] == 1 and r["num_compared"] == 5
    assert r["agreement"] == pytest.approx(3 / 5)
    assert r["kappa"] == pytest.approx(cohen_kappa_score([a[i] for i in kept], [b[i] for i in kept]))
    assert np.array(r["table"]).sum() == 5


def test_grade_agreement_single_grade_has_no_kappa():
    r = grade_agreement(["healthy"] * 3, ["healthy"] * 3)
    assert r["agreement"] == 1.0 and r["kappa"] is None and "single grade" in r["kappa_note"]
    assert grade_agreement(["healthy"], [None])["agreement"] is None


LESION_LABELS = ("background", "liver", "cyst", "tumour")


def _lesion_scene() -> tuple[np.ndarray, np.ndarray]:
    """Truth: three cysts (one found whole, one touched at a corner only, one missed) and a tumour the prediction
    calls cyst; prediction: those plus a false cyst in the liver."""
    t = np.ones((20, 20, 10), dtype=np.uint8)  # liver everywhere
    p = t.copy()
    t[1:4, 1:4, 1:4] = 2  # 27 voxels, found whole
    p[1:4, 1:4, 1:4] = 2
    t[8:10, 8:10, 2:4] = 2  # 8 voxels, touched by one predicted voxel (diagonal neighbour pieces stay apart)
    p[9, 9, 3] = 2
    p[10, 10, 4] = 2  # 26-connected to (9, 9, 3): the same predicted lesion
    t[15:17, 1:3, 5:7] = 2  # 8 voxels, missed
    t[15:18, 15:18, 1:4] = 3  # a tumour
    p[15:18, 15:18, 1:4] = 2  # ... called cyst: the cyst is false, the tumour missed
    p[5:7, 15:17, 7:9] = 2  # a false cyst, 8 voxels
    return p, t


def test_lesion_table_counts_found_missed_and_false_lesions_by_any_overlap():
    p, t = _lesion_scene()
    table = lesion_table(p, t, (1.0, 1.0, 2.0), LESION_LABELS, ("cyst", "tumour"))
    truth = [
        (r["label"], r["volume_ml"], r["matched"], round(r["overlap"], 3)) for r in table if r["source"] == "truth"
    ]
    assert sorted(truth) == sorted(
        [
            ("cyst", 0.054, True, 1.0),
            ("cyst", 0.016, True, 0.125),
            ("cyst", 0.016, False, 0.0),
            ("tumour", 0.054, False, 0.0),
        ]
    )
    pred = sorted((r["label"], r["volume_ml"], r["matched"]) for r in table if r["source"] == "prediction")
    assert pred == [("cyst", 0.004, True), ("cyst", 0.016, False), ("cyst", 0.054, False), ("cyst", 0.054, True)]
    assert lesion_counts(table, ("cyst", "tumour")) == {
        "lesions_true_cyst": 3,
        "lesions_found_cyst": 2,
        "lesions_pred_cyst": 4,
        "lesions_false_cyst": 2,
        "lesions_true_tumour": 1,
        "lesions_found_tumour": 0,
        "lesions_pred_tumour": 0,
        "lesions_false_tumour": 0,
    }


def test_lesion_components_match_skimage_26_connected_labelling():
    rng = np.random.default_rng(3)
    t = (rng.random((24, 24, 12)) < 0.08).astype(np.uint8)  # scattered voxels: many diagonal contacts
    p = (rng.random((24, 24, 12)) < 0.08).astype(np.uint8)
    table = lesion_table(p, t, (1.0, 1.0, 1.0), ("background", "lesion"), ("lesion",))
    for source, mask, other in (("truth", t, p), ("prediction", p, t)):
        ref, n = skimage_label(mask == 1, connectivity=3, return_num=True)
        mine = [r for r in table if r["source"] == source]
        assert len(mine) == n
        sizes = np.bincount(ref.ravel())[1:]
        matched = np.array([(other[ref == i] == 1).any() for i in range(1, n + 1)])
        assert sorted(round(r["volume_ml"] * 1000) for r in mine) == sorted(sizes.tolist())
        assert sum(r["matched"] for r in mine) == int(matched.sum())


def test_lesion_table_of_empty_masks_is_empty():
    z = np.zeros((6, 6, 6), dtype=np.uint8)
    assert lesion_table(z, z, (1.0, 1.0, 1.0), LESION_LABELS, ("cyst",)) == []
