"""Benchmark: peak RSS and wall time of `segkit predict` on a CT-sized 512x512x300 volume (CPU).

Usage: .venv/bin/python scripts/bench_predict_memory.py [--shape 512 512 300] [--model RUN_OR_PT] [--probabilities]
Without --model an untrained liver-cyst network is saved (weights do not change memory or time);
--probabilities times predict with its 4-D probability map written too.
Goal (issue: hardening): peak RSS under 3 GiB.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    ap.add_argument("--model", default=None)
    ap.add_argument("--probabilities", action="store_true", help="predict --probabilities")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        model = args.model or str(_untrained_checkpoint(t))
        rng = np.random.default_rng(0)
        vol = (rng.normal(40, 30, args.shape)).astype(np.int16)  # CT is stored as int16 HU
        affine = np.diag([-0.75, -0.75, 1.0, 1.0])  # LPS-like, 0.75 mm in-plane, 1 mm slices
        nib.save(nib.Nifti1Image(vol, affine), str(t / "ct.nii.gz"))
        del vol
        env = dict(os.environ)
        cmd = [
            sys.executable,
            "-m",
            "segkit.cli",
            "predict",
            str(t / "ct.nii.gz"),
            "--model",
            model,
            "--out",
            str(t / "out"),
            *(["--probabilities"] if args.probabilities else []),
        ]
        t0 = time.time()
        subprocess.run(cmd, check=True, env=env)
        wall = time.time() - t0
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"shape {tuple(args.shape)}: peak RSS {peak_kib / 1024**2:.2f} GiB, wall {wall:.1f} s")


def _untrained_checkpoint(folder: Path) -> Path:
    from segkit.checkpoint import save_checkpoint
    from segkit.config import config_to_dict, load_config
    from segkit.models import build_model

    cfg = load_config(ROOT / "configs" / "liver-cyst.yaml")
    path = folder / "untrained.pt"
    save_checkpoint(path, {"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg), "epoch": 0})
    return path


if __name__ == "__main__":
    main()
