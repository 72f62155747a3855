"""Frozen dataclass configs, one YAML per experiment, `--set section.key=value` overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segkit.errors import ConfigError
from segkit.postprocess import RULES, cyst_rule_applies


@dataclass(frozen=True)
class TaskConfig:
    """What is segmented and graded, and how the scans look."""

    name: str = "ventricle"
    modality: str = "MRI"  # "MRI" or "CT": picks the intensity normalisation
    labels: tuple[str, ...] = ("background", "brain", "lateral_ventricles")
    grades: tuple[str, ...] = ("healthy", "moderate", "severe")
    # Biomarker = volume(numerator labels) / volume(denominator labels); grade by thresholds.
    biomarker: str = "ventricle_ratio"
    numerator: tuple[str, ...] = ("lateral_ventricles",)
    denominator: tuple[str, ...] = ("brain", "lateral_ventricles")
    thresholds: tuple[float, ...] = (0.02, 0.04)
    # Human range in mL, [low, high], of volume(denominator labels) and volume(numerator labels):
    # a measured volume outside it is a warning. Empty: no check (old checkpoints lack these keys).
    denominator_range_ml: tuple[float, ...] = ()
    numerator_range_ml: tuple[float, ...] = ()
    # Labels that are one connected structure (a brain, a liver): only these may be cut to their largest
    # component by the post-processing chosen on val; the others (two ventricles, cysts) keep every major one.
    one_piece: tuple[str, ...] = ()
    # Labels that are separate findings (cysts, tumours): segkit evaluate also scores them lesion by lesion
    # (found, false, by size). Empty: none (old checkpoints lack the key: evaluate takes the built-in task's).
    lesions: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreprocessConfig:
    """The one preprocessing pipeline shared by training, evaluation and prediction."""

    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)  # mm, in the RAS-canonical frame
    context_slices: int = 2  # neighbours on each side: input channels = 2 * context + 1
    # CT: clip to [window_low, window_high] HU then scale to [-1, 1].
    window_low: float = -100.0
    window_high: float = 250.0
    # MRI: clip to percentiles inside the non-zero region, then z-score.
    percentile_low: float = 0.5
    percentile_high: float = 99.5


@dataclass(frozen=True)
class AugmentConfig:
    """Training-only augmentation (albumentations, 2-D); each probability per slice."""

    enabled: bool = True
    flip_lr: float = 0.5
    affine: float = 0.7
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    shear_deg: float = 5.0
    elastic: float = 0.2
    brightness_contrast: float = 0.5
    gamma: float = 0.3
    noise: float = 0.3
    blur: float = 0.2


THREE_D_ARCHS = ("monai_unet3d",)
MONITORS = ("val_dice", "val_dice_pooled", "val_score")  # train.monitor: validate.evaluate's keys


@dataclass(frozen=True)
class ModelConfig:
    """Network: a registry name plus its size knobs."""

    arch: str = "monai_unet"  # see segkit.models.ARCHS; monai_unet3d is the 3-D U-Net (patches, sliding windows)
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_units: int = 2
    norm: str = "instance"  # monai_unet: "instance" (robust across scanners/contrasts) or "batch"
    encoder: str = "resnet34"  # smp architectures only
    encoder_weights: str | None = None  # never downloaded unless the user asks
    dropout: float = 0.2
    grade_hidden: int = 64


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, sampling, checkpoints and early stopping."""

    epochs: int = 40
    steps_per_epoch: int = 50
    cases_per_batch: int = 4  # slices (3-D: patches) of one case are pooled for its grade
    slices_per_case: int = 4  # batch = cases_per_batch * (slices_per_case + 2 + outside_slices) slices, or 3-D patches
    outside_slices: int = 0  # 2-D: seg-only slices per case from outside the organ (what a scan without it shows)
    target_sampling: str = "slice"  # 2-D: the target slice through a random slice of it, or through a random lesion
    patch_size: tuple[int, ...] = (128, 128)  # 2 sizes for 2-D models, 3 for 3-D (also the sliding window)
    lr: float = 1e-3
    weight_decay: float = 1e-5
    grade_loss_weight: float = 0.5
    dice_over: str = "batch"  # Dice loss pooled over the "batch", or per training "case" (its slices), averaged
    grade_lr_scale: float = 1.0  # grade head learning rate = lr * this
    patience: int = 10  # epochs without val improvement before stopping
    val_cases: int = 0  # validate on this many val cases, evenly spread (first and last kept); 0 = all
    monitor: str = "val_dice"  # "val_dice", "val_dice_pooled" or "val_score" (val Dice and grade accuracy)
    amp: str = "auto"  # "auto", "bf16", "fp16", "off"
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0  # 0: auto (from 6 cores a few go to sampling workers: batches.training_threads)
    workers: int = -1  # batch-sampling processes; -1: per spare core, else helpers (segkit.batches), 0: inline


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings."""

    nsd_tolerance_mm: float = 2.0
    bootstrap: int = 1000
    low_confidence: float = 0.6  # a grade probability below this flags the case for review
    # Mean top-class probability over the voxels the model calls foreground; below this the
    # network is unsure over the structure (often a scan unlike its training data): a warning.
    min_confidence_fg: float = 0.75
    tta: bool = False  # mirror test-time augmentation: average with the left-right flipped volume (2x the time)
    # Connected-component rule per foreground label (all, largest, major; segkit.postprocess), chosen on
    # val at the end of training; () = keep everything.
    keep_components: tuple[str, ...] = ()
    # CT tasks with cyst and tumour labels: a cyst component whose median HU is above this becomes tumour (a
    # simple cyst is water); chosen on val at the end of training; 0 = off
    cyst_max_hu: float = 0.0
    # The coarsest voxel spacing (mm, any axis: thick slices' gap) of the training scans, recorded by training
    # (with --init, the larger of the data's and the source model's); predict warns on an input with coarser
    # voxels, anatomy sampled more thinly than the model ever saw. 0 = no check.
    max_spacing_mm: float = 0.0
    # Two passes: predict again with everything outside the first pass's organ (the task.denominator labels, grown
    # by transforms.STRIP_MARGIN_MM) set to the image's minimum, as a skull-stripped scan, and take the masks
    # there from the second pass (the grade stays the first pass's). 2x the network time on a scan with a head;
    # none on one stripped already (segkit.infer.predict_stripped).
    strip_to_organ: bool = False
    # 3-D models: MONAI sliding-window inference over train.patch_size windows
    window_overlap: float = 0.5  # nnU-Net's; MONAI's own default is 0.25
    window_blend: str = "gaussian"  # or "constant" (MONAI's default)
    window_batch: int = 2  # windows per network call


@dataclass(frozen=True)
class Config:
    """A complete experiment: everything needed to train, and to predict from a checkpoint."""

    task: TaskConfig = field(default_factory=TaskConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def num_classes(self) -> int:
        """Number of segmentation classes, background included."""
        return len(self.task.labels)

    @property
    def spatial_dims(self) -> int:
        """3 for a 3-D network (patches of the volume), 2 for the 2.5-D slice networks."""
        return 3 if self.model.arch in THREE_D_ARCHS else 2

    @property
    def in_channels(self) -> int:
        """Input channels: the slice and its neighbours (2.5-D); the volume itself (3-D)."""
        return 1 if self.spatial_dims == 3 else 2 * self.preprocess.context_slices + 1


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/override value to the field's declared type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where)
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, where) for v, a in zip(value, args, strict=True))
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if tp is float:
            return float(value)  # PyYAML reads "1e-3" as a string
        if tp is str:
            if isinstance(value, bool):  # YAML 1.1 reads off/no/false and on/yes/true as booleans
                return "on" if value else "off"
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {tp.__name__}") from None
    raise TypeError(f"unsupported config type {tp} at {where}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build a dataclass from a dict, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {where + '.' if where else ''}{unknown[0]}; "
            f"valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, key)
        else:
            kwargs[name] = _convert(value, tp, key)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a Config from a plain nested dict."""
    cfg = _build(Config, data, "")
    validate(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (lists, not tuples) for YAML and checkpoints."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides to a nested dict (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"override key {key!r} must be section.key, e.g. train.lr")
        section, name = parts
        value = yaml.safe_load(raw) if raw.strip() else raw
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"config section {section!r} is not a mapping")
        data[section][name] = value
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply overrides, validate; unknown keys and bad types fail."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found; pass one of configs/*.yaml")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            at = f" (line {line + 1})" if line is not None else ""
            raise ConfigError(f"config file {p} is not valid YAML{at}; fix its syntax") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections")
    try:
        cfg = config_from_dict(apply_overrides(data, overrides or []))
    except ConfigError as e:  # say where the bad value is, and what to do where the check did not
        where = f"{path}: " if path is not None else ""
        todo = "" if "; " in str(e) else f"; fix it in {path or 'the config'} or in the --set that gives it"
        raise ConfigError(f"{where}{e}{todo}") from None
    if path is not None and not isinstance(data.get("task"), dict):  # an empty file trained the defaults unsaid
        raise ConfigError(
            f"config file {path} has no task section (what is segmented and graded); start from "
            "configs/ventricle.yaml or configs/liver-cyst.yaml"
        )
    return cfg


INF = float("inf")
# Each number's allowed range [low, high] (a list's every item): a value outside it is a ConfigError, not a
# traceback deep in training (patch_size 0, a negative lr) or a run that silently does nothing (patience 0).
RANGES: dict[str, tuple[float, float]] = {
    "preprocess.spacing": (1e-3, 100.0),
    "preprocess.context_slices": (0, 16),
    "preprocess.percentile_low": (0, 100),
    "preprocess.percentile_high": (0, 100),
    **{
        f"augment.{k}": (0, 1)
        for k in ("flip_lr", "affine", "elastic", "brightness_contrast", "gamma", "noise", "blur")
    },
    "augment.rotate_deg": (0, 180),
    "augment.scale": (0.05, 20),
    "augment.shear_deg": (0, 60),
    "model.channels": (1, 4096),
    "model.num_res_units": (0, 16),
    "model.dropout": (0, 0.99),
    "model.grade_hidden": (1, 4096),
    "train.epochs": (1, INF),
    "train.steps_per_epoch": (1, INF),
    "train.cases_per_batch": (1, 4096),
    "train.slices_per_case": (1, 4096),
    "train.outside_slices": (0, 4096),
    "train.patch_size": (16, 4096),
    "train.lr": (0, 10),
    "train.weight_decay": (0, 10),
    "train.grade_loss_weight": (0, 1000),
    "train.grade_lr_scale": (0, 1000),
    "train.patience": (1, INF),
    "train.val_cases": (0, INF),
    "train.num_threads": (0, 4096),
    "eval.nsd_tolerance_mm": (0, 1000),
    "eval.bootstrap": (0, 1_000_000),
    "eval.low_confidence": (0, 1),
    "eval.min_confidence_fg": (0, 1),
    "eval.max_spacing_mm": (0, 1000),
    "eval.window_batch": (1, 4096),
}


def check_ranges(cfg: Config) -> None:
    """ConfigError naming the first number outside its RANGES entry (NaN included)."""
    for key, (low, high) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        for v in value if isinstance(value, tuple) else (value,):
            if not low <= v <= high:  # False for NaN
                span = f"at least {low:g}" if high == INF else f"between {low:g} and {high:g}"
                raise ConfigError(f"{key} = {_show(value)}: must be {span}; fix it in the config or with --set")


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) else str(value)


def validate(cfg: Config) -> None:
    """Cross-field checks a type check cannot do."""
    check_ranges(cfg)
    t = cfg.task
    if t.modality not in ("MRI", "CT"):
        raise ConfigError(f"task.modality must be MRI or CT, not {t.modality!r}")
    if len(t.labels) < 2 or t.labels[0] != "background":
        raise ConfigError("task.labels must start with 'background' and name at least one label")
    for name in t.numerator + t.denominator:
        if name not in t.labels:
            raise ConfigError(f"biomarker label {name!r} is not in task.labels {list(t.labels)}")
    if len(t.thresholds) != len(t.grades) - 1 or list(t.thresholds) != sorted(t.thresholds):
        raise ConfigError("task.thresholds must be increasing, one fewer than task.grades")
    for key in ("denominator_range_ml", "numerator_range_ml"):
        r = getattr(t, key)
        if r and (len(r) != 2 or not 0 <= r[0] < r[1]):
            raise ConfigError(f"task.{key} must be [] or [low, high] mL with 0 <= low < high, not {list(r)}")
    if cfg.train.monitor not in MONITORS:
        raise ConfigError(f"train.monitor must be one of {', '.join(MONITORS)}")
    if cfg.train.dice_over not in ("batch", "case"):
        raise ConfigError("train.dice_over must be batch or case")
    if cfg.train.amp not in ("auto", "bf16", "fp16", "off"):
        raise ConfigError("train.amp must be auto, bf16, fp16 or off")
    if cfg.train.device not in ("auto", "cpu", "cuda"):
        raise ConfigError("train.device must be auto, cpu or cuda")
    if any(s <= 0 for s in cfg.preprocess.spacing):
        raise ConfigError("preprocess.spacing must be positive")
    if cfg.train.workers < -1:
        raise ConfigError("train.workers must be -1 (one per spare core), 0 (sample in the main process) or more")
    if len(cfg.train.patch_size) != cfg.spatial_dims:
        raise ConfigError(
            f"train.patch_size needs {cfg.spatial_dims} sizes for model.arch {cfg.model.arch}, "
            f"not {list(cfg.train.patch_size)}"
        )
    if any(p % 16 for p in cfg.train.patch_size):
        raise ConfigError("train.patch_size must be multiples of 16 (four 2x poolings)")
    e = cfg.eval
    if not 0 <= e.window_overlap < 1 or e.window_blend not in ("gaussian", "constant") or e.window_batch < 1:
        raise ConfigError(
            "eval.window_overlap must be in [0, 1), eval.window_blend gaussian or constant, "
            "eval.window_batch at least 1"
        )
    if any(n not in t.labels[1:] for n in t.one_piece):
        raise ConfigError(f"task.one_piece must name foreground labels of {list(t.labels[1:])}")
    if any(n not in t.labels[1:] for n in t.lesions):
        raise ConfigError(f"task.lesions must name foreground labels of {list(t.labels[1:])}")
    rules = cfg.eval.keep_components
    if rules and (len(rules) != len(t.labels) - 1 or any(r not in RULES for r in rules)):
        raise ConfigError(f"eval.keep_components must be [] or one of {'/'.join(RULES)} per foreground label")
    if cfg.eval.cyst_max_hu and not cyst_rule_applies(t.modality, t.labels):
        raise ConfigError("eval.cyst_max_hu needs a CT task with cyst and tumour labels; set it to 0")
    if e.strip_to_organ and all(n in t.numerator for n in t.denominator):
        raise ConfigError("eval.strip_to_organ needs a task.denominator label that is not a numerator one (the organ)")
    if cfg.train.target_sampling not in ("slice", "lesion"):
        raise ConfigError("train.target_sampling must be slice or lesion")
    pre, aug = cfg.preprocess, cfg.augment
    if not pre.percentile_low < pre.percentile_high or not pre.window_low < pre.window_high:
        raise ConfigError("preprocess.percentile_low / window_low must be below percentile_high / window_high")
    if aug.scale[0] > aug.scale[1]:
        raise ConfigError(f"augment.scale = {list(aug.scale)}: give [smallest, largest], e.g. [0.85, 1.15]")
    if len(cfg.model.channels) < 2:
        raise ConfigError(f"model.channels = {list(cfg.model.channels)}: give at least two levels, e.g. [16, 32, 64]")


def write_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from segkit.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
