"""Checkpoints: plain tensors and data only, written atomically, loaded with weights_only=True."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.errors import CheckpointError
from segkit.io import atomic_write, atomic_write_text


def plain(value: Any) -> Any:
    """Tensors stay; numpy scalars/arrays become Python numbers/lists (weights_only-loadable)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return value


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise to memory, then write temp + fsync + rename: a kill never leaves half a file."""
    buf = io.BytesIO()
    torch.save(plain(state), buf)
    data = buf.getvalue()
    atomic_write(Path(path), lambda t: t.write_bytes(data))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely; pickled code objects are refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train a model first (segkit train)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln]
        detail = what[0].split(" was not")[0] if what else "unsupported object"
        raise CheckpointError(
            f"{path}: refused, the checkpoint holds pickled Python objects, not just tensors "
            f"({detail}); load only checkpoints that segkit wrote"
        ) from None
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}); it may be truncated") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a segkit checkpoint (no model weights or config inside)")
    return state


def segkit_home() -> Path:
    """Where segkit keeps its own small state (the latest run); $SEGKIT_HOME overrides."""
    return Path(os.environ.get("SEGKIT_HOME", Path.home() / ".segkit"))


def record_latest_run(run_dir: Path) -> None:
    """Remember run_dir as the default model for predict/evaluate."""
    atomic_write_text(segkit_home() / "latest_run", str(Path(run_dir).resolve()) + "\n")


def resolve_checkpoint(model: str | Path | None) -> Path:
    """A run folder (its best.pt), a .pt file, or None for the latest recorded run."""
    if model is None:
        rec = segkit_home() / "latest_run"
        if not rec.is_file():
            raise CheckpointError("no --model given and no latest run recorded; train one with segkit train")
        model = rec.read_text().strip()
    p = Path(model)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: run folder holds no best.pt or last.pt; train it first")
    if not p.exists():
        raise CheckpointError(f"{p}: model not found; pass a run folder or a .pt checkpoint")
    return p
