"""eval.strip_to_organ: a second pass on the scan stripped to the first pass's organ (segkit.infer.predict_stripped).

The network is replaced by a stand-in that reads its input the way a model might: dark voxels are ventricle, other
voxels brighter than the image's floor are brain, the floor is background. A bright ring (a scalp) around a brain
with a dark core (ventricles) then shows what the second pass sees and what it may change.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np

import segkit.infer as infer
from segkit.config import Config, load_config
from segkit.io import Volume
from segkit.transforms import STRIP_MARGIN_MM

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (24, 24, 8)  # at the ventricle config's 1.5 mm: the model grid is the input grid


def config(strip: bool = True) -> Config:
    cfg = load_config(ROOT / "configs" / "ventricle.yaml")
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, strip_to_organ=strip, tta=False))


def head(scalp: bool = True) -> Volume:
    """Air 0, a brain disc of 300 with a dark core of 100 (ventricles) and, with scalp, a bright ring of 900. A
    spot of 50 in the brain is the darkest body tissue: normalisation clips below its 0.5th percentile, which
    without it would make the core and the air one value."""
    x, y = np.meshgrid(np.arange(SHAPE[0]) - 11.5, np.arange(SHAPE[1]) - 11.5, indexing="ij")
    r = np.hypot(x, y)[..., None].repeat(SHAPE[2], axis=2)
    data = np.where(r < 7, 300.0, 0.0)
    data[r < 2.5] = 100.0
    data[15:17, 11:13] = 50.0
    if scalp:
        data[(r >= 9) & (r < 11)] = 900.0
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    return Volume(data.astype(np.float32), affine, nib.Nifti1Header(), Path("head.nii.gz"))


class StandIn:
    """predict_preprocessed's stand-in, reading its input as a model might: the darkest value above the image's floor
    is ventricle, the next one brain, anything brighter (a scalp) and the floor background. Its first call sees
    the ventricles only on rows x < first_cut (a first pass that misses half of them); it records its inputs."""

    def __init__(self, first_cut: float) -> None:
        self.inputs: list[np.ndarray] = []
        self.first_cut = first_cut

    def __call__(self, net: object, volume: np.ndarray, cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.inputs.append(volume.copy())
        values = np.unique(np.round(volume[volume > volume.min()], 3))
        core, brain = (np.isclose(volume, v, atol=2e-3) for v in values[:2])
        if len(self.inputs) == 1:
            brain |= core & (np.indices(volume.shape)[0] >= self.first_cut)
            core &= np.indices(volume.shape)[0] < self.first_cut
        probs = np.zeros((3, *volume.shape), np.float32)
        probs[0] = 0.9
        for k, where in ((1, brain), (2, core)):
            probs[:, where] = 0.05
            probs[k][where] = 0.9
        probs[1][probs[0] == 0.9] = 0.05
        probs[2][probs[0] == 0.9] = 0.05
        return probs, np.array([0.8, 0.1, 0.1]), np.zeros(4)


def run(monkeypatch, vol: Volume, first_cut: float = 12.0) -> tuple[np.ndarray, np.ndarray, StandIn]:
    cfg = config()
    stand_in = StandIn(first_cut)
    monkeypatch.setattr(infer, "predict_preprocessed", stand_in)
    from segkit.transforms import normalize, resample_volume

    resized, grid = resample_volume(vol, cfg)
    first = stand_in(None, normalize(resized, cfg.task.modality, cfg.preprocess), cfg)[0]
    return first, infer.predict_stripped(None, cfg, resized, grid, first), stand_in  # type: ignore[arg-type]


def test_the_second_pass_sees_the_organ_alone_and_changes_only_the_labels_inside_it(monkeypatch):
    first, out, stand_in = run(monkeypatch, head())
    assert len(stand_in.inputs) == 2  # the first pass, then one more
    second = stand_in.inputs[1]
    organ = first.argmax(0) >= 1
    # what the second pass saw: the scalp (and all beyond the margin) at the image's floor, the organ as it was
    x, y = np.meshgrid(np.arange(SHAPE[0]) - 11.5, np.arange(SHAPE[1]) - 11.5, indexing="ij")
    ring = np.hypot(x, y) >= 9  # the scalp and the air around it, on every slice
    assert np.allclose(second[ring], second.min())
    assert len(np.unique(np.round(second[organ], 4))) == 2  # brain and core, relative intensities kept
    # outside the organ: the first pass's probabilities, untouched; inside, its background probability
    assert np.array_equal(out[:, ~organ], first[:, ~organ])
    assert np.allclose(out[0][organ], first[0][organ])
    assert np.allclose(out.sum(0), 1.0)
    # the organ keeps its extent; the ventricles inside it are the second pass's (the whole core, not half)
    assert np.array_equal(out.argmax(0) >= 1, organ)
    assert (out.argmax(0) == 2).sum() > (first.argmax(0) == 2).sum()


def test_a_scan_stripped_already_gets_no_second_pass(monkeypatch):
    first, out, stand_in = run(monkeypatch, head(scalp=False))
    assert len(stand_in.inputs) == 1
    assert out is first


def test_no_organ_no_second_pass(monkeypatch):
    cfg = config()
    stand_in = StandIn(0.0)
    monkeypatch.setattr(infer, "predict_preprocessed", stand_in)
    probs = np.zeros((3, *SHAPE), np.float32)
    probs[0] = 1.0
    from segkit.transforms import resample_volume

    resized, grid = resample_volume(head(), cfg)
    assert infer.predict_stripped(None, cfg, resized, grid, probs) is probs  # type: ignore[arg-type]
    assert not stand_in.inputs


def test_the_margin_keeps_the_organs_edge():
    """The voxels within STRIP_MARGIN_MM of the organ stay: at 1.5 mm, the ring of face neighbours."""
    from segkit.transforms import beyond_margin

    keep = np.zeros((9, 9, 9), bool)
    keep[4, 4, 4] = True
    out = beyond_margin(keep, (1.5, 1.5, 1.5))
    assert not out[3:6, 4, 4].any() and not out[4, 3:6, 4].any() and not out[4, 4, 3:6].any()
    assert out[3, 3, 4] and out[2, 4, 4]  # 2.1 mm and 3 mm away
    assert STRIP_MARGIN_MM < 2.1


def test_the_margin_is_what_a_distance_transform_gives_on_any_grid():
    from scipy import ndimage as ndi

    from segkit.transforms import beyond_margin

    keep = np.random.default_rng(0).random((20, 21, 22)) > 0.99
    for spacing in ((1.5, 1.5, 1.5), (0.5, 0.7, 1.2), (2.0, 0.4, 3.0)):
        expected = ndi.distance_transform_edt(~keep, sampling=spacing) > STRIP_MARGIN_MM
        assert np.array_equal(beyond_margin(keep, spacing), expected), spacing


def test_a_task_without_an_organ_around_its_target_cannot_ask_for_the_second_pass():
    import pytest

    from segkit.config import config_from_dict, config_to_dict
    from segkit.errors import ConfigError

    d = config_to_dict(config())
    d["task"]["denominator"] = list(d["task"]["numerator"])
    with pytest.raises(ConfigError, match="strip_to_organ"):
        config_from_dict(d)
    d["eval"]["strip_to_organ"] = False
    config_from_dict(d)  # one pass: fine


def test_the_second_pass_predicts_only_the_organs_slices_and_gives_what_the_whole_scan_would(monkeypatch):
    """A 2.5-D network reads each slice with its context slices: the second pass runs on the organ's slices and
    those context slices only (not the neck below a brain, nor the air above it), and a real (untrained, seeded)
    network gives there exactly what it gives on the whole stripped scan; without the context slices the organ's
    end slices would differ."""
    import torch

    from segkit.models import build_model
    from segkit.transforms import resample_volume

    cfg = config()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, channels=(8, 16, 32)))
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    rng = np.random.default_rng(0)
    data = np.zeros((24, 24, 20), np.float32)
    data[2:22, 2:22] = 900.0  # a scalp on every slice
    data[5:19, 5:19, 6:14] = 300.0 + 40 * rng.random((14, 14, 8))  # the brain on slices 6-13 only
    data[9:15, 9:15, 8:12] = 100.0
    vol = Volume(data, np.diag([1.5, 1.5, 1.5, 1.0]), nib.Nifti1Header(), Path("head.nii.gz"))
    resized, grid = resample_volume(vol, cfg)
    first = np.zeros((3, *data.shape), np.float32)
    first[0] = 1.0
    first[:, 5:19, 5:19, 6:14] = np.array([0.1, 0.8, 0.1], np.float32)[:, None, None, None]

    seen: list[int] = []
    real = infer.predict_preprocessed

    def recorded(n: object, volume: np.ndarray, c: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seen.append(volume.shape[2])
        return real(n, volume, c)  # type: ignore[arg-type]

    monkeypatch.setattr(infer, "predict_preprocessed", recorded)
    slab = infer.predict_stripped(net, cfg, resized, grid, first)
    assert seen == [8 + 2 * cfg.preprocess.context_slices]  # slices 4-15
    monkeypatch.setattr(infer, "organ_slab", lambda organ, c: (0, organ.shape[2]))
    whole = infer.predict_stripped(net, cfg, resized, grid, first)
    assert seen[-1] == 20
    assert np.allclose(slab, whole, atol=1e-5)
    assert not np.allclose(slab, first, atol=1e-3)  # the second pass did change the organ's labels
    monkeypatch.setattr(infer, "organ_slab", lambda organ, c: (6, 14))  # no context slices
    assert not np.allclose(infer.predict_stripped(net, cfg, resized, grid, first), whole, atol=1e-5)


def test_the_report_times_a_second_pass_only_where_one_ran(monkeypatch):
    """A scan stripped already gets the check alone: its seconds say "strip_check", not "second_pass"."""
    monkeypatch.setattr(infer, "predict_preprocessed", StandIn(12.0))
    with_scalp = infer.predict_volume(None, config(), head())  # type: ignore[arg-type]
    assert "second_pass" in with_scalp.seconds and "strip_check" not in with_scalp.seconds
    monkeypatch.setattr(infer, "predict_preprocessed", StandIn(12.0))
    stripped = infer.predict_volume(None, config(), head(scalp=False))  # type: ignore[arg-type]
    assert "strip_check" in stripped.seconds and "second_pass" not in stripped.seconds
