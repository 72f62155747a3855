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


@pytest.mark.parametrize(("bf16_unit", "amx", "want"), [(False, False, None), (True, False, torch.bfloat16)])
def test_cpu_amp_auto_takes_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, bf16_unit, amx, want):
    # oneDNN's check says yes on any AVX512 CPU; on a Xeon without AVX512-BF16 that made a training step 2.4x slower
    from segkit.forward import amp_dtype

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16_unit)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, "auto") == want
    assert amp_dtype(cpu, "bf16") == torch.bfloat16  # asked for by name: always
    assert amp_dtype(cpu, "off") is None


@pytest.mark.parametrize("amp", ["auto", "bf16"])
def test_a_cpu_prediction_runs_in_fp32_whatever_training_used(monkeypatch, amp):
    """train.amp picks bf16 for training on a CPU with bf16 units; predicting in it changed 0.05% of a head's
    voxels against the fp32 ONNX network (AVX512-BF16 EPYC): on a CPU, TorchNet predicts in fp32."""
    from segkit.forward import TorchNet

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # as on that EPYC
    torch.manual_seed(0)
    net = build_model(Config(model=ModelConfig(arch="monai_unet", channels=(8, 16, 32)))).eval()
    x = torch.randn(2, Config().in_channels, 32, 32)
    with torch.no_grad():
        fp32 = net(x)[0].numpy()
    got = TorchNet(net, amp)(x.numpy())[0]
    assert got.dtype == fp32.dtype and float(abs(got - fp32).max()) < 1e-5
