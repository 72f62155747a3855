"""Registry of the built-in dataset makers: `segkit data make {ventricle,ventricle-real,liver-cyst,liver-real}`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segkit.data.liver import make_liver_cyst, make_liver_real
from segkit.data.msd import check_new_dataset_dir
from segkit.data.ventricle import make_ventricle
from segkit.data.ventricle_real import make_ventricle_real
from segkit.errors import ConfigError

MAKERS: dict[str, Callable[..., Path]] = {
    "ventricle": make_ventricle,
    "ventricle-real": make_ventricle_real,  # real T1 images for evaluation only
    "liver-cyst": make_liver_cyst,
    "liver-real": make_liver_real,  # the real CT the liver scenes are drawn from, for evaluation only
}


def make_dataset(task: str, out: Path, cases: int, seed: int) -> Path:
    """Build a built-in dataset in out (MSD layout + dataset.json); returns the dataset.json path."""
    if task not in MAKERS:
        raise ConfigError(f"unknown dataset {task!r}; valid datasets: {', '.join(MAKERS)}")
    if cases < 1:
        raise ConfigError(f"--cases must be at least 1, got {cases}")
    check_new_dataset_dir(out)
    return MAKERS[task](Path(out), cases, seed)
