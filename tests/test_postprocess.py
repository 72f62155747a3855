"""Connected-component post-processing chosen on val, and mirror test-time augmentation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from segkit.checkpoint import load_checkpoint, save_checkpoint
from segkit.config import config_from_dict, config_to_dict
from segkit.errors import ConfigError, InputError
from segkit.infer import load_model, predict_preprocessed
from segkit.postprocess import apply_rules, choose_rules, keep_components


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
        for rule, keep in (("largest", sizes == sizes.max()), ("major", sizes >= 0.1 * sizes.max())):
            want = m.copy()
            want[np.isin(comp, np.flatnonzero(~keep) + 1)] = 0
            assert np.array_equal(keep_components(m, label, rule), want), (seed, label, rule)


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


def test_config_refuses_unknown_rules():
    cfg = config_to_dict(config_from_dict({}))
    cfg["eval"]["keep_components"] = ["all", "biggest"]
    with pytest.raises(ConfigError, match="keep_components"):
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
