"""ONNX Runtime for the shipped models' networks: the same masks as PyTorch, and no torch import.

A shipped model `<task>.pt` may carry `<task>.onnx` (mask logits and slice features),
`<task>.grade.onnx` (slice features -> grade logits) and `<task>.onnx.json`, written together by
segkit.onnx_export.write_onnx() from that exact `.pt` (the JSON records its SHA-256, and its config, epoch
and limits). On a CPU, `--engine auto` runs the network through ONNX Runtime when the three files are there
and still match the `.pt`, and reads the `.pt`'s settings from the JSON: such a predict never imports
torch (1.3-5 s of start-up). Everything around the network (preprocessing, the inverse to the input
grid, measurements) is the one NumPy path PyTorch models run too. Timings: scripts/bench.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from segkit.errors import CheckpointError
from segkit.tasks import with_builtin_task_keys

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "onnx")


def onnx_files(pt: Path) -> dict[str, Path]:
    """The ONNX sidecar files of a shipped checkpoint."""
    return {
        "net": pt.with_suffix(".onnx"),
        "grade": pt.with_suffix(".grade.onnx"),
        "meta": pt.with_suffix(".onnx.json"),
    }


class OnnxNet:
    """SegGrader's forward and pool_grade run by ONNX Runtime on the CPU, with the same signatures."""

    def __init__(self, files: dict[str, Path], state: dict[str, Any] | None = None) -> None:
        import onnxruntime as ort

        # the checkpoint's config, epoch and limits, copied into the JSON at export: a predict reads no .pt
        self.state = state

        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only
        self.net = ort.InferenceSession(str(files["net"]), opts, providers=["CPUExecutionProvider"])
        self.head = ort.InferenceSession(str(files["grade"]), opts, providers=["CPUExecutionProvider"])
        self.version = ort.__version__

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, *spatial) float32 -> mask logits (N, K, *spatial), features (N, F + K)."""
        image = np.ascontiguousarray(x, dtype=np.float32)
        logits, feats = self.net.run(["mask_logits", "slice_features"], {"image": image})
        return logits, feats

    def pool_grade(self, feats: np.ndarray, num_cases: int) -> np.ndarray:
        """Features of num_cases cases' slices (or windows), case by case -> grade logits (num_cases, G)."""
        grouped = feats.reshape(num_cases, -1, feats.shape[-1]).astype(np.float32, copy=False)
        return self.head.run(["grade_logits"], {"slice_features": grouped})[0]


def open_onnx(pt: Path, sha256: str, engine: str) -> OnnxNet | None:
    """The ONNX network of checkpoint pt when engine allows it and its files match pt; else None (PyTorch).

    engine "onnx" insists: missing or stale files, or no onnxruntime, are an error naming the fix.
    """
    if engine == "torch":
        return None
    files = onnx_files(pt)
    why = None
    missing = not all(f.is_file() for f in files.values())
    if missing:
        why = (
            f"{pt.name} has no ONNX files beside it ({files['net'].name}, {files['grade'].name}, {files['meta'].name})"
        )
    elif (meta := json.loads(files["meta"].read_text())).get("checkpoint_sha256") != sha256:
        why = f"{files['net'].name} was exported from another {pt.name} (SHA-256 differs)"
    else:
        state = meta.get("checkpoint_state")
        if state and "config" in state:  # as load_checkpoint gives a .pt's: an older model gets its task's new keys
            state = {**state, "config": with_builtin_task_keys(state["config"])}
        try:
            return OnnxNet(files, state)
        except ImportError:
            why = "onnxruntime is not installed (pip install onnxruntime)"
    if engine == "onnx":
        fix = f"use --engine torch, or write them: python -m segkit.onnx_export {pt}"
        raise CheckpointError(f"--engine onnx: {why}; {fix}")
    # a run of one's own has no ONNX files: say so only when asked (--verbose); stale files always
    log.log(logging.DEBUG if missing else logging.INFO, "running %s with PyTorch: %s", pt.name, why)
    return None
