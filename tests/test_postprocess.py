"""Connected-component post-processing chosen on val, and mirror test-time augmentation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from segkit.checkpoint import load_checkpoint, save_checkpoint
from segkit.config import config_from_dict, config_to_dict
from segkit.errors import ConfigError, InputError
from segkit.infer import load_model, predict_preprocessed
from segkit.postprocess import apply_rules, choose_cyst_max_hu, choose_rules, dense_cysts_to_tumour, keep_components
from segkit.tasks import TASKS


def two_blobs_and_a_speck() -> np.ndarray:
    m = np.zeros((30, 30, 30), np.uint8)
    m[2:12, 2:12, 2:12] = 2  # 1000 voxels
    m[15:22, 15:22, 15:22] = 2  # 343: the other ventricle
    m[26:29, 26:29, 26:29] = 2  # a speck (27 voxels)
    m[0:30, 25:30, 0:5] = 1
    return m


def test_rules_keep_the_largest_or_the_major_components_of_one_label_only():
    m = two_blobs_and_a_speck()
    assert (keep_components(m, 2, "largest") == 2).sum() == 1000
    assert (keep_components(m, 2, "major") == 2).sum() == 1343  # both ventricles, no speck
    assert keep_components(m, 2, "all") is m
    assert np.array_equal(apply_rules(m, ("all", "major")) == 1, m == 1)


@pytest.mark.parametrize("seed", range(4))
def test_rules_on_random_masks_equal_labelling_the_whole_volume(seed):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    m = (ndi.uniform_filter(rng.random((40, 36, 30)), 5) > 0.52).astype(np.uint8)  # blobs of many sizes
    m[m == 1] = rng.integers(1, 3, int(m.sum()))  # two labels mixed
    for label in (1, 2):
        comp, n = ndi.label(m == label)
        sizes = np.bincount(comp.ravel())[1:]
        others = ndi.binary_dilation((m > 0) & (m != label), np.ones((3, 3, 3), bool))  # every 26-neighbour
        touching = np.array([others[comp == k].any() for k in range(1, n + 1)])
        rules = (("largest", sizes == sizes.max()), ("major", sizes >= 0.1 * sizes.max()), ("attached", touching))
        for rule, keep in rules:
            want = m.copy()
            want[np.isin(comp, np.flatnonzero(~keep) + 1)] = 0
            assert np.array_equal(keep_components(m, label, rule), want), (seed, label, rule)


def test_attached_keeps_the_lesions_that_touch_the_organ_even_at_a_corner_or_the_image_edge():
    m = np.zeros((20, 20, 20), np.uint8)
    m[:10, :10, :10] = 1  # the liver, at the image's corner
    m[10:13, 2:5, 2:5] = 2  # a cyst on its surface
    m[10, 10, 10] = 2  # a one-voxel cyst touching the liver at a corner only (26-connected)
    m[0:2, 15:20, 0:2] = 2  # a cyst apart from it, at the image's edge
    m[17:20, 17:20, 17:20] = 3  # a tumour in the corner opposite, alone
    out = apply_rules(m, ("all", "attached", "attached"))
    assert (out == 2).sum() == 27 + 1 and not (out == 3).any()
    assert np.array_equal(out == 1, m == 1)
    assert keep_components(out, 2, "attached") is out  # nothing left to drop: the mask itself


def test_a_rule_is_chosen_only_where_it_raises_val_dice():
    truth = two_blobs_and_a_speck()
    truth[26:29, 26:29, 26:29] = 0
    pred = two_blobs_and_a_speck()
    pred[pred == 1] = 0
    pred[3:6, 25:28, 0:3] = 1  # a fragment of label 1 only: no rule can raise its Dice
    rules, table = choose_rules([(pred, truth)], 3, one_piece=(1, 2))
    assert rules == ("all", "major")  # "largest" would drop a real ventricle; "all" keeps the speck
    assert table[2]["major"] > table[2]["all"] > table[2]["largest"]


def test_largest_is_never_tried_for_a_label_of_several_parts():
    truth = two_blobs_and_a_speck()
    truth[15:22, 15:22, 15:22] = 0  # on this val case the second blob is a false positive
    pred = two_blobs_and_a_speck()
    assert choose_rules([(pred, truth)], 3, one_piece=(2,))[0][1] == "largest"
    rules, table = choose_rules([(pred, truth)], 3, one_piece=(1,))
    assert "largest" not in table[2] and rules[1] == "all"


def test_attached_is_the_rule_to_beat_for_lesions_and_loses_only_to_a_real_val_gain():
    truth = np.zeros((30, 30, 30), np.uint8)
    truth[:15] = 1  # the organ
    truth[15:18, 5:8, 5:8] = 2  # a lesion on it
    pred = truth.copy()
    rules, table = choose_rules([(pred, truth)], 3, one_piece=(1,), lesions=(2,))
    assert rules[1] == "attached" and table[2]["attached"] == table[2]["all"]  # a tie: the organ's lesion rule
    assert choose_rules([(pred, truth)], 3, one_piece=(1,))[0][1] == "all"  # not a lesion label: "all"
    truth[25:28, 20:23, 20:23] = 2  # val says a lesion can lie apart from the organ: "attached" would drop it
    pred = truth.copy()
    rules, table = choose_rules([(pred, truth)], 3, one_piece=(1,), lesions=(2,))
    assert rules[1] == "all" and table[2]["all"] > table[2]["attached"]


def test_config_refuses_unknown_rules():
    cfg = config_to_dict(config_from_dict({}))
    cfg["eval"]["keep_components"] = ["all", "biggest"]
    with pytest.raises(ConfigError, match="keep_components"):
        config_from_dict(cfg)


LIVER_LABELS = TASKS["liver-cyst"].labels  # background, liver, cyst, tumour


def liver_with_two_lesions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A liver (60 HU) holding a water cyst (10 HU) and a solid lesion (55 HU): truth labels it tumour, the
    prediction calls both cyst. Returns predicted mask, true mask, HU."""
    truth = np.zeros((40, 40, 20), np.uint8)
    truth[2:38, 2:38, 2:18] = 1
    truth[5:15, 5:15, 5:15] = 2
    truth[22:34, 22:34, 4:16] = 3
    hu = np.where(truth == 1, 60.0, -100.0)
    hu[truth == 2], hu[truth == 3] = 10.0, 55.0
    pred = truth.copy()
    pred[pred == 3] = 2
    return pred, truth, hu + np.random.default_rng(0).normal(0, 5, hu.shape)


def test_cysts_denser_than_the_limit_become_tumour():
    pred, truth, hu = liver_with_two_lesions()
    out = dense_cysts_to_tumour(pred, hu, LIVER_LABELS, 30.0)
    assert np.array_equal(out, truth)  # the solid lesion is tumour again, the water cyst stays cyst
    assert dense_cysts_to_tumour(pred, hu, LIVER_LABELS, 0.0) is pred  # 0: off
    assert np.array_equal(dense_cysts_to_tumour(pred, hu, LIVER_LABELS, 80.0), pred)  # both lighter than 80 HU


def test_a_cyst_density_limit_is_chosen_only_where_it_raises_val_cyst_dice():
    pred, truth, hu = liver_with_two_lesions()
    limit, table = choose_cyst_max_hu([(pred, truth, hu)], LIVER_LABELS)
    assert limit in (20.0, 30.0, 40.0) and table[limit] > table[0.0]
    right = truth.copy()  # a prediction that already labels the solid lesion tumour: no limit can help
    assert choose_cyst_max_hu([(right, truth, hu)], LIVER_LABELS)[0] == 0.0


def test_training_chooses_the_cyst_density_limit_from_the_window_normalised_val_images():
    from segkit.config import load_config
    from segkit.transforms import normalize
    from segkit.validate import CaseData, choose_density

    pred, truth, hu = liver_with_two_lesions()
    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_config(root / "liver-cyst.yaml")
    case = CaseData("c", normalize(hu.astype(np.float32), "CT", cfg.preprocess), truth, 0, np.arange(20), np.arange(20))
    ck = {"config": config_to_dict(cfg)}
    choose_density(ck, [pred], [case], cfg, ("all", "all", "all"))
    assert ck["config"]["eval"]["cyst_max_hu"] in (20.0, 30.0, 40.0)  # the lesions lie at 10 and 55 HU, noise sd 5
    assert ck["cyst_max_hu_val_dice"][0.0] < ck["cyst_max_hu_val_dice"][ck["config"]["eval"]["cyst_max_hu"]]
    mri = load_config(root / "ventricle.yaml")
    ck = {"config": config_to_dict(mri)}
    choose_density(ck, [pred], [case], mri, ("all", "all"))
    assert ck["config"]["eval"]["cyst_max_hu"] == 0.0 and "cyst_max_hu_val_dice" not in ck


def test_config_refuses_a_cyst_density_limit_without_ct_cysts():
    cfg = config_to_dict(config_from_dict({}))  # the ventricle defaults: MRI, no cyst label
    cfg["eval"]["cyst_max_hu"] = 30.0
    with pytest.raises(ConfigError, match="cyst_max_hu"):
        config_from_dict(cfg)


def test_training_ends_by_choosing_the_rules_on_val(tiny_run):
    ck = load_checkpoint(tiny_run / "best.pt")
    cfg = config_from_dict(ck["config"])
    assert len(cfg.eval.keep_components) == cfg.num_classes - 1
    assert set(ck["postprocess_val_dice"]) == set(range(1, cfg.num_classes))


def test_mirror_tta_is_refused_for_a_model_trained_without_left_right_flips(tiny_run, tmp_path):
    ck = load_checkpoint(tiny_run / "best.pt")
    ck["config"]["augment"]["flip_lr"] = 0.0  # as the liver-cyst model: the liver is on the right
    save_checkpoint(tmp_path / "noflip.pt", ck)
    with pytest.raises(InputError, match="without left-right flips"):
        load_model(tmp_path / "noflip.pt", "cpu", tta=True)
    assert not load_model(tmp_path / "noflip.pt", "cpu")[1].eval.tta  # without --tta it loads


def test_mirror_tta_is_exactly_left_right_equivariant(tiny_run):
    net, cfg, info = load_model(tiny_run, "cpu", tta=True)
    assert cfg.eval.tta and info["tta"]
    vol = np.random.default_rng(0).normal(size=(20, 24, 10)).astype(np.float32)
    probs, grade, _ = predict_preprocessed(net, vol, cfg)
    m_probs, m_grade, _ = predict_preprocessed(net, np.ascontiguousarray(vol[::-1]), cfg)
    assert np.allclose(m_probs[:, ::-1], probs, atol=1e-6) and np.allclose(m_grade, grade, atol=1e-6)
    plain = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, tta=False))
    once, _, _ = predict_preprocessed(net, vol, plain)
    assert not np.allclose(once, probs, atol=1e-6)  # the mirrored pass did change the average
