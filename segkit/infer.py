"""load_model() and predict_volume(): the one inference path used by predict, evaluate and training validation."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from tqdm import tqdm

from segkit import __version__
from segkit.checkpoint import ModelRef, file_sha256, load_checkpoint, require_checkpoint, resolve_model
from segkit.checks import (
    confidence_warnings,
    expected_ml,
    field_of_view_warnings,
    foreground_confidence,
    gradable,
    grade_warnings,
    guess_modality,
    modality_warnings,
    spacing_warnings,
    target_warnings,
    volume_warnings,
)
from segkit.config import Config, apply_overrides, config_from_dict, config_to_dict
from segkit.engine import ENGINES, OnnxNet, open_onnx
from segkit.errors import CheckpointError, InputError, SegkitError
from segkit.forward import Network, check_device, cpu_only_here, pick_device, predict_preprocessed
from segkit.io import (
    MGH_SUFFIXES,
    Volume,
    atomic_write_text,
    check_not_input,
    ensure_dir,
    is_volume_file,
    read_volume,
    stem,
    write_all,
    write_volume,
)
from segkit.measure import measure
from segkit.postprocess import apply_rules, dense_cysts_to_tumour
from segkit.render import label_file_names, write_label_descriptions, write_overlay
from segkit.transforms import Grid, beyond_margin, first_argmax, invert_probs, normalize, resample_volume

if TYPE_CHECKING:
    import torch

    from segkit.models import SegGrader

log = logging.getLogger(__name__)
T = TypeVar("T")

# The shipped model predict uses when no --model is given, by the scan's modality (see guess_modality).
DEFAULT_MODELS = {"MRI": "ventricle", "CT": "liver-cyst"}


@dataclass
class Prediction:
    """A mask on the input grid plus the volume grade and the measurements behind it."""

    mask: np.ndarray  # (X, Y, Z) uint8, the input's own grid
    grade: str | None
    grade_probs: dict[str, float]
    measurements: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage, for the report
    prob_map: np.ndarray | None = None  # (X, Y, Z, K) uint8 class probabilities x 255 on the input grid, if asked


def shipped_model_for(image: np.ndarray, modality: str | None = None) -> str:
    """The shipped model for a scan given without --model: CT -> liver-cyst, MRI -> ventricle, by the modality a
    DICOM series names, else by its values (CT: values below -500 HU)."""
    return DEFAULT_MODELS[modality or guess_modality(image)]


def default_model(path: Path, names: set[str]) -> ModelRef:
    """The one shipped model that shipped_model_for picked for every input; mixed CT and MRI need --model."""
    if len(names) != 1:
        raise InputError(f"{path}: holds both CT and MRI scans; predict them separately or pass --model")
    name = names.pop()
    try:
        return resolve_model(name)
    except CheckpointError as e:
        why = f"no --model given, so {path.name} gets the shipped model for its modality"
        raise CheckpointError(f"{why}: {e}") from None


def load_model(
    model: str | Path | ModelRef | None,
    device: str = "auto",
    engine: str = "auto",
    tta: bool | None = None,
    settings: list[str] | None = None,
) -> tuple[Network, Config, dict[str, Any]]:
    """Shipped name, run folder or .pt -> eval-mode model, its config, and what was loaded (for reports).

    engine: auto runs the network through ONNX Runtime on a CPU when the checkpoint has matching
    ONNX files beside it (segkit.engine), else PyTorch; torch or onnx force one. tta: override the
    checkpoint's eval.tta (mirror test-time augmentation). settings: `eval.key=value` overrides of the
    checkpoint's inference settings (sliding-window overlap and blending, post-processing, warnings).
    """
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
    check_device(device)
    ref = model if isinstance(model, ModelRef) else resolve_model(model)
    path = require_checkpoint(ref.path)
    sha = file_sha256(path)
    # A CPU prediction through ONNX Runtime reads the config from the ONNX files' JSON and never imports torch.
    on_cpu = device == "cpu" or (device == "auto" and cpu_only_here())
    if engine == "onnx" and not on_cpu and pick_device(device).type != "cpu":
        raise InputError("--engine onnx runs on the CPU; add --device cpu or use --engine torch")
    onnx = open_onnx(path, sha, engine) if on_cpu or engine == "onnx" else None
    state = onnx.state if onnx is not None and onnx.state else load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    if tta is not None:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, tta=tta))
    if settings:
        cfg = inference_settings(cfg, settings)
    check_tta(cfg)
    if ref.kind == "shipped" and cfg.task.name != ref.name:
        raise CheckpointError(f"{path}: holds a {cfg.task.name} model, not {ref.name}; replace the file")
    net: Network = onnx if onnx is not None else torch_model(cfg, state["model"], path, device)
    info = {
        "kind": ref.kind,
        "name": ref.name,
        "checkpoint": str(path.resolve()),
        "epoch": state.get("epoch"),
        "arch": cfg.model.arch,
        "sha256": sha[:16],
        "engine": f"onnxruntime {net.version}" if isinstance(net, OnnxNet) else f"torch {_torch_version()}",
        "tta": cfg.eval.tta,
        "keep_components": dict(zip(cfg.task.labels[1:], _rules(cfg), strict=True)),
    }
    if cfg.eval.cyst_max_hu:  # CT cysts denser than this (median HU) were relabelled tumour
        info["cyst_max_hu"] = cfg.eval.cyst_max_hu
    if state.get("limits"):  # measured weaknesses a shipped model declares: every report repeats them
        info["limits"] = [str(x) for x in state["limits"]]
    return net, cfg, info


def trained_on_mirrors(cfg: Config) -> bool:
    """Whether training showed the model left-right mirrored images (what mirror TTA feeds it)."""
    return cfg.augment.enabled and cfg.augment.flip_lr > 0


def check_tta(cfg: Config) -> None:
    """Refuse mirror TTA for a model that never saw a left-right mirrored image (augment.flip_lr 0).

    The mirror of an abdomen puts the liver on the left: measured on the liver-cyst test split, mirror TTA
    took whole-liver Dice from 0.90 to 0.68. Brains are near-symmetric and trained with flips.
    """
    if cfg.eval.tta and not trained_on_mirrors(cfg):
        raise InputError(
            f"--tta: this {cfg.task.name} model was trained without left-right flips (augment.flip_lr "
            f"{cfg.augment.flip_lr:g}), so a mirrored scan is anatomy it never saw; predict without --tta"
        )


def inference_settings(cfg: Config, settings: list[str]) -> Config:
    """cfg with `eval.key=value` overrides; any other section is how the network was trained: refused."""
    malformed = [s for s in settings if "=" not in s]
    if malformed:
        raise InputError(f"--set {malformed[0]}: give KEY=VALUE, e.g. --set eval.low_confidence=0.7")
    trained = [s for s in settings if not s.strip().startswith("eval.")]
    if trained:
        raise InputError(f"--set {trained[0]}: only eval.* settings change at inference; retrain for the others")
    return config_from_dict(apply_overrides(config_to_dict(cfg), list(settings)))


def _rules(cfg: Config) -> tuple[str, ...]:
    """The post-processing rule of every foreground label ("all" where the checkpoint chose none)."""
    return cfg.eval.keep_components or ("all",) * (cfg.num_classes - 1)


# Layers added after a checkpoint was made, with the value that reproduces that checkpoint's outputs.
ADDED_LAYERS = ("grade_head.direct.",)  # segkit 2026-11: the linear path from label fractions to grade logits


def torch_model(cfg: Config, weights: dict[str, torch.Tensor], path: Path, device: str) -> SegGrader:
    """The checkpoint's PyTorch network, eval mode, on the device."""
    from segkit.models import build_model

    net = build_model(cfg)
    load_weights(net, weights, path)
    return net.to(pick_device(device)).eval()


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def load_weights(net: SegGrader, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Load a checkpoint's weights; layers newer than the checkpoint start at zero (the old model, unchanged)."""
    import torch

    try:
        missing, unexpected = net.load_state_dict(weights, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the config inside ({str(e)[:120]})") from None
    wrong = list(unexpected) + [k for k in missing if not k.startswith(ADDED_LAYERS)]
    if wrong:
        raise CheckpointError(f"{path}: weights do not match the config inside ({', '.join(wrong[:3])})")
    params = dict(net.named_parameters())
    with torch.no_grad():
        for k in missing:
            params[k].zero_()


def predict_volume(net: Network, cfg: Config, vol: Volume, prob_map: bool = False) -> Prediction:
    """Predict one volume: mask on its own grid, grade, measurements, and warnings when unsure; prob_map: also
    the network's class probabilities on the input grid (before post-processing; none for a constant volume)."""
    if float(vol.data.max()) == float(vol.data.min()):
        warning = "constant volume: no image content, mask left empty and no grade given"
        mask = np.zeros(vol.data.shape, dtype=np.uint8)
        return Prediction(mask, None, {}, measure(mask, vol.voxel_ml, cfg.task), [*vol.warnings, warning])
    clock = Stopwatch()
    resized, grid = clock.time("preprocess", resample_volume, vol, cfg)  # kept for a second pass
    pre = clock.time("preprocess", normalize, resized, cfg.task.modality, cfg.preprocess)
    probs, grade_p, _ = clock.time("network", predict_preprocessed, net, pre, cfg)
    if cfg.eval.strip_to_organ:
        t0 = time.perf_counter()
        again = predict_stripped(net, cfg, resized, grid, probs)
        # a scan stripped already (or no organ) had only the check: no second pass to report
        clock.add("second_pass" if again is not probs else "strip_check", time.perf_counter() - t0)
        probs = again
    confidence = foreground_confidence(probs)
    expected = expected_ml(probs, float(np.prod(grid.model_spacing)) / 1000.0, cfg.task.numerator, cfg.task)
    mask, probs_map = clock.time("inverse", invert_probs, probs, grid, prob_map)
    mask = clock.time("postprocess", apply_rules, mask, cfg.eval.keep_components)
    mask = clock.time("postprocess", dense_cysts_to_tumour, mask, vol.data, cfg.task.labels, cfg.eval.cyst_max_hu)
    grades = cfg.task.grades
    probs_d = {g: round(float(p), 4) for g, p in zip(grades, grade_p, strict=True)}
    m = measure(mask, vol.voxel_ml, cfg.task)
    # No organ, or a few mL of it, in the mask (a scan that misses it, or another body part): the head then read
    # slices without the organ and its answer means nothing (a chest CT slice came out "severe" at 1.00), so no
    # grade is given; grade_probs keep the head's output for evaluation, the report leaves it out.
    grade = grades[int(grade_p.argmax())] if gradable(m["volumes_ml"], cfg.task) else None
    if grade is None:  # nor the biomarker's grade: an abdomen's "brain" read as a healthy ventricle ratio
        m["biomarker"]["grade"] = None
    warnings = [
        *vol.warnings,
        *modality_warnings(vol.data, cfg.task.modality, vol.modality),
        *spacing_warnings(vol.affine, cfg.eval.max_spacing_mm),
        *volume_warnings(m["volumes_ml"], cfg.task),
        *field_of_view_warnings(mask, vol.affine, cfg.task),
        *confidence_warnings(confidence, cfg.eval.min_confidence_fg),
        *target_warnings(expected, m["volumes_ml"], cfg.task),
        *grade_warnings(grade, probs_d, m["biomarker"], cfg.eval.low_confidence),
    ]
    return Prediction(mask, grade, probs_d, m, warnings, clock.seconds, probs_map)


# eval.strip_to_organ skips its second pass where fewer voxels than this share of the organ's lie outside it with
# anything but the image's minimum: on the model grid 0.02-0.03 for the three skull-stripped real templates, 2.2-2.6
# for real heads (FSL MNI152 2 mm, PyRadiomics' brain1 and brain2), 3.4-5.8 for drawn heads (2026-11-28)
STRIPPED_ALREADY = 0.1


def predict_stripped(net: Network, cfg: Config, resized: np.ndarray, grid: Grid, probs: np.ndarray) -> np.ndarray:
    """eval.strip_to_organ's second pass: class probabilities (K, X, Y, Z) on the model grid, the first pass's
    (probs, from `resized`: the scan on `grid`, not yet normalised) except inside its organ (argmax in the
    task.denominator labels), where the scan is predicted again (on organ_slab's slices) with everything outside
    the organ (beyond transforms.STRIP_MARGIN_MM) set to the image's minimum. Inside the organ
    the background keeps the first pass's probability (the organ keeps its extent and edge), the labels within the
    organ (the denominator's but its host, the first that is not a numerator label: the ventricles inside the
    brain) take the second pass's, scaled down where they would not fit beside that background, and the host the
    rest. No organ, or a scan stripped already (fewer voxels than STRIPPED_ALREADY of the organ's outside it hold
    anything but the image's minimum): the first pass's, unchanged, with no second pass."""
    t = cfg.task
    organ = np.isin(first_argmax(probs), [t.labels.index(n) for n in t.denominator])
    if not organ.any():
        return probs
    outside, floor = beyond_margin(organ, grid.model_spacing), resized.min()
    if np.count_nonzero(resized[outside] > floor) < STRIPPED_ALREADY * np.count_nonzero(organ):
        return probs  # a skull-stripped scan: a second pass would see what the first saw
    stripped = normalize(np.where(outside, floor, resized), t.modality, cfg.preprocess)
    lo, hi = organ_slab(organ, cfg)
    again, _, _ = predict_preprocessed(net, np.ascontiguousarray(stripped[:, :, lo:hi]), cfg)
    organ = organ[:, :, lo:hi]  # all of it: the slab holds every slice of the organ
    host_name = next(n for n in t.denominator if n not in t.numerator)
    host, inner = t.labels.index(host_name), [t.labels.index(n) for n in t.denominator if n != host_name]
    out = probs.copy()  # the background keeps the first pass's probability everywhere
    slab = out[:, :, :, lo:hi]  # a view: written below, inside the organ only
    room = 1.0 - slab[0][organ]  # (N,) what the first pass gave the organ's labels
    parts = again[inner][:, organ]  # (len(inner), N)
    parts *= np.minimum(1.0, room / np.maximum(parts.sum(0), 1e-6))
    slab[1:, organ] = 0.0
    for i, k in enumerate(inner):
        slab[k][organ] = parts[i]
    slab[host][organ] = room - parts.sum(0)
    return out


def organ_slab(organ: np.ndarray, cfg: Config) -> tuple[int, int]:
    """The slices [lo, hi) the second pass predicts: for a 2.5-D model those holding the organ and the context
    slices each needs, so that every slice of the organ sees the network input the whole stripped scan would
    give it (each slice is predicted from its own stack; a head's neck and the air above it cost nothing); a 3-D
    model's windows reach across slices, so it gets the whole scan."""
    num_z = organ.shape[2]
    if cfg.spatial_dims == 3:
        return 0, num_z
    zs = np.flatnonzero(organ.any(axis=(0, 1)))
    c = cfg.preprocess.context_slices
    return max(0, int(zs[0]) - c), min(num_z, int(zs[-1]) + 1 + c)


class Stopwatch:
    """Wall seconds per named stage (a stage timed twice adds up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def time(self, stage: str, fn: Callable[..., T], *args: Any) -> T:
        t0 = time.perf_counter()
        result = fn(*args)
        self.add(stage, time.perf_counter() - t0)
        return result

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + seconds, 3)


def list_inputs(path: Path) -> list[Path]:
    """A NIfTI (or MGH) file, the NIfTI and MGH files in a folder (sorted), or a folder holding one DICOM series."""
    from segkit.dicom import holds_dicom, is_dicom_file

    if not path.exists():
        raise InputError(f"{path}: not found; pass a .nii/.nii.gz file, a folder of them or a DICOM series folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_volume_file(p))
        own = [p for p in files if written_by_predict(p)]
        if own:  # a folder predicted into itself: its masks are not scans to predict
            files = [p for p in files if p not in own]
            log.warning("skipping %d file(s) segkit predict wrote in %s (%s, ...)", len(own), path, own[0].name)
        if files and any(is_dicom_file(p) for p in path.iterdir() if not is_volume_file(p)):  # predict's masks in it
            raise InputError(
                f"{path}: holds both .nii/.nii.gz files ({files[0].name}, ...) and DICOM files; segkit cannot tell "
                "which to predict: pass one NIfTI file, or move the NIfTI files out of the DICOM series folder"
            )
        if files:
            return files
        if holds_dicom(path):
            return [path]  # one series (or --series); read_dicom_series refuses none or several
        if (path / "mri" / "orig.mgz").is_file():
            raise InputError(
                f"{path}: a FreeSurfer subject folder; pass its scan, {path / 'mri' / 'orig.mgz'} (or T1.mgz, norm.mgz)"
            )
        raise InputError(
            f"{path}: folder holds no .nii, .nii.gz or .mgz files and no DICOM series (a DICOM file needs its DICM "
            "header or a .dcm name); pass a NIfTI file, a folder of them or a DICOM series folder"
        )
    return [path]


def written_by_predict(path: Path) -> bool:
    """A mask or probability map that segkit predict wrote: a NIfTI named <name>_mask / _probabilities with
    <name>_report.json beside it."""
    for suffix in (s for s in OUTPUT_SUFFIXES if s.endswith(".nii.gz")):
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)] + "_report.json").is_file()
    return False


def read_input(path: Path, series: str | None = None) -> Volume:
    """A NIfTI file or a DICOM folder (its one series, or the one with SeriesInstanceUID `series`) -> Volume."""
    from segkit.dicom import read_dicom_series

    return read_dicom_series(path, series) if path.is_dir() else read_volume(path)


def input_name(path: Path, series: str | None = None) -> str:
    """Output name of an input: the file name without .nii/.nii.gz, or the DICOM folder's name (+ _UID if picked).
    A FreeSurfer scan (SUBJECT/mri/orig.mgz) is named after its subject too, bert_orig: every subject's scan is
    orig.mgz, and a loop over subjects predicting into one folder kept only the last subject's mask."""
    if not path.is_dir():
        if path.parent.name == "mri" and path.name.endswith(MGH_SUFFIXES) and path.parent.parent.name:
            return f"{path.parent.parent.name}_{stem(path)}"
        return stem(path)
    return f"{path.name}_{series}" if series else path.name


OUTPUT_SUFFIXES = ("_mask.nii.gz", "_report.json", "_overlay.png", "_probabilities.nii.gz")  # write_prediction's


def write_prediction(
    pred: Prediction, vol: Volume, out: Path, cfg: Config, info: dict[str, Any], name: str | None = None
) -> dict[str, Any]:
    """Write <name>_mask.nii.gz, _report.json, _overlay.png and, where the prediction holds one,
    _probabilities.nii.gz as one set (all or none); return the report."""
    name = name or input_name(vol.path)
    mask_path, report_path, overlay_path, map_path = (out / f"{name}{suffix}" for suffix in OUTPUT_SUFFIXES)
    for p in (mask_path, report_path, overlay_path, map_path):
        check_not_input(p, [vol.path])
    report = {
        "input": str(vol.path.resolve()),
        "mask": mask_path.name,
        "overlay": overlay_path.name,
        "task": cfg.task.name,
        "grade": pred.grade,
        "probabilities": pred.grade_probs if pred.grade is not None else {},
        **pred.measurements,
        "shape": list(vol.data.shape),
        "spacing_mm": [round(s, 4) for s in vol.spacing],
        "affine": np.round(vol.affine, 6).tolist(),
        "labels": {str(i): n for i, n in enumerate(cfg.task.labels)},
        "label_files": label_file_names(cfg.task.name),  # written once the run's cases are done
        "model": info,
        "segkit_version": __version__,
        "warnings": [*pred.warnings, *info.get("limits", [])],
        "seconds": {},  # read, preprocess, network, inverse, write and total: this volume's wall time
    }
    if vol.series_uid:
        report["series_uid"] = vol.series_uid  # export --format dicom-seg finds the series again by it
    title = f"{name}: {pred.grade or 'no grade'}"
    bio = pred.measurements["biomarker"]
    if bio["value"] is not None:
        title += f"  ({bio['name']} {bio['value']:.4f})"
    labels = cfg.task.labels
    clock = Stopwatch()
    writes = [
        (mask_path, lambda t: clock.time("write", write_volume, t, pred.mask, vol.affine, vol.header)),
        (overlay_path, lambda t: clock.time("write", write_overlay, vol.data, pred.mask, vol.affine, labels, t, title)),
    ]
    if pred.prob_map is not None:  # 4-D: the input's grid, then one volume per label in `labels` order
        report["probability_map"] = map_path.name
        prob_map = pred.prob_map
        writes.append(
            (map_path, lambda t: clock.time("write", write_volume, t, prob_map, vol.affine, vol.header, 1 / 255))
        )

    def report_text() -> str:  # written last, so it holds the time spent writing the others
        report["seconds"] = {**pred.seconds, **clock.seconds}
        report["seconds"]["total"] = round(sum(report["seconds"].values()), 3)
        return json.dumps(report, indent=2)

    write_all([*writes, (report_path, lambda t: atomic_write_text(t, report_text()))])  # report last: export reads it
    return report


def predict_paths(
    path: Path,
    model: str | Path | ModelRef | None,
    out: Path,
    device: str = "auto",
    series: str | None = None,
    engine: str = "auto",
    tta: bool | None = None,
    settings: list[str] | None = None,
    prob_map: bool = False,
) -> tuple[list[dict[str, Any]], SegkitError | None]:
    """segkit predict: every input volume (or DICOM series) -> mask, report, overlay (prob_map: and the class
    probabilities) in `out` (model None: shipped).

    Each case's files land together or not at all. A folder run goes on past a case that fails (one logged
    line each) and returns the error that names them with the reports; a single input's error is raised.
    """
    files = list_inputs(path)
    if series is not None and not (len(files) == 1 and files[0].is_dir()):
        raise InputError(f"{path}: --series picks a series of a DICOM folder; this is not one, drop --series")
    names = {f: input_name(f, series) for f in files}
    first: dict[str, Path] = {}
    for f, name in names.items():
        if name in first:
            raise InputError(
                f"{path}: {first[name].name} and {f.name} would both write {name}_mask.nii.gz; "
                "rename one of them or predict them into separate --out folders"
            )
        first[name] = f
    for f in files:  # refuse to overwrite any input of the run (not only its own) before writing anything
        for suffix in OUTPUT_SUFFIXES:
            check_not_input(out / f"{names[f]}{suffix}", files)
    failed: list[Path] = []
    readable, cache = list(files), dict[Path, tuple[Volume, float]]()
    if model is None:  # read every input before loading the model: a shipped model is picked by modality
        readable, cache, picks = _pick_models(files, series, failed)
        if not readable:
            raise _failures(failed, files, out)
        model = default_model(path, picks)
    net, cfg, info = load_model(model, device, engine, tta, settings)
    reports = []
    show = len(readable) > 1 and sys.stderr.isatty()
    with ThreadPoolExecutor(1) as reader:  # the next volume is read while this one is predicted
        pending = reader.submit(_read_timed, readable[0], series, cache)
        for i, f in enumerate(tqdm(readable, desc="predict", unit="volume", disable=not show)):
            this = pending
            if i + 1 < len(readable):
                pending = reader.submit(_read_timed, readable[i + 1], series, cache)
            try:
                vol, read_s = this.result()
                pred = predict_volume(net, cfg, vol, prob_map)
                pred.seconds = {"read": read_s, **pred.seconds}
                ensure_dir(out)  # only once a case is ready: a run whose every input fails leaves no folder
                reports.append(write_prediction(pred, vol, out, cfg, info, names[f]))
            except Exception as e:  # a folder run goes on; write_prediction left nothing of this case behind
                _case_failed(f, e, failed, len(files))
    if reports:
        write_label_descriptions(out, cfg.task.name, cfg.task.labels)
    error = _failures(failed, files, out) if failed else None
    if error is not None and not reports:
        raise error
    return reports, error


def _pick_models(
    files: list[Path], series: str | None, failed: list[Path]
) -> tuple[list[Path], dict[Path, tuple[Volume, float]], set[str]]:
    """Read every input once for its modality: (readable inputs, the last one read with its reading seconds, the
    shipped models picked)."""
    readable, cache, picks = [], {}, set()
    for f in files:
        try:
            read = _read_timed(f, series, {})
            picks.add(shipped_model_for(read[0].data, read[0].modality))
        except SegkitError as e:
            _case_failed(f, e, failed, len(files))
            continue
        readable.append(f)
        cache = {f: read}  # kept for the prediction: the last input is not read twice
    return readable, cache, picks


def _read_timed(f: Path, series: str | None, cache: dict[Path, tuple[Volume, float]]) -> tuple[Volume, float]:
    """An input volume and the seconds reading it took (from the cache when it was read already)."""
    if f in cache:
        return cache.pop(f)
    t0 = time.perf_counter()
    vol = read_input(f, series)
    return vol, round(time.perf_counter() - t0, 3)


def _case_failed(f: Path, e: Exception, failed: list[Path], num_inputs: int) -> None:
    """Record (and log, one line) a failed case of a folder run; a single input's error is raised as it is."""
    if num_inputs == 1:
        raise e
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if not isinstance(e, SegkitError):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
        log.debug("%s failed", f, exc_info=e)
    if f.name not in text:
        text = f"{f.name}: {text}"
    log.error("segkit: error: %s (nothing written for it)", text)
    failed.append(f)


def _failures(failed: list[Path], files: list[Path], out: Path) -> InputError:
    """The one-line error that ends a folder run in which some inputs failed."""
    names = ", ".join(f.name for f in files if f in failed)
    if len(failed) == len(files):
        return InputError(f"all {len(files)} inputs failed ({names}); see the lines above, nothing was written")
    return InputError(
        f"{len(failed)} of {len(files)} inputs failed ({names}); nothing written for them, the others are in {out}"
    )
