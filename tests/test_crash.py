"""Crash safety: SIGKILL mid-epoch then --resume finishes; Ctrl-C exits cleanly with last.pt intact."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY

from segkit.checkpoint import load_checkpoint


def _train_cmd(data: Path, run: Path, epochs: int, *extra: str) -> list[str]:
    sets = [a for s in TINY if not s.startswith(("train.epochs", "train.steps_per_epoch")) for a in ("--set", s)]
    return [
        sys.executable, "-m", "segkit.cli", "train", "--config", str(ROOT / "configs/ventricle.yaml"),
        "--data", str(data), "--out", str(run), "--epochs", str(epochs),
        "--set", "train.steps_per_epoch=25", *sets, *extra,
    ]  # fmt: skip


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.2)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SEGKIT_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_training_resumes_from_the_last_complete_epoch(phantom_ventricle, tmp_path, sig):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _train_cmd(phantom_ventricle, run, 3), env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _wait_for(run / "metrics.csv", proc)  # epoch 1 is complete and on disk
    time.sleep(0.5)  # now inside epoch 2
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and b"Traceback" not in err, err
        assert b"--resume" in out + err
    assert not list(run.glob(".*tmp*")), "a checkpoint was left half-written"
    done = load_checkpoint(run / "last.pt")["epoch"]
    assert done >= 1
    res = subprocess.run(_train_cmd(phantom_ventricle, run, 3, "--resume"), env=_env(tmp_path), capture_output=True)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
