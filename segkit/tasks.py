"""The two built-in tasks: label names, biomarker and grade thresholds (shared by data makers and configs)."""

from __future__ import annotations

from segkit.config import TaskConfig
from segkit.errors import ConfigError

TASKS: dict[str, TaskConfig] = {
    "ventricle": TaskConfig(
        name="ventricle",
        modality="MRI",
        labels=("background", "brain", "lateral_ventricles"),
        grades=("healthy", "moderate", "severe"),
        biomarker="ventricle_ratio",
        numerator=("lateral_ventricles",),
        denominator=("brain", "lateral_ventricles"),
        thresholds=(0.02, 0.04),
        denominator_range_ml=(900.0, 2100.0),  # whole brain, ventricles included
        numerator_range_ml=(3.0, 250.0),  # lateral ventricles
        one_piece=("brain",),  # two lateral ventricles: never cut to one
    ),
    "liver-cyst": TaskConfig(
        name="liver-cyst",
        modality="CT",
        labels=("background", "liver", "cyst", "tumour"),
        grades=("healthy", "moderate", "severe"),
        biomarker="cyst_burden",
        numerator=("cyst",),
        denominator=("liver", "cyst", "tumour"),
        thresholds=(0.015, 0.05),
        denominator_range_ml=(600.0, 4500.0),  # whole liver, lesions included
        one_piece=("liver",),  # cysts and tumours: several
        lesions=("cyst", "tumour"),
    ),
}


def get_task(name: str) -> TaskConfig:
    """The built-in task spec by name; unknown names list the valid ones."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]
