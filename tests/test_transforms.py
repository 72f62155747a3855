import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import GEOMETRIES
from scipy import ndimage as ndi

from segkit.config import AugmentConfig, Config, PreprocessConfig, TaskConfig
from segkit.transforms import (
    augment_hwc,
    build_augment,
    first_argmax,
    from_canonical,
    invert_probs,
    normalize,
    plan_grid,
    preprocess_image,
    preprocess_label,
    probs_to_mask,
    resize,
    to_canonical,
    unwindow,
)

CFG = Config()


@pytest.mark.parametrize("name", GEOMETRIES)
def test_reorientation_round_trips_exactly(name):
    data = np.random.default_rng(0).random((20, 24, 12)).astype(np.float32)
    canon, ornt = to_canonical(data, GEOMETRIES[name])
    assert nib.aff2axcodes(GEOMETRIES[name] @ nib.orientations.inv_ornt_aff(ornt, data.shape)) == ("R", "A", "S")
    assert np.array_equal(from_canonical(canon, ornt), data)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_resample_then_inverse_restores_the_input_grid(name):
    shape = (30, 26, 14)
    grid = plan_grid(shape, GEOMETRIES[name], CFG.preprocess)
    probs = torch.softmax(torch.randn(3, *grid.model_shape), 0).numpy()
    mask = probs_to_mask(probs, grid, slab=7)  # slab by slab equals the whole volume at once
    assert mask.shape == shape and mask.dtype == np.uint8
    full = resize(probs, grid.canonical_shape)
    assert np.array_equal(mask, from_canonical(full.argmax(0).astype(np.uint8), grid.ornt))


@pytest.mark.parametrize("name", GEOMETRIES)
def test_probability_map_holds_the_resampled_probabilities_behind_the_mask(name):
    shape = (30, 26, 14)
    grid = plan_grid(shape, GEOMETRIES[name], CFG.preprocess)
    probs = torch.softmax(3 * torch.randn(3, *grid.model_shape), 0).numpy()
    mask, prob_map = invert_probs(probs, grid, keep_map=True, slab=7)
    assert prob_map is not None
    assert np.array_equal(mask, probs_to_mask(probs, grid))
    assert prob_map.shape == (*shape, 3) and prob_map.dtype == np.uint8  # the input's own axes, then the labels
    full = np.stack([from_canonical(p, grid.ornt) for p in resize(probs, grid.canonical_shape)], axis=-1)
    assert np.abs(prob_map / 255.0 - full).max() <= 0.5 / 255 + 1e-6  # rounded to the nearest 1/255
    clear = full.max(-1) - np.sort(full, -1)[..., -2] > 1 / 255  # no tie left after rounding
    assert clear.mean() > 0.9 and np.array_equal(prob_map.argmax(-1)[clear], mask[clear])


@pytest.mark.parametrize(("src", "dst"), [((30, 26, 14), (20, 39, 14)), ((9, 64, 5), (31, 17, 12))])
def test_resize_matches_torch_interpolate(src, dst):
    """NumPy resize (predict never imports torch) against the independent reference, F.interpolate."""
    image = np.random.default_rng(0).normal(0, 100, (2, *src)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(image)[None], size=dst, mode="trilinear", align_corners=False)[0]
    assert np.allclose(resize(image, dst), ref.numpy(), rtol=0, atol=1e-3)  # float32 rounding of 100-sized values
    label = np.random.default_rng(1).integers(0, 4, src, dtype=np.uint8)
    ref_label = F.interpolate(torch.from_numpy(label)[None, None].float(), size=dst, mode="nearest-exact")[0, 0]
    assert np.array_equal(resize(label, dst, label=True), ref_label.numpy().astype(np.uint8))


def test_first_argmax_equals_argmax_with_ties_going_to_the_first_class():
    scores = np.random.default_rng(0).integers(0, 3, (4, 9, 8, 7)).astype(np.float32)  # many ties
    assert np.array_equal(first_argmax(scores), scores.argmax(0).astype(np.uint8))


@pytest.mark.parametrize("name", GEOMETRIES)
def test_blob_lands_at_the_same_world_position(name):
    """A bright blob at a known world point survives preprocess -> model grid -> inverse."""
    affine = GEOMETRIES[name]
    shape = (40, 36, 24) if name != "anisotropic" else (60, 60, 10)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    target = affine[:3, :3] @ (np.array(shape) / 2 + [3, -2, 1]) + affine[:3, 3]
    blob = np.linalg.norm(world - target, axis=-1) < 9.0
    image = np.where(blob, 100.0, 0.0).astype(np.float32)
    pre, grid = preprocess_image(image, affine, CFG)
    fg = pre > pre.mean()
    probs = np.stack([~fg, fg]).astype(np.float32)  # an oracle "network": threshold on the model grid
    mask = probs_to_mask(probs, grid)
    found = world[mask > 0].mean(0)
    assert np.linalg.norm(found - world[blob].mean(0)) < 0.5 * max(np.abs(affine[:3, :3]).sum(0))
    dice = 2 * (mask.astype(bool) & blob).sum() / (mask.astype(bool).sum() + blob.sum())
    assert dice > 0.8  # thick slices blur the edge (partial volume), never the position


def test_label_follows_image_onto_the_model_grid():
    affine = GEOMETRIES["oblique"]
    label = np.zeros((30, 30, 20), np.uint8)
    label[10:20, 8:22, 5:15] = 2
    pre, grid = preprocess_image(label.astype(np.float32), affine, CFG)
    lab = preprocess_label(label, grid)
    assert lab.shape == pre.shape
    assert np.array_equal(lab > 0, pre > (pre.min() + pre.max()) / 2)


def test_normalisation_is_the_same_function_in_training_and_prediction(phantom_ventricle):
    from segkit.data.msd import read_dataset
    from segkit.io import read_volume
    from segkit.train import load_cases

    ds = read_dataset(phantom_ventricle)
    case = ds.cases[0]
    trained = load_cases([case], Config(), "t")[0].image
    vol = read_volume(case.image)
    predicted, _ = preprocess_image(vol.data, vol.affine, Config())
    assert np.array_equal(trained, predicted)


def test_mri_and_ct_normalisation():
    rng = np.random.default_rng(0)
    mri = rng.gamma(2, 100, (20, 20, 10)).astype(np.float32)
    z = normalize(mri, "MRI", PreprocessConfig())
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    ct = rng.uniform(-1000, 1000, (20, 20, 10)).astype(np.float32)
    c = normalize(ct, "CT", PreprocessConfig(window_low=-100, window_high=250))
    assert c.min() == -1 and c.max() == 1
    assert np.allclose(c[ct >= 250], 1) and np.allclose(
        c[(ct > -100) & (ct < 250)], (ct[(ct > -100) & (ct < 250)] + 100) / 350 * 2 - 1, atol=1e-5
    )
    assert not normalize(np.full((5, 5, 5), 7.0, np.float32), "MRI", PreprocessConfig()).any()
    inside = (ct > -100) & (ct < 250)  # unwindow undoes the CT window where it did not clip
    assert np.allclose(unwindow(c, -100, 250)[inside], ct[inside], atol=1e-3)
    assert unwindow(c, -100, 250)[ct >= 250].max() == pytest.approx(250)


@pytest.mark.parametrize("seed", range(6))
def test_mask_moves_with_its_image_under_every_spatial_augmentation(seed):
    aug = AugmentConfig(flip_lr=0.5, affine=1.0, elastic=1.0, brightness_contrast=0, gamma=0, noise=0, blur=0)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 20:50] = 1
    mask[40:55, 5:20] = 2
    image = np.stack([mask.astype(np.float32)] * 3, axis=-1)  # (H, W, C): the image *is* the mask
    img, msk = augment_hwc(image, mask, build_augment(aug, seed=seed))
    assert img.shape == image.shape and msk.shape == mask.shape
    agree = (np.rint(img[..., 1]).astype(np.uint8) == msk).mean()
    assert agree > 0.97
    assert not np.array_equal(msk, mask)  # something moved


def test_intensity_augmentation_leaves_the_mask_alone():
    aug = AugmentConfig(flip_lr=0, affine=0, elastic=0, brightness_contrast=1, gamma=1, noise=1, blur=1)
    rng = np.random.default_rng(1)
    image = rng.normal(size=(32, 32, 3)).astype(np.float32)
    mask = (rng.random((32, 32)) > 0.5).astype(np.uint8)
    img, msk = augment_hwc(image, mask, build_augment(aug, seed=3))
    assert np.array_equal(msk, mask) and not np.allclose(img, image) and np.isfinite(img).all()


@pytest.mark.parametrize("seed", range(4))
def test_ct_training_augmentation_keeps_hounsfield_units(seed):
    """A cyst is water (0-20 HU), a tumour denser: with the liver config's augmentation (noise and blur aside) a
    10 HU cyst stays 10 HU and the 60 HU liver around it 60 HU, while MRI-style gamma moved them by 40+ HU."""
    import dataclasses
    from pathlib import Path

    from segkit.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "liver-cyst.yaml")
    hu = np.full((96, 96), 60.0, np.float32)  # liver
    hu[:8], hu[-8:] = -150.0, 400.0  # fat and bone: the slice spans the whole window
    yy, xx = np.mgrid[:96, :96]
    cyst = (yy - 48) ** 2 + (xx - 48) ** 2 < 14**2
    hu[cyst] = 10.0
    image = np.stack([normalize(hu[..., None], "CT", cfg.preprocess)[..., 0]] * 5, axis=-1)
    label = cyst.astype(np.uint8) * 2
    aug = dataclasses.replace(cfg.augment, noise=0.0, blur=0.0)
    img, msk = augment_hwc(image, label, build_augment(aug, seed=seed))
    back = (img[..., 2] + 1) / 2 * (cfg.preprocess.window_high - cfg.preprocess.window_low) + cfg.preprocess.window_low
    core = ndi.binary_erosion(msk == 2, iterations=3)
    liver = ndi.binary_erosion((msk == 0) & (np.abs(back - 60) < 30), iterations=3)
    assert core.sum() > 100 and liver.sum() > 1000
    assert np.abs(np.median(back[core]) - 10.0) < 1.0 and np.abs(np.median(back[liver]) - 60.0) < 1.0
    mri_style = dataclasses.replace(aug, gamma=1.0, brightness_contrast=1.0)
    moved = [augment_hwc(image, label, build_augment(mri_style, seed=s))[0][..., 2][48, 48] for s in range(8)]
    assert max(abs((v + 1) / 2 * 350 - 100 - 10.0) for v in moved) > 20.0  # the check can fail


def test_augmenting_turns_opencvs_thread_pool_off():
    """Its threads contend with torch's on 128x128 slices (0.448 vs 0.423 s a train step, build_augment)."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        build_augment(AugmentConfig(), seed=0)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


class _ThresholdNet(torch.nn.Module):
    """Stands in for the U-Net: foreground where the (normalised) centre slice is bright."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centre = x[:, x.shape[1] // 2 : x.shape[1] // 2 + 1]
        logits = torch.cat([-centre, centre], 1) * 10 + self.w
        return logits, torch.zeros(x.shape[0], 4)

    def pool_grade(self, feats: torch.Tensor, num_cases: int) -> torch.Tensor:
        return torch.zeros(num_cases, 3)


@pytest.mark.parametrize("name", [*GEOMETRIES, "qform-only", "sform-only"])
def test_predict_puts_a_blob_at_the_same_world_position(name, tmp_path):
    """End to end through read_volume and predict_volume: the mask sits where the blob is in mm."""
    from conftest import write_nifti

    from segkit.infer import predict_volume
    from segkit.io import read_volume

    affine = GEOMETRIES.get(name, GEOMETRIES["oblique"] if name == "sform-only" else GEOMETRIES["LPS"])
    shape = (40, 36, 24) if name != "anisotropic" else (60, 60, 10)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    target = affine[:3, :3] @ (np.array(shape) / 2 + [3, -2, 1]) + affine[:3, 3]
    blob = np.linalg.norm(world - target, axis=-1) < 9.0
    image = (np.where(blob, 100.0, 0.0) + np.random.default_rng(0).normal(0, 1, shape)).astype(np.float32)
    path = write_nifti(tmp_path / "blob.nii.gz", image, affine, qform=name != "sform-only", sform=name != "qform-only")
    vol = read_volume(path)
    assert np.allclose(vol.affine, affine)
    blob_task = TaskConfig(labels=("background", "blob"), numerator=("blob",), denominator=("blob",))
    cfg = Config(task=blob_task)
    pred = predict_volume(_ThresholdNet(), cfg, vol)  # type: ignore[arg-type]
    mask = pred.mask > 0
    assert mask.shape == shape
    assert np.linalg.norm(world[mask].mean(0) - world[blob].mean(0)) < 0.5 * np.abs(affine[:3, :3]).sum(0).max()
    assert 2 * (mask & blob).sum() / (mask.sum() + blob.sum()) > 0.8


def test_the_model_grid_does_not_depend_on_float_noise_in_the_voxel_size():
    """512 voxels of 0.626953125 mm on a 2 mm grid is a tie (160.5); the same voxel size as float32 rounding of
    another converter writes it (x (1 + 2e-7)) went to 161 instead of 160, and the cyst came out 23% larger."""
    pre = PreprocessConfig(spacing=(2.0, 2.0, 2.0))
    shapes = {
        plan_grid((512, 512, 35), np.diag([s, s, 5.0, 1.0]), pre).model_shape
        for s in (0.626953125, 0.626953125 * (1 + 2e-7), 0.626953125 * (1 - 2e-7))
    }
    assert len(shapes) == 1


def test_mri_normalisation_does_not_depend_on_the_units_of_the_values():
    """A scan stored with a tiny scale (values of 1e-9) came out all zeros: an absolute 1e-6 floor on the spread."""
    x = np.random.default_rng(0).gamma(2.0, 100.0, (20, 20, 10)).astype(np.float32)
    pre = PreprocessConfig()
    ref = normalize(x, "MRI", pre)
    assert np.allclose(normalize(x * np.float32(1e-9), "MRI", pre), ref, atol=1e-3)
    assert not normalize(np.ones((4, 4, 4), np.float32) * 1e-9, "MRI", pre).any()  # flat: still zeros
