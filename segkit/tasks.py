"""The two built-in tasks: label names, biomarker and grade thresholds (shared by data makers and configs)."""

from __future__ import annotations

from typing import Any

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


TASK_KEYS_ADDED = ("one_piece", "lesions")  # task keys newer than some checkpoints (and shipped models of then)


def with_builtin_task_keys(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config dict with its built-in task's TASK_KEYS_ADDED filled in where missing (those among the
    config's labels): a checkpoint from before a key existed gets what its task has, not an empty tuple."""
    task = config.get("task")
    if not isinstance(task, dict) or task.get("name") not in TASKS:
        return config
    builtin = TASKS[task["name"]]
    labels = task.get("labels", builtin.labels)[1:]
    missing = {k: [n for n in getattr(builtin, k) if n in labels] for k in TASK_KEYS_ADDED if k not in task}
    return {**config, "task": {**task, **missing}} if missing else config
