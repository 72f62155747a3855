"""Checkpoints: plain tensors and data only, written atomically, loaded with weights_only=True."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkit.errors import CheckpointError
from segkit.io import atomic_write
from segkit.tasks import TASKS, with_builtin_task_keys


def plain(value: Any) -> Any:
    """Tensors stay; numpy scalars/arrays become Python numbers/lists (weights_only-loadable)."""
    import torch

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
    import torch

    buf = io.BytesIO()
    torch.save(plain(state), buf)
    data = buf.getvalue()
    atomic_write(Path(path), lambda t: t.write_bytes(data))


def require_checkpoint(path: Path) -> Path:
    """path, or an error when no checkpoint file is there."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train a model first (segkit train)")
    return path


def _unreadable(path: Path, e: Exception) -> str:
    """Why torch.load could not read a file: a damaged checkpoint (a zip archive, as torch.save writes) or none."""
    with path.open("rb") as fh:
        zipped = fh.read(4) == b"PK\x03\x04"
    if zipped:
        return f"{path}: a damaged checkpoint ({type(e).__name__}), maybe cut short: copy or train it again"
    return (
        f"{path}: not a PyTorch checkpoint: pass a .pt that segkit train wrote, its run folder or a shipped model name"
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely; pickled code objects are refused."""
    import torch

    path = require_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln]
        if not what:
            raise CheckpointError(_unreadable(path, e)) from None
        raise CheckpointError(
            f"{path}: refused, the checkpoint holds pickled Python objects, not just tensors "
            f"({what[0].split(' was not')[0]}); load only checkpoints that segkit wrote"
        ) from None
    except Exception as e:
        raise CheckpointError(_unreadable(path, e)) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a segkit checkpoint (no model weights or config inside)")
    return {**state, "config": with_builtin_task_keys(state["config"])}


def weights_dir() -> Path:
    """Folder of the shipped models (<task>.pt + <task>.md): segkit/weights, or $SEGKIT_WEIGHTS_DIR."""
    env = os.environ.get("SEGKIT_WEIGHTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ModelRef:
    """The checkpoint a command uses and where it came from."""

    kind: str  # "shipped" (segkit/weights/<task>.pt) or "checkpoint" (a run folder or .pt the user named)
    name: str  # shipped: the task name; checkpoint: the --model value as given
    path: Path


def resolve_model(model: str | Path | None) -> ModelRef:
    """A shipped model name (ventricle, liver-cyst), a run folder (its best.pt) or a .pt file."""
    names = ", ".join(TASKS)
    if model is None:
        raise CheckpointError(f"no --model given; pass a run folder, a .pt checkpoint or a shipped model ({names})")
    # An exact shipped name always means the shipped model (a folder of that name: ./ventricle).
    if str(model) in TASKS:
        path = weights_dir() / f"{model}.pt"
        if not path.is_file():
            raise CheckpointError(
                f"shipped {model} model not installed ({path} is missing); pass --model RUN_DIR, "
                f"or train one with `segkit train --config configs/{model}.yaml`"
            )
        return ModelRef("shipped", str(model), path)
    p = Path(model)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return ModelRef("checkpoint", str(model), p / name)
        raise CheckpointError(f"{p}: run folder holds no best.pt or last.pt; train it first")
    if not p.exists():
        raise CheckpointError(f"{p}: model not found; pass a run folder, a .pt checkpoint or a shipped model ({names})")
    return ModelRef("checkpoint", str(model), p)


def resolve_checkpoint(model: str | Path | None) -> Path:
    """The checkpoint file of a --model value (see resolve_model)."""
    return resolve_model(model).path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
