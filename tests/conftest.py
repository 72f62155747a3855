"""Shared fixtures: tiny phantom datasets, a tiny trained run, NIfTI writers for geometry tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.channels=[8,16,32]",
    "train.patch_size=[32,32]",
    "train.steps_per_epoch=3",
    "train.slices_per_case=4",
    "train.epochs=2",
    "eval.bootstrap=50",
]


@pytest.fixture(autouse=True)
def _segkit_home(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.segkit: each test session records runs in a temp home."""
    monkeypatch.setenv("SEGKIT_HOME", str(tmp_path_factory.getbasetemp() / "segkit_home"))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `segkit ARGS` in-process; returns (exit code, stdout, stderr)."""
    from segkit.cli import main

    old = sys.argv
    sys.argv = ["segkit", *args]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="session")
def phantom_ventricle(tmp_path_factory) -> Path:
    from segkit.data.phantom import make_phantom

    root = tmp_path_factory.mktemp("ph_ventricle")
    make_phantom("ventricle", root, cases=9, seed=0, shape=(32, 32, 16))
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, phantom_ventricle) -> Path:
    """A ventricle model trained for 2 tiny epochs on the phantom dataset."""
    from segkit.config import load_config
    from segkit.train import fit

    run = tmp_path_factory.mktemp("run")
    os.environ["SEGKIT_HOME"] = str(tmp_path_factory.getbasetemp() / "segkit_home")
    cfg = load_config(ROOT / "configs" / "ventricle.yaml", TINY)
    fit(cfg, phantom_ventricle, run)
    return run


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation about one world axis."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


GEOMETRIES = {
    "RAS": np.diag([1.5, 1.5, 1.5, 1.0]),
    "LPS": np.diag([-1.5, -1.5, 1.5, 1.0]),
    "LAS": np.diag([-1.5, 1.5, 1.5, 1.0]),
    "PIR-permuted": np.array([[0, 0, 1.5, 0], [-1.5, 0, 0, 0], [0, -1.5, 0, 0], [0, 0, 0, 1.0]]),
    "oblique": np.block(
        [
            [rotation(2, 25) @ rotation(0, 10) @ np.diag([1.5, 1.5, 1.5]), np.array([[5.0], [-7.0], [3.0]])],
            [np.zeros((1, 3)), np.ones((1, 1))],
        ]
    ),
    "anisotropic": np.diag([0.9, 0.9, 4.0, 1.0]),
}


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, qform: bool = True, sform: bool = True) -> Path:
    """Write a NIfTI with chosen qform/sform codes."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine if qform else None, code=1 if qform else 0)
    img.set_sform(affine if sform else None, code=1 if sform else 0)
    nib.save(img, str(path))
    return path
