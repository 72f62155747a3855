"""The 3-D U-Net (model.arch monai_unet3d): patches, augmentation, sliding windows, geometry, TTA."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import GEOMETRIES, ROOT, run_cli, write_nifti

from segkit.batches import sample_batch
from segkit.config import load_config
from segkit.errors import ConfigError
from segkit.models import build_model
from segkit.patches import build_augment_3d, crop_patch
from segkit.validate import CaseData

TINY_3D = [
    "model.channels=[8,16,32]",
    "train.patch_size=[16,16,16]",
    "train.steps_per_epoch=3",
    "train.epochs=2",
    "eval.bootstrap=50",
]


def cfg3d(*extra: str):
    return load_config(ROOT / "configs" / "ventricle-3d.yaml", [*TINY_3D, *extra])


@pytest.fixture(scope="module")
def run3d(tmp_path_factory, phantom_ventricle) -> Path:
    from segkit.train import fit

    run = tmp_path_factory.mktemp("run3d")
    fit(cfg3d(), phantom_ventricle, run)
    return run


def test_3d_configs_load_and_patch_size_must_match_the_model():
    for task in ("ventricle-3d", "liver-cyst-3d"):
        cfg = load_config(ROOT / "configs" / f"{task}.yaml")
        assert (cfg.spatial_dims, cfg.in_channels, len(cfg.train.patch_size)) == (3, 1, 3)
    with pytest.raises(ConfigError, match="needs 3 sizes"):
        load_config(ROOT / "configs" / "ventricle-3d.yaml", ["train.patch_size=[64,64]"])
    with pytest.raises(ConfigError, match="needs 2 sizes"):
        load_config(ROOT / "configs" / "ventricle.yaml", ["train.patch_size=[64,64,64]"])
    with pytest.raises(ConfigError, match="window_blend"):
        load_config(ROOT / "configs" / "ventricle-3d.yaml", ["eval.window_blend=median"])


def test_3d_model_gives_volume_logits_and_pools_patches_per_case():
    cfg = cfg3d()
    net = build_model(cfg).eval()
    x = torch.randn(4, 1, 16, 32, 16)  # 2 cases x 2 patches
    logits, feats = net(x)
    assert logits.shape == (4, cfg.num_classes, 16, 32, 16)
    # the last K features are the patch's soft class fractions
    fractions = torch.softmax(logits, 1).mean(dim=(2, 3, 4))
    assert torch.allclose(feats[:, -cfg.num_classes :], fractions, atol=1e-5)
    grade = net.pool_grade(feats, 2)
    swapped = feats.view(2, 2, -1)[:, [1, 0]].reshape(4, -1)
    assert torch.allclose(net.pool_grade(swapped, 2), grade, atol=1e-5)


def _case(shape=(40, 36, 30), seed=0) -> CaseData:
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    label[8:32, 6:30, 5:25] = 1
    label[18:22, 14:20, 12:16] = 2  # a small target
    image = (label * 1.0 + rng.normal(0, 0.01, shape)).astype(np.float32)  # the image shows its label
    return CaseData("c", image, label, 1, np.array([]), np.array([]))


def test_patches_keep_labels_aligned_and_oversample_the_target():
    cfg = cfg3d("augment.enabled=false")
    cases = [_case(seed=s) for s in range(3)]
    x, y, g = sample_batch(cases, cfg, np.random.default_rng(0), None)
    b, s = cfg.train.cases_per_batch, cfg.train.slices_per_case
    assert x.shape == (b * (s + 2), 1, 16, 16, 16) and y.shape == (b * (s + 2), 16, 16, 16)
    assert g.tolist() == [1] * b
    assert np.array_equal(x[:, 0].round().numpy(), y.numpy())  # every voxel keeps its label
    target_rows = [b * s + 2 * i + 1 for i in range(b)]  # the last patch of each case: target-centred
    assert all((y[r] == 2).any() for r in target_rows)
    assert all((y[r] >= 1).float().mean() > 0.25 for r in range(b * s))  # grade windows sit in the organ


def test_augmentation_moves_labels_with_images_and_is_seeded():
    cfg = cfg3d()
    aug = dataclasses.replace(
        cfg.augment, affine=1.0, flip_lr=1.0, noise=0.0, gamma=0.0, brightness_contrast=0.0, blur=0.0
    )
    cases = [_case(seed=s) for s in range(2)]
    x1, y1, _ = sample_batch(cases, cfg, np.random.default_rng(1), build_augment_3d(aug, 7))
    used = build_augment_3d(aug, 3)
    x0, _, _ = sample_batch(cases, cfg, np.random.default_rng(0), used)
    x2, y2, _ = sample_batch(cases, cfg, np.random.default_rng(1), used)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)  # the batch's generator decides, not the pipeline's past
    assert not torch.equal(x0, x1)  # another generator, another batch
    assert set(np.unique(y1.numpy())) <= {0, 1, 2}  # labels stay labels (nearest)
    # away from label edges the warped image still shows its warped label
    agree = (x1[:, 0] - y1.float()).abs() < 0.25
    assert agree.float().mean() > 0.9


def test_crop_pads_volumes_smaller_than_the_patch():
    image = np.arange(6 * 4 * 5, dtype=np.float32).reshape(6, 4, 5)
    label = np.zeros((6, 4, 5), np.uint8)
    label[3:] = 1  # an organ running into the volume's high-x face
    x, y = crop_patch(image, label, np.array([3, 2, 2]), (16, 16, 16))
    assert x.shape == y.shape == (16, 16, 16)
    assert x.min() == image.min() and x.max() == image.max()  # edges replicated, no new values
    # the label is replicated as the image is: padding beyond the organ's face stays organ, beyond air air
    assert np.array_equal(y, (x >= image[3].min()).astype(np.uint8))


@pytest.mark.parametrize("geometry", ["LPS", "oblique"])
def test_3d_predict_keeps_shape_and_affine(run3d, phantom_ventricle, tmp_path, capsys, geometry):
    src = nib.load(sorted((phantom_ventricle / "imagesTr").glob("*.nii.gz"))[0])
    data = np.asarray(src.dataobj, dtype=np.float32)
    f = write_nifti(tmp_path / "in.nii.gz", data, GEOMETRIES[geometry])
    code, out, err = run_cli(["predict", str(f), "--model", str(run3d), "--out", str(tmp_path / "p")], capsys)
    assert code == 0, err
    mask = nib.load(tmp_path / "p" / "in_mask.nii.gz")
    assert mask.shape == data.shape
    assert np.allclose(mask.affine, GEOMETRIES[geometry])


def test_3d_sliding_window_blends_and_mirror_tta_is_exact(run3d, phantom_ventricle):
    from segkit.infer import load_model, predict_preprocessed
    from segkit.transforms import preprocess_image

    net, cfg, info = load_model(run3d, "cpu", engine="torch")
    assert info["arch"] == "monai_unet3d"
    img = nib.load(sorted((phantom_ventricle / "imagesTr").glob("*.nii.gz"))[0])
    vol, _ = preprocess_image(np.asarray(img.dataobj, dtype=np.float32), img.affine, cfg)
    probs, grade, pooled = predict_preprocessed(net, vol, cfg)
    assert probs.shape == (cfg.num_classes, *vol.shape)
    assert np.allclose(probs.sum(0), 1.0, atol=1e-5)
    assert grade.shape == (len(cfg.task.grades),) and abs(grade.sum() - 1) < 1e-5
    constant = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, window_blend="constant"))
    assert not np.allclose(predict_preprocessed(net, vol, constant)[0], probs)  # blending is applied
    # mirror TTA averages with the flipped volume: a mirrored input gives the mirrored probabilities
    tta = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, tta=True))
    p1 = predict_preprocessed(net, vol, tta)[0]
    p2 = predict_preprocessed(net, np.ascontiguousarray(vol[::-1]), tta)[0]
    assert np.allclose(p1, p2[:, ::-1], atol=1e-4)


def test_3d_evaluate_and_onnx_give_the_torch_masks(run3d, phantom_ventricle, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    code, _, err = run_cli(
        [
            "evaluate",
            "--model",
            str(run3d),
            "--data",
            str(phantom_ventricle),
            "--split",
            "test",
            "--out",
            str(tmp_path / "e"),
        ],
        capsys,
    )
    assert code == 0, err
    assert (tmp_path / "e" / "report.json").is_file()
    from segkit.onnx_export import write_onnx

    pt = run3d / "best.pt"
    write_onnx(pt)
    f = sorted((phantom_ventricle / "imagesTr").glob("*.nii.gz"))[0]
    masks = []
    for engine in ("torch", "onnx"):
        out = tmp_path / engine
        code, _, err = run_cli(
            ["predict", str(f), "--model", str(run3d), "--engine", engine, "--out", str(out)], capsys
        )
        assert code == 0, err
        masks.append(np.asarray(nib.load(out / f.name.replace(".nii.gz", "_mask.nii.gz")).dataobj))
    assert (masks[0] == masks[1]).mean() > 0.999


def test_inference_settings_override_eval_only(run3d, phantom_ventricle, tmp_path, capsys):
    f = sorted((phantom_ventricle / "imagesTr").glob("*.nii.gz"))[0]
    args = ["predict", str(f), "--model", str(run3d), "--out", str(tmp_path / "p")]
    code, _, err = run_cli([*args, "--set", "eval.window_overlap=0.25", "--set", "eval.window_blend=constant"], capsys)
    assert code == 0, err
    code, _, err = run_cli([*args, "--set", "train.lr=0.1"], capsys)
    assert code == 2 and "only eval.* settings" in err and "Traceback" not in err
    code, _, err = run_cli([*args, "--set", "eval.window_overlap=1.5"], capsys)
    assert code == 2 and "window_overlap" in err
