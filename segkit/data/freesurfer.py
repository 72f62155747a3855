"""A ventricle dataset from a user's own FreeSurfer subjects: each subject's scan with its aseg as the reference.

`segkit data freesurfer SUBJECT ... --out DIR` writes DIR/dataset.json (every case in the test split, or with
--split stratified in train, val and test) and one label map per subject, labelsTr/<subject>.nii.gz, on the
scan's own grid: lateral ventricles where aseg holds FreeSurfer's labels 4 and 43, brain where it holds any other
brain label (the definitions the ventricle training data use, segkit.data.ventricle.is_brain, and the corpus
callosum), background elsewhere. The images are not copied:
dataset.json names each subject's mri/<image> (orig.mgz by default) by its absolute path. `segkit evaluate
--data DIR --split test` then scores segkit against FreeSurfer on the user's own scans.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.msd import check_new_dataset_dir, write_dataset_json
from segkit.errors import InputError
from segkit.io import check_same_grid, read_volume, voxel_volume_ml, write_volume
from segkit.measure import measure
from segkit.tasks import TASKS

TASK = TASKS["ventricle"]
# recon-all's aseg splits the corpus callosum out of the white matter (CC_Posterior ... CC_Anterior): brain. The
# label maps segkit trains on have no such labels (their callosum is white matter, 2/41).
CORPUS_CALLOSUM = (251, 252, 253, 254, 255)
log = logging.getLogger(__name__)


def task_labels(aseg: np.ndarray) -> np.ndarray:
    """A FreeSurfer label map (aseg) as the ventricle task's labels: 0 background, 1 brain, 2 lateral ventricles."""
    from segkit.data.ventricle import LV, is_brain

    fs = np.rint(aseg).astype(np.int32)
    out = np.zeros(fs.shape, np.uint8)
    out[is_brain(fs) | np.isin(fs, CORPUS_CALLOSUM)] = TASK.labels.index("brain")
    out[np.isin(fs, LV)] = TASK.labels.index("lateral_ventricles")
    return out


SPLITS = ("test", "stratified")


def make_freesurfer(
    subjects: list[Path], out: Path, image: str = "orig.mgz", split: str = "test", seed: int = 0
) -> Path:
    """Write the dataset of these FreeSurfer subject folders (each holding mri/<image> and mri/aseg.mgz) to out;
    returns dataset.json. split "test": every subject in the test split (to score a model); "stratified":
    train, val and test (80/10/10 of each grade, drawn with seed) to fine-tune on. Every subject's files are
    found before anything is written, and a subject that fails to read leaves no dataset behind."""
    if split not in SPLITS:
        raise InputError(f"--split {split}: give test (score a model) or stratified (train, val and test)")
    out = Path(out)
    check_new_dataset_dir(out)
    pairs = []
    names: dict[str, Path] = {}
    for subject in subjects:
        subject = Path(subject)
        if not subject.exists():
            raise InputError(f"{subject}: not found; give FreeSurfer subject folders, e.g. $SUBJECTS_DIR/*")
        template = subject.name.startswith("fsaverage")
        if template or not (subject / "mri").is_dir():  # what $SUBJECTS_DIR/* holds beside the subjects
            log.warning("skipping %s: %s", subject, "FreeSurfer's template" if template else "no mri/ folder in it")
            continue
        scan, aseg = subject / "mri" / image, subject / "mri" / "aseg.mgz"
        for need in (scan, aseg):
            if not need.is_file():
                raise InputError(
                    f"{subject}: no {need.relative_to(subject)}; give FreeSurfer subject folders (after recon-all), "
                    "or name another scan of mri/ with --image"
                )
        if subject.name in names:
            raise InputError(f"{subject}: two subjects named {subject.name} ({names[subject.name]}); rename one")
        names[subject.name] = subject
        pairs.append((subject.name, scan.resolve(), aseg))
    if not pairs:
        raise InputError("no FreeSurfer subject folders given; pass one or more, e.g. $SUBJECTS_DIR/*")
    made = not out.exists()
    try:
        records = [_write_subject(name, scan, aseg, out) for name, scan, aseg in pairs]
        if split == "test":  # else write_dataset_json draws the split, per grade
            records = [{**r, "split": "test"} for r in records]
        extra = {
            "description": f"{len(records)} FreeSurfer subjects: mri/{image} with its aseg.mgz as the reference",
            "source": "the user's own FreeSurfer recon-all outputs",
        }
        return write_dataset_json(out, TASK, records, seed, extra)
    except BaseException:  # a subject that fails to read: no dataset half made
        shutil.rmtree(out / "labelsTr", ignore_errors=True)
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _write_subject(name: str, scan: Path, aseg: Path, out: Path) -> dict[str, Any]:
    """One subject: its label map written to out/labelsTr, and its dataset.json row."""
    img, ref = read_volume(scan), read_volume(aseg, kind="label")
    check_same_grid(img, ref)
    label = task_labels(ref.data)
    if not (label == TASK.labels.index("lateral_ventricles")).any():
        raise InputError(f"{aseg}: no lateral ventricles (FreeSurfer labels 4, 43); is it an aseg?")
    write_volume(out / "labelsTr" / f"{name}.nii.gz", label, ref.affine, ref.header)
    meas = measure(label, voxel_volume_ml(ref.affine), TASK)
    return {
        "case": name,
        "image": str(scan),
        "label": f"./labelsTr/{name}.nii.gz",
        "grade": meas["biomarker"]["grade"],
        "biomarker": meas["biomarker"]["value"],
        "subject": name,
        "reference": "FreeSurfer aseg.mgz",
    }
