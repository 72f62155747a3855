import pytest
import torch

from segkit.config import Config, ModelConfig
from segkit.errors import ConfigError
from segkit.models import build_model


@pytest.mark.parametrize(
    "model",
    [ModelConfig(arch="monai_unet", channels=(8, 16, 32)), ModelConfig(arch="smp_unet", encoder="resnet18")],
)
def test_model_gives_mask_logits_and_volume_grade(model):
    cfg = Config(model=model)
    net = build_model(cfg).eval()
    x = torch.randn(6, cfg.in_channels, 64, 64)  # (N, C, H, W): 2 cases x 3 slices
    logits, feats = net(x)
    assert logits.shape == (6, cfg.num_classes, 64, 64)
    grade = net.pool_grade(feats, 2)
    assert grade.shape == (2, len(cfg.task.grades))
    # pooling is over a case's slices: reordering slices inside a case leaves its grade unchanged
    perm = feats.view(2, 3, -1)[:, [2, 0, 1]].reshape(6, -1)
    assert torch.allclose(net.pool_grade(perm, 2), grade, atol=1e-5)


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ConfigError, match="monai_unet.*smp_unet"):
        build_model(Config(model=ModelConfig(arch="vnet")))


def test_smp_never_downloads_weights_by_default():
    assert ModelConfig().encoder_weights is None
