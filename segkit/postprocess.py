"""Connected-component post-processing, kept only where it raises val Dice (as nnU-Net chooses it).

Rules, one per foreground label (config `eval.keep_components`, in task.labels order):
  all      keep every component (no post-processing)
  largest  keep the largest 3-D component only (tried only for task.one_piece labels: a brain, a liver)
  major    keep the components of at least MAJOR x the largest voxel count (two lateral ventricles,
           several cysts) and drop the specks
  attached keep the components that touch another foreground label and drop those lying alone in the
           background (tried for the labels that are not one_piece: a liver cyst lies in or on the liver;
           on a real abdominal CT the liver model drew a 0.9 mL "cyst" in the urinary bladder)
choose_rules() picks each label's rule on validation masks; a rule other than `all` is kept only
when it raises that label's mean val Dice by more than MIN_GAIN.

CT tasks with cyst and tumour labels have one more rule (config `eval.cyst_max_hu`): a simple cyst is water
(0-20 HU), so a component labelled cyst whose median HU is above the limit becomes tumour
(dense_cysts_to_tumour); choose_cyst_max_hu() picks the limit on val, 0 (off) unless it raises val cyst Dice.
"""

from __future__ import annotations

import numpy as np

RULES = ("all", "largest", "major", "attached")
MAJOR = 0.1  # a component of at least a tenth of the largest is anatomy, not a speck
MIN_GAIN = 0.001
CYST_MAX_HU = (20.0, 30.0, 40.0)  # the limits choose_cyst_max_hu tries


def keep_components(mask: np.ndarray, label: int, rule: str) -> np.ndarray:
    """mask with label's components outside the rule set to background (0); a copy when anything changes."""
    if rule == "all":
        return mask
    from scipy import ndimage as ndi  # not at import: a prediction without post-processing never loads it

    inside = mask == label
    if not inside.any():
        return mask
    box = _bounding_box(inside, pad=1 if rule == "attached" else 0, shape=mask.shape)
    comp, n = ndi.label(inside[box])  # labelling the structure's box only: ventricles fill a few % of a head
    if n <= 1 and rule != "attached":
        return mask
    if rule == "attached":  # the components with a voxel of another foreground label among their 26 neighbours
        others = ndi.binary_dilation((mask[box] > 0) & ~inside[box], np.ones((3,) * mask.ndim, bool))
        keep = np.bincount(comp[others], minlength=n + 1)[1:] > 0
    else:
        sizes = np.bincount(comp.ravel())[1:]
        keep = sizes == sizes.max() if rule == "largest" else sizes >= MAJOR * sizes.max()
    if keep.all():
        return mask
    dropped = np.concatenate([[False], ~keep])[comp]  # per voxel of the box: its component is dropped
    out = mask.copy()
    out[box][dropped] = 0
    return out


def _bounding_box(inside: np.ndarray, pad: int = 0, shape: tuple[int, ...] = ()) -> tuple[slice, ...]:
    """The smallest box (one slice per axis) holding every True voxel of a non-empty array, grown by pad voxels
    on each side within shape."""
    box = []
    for axis in range(inside.ndim):
        hit = np.flatnonzero(inside.any(axis=tuple(a for a in range(inside.ndim) if a != axis)))
        hi = int(hit[-1]) + 1 + pad
        box.append(slice(max(int(hit[0]) - pad, 0), min(hi, shape[axis]) if shape else hi))
    return tuple(box)


def apply_rules(mask: np.ndarray, rules: tuple[str, ...]) -> np.ndarray:
    """Every foreground label's rule (rules[i] for label i + 1); () leaves the mask as it is."""
    for i, rule in enumerate(rules):
        mask = keep_components(mask, i + 1, rule)
    return mask


def choose_rules(
    pairs: list[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    one_piece: tuple[int, ...] = (),
    lesions: tuple[int, ...] = (),
) -> tuple[tuple[str, ...], dict]:
    """Per foreground label, the rule with the best mean Dice over (predicted, true) val masks.

    "largest" is tried only for the labels in one_piece (one connected structure): for two ventricles
    or several cysts it would drop real anatomy in the cases where the parts do not touch, however
    well it scores on a small val set. For the labels in lesions (findings of the organ: liver cysts and
    tumours) the rule to beat is "attached", not "all": a lesion of the organ lies in or on it, and drawn val
    scenes rarely hold a false one far from it (on the liver model's 30 val scenes "attached" and "all" scored
    the same), while a real scan can (urine in the bladder called cyst). Returns the rules and the mean Dice of
    every rule tried per label.
    """
    from segkit.metrics import dice_per_label  # training-time only: predict never loads the metrics

    rules, table = [], {}
    for label in range(1, num_classes):
        tried = RULES if label in one_piece else ("all", "major", "attached")
        scores = {
            rule: float(
                np.mean([dice_per_label(keep_components(p, label, rule), t, num_classes)[label - 1] for p, t in pairs])
            )
            for rule in tried
        }
        best, base = max(scores, key=lambda r: scores[r]), "attached" if label in lesions else "all"
        rules.append(best if scores[best] > scores[base] + MIN_GAIN else base)
        table[label] = {r: round(s, 4) for r, s in scores.items()}
    return tuple(rules), table


def cyst_rule_applies(modality: str, labels: tuple[str, ...]) -> bool:
    """Whether a task can have eval.cyst_max_hu: CT (Hounsfield units) with cyst and tumour labels."""
    return modality == "CT" and {"cyst", "tumour"} <= set(labels)


def dense_cysts_to_tumour(mask: np.ndarray, hu: np.ndarray, labels: tuple[str, ...], max_hu: float) -> np.ndarray:
    """mask with every cyst component whose median HU (hu: the image on mask's grid) is above max_hu labelled
    tumour instead; max_hu 0 leaves it as it is. A copy when anything changes."""
    if not max_hu:
        return mask
    return _relabel_dense(mask, _cyst_components(mask, hu, labels.index("cyst")), max_hu, labels.index("tumour"))


CystParts = tuple[tuple[slice, ...], np.ndarray, np.ndarray]  # bounding box, component labels in it, median HU each


def _cyst_components(mask: np.ndarray, hu: np.ndarray, cyst: int) -> CystParts | None:
    inside = mask == cyst
    if not inside.any():
        return None
    from scipy import ndimage as ndi

    box = _bounding_box(inside)
    comp, n = ndi.label(inside[box])
    medians = np.asarray(ndi.median(hu[box], comp, np.arange(1, n + 1)), dtype=np.float64)
    return box, comp, medians


def _relabel_dense(mask: np.ndarray, parts: CystParts | None, max_hu: float, tumour: int) -> np.ndarray:
    if parts is None or not max_hu:
        return mask
    box, comp, medians = parts
    dense = np.concatenate([[False], medians > max_hu])[comp]
    if not dense.any():
        return mask
    out = mask.copy()
    out[box][dense] = tumour
    return out


def choose_cyst_max_hu(
    cases: list[tuple[np.ndarray, np.ndarray, np.ndarray]], labels: tuple[str, ...]
) -> tuple[float, dict]:
    """The cyst density limit (0: none, or one of CYST_MAX_HU) with the best mean val cyst Dice over
    (predicted mask, true mask, HU image) val cases; a limit is kept only when it gains more than MIN_GAIN.
    Returns the limit and the mean cyst Dice of every limit tried."""
    from segkit.metrics import dice_per_label

    cyst, tumour = labels.index("cyst"), labels.index("tumour")
    parts = [_cyst_components(p, hu, cyst) for p, _, hu in cases]  # once per case, whatever the limit
    scores = {
        limit: float(
            np.mean(
                [
                    dice_per_label(_relabel_dense(p, part, limit, tumour), t, len(labels))[cyst - 1]
                    for (p, t, _), part in zip(cases, parts, strict=True)
                ]
            )
        )
        for limit in (0.0, *CYST_MAX_HU)
    }
    best = max(scores, key=lambda k: scores[k])
    return (best if scores[best] > scores[0.0] + MIN_GAIN else 0.0), {k: round(v, 4) for k, v in scores.items()}
