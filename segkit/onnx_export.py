"""ONNX export of a checkpoint's network and grade head, each checked against PyTorch before it lands.

`segkit export --format onnx` writes them for any run; `python -m segkit.onnx_export WEIGHTS.pt` (re)writes the
files a shipped model carries beside it for ONNX Runtime at predict time (segkit.engine).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from segkit.errors import InputError, OutputError
from segkit.io import atomic_write, atomic_write_text

ONNX_OPSET = 17
STATE_KEYS = ("config", "epoch", "limits")  # of a checkpoint, copied into the ONNX files' JSON


def export_onnx(model: str | Path | None, out: Path, atol: float = 1e-4) -> dict[str, Any]:
    """out/model.onnx (mask logits, slice features), out/grade_head.onnx, out/onnx.json; checked vs PyTorch."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime
    except ImportError as e:
        raise InputError(
            f"ONNX export needs onnx and onnxruntime ({e.name} is missing): pip install {e.name}"
        ) from None
    import torch

    from segkit.infer import load_model
    from segkit.models import SegGrader

    net, cfg, info = load_model(model, "cpu", engine="torch")
    assert isinstance(net, SegGrader)  # engine torch
    gen = torch.Generator().manual_seed(0)
    size, c = tuple(cfg.train.patch_size), cfg.in_channels
    with torch.no_grad():
        feat_dim = int(net(torch.zeros(1, c, *size))[1].shape[1])
    names = "HWD"[: len(size)]
    nchw = {0: "N", **{i + 2: n for i, n in enumerate(names)}}
    # Each file is checked at its export shape and at another one: the dynamic axes must work too.
    other = [s + 16 * (i + 1) for i, s in enumerate(size)]
    images = [torch.randn(2, c, *size, generator=gen), torch.randn(1, c, *other, generator=gen)]
    shape = ", ".join(names)
    what = "patches of the volume" if len(size) == 3 else "the slice and its context_slices neighbours on each side"
    axes = {"image": nchw, "mask_logits": nchw, "slice_features": {0: "N"}}
    diffs = _write_onnx(net, images, ["image"], axes, Path(out) / "model.onnx", atol)
    feats = [torch.rand(1, 6, feat_dim, generator=gen), torch.rand(3, 11, feat_dim, generator=gen)]
    axes = {"slice_features": {0: "B", 1: "S"}, "grade_logits": {0: "B"}}
    diffs |= _write_onnx(_grade_head_module(net), feats, ["slice_features"], axes, Path(out) / "grade_head.onnx", atol)
    result = {
        "files": ["model.onnx", "grade_head.onnx"],
        "checkpoint": info["checkpoint"],
        "opset": ONNX_OPSET,
        "inputs": {
            "image": f"(N, {c}, {shape}) float32, each a multiple of 16, preprocessed as segkit.transforms does "
            f"({what})",
            "slice_features": f"(B, S, {feat_dim}) slice_features of the S organ-holding slices (3-D: windows) "
            "of each of B cases",
        },
        "outputs": {
            "mask_logits": f"(N, {cfg.num_classes}, {shape})",
            "slice_features": f"(N, {feat_dim})",
            "grade_logits": f"(B, {len(cfg.task.grades)})",
        },
        "labels": list(cfg.task.labels),
        "grades": list(cfg.task.grades),
        "max_abs_diff": {k: float(f"{v:.3g}") for k, v in diffs.items()},
        "tolerance": f"{atol:g} x max(1, max |PyTorch output|)",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    atomic_write_text(Path(out) / "onnx.json", json.dumps(result, indent=2))
    return result


def _write_onnx(
    module: Any, samples: list[Any], inputs: list[str], axes: dict[str, dict[int, str]], path: Path, atol: float
) -> dict[str, float]:
    """Export module at samples[0]'s shape, run every sample through onnxruntime; the file lands only if all match."""
    import onnxruntime
    import torch

    outputs = [k for k in axes if k not in inputs]
    diffs: dict[str, float] = {}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; it runs offline
            torch.onnx.export(
                module,
                (samples[0],),
                str(tmp),
                input_names=inputs,
                output_names=outputs,
                opset_version=ONNX_OPSET,
                dynamic_axes=axes,
                dynamo=False,
            )
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        for x in samples:
            with torch.no_grad():
                ref = module(x)
            ref = ref if isinstance(ref, tuple) else (ref,)
            for name, a, b in zip(outputs, ref, session.run(outputs, {inputs[0]: x.numpy()}), strict=True):
                diffs[name] = max(diffs.get(name, 0.0), float(np.abs(a.numpy() - b).max()))
                if diffs[name] > atol * max(1.0, float(a.abs().max())):
                    raise OutputError(
                        f"{path.name}: ONNX {name} differs from PyTorch by {diffs[name]:.2e} (tolerance {atol:g} "
                        "of the output's scale); nothing written, please report this with the checkpoint"
                    )

    atomic_write(path, write)
    return diffs


def _grade_head_module(net: Any) -> Any:
    """ONNX wrapper: slice features (B, S, F) -> grade logits (B, G) through the model's own pool_grade."""
    import torch

    class PooledGrade(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, S, F) -> (B, G)
            return self.net.pool_grade(feats.flatten(0, 1), feats.shape[0])

    return PooledGrade().eval()


def write_onnx(pt: Path) -> dict[str, Any]:
    """Export checkpoint pt's network and grade head next to it (checked against PyTorch by export_onnx)."""
    from segkit.checkpoint import file_sha256, load_checkpoint
    from segkit.engine import onnx_files

    sha256 = file_sha256(pt)  # before the export reads it: the files record the .pt they came from
    files = onnx_files(pt)
    with tempfile.TemporaryDirectory(dir=pt.parent) as tmp:
        result = export_onnx(pt, Path(tmp))
        shutil.move(Path(tmp) / "model.onnx", files["net"])
        shutil.move(Path(tmp) / "grade_head.onnx", files["grade"])
    state = load_checkpoint(pt)
    meta = {
        **result,
        "checkpoint": pt.name,
        "checkpoint_sha256": sha256,
        "files": [files["net"].name, files["grade"].name],
        # what predict needs besides the weights: with it, a prediction through these files never loads pt (torch)
        "checkpoint_state": {k: state[k] for k in STATE_KEYS if k in state},
    }
    atomic_write_text(files["meta"], json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv: list[str] | None = None) -> None:
    """python -m segkit.onnx_export WEIGHTS.pt ...: (re)write the ONNX files of shipped checkpoints."""
    import sys

    for arg in argv if argv is not None else sys.argv[1:]:
        pt = Path(arg)
        meta = write_onnx(pt)
        print(f"{pt}: wrote {', '.join(meta['files'])}; max |ONNX - PyTorch| {meta['max_abs_diff']}")


if __name__ == "__main__":
    main()
