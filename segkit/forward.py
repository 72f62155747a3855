"""Running the network over a volume on the model grid: 2.5-D slice batches or 3-D sliding windows,
mirror test-time augmentation, the volume grade from pooled features; devices and mixed precision.

NumPy in and out: a PyTorch model runs behind TorchNet, ONNX Runtime behind engine.OnnxNet, so a
prediction through ONNX Runtime never imports torch (1.3-2.8 s of start-up on 2 cores).
"""

from __future__ import annotations

import glob
import re
import sys
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from segkit.config import Config
from segkit.engine import OnnxNet
from segkit.errors import InputError
from segkit.transforms import context_stack, pad_to_multiple

if TYPE_CHECKING:
    import torch

    from segkit.models import SegGrader

Network: TypeAlias = "SegGrader | OnnxNet"  # what load_model returns: the PyTorch model or its ONNX Runtime twin
ORGAN_SHARE = 0.25  # 3-D grade: windows at least this much organ are pooled


class TorchNet:
    """A PyTorch SegGrader with OnnxNet's NumPy interface: on its own device, under the config's autocast on a
    GPU and in fp32 on a CPU. A CPU with native bf16 would take train.amp auto's bf16 there too, but its
    probabilities moved by up to 0.13 and 0.05% of a head's voxels changed label against the fp32 ONNX
    network (AVX512-BF16 EPYC, 2026-11-29): a CPU prediction is the same through either engine."""

    def __init__(self, net: SegGrader, amp: str) -> None:
        self.net = net
        self.device = next(net.parameters()).device
        self.amp = amp if self.device.type == "cuda" else "off"

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, *spatial) float32 -> mask logits (N, K, *spatial), features (N, F + K)."""
        import torch

        with torch.no_grad(), autocast(self.device, self.amp):
            logits, feats = self.net(torch.from_numpy(x).to(self.device))
        return logits.float().cpu().numpy(), feats.float().cpu().numpy()

    def pool_grade(self, feats: np.ndarray, num_cases: int) -> np.ndarray:
        """Features of num_cases cases' slices (or windows), case by case -> grade logits (num_cases, G)."""
        import torch

        with torch.no_grad():
            out = self.net.pool_grade(torch.from_numpy(feats).to(self.device), num_cases)
        return out.float().cpu().numpy()


def as_runner(net: Network | TorchNet, amp: str) -> OnnxNet | TorchNet:
    """The NumPy-in, NumPy-out runner of a network (a PyTorch model is wrapped in TorchNet)."""
    return net if isinstance(net, OnnxNet | TorchNet) else TorchNet(net, amp)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Softmax along axis in float32 (the maximum subtracted first, so exp cannot overflow)."""
    e = np.exp(x - x.max(axis=axis, keepdims=True), dtype=np.float32)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def cpu_only_here() -> bool:
    """True where this machine certainly has no CUDA device (Linux without /dev/nvidia*, macOS), found
    without importing torch; elsewhere False, and pick_device asks torch."""
    if sys.platform == "darwin":
        return True
    return sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*")


def check_device(name: str) -> None:
    """Refuse a --device that is not auto, cpu, cuda or cuda:N (torch's own error is a traceback)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise InputError(f"--device {name}: not a device segkit runs on; use auto, cpu or cuda (cuda:N for one GPU)")


def pick_device(name: str = "auto") -> torch.device:
    """auto -> CUDA when available, else CPU."""
    import torch

    check_device(name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name} asked for, but no CUDA device is available; use --device cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), from cuda:0")
    return dev


def predict_preprocessed(
    net: Network | TorchNet, volume: np.ndarray, cfg: Config, batch: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised model-grid volume (X, Y, Z) -> class probs (K, X, Y, Z), grade probs (G,),
    and the volume's pooled slice features (F + K,) that the grade head read.

    With eval.tta the left-right mirrored volume is predicted too (axis 0 of the model grid, which is
    RAS-canonical) and both probabilities are averaged; the pooled features are the unmirrored ones.
    """
    run = as_runner(net, cfg.train.amp)
    probs, grade_p, pooled = _predict_once(run, volume, cfg, batch)
    if cfg.eval.tta:
        m_probs, m_grade, _ = _predict_once(run, np.ascontiguousarray(volume[::-1]), cfg, batch)
        probs += m_probs[:, ::-1]
        probs *= 0.5
        grade_p = (grade_p + m_grade) / 2
    return probs, grade_p, pooled


def _predict_once(
    run: OnnxNet | TorchNet, volume: np.ndarray, cfg: Config, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if cfg.spatial_dims == 3:
        return _predict_windows(run, volume, cfg)
    num_z = volume.shape[2]
    probs = np.empty((cfg.num_classes, *volume.shape), dtype=np.float32)
    feats = []
    for z0 in range(0, num_z, batch):
        z = np.arange(z0, min(num_z, z0 + batch))
        x, (h, w) = pad_to_multiple(context_stack(volume, z, cfg.preprocess.context_slices))  # (N, C, H, W)
        logits, f = run(x)
        probs[:, :, :, z0 : z0 + len(z)] = softmax(logits[:, :, :h, :w], 1).transpose(1, 2, 3, 0)
        feats.append(f)
    slice_feats = np.concatenate(feats)  # (Z, F)
    # Pool over the slices that hold the organ (the biomarker's denominator), as in training.
    organ = [cfg.task.labels.index(n) for n in cfg.task.denominator]
    has_organ = probs[organ].sum(0).max(axis=(0, 1)) > 0.5  # (Z,)
    chosen = slice_feats[has_organ] if has_organ.any() else slice_feats
    pooled = chosen.mean(axis=0)
    return probs, _grade(run, pooled), pooled


def _predict_windows(
    run: OnnxNet | TorchNet, volume: np.ndarray, cfg: Config
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3-D model: MONAI's sliding_window_inference over train.patch_size windows (eval.window_overlap,
    eval.window_blend, eval.window_batch windows per call; edges replicated where the volume is smaller).

    The grade pools the features of the windows that are at least a quarter organ, as training pools
    windows centred in the organ.
    """
    import torch

    from segkit.models import sliding_window

    feats: list[np.ndarray] = []

    def window_logits(x: torch.Tensor) -> torch.Tensor:
        logits, f = run(x.numpy())
        feats.append(f)
        return torch.from_numpy(logits)

    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    e = cfg.eval
    logits = sliding_window()(
        x,
        cfg.train.patch_size,
        e.window_batch,
        window_logits,
        e.window_overlap,
        e.window_blend,
        padding_mode="replicate",
    )
    probs = softmax(torch.as_tensor(logits)[0].float().numpy(), 0)
    window_feats = np.concatenate(feats)  # (W, F + K)
    organ = [cfg.task.labels.index(n) - cfg.num_classes for n in cfg.task.denominator]  # among the last K
    chosen = window_feats[window_feats[:, organ].sum(1) >= ORGAN_SHARE]
    pooled = (chosen if len(chosen) else window_feats).mean(axis=0)
    return probs, _grade(run, pooled), pooled


def _grade(run: OnnxNet | TorchNet, pooled: np.ndarray) -> np.ndarray:
    """Grade probabilities (G,) from one volume's pooled features (F + K,)."""
    return softmax(run.pool_grade(pooled[None].astype(np.float32, copy=False), 1), 1)[0]


def autocast(dev: torch.device, amp: str) -> torch.autocast:
    """Autocast context for the config's amp setting (a no-op in fp32)."""
    import torch

    dtype = amp_dtype(dev, amp)
    return torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def amp_dtype(dev: torch.device, amp: str) -> torch.dtype | None:
    """Mixed-precision dtype: fp16 on CUDA, bf16 on CPUs with native bf16; None for fp32."""
    import torch

    if amp == "off":
        return None
    if amp == "fp16" or (amp == "auto" and dev.type == "cuda"):
        return torch.float16 if dev.type == "cuda" else None
    if amp == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if native_bf16() else None


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX). Without it bf16 autocast is emulated
    and slow: 15x on a 2-core AMD EPYC (3.9 vs 62.7 img/s), 2.4x for a training step on a 2-core Xeon with
    AVX512 but no AVX512-BF16. oneDNN's own check (torch.ops.mkldnn._is_mkldnn_bf16_supported) says yes on
    any AVX512 CPU, which is what put that Xeon's training on bf16."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
