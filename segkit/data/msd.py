"""MSD-layout datasets (imagesTr/, labelsTr/, dataset.json) with per-case grades and splits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segkit import __version__
from segkit.config import TaskConfig
from segkit.errors import InputError
from segkit.io import Volume, atomic_write_text, check_same_grid, label_array, read_volume, write_volume

SPLITS = ("train", "val", "test")
CORE_FIELDS = ("image", "label", "case", "grade", "biomarker", "split")  # a dataset.json row's own keys


@dataclass(frozen=True)
class Case:
    """One row of a dataset: image and label paths, grade, biomarker and split."""

    case_id: str
    image: Path
    label: Path | None
    grade: str | None
    biomarker: float | None
    split: str
    info: dict[str, Any] = field(default_factory=dict, compare=False)  # the row's other one-value fields


def case_info(row: dict[str, Any]) -> dict[str, Any]:
    """A dataset.json row's fields beyond the core ones that hold one value (text, number, yes/no or null),
    e.g. a synthetic draw's contrast or a user's site and scanner."""
    return {k: v for k, v in row.items() if k not in CORE_FIELDS and (v is None or isinstance(v, str | int | float))}


@dataclass(frozen=True)
class Dataset:
    """A dataset folder read from its dataset.json."""

    root: Path
    task: str
    labels: tuple[str, ...]
    grades: tuple[str, ...]
    cases: tuple[Case, ...]
    meta: dict[str, Any]

    def split(self, name: str) -> list[Case]:
        """The cases of one split ("train", "val", "test" or "all")."""
        if name == "all":
            return list(self.cases)
        if name not in SPLITS:
            raise InputError(f"unknown split {name!r}; valid splits: all, {', '.join(SPLITS)}")
        return [c for c in self.cases if c.split == name]


def read_case(case: Case, labels: tuple[str, ...]) -> tuple[Volume, np.ndarray]:
    """A case's image and its label as uint8, checked to share the image's grid and label set."""
    img = read_volume(case.image)
    if case.label is None:
        raise InputError(f"{case.image}: case {case.case_id} has no label; add one to dataset.json")
    lab = read_volume(case.label, kind="label")
    check_same_grid(img, lab)
    return img, label_array(lab, labels)


def make_split(
    case_ids: list[str], grades: list[str], seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, str]:
    """Per-case train/val/test split, stratified by grade, made before any augmentation."""
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for g in sorted(set(grades)):
        ids = [c for c, gg in zip(case_ids, grades, strict=True) if gg == g]
        rng.shuffle(ids)
        n = len(ids)
        n_test = int(round(n * fractions[2])) if n >= 3 else 0
        n_val = int(round(n * fractions[1])) if n >= 3 else 0
        if n >= 3:
            n_test, n_val = max(n_test, 1), max(n_val, 1)
        for i, c in enumerate(ids):
            out[c] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def check_new_dataset_dir(out: Path) -> None:
    """InputError unless out is absent or an empty folder: a dataset made over another one mixes their cases
    (the old images stay in imagesTr/ beside the new dataset.json) and breaks "same seed, identical files"."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; give a new folder for the dataset (--out)")
    if out.is_dir() and any(out.iterdir()):
        held = ", ".join(sorted(p.name for p in out.iterdir())[:3])
        raise InputError(f"{out}: holds files already ({held}); make the dataset into a new or empty folder")


def write_case(root: Path, case_id: str, image: np.ndarray, label: np.ndarray, affine: np.ndarray) -> None:
    """Write one case's image (float32) and label (uint8) on the same grid."""
    write_volume(root / "imagesTr" / f"{case_id}.nii.gz", image.astype(np.float32), affine)
    write_volume(root / "labelsTr" / f"{case_id}.nii.gz", label.astype(np.uint8), affine)


def write_dataset_json(
    root: Path,
    task: TaskConfig,
    records: list[dict[str, Any]],
    seed: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write dataset.json; records hold case, grade, biomarker (and anything else per case).

    Records that carry their own "split" (e.g. split by subject) keep it; otherwise the split is
    drawn per case, stratified by grade.
    """
    if all("split" in r for r in records):
        split = {r["case"]: r["split"] for r in records}
    else:
        split = make_split([r["case"] for r in records], [r["grade"] for r in records], seed)
    training = []
    for r in records:
        row = {"image": f"./imagesTr/{r['case']}.nii.gz", "label": f"./labelsTr/{r['case']}.nii.gz"}
        row.update(r)
        row["split"] = split[r["case"]]
        training.append(row)
    meta: dict[str, Any] = {
        "name": f"segkit-{task.name}",
        "task": task.name,
        "tensorImageSize": "3D",
        "modality": {"0": task.modality},
        "labels": {str(i): n for i, n in enumerate(task.labels)},
        "grades": list(task.grades),
        "biomarker": {
            "name": task.biomarker,
            "definition": f"volume({'+'.join(task.numerator)}) / volume({'+'.join(task.denominator)})",
            "thresholds": list(task.thresholds),
        },
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
        "split": {s: [r["case"] for r in training if r["split"] == s] for s in SPLITS},
        "seed": seed,
        "generator": f"segkit {__version__}",
    }
    meta.update(extra or {})
    path = root / "dataset.json"
    atomic_write_text(path, json.dumps(meta, indent=2))
    return path


def _read_meta(meta: Any, meta_path: Path) -> tuple[tuple[str, ...], tuple[str, ...], list[Any]]:
    """dataset.json's label names (0..K), grade names and training rows, each checked for its shape."""
    how = "needs 'labels' ({\"0\": \"background\", \"1\": ...}), 'grades' (a list of names) and 'training' (a list)"
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), dict) or "training" not in meta:
        raise InputError(f"{meta_path}: {how}")
    try:
        labels = tuple(meta["labels"][str(i)] for i in range(len(meta["labels"])))
    except KeyError:
        raise InputError(f"{meta_path}: 'labels' must be numbered 0..{len(meta['labels']) - 1}; {how}") from None
    grades = meta.get("grades", ["healthy", "moderate", "severe"])
    rows = meta["training"]
    if not isinstance(grades, list) or not all(isinstance(g, str) for g in grades) or len(set(grades)) != len(grades):
        raise InputError(f"{meta_path}: 'grades' must be a list of distinct names, not {grades!r}")
    if not all(isinstance(n, str) for n in labels) or not isinstance(rows, list):
        raise InputError(f"{meta_path}: {how}")
    return labels, tuple(grades), rows


def read_dataset(root: str | Path, need_labels: bool = True) -> Dataset:
    """Read and check dataset.json; a missing file, grade or split raises InputError."""
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise InputError(
            f"{meta_path}: not found; give the folder that holds dataset.json, or make one with `segkit data make`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{meta_path}: not valid JSON ({e}); fix or regenerate it") from None
    labels, grades, rows = _read_meta(meta, meta_path)
    cases: list[Case] = []
    seen: dict[str, str] = {}  # case id and image path -> the case that named it first
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or any(not isinstance(r.get(k) or "", str) for k in ("image", "label", "case")):
            raise InputError(f"{meta_path}: training entry {i} must be an object with text image, label and case")
        cid = r.get("case") or Path(str(r.get("image", f"case{i}"))).name.split(".")[0]
        image = root / str(r.get("image", ""))
        if not image.is_file():
            raise InputError(f"{meta_path}: case {cid} names a missing image {image}; fix dataset.json")
        for key, what in ((cid, "case id"), (str(image.resolve()), "image")):
            if key in seen:  # a case listed twice could sit in two splits: a val or test case trained on
                raise InputError(f"{meta_path}: cases {seen[key]} and {cid} have the same {what}; list each case once")
            seen[key] = cid
        label = root / r["label"] if r.get("label") else None
        if need_labels and (label is None or not label.is_file()):
            raise InputError(f"{meta_path}: case {cid} names a missing label {label}; fix dataset.json")
        grade = r.get("grade")
        if grade is not None and grade not in grades:
            raise InputError(f"{meta_path}: case {cid} has grade {grade!r}, not one of {list(grades)}")
        if need_labels and grade is None:
            raise InputError(f"{meta_path}: case {cid} has no grade; add one of {list(grades)}")
        split = r.get("split", "train")
        if split not in SPLITS:
            raise InputError(f"{meta_path}: case {cid} has split {split!r}, not one of {list(SPLITS)}")
        biomarker = r.get("biomarker")
        if biomarker is not None and (isinstance(biomarker, bool) or not isinstance(biomarker, int | float)):
            raise InputError(f"{meta_path}: case {cid} has biomarker {biomarker!r}; give a number or null")
        cases.append(Case(cid, image, label, grade, biomarker, split, case_info(r)))
    if not cases:
        raise InputError(f"{meta_path}: lists no cases")
    return Dataset(root, str(meta.get("task", "")), labels, grades, tuple(cases), meta)
