"""Checks on one prediction: each returns warnings, short sentences a clinician can act on."""

from __future__ import annotations

from typing import Any

import numpy as np

from segkit.config import TaskConfig
from segkit.io import voxel_sizes
from segkit.measure import total_ml

AIR_HU = -500.0  # CT air is about -1000 HU; MRI intensities are not negative to this extent


def guess_modality(image: np.ndarray) -> str:
    """CT if the image holds values below -500 (air in Hounsfield units), else MRI."""
    return "CT" if float(np.nanmin(image)) < AIR_HU else "MRI"


def modality_warnings(image: np.ndarray, modality: str, named: str | None = None) -> list[str]:
    """Warn when the scan's modality (`named` by a DICOM series, else guessed from its intensities) is not the
    modality the model was trained on."""
    if named is not None and named != modality:
        return [
            f"the DICOM series is {named} (its Modality attribute) but the model was trained on {modality}: "
            f"results are unreliable; use a {named} model"
        ]
    if guess_modality(image) == modality:
        return []
    if modality == "MRI":
        return [
            f"image holds CT-like values below {AIR_HU:.0f} (air in HU) but the model was trained on MRI: "
            "results are unreliable; check the scan is an MRI or use a CT model"
        ]
    return [
        f"image holds no values below {AIR_HU:.0f} HU (no air) but the model was trained on CT: "
        "results are unreliable; check the scan is a CT in Hounsfield units or use an MRI model"
    ]


def foreground_confidence(probs: np.ndarray) -> float | None:
    """Mean top-class probability over the voxels whose top class is not background; None if none."""
    from segkit.transforms import first_argmax

    fg = first_argmax(probs) > 0  # probs: (K, X, Y, Z) on the model grid
    return float(probs[:, fg].max(axis=0).mean()) if fg.any() else None


def confidence_warnings(confidence: float | None, threshold: float) -> list[str]:
    """Warn when the network is unsure over the structure it segmented (see foreground_confidence)."""
    if confidence is None or confidence >= threshold:
        return []
    return [
        f"network unsure over the structure (mean probability {confidence:.2f}, below {threshold:.2f}): "
        "the scan may differ from the training data; review the mask before using the volumes"
    ]


GRADABLE_FRACTION = 0.25  # an organ under this fraction of the smallest human one is too little to grade


def gradable(volumes_ml: dict[str, float], task: TaskConfig) -> bool:
    """Whether the mask holds enough of the organ for a grade: some of it, and where the task has a human range,
    at least GRADABLE_FRACTION of its lower bound (150 mL of liver, 225 mL of brain). Below that the mask is
    mostly outside the scan or not the organ at all: on real chest CTs of other patients the liver model found
    2 mL of "liver" (graded moderate) where no liver was in view, and 90 mL in the heart above a liver cut off."""
    den, bounds = total_ml(volumes_ml, task.denominator), task.denominator_range_ml
    return den > 0 and (not bounds or den >= GRADABLE_FRACTION * bounds[0]) and not other_anatomy(volumes_ml, task)


def other_anatomy(volumes_ml: dict[str, float], task: TaskConfig) -> bool:
    """Whether the mask's organ is larger than any human one while it holds less of its target than any human one
    does: not the anatomy the model segments. An abdominal MRI given to the ventricle model (no --model: the shipped
    model for an MRI) came out as 2564 mL of "brain" holding 0.05 mL of ventricle, graded healthy at 0.90."""
    den_bounds, num_bounds = task.denominator_range_ml, task.numerator_range_ml
    if not (den_bounds and num_bounds):
        return False
    den, num = total_ml(volumes_ml, task.denominator), total_ml(volumes_ml, task.numerator)
    return den > den_bounds[1] and num < num_bounds[0]


SOFT_RATIO, SOFT_MIN_ML = 1.5, 2.0  # the network's expected volume of the target over the mask's: see below


def expected_ml(probs: np.ndarray, voxel_ml: float, names: tuple[str, ...], task: TaskConfig) -> float:
    """The volume the network's class probabilities (K, X, Y, Z) give the named labels: their sum over the grid."""
    codes = [k for k, name in enumerate(task.labels) if name in names]
    return float(probs[codes].sum(dtype=np.float64)) * voxel_ml


def target_warnings(expected: float, volumes_ml: dict[str, float], task: TaskConfig) -> list[str]:
    """Warn when the network's probabilities hold at least SOFT_RATIO times (and SOFT_MIN_ML more than) the
    biomarker's target (its numerator) that the mask draws: the network half-sees more of it than it commits
    to, so the volume and the biomarker may be too low. Set from what was measured: two real patients' T1 MRIs
    where the ventricle model missed most of the ventricles, 13.2 vs 4.1 and 8.5 vs 4.5 mL, warn; none of its 30
    drawn test scans or four real templates do (at most 1.44 times, from their input-grid probability maps); of
    the liver model's scans only the real LiTS crop, whose tumours it half-sees as cyst (57 vs 3 mL), warns."""
    drawn = total_ml(volumes_ml, task.numerator)
    if not task.numerator or expected < SOFT_RATIO * drawn or expected - drawn < SOFT_MIN_ML:
        return []
    name = "+".join(task.numerator)
    return [
        f"network unsure about the {name}: its probabilities hold {expected:.1f} mL of it, the mask draws "
        f"{drawn:.1f} mL (the rest went to other labels), so the {name} volume and the {task.biomarker} are "
        f"unsure, likely too low; check the overlay for {name} left out or labelled as something else"
    ]


def volume_warnings(volumes_ml: dict[str, float], task: TaskConfig) -> list[str]:
    """Warn when the organ is missing or too small to grade, or a measured volume is outside the task's human
    range."""
    organ = "+".join(task.denominator)
    den = total_ml(volumes_ml, task.denominator)
    if den <= 0:
        return [
            f"no {organ} found, so no biomarker and no grade: check that the scan covers the {organ} "
            f"and that it is a {task.modality} scan this {task.name} model fits"
        ]
    if other_anatomy(volumes_ml, task):
        num = total_ml(volumes_ml, task.numerator)
        held = f"{num:.1f}" if num >= 1 else f"{num:.2g}"  # 0.054 mL is not "0.1 mL"
        return [
            f"{den:.1f} mL of {organ}, more than any human one ({task.denominator_range_ml[1]:g} mL), holding "
            f"{held} mL of {'+'.join(task.numerator)}, less than any human one ({task.numerator_range_ml[0]:g} mL): "
            f"the mask is not the anatomy this {task.name} model segments, so no grade; check that the scan is a "
            f"{task.modality} of the {organ} this model fits"
        ]
    if not gradable(volumes_ml, task):
        return [
            f"only {den:.1f} mL of {organ} found (a quarter of the smallest human one is "
            f"{GRADABLE_FRACTION * task.denominator_range_ml[0]:g} mL), so no grade: check that the scan covers "
            f"the {organ} and that it is a {task.modality} scan this {task.name} model fits"
        ]
    num = total_ml(volumes_ml, task.numerator)
    out = []
    for name, value, bounds in (
        (organ, den, task.denominator_range_ml),
        ("+".join(task.numerator), num, task.numerator_range_ml),
    ):
        if bounds and not bounds[0] <= value <= bounds[1]:
            side = "below" if value < bounds[0] else "above"
            out.append(
                f"{name} volume {value:.1f} mL is {side} the human range {bounds[0]:g}-{bounds[1]:g} mL: "
                "check the mask for missed or extra tissue and the scan's voxel spacing"
            )
    return out


SPACING_SLACK_MM = 0.05  # header rounding: a scan this close to the training's coarsest spacing is within it


def spacing_warnings(affine: np.ndarray, max_spacing_mm: float) -> list[str]:
    """Warn when the input's voxels are coarser along some axis (thick slices, mostly) than those of any scan
    the model was trained on (eval.max_spacing_mm, recorded by training; 0: no record, no check)."""
    coarsest = max(voxel_sizes(affine))
    if not max_spacing_mm or coarsest <= max_spacing_mm + SPACING_SLACK_MM:
        return []
    return [
        f"voxels {coarsest:.1f} mm deep along one axis (thick slices), coarser than any scan this model was "
        f"trained on ({max_spacing_mm:.1f} mm at most): small or thin structures may be missed or drawn a slice "
        "away from where they are; check the overlay slice by slice, or use a scan with thinner slices"
    ]


CUT_AREA_CM2 = 2.0  # organ cross-section on the image's faces above which the organ counts as cut by the field of view
SIDE_NAMES = {"R": "right", "L": "left", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior"}


def field_of_view_warnings(mask: np.ndarray, affine: np.ndarray, task: TaskConfig) -> list[str]:
    """Warn when the organ (the biomarker's denominator labels) runs into the image's faces over more than
    CUT_AREA_CM2: part of it likely lies outside the scan, so its volume and the biomarker cover only the part
    in view. The faces are named by the anatomical side they face (from the affine)."""
    import nibabel as nib

    codes = [k for k, name in enumerate(task.labels) if name in task.denominator]
    zooms = np.array(voxel_sizes(affine))
    axcodes = nib.orientations.aff2axcodes(affine)  # the side each array axis runs towards
    opposite = dict(zip("RLAPSI", "LRPAIS", strict=True))
    area, sides = 0.0, []
    for axis in range(3):
        face_mm2 = float(np.prod(np.delete(zooms, axis)))
        for index, side in ((0, opposite[axcodes[axis]]), (-1, axcodes[axis])):
            cm2 = np.isin(np.take(mask, index, axis=axis), codes).sum() * face_mm2 / 100.0  # the faces only
            area += cm2
            if cm2 > 0.1 * CUT_AREA_CM2:
                sides.append(SIDE_NAMES[side])
    if area <= CUT_AREA_CM2:
        return []
    organ_name = "+".join(task.denominator)
    return [
        f"the {organ_name} reaches the edge of the image ({area:.0f} cm2 of it on the {', '.join(sides)} "
        f"side{'s' if len(sides) > 1 else ''}): part of it may lie outside the field of view, so its volume and "
        f"the {task.biomarker} cover only the part in view; check the scan's coverage"
    ]


def grade_warnings(
    grade: str | None, grade_probs: dict[str, float], biomarker: dict[str, Any], low_confidence: float
) -> list[str]:
    """Warn when the grade is unsure (top probability below low_confidence) or contradicts the biomarker."""
    if grade is None:
        return []
    out = []
    top = grade_probs.get(grade, 1.0)
    if top < low_confidence:
        out.append(
            f"low-confidence grade: {grade} has probability {top:.2f} (below {low_confidence:.2f}); "
            "have a reader confirm the grade"
        )
    implied = biomarker.get("grade")
    if implied is not None and implied != grade:
        out.append(
            f"grade {grade} disagrees with the {biomarker['name']} of {biomarker['value']:.4f}, which means "
            f"{implied}: check the mask, then decide the grade"
        )
    return out
