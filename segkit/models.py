"""U-Net + volume grade head on the shared encoder: ARCHS registry and build_model(cfg)."""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from segkit.config import Config
from segkit.errors import ConfigError

if TYPE_CHECKING:
    from monai.networks.layers.simplelayers import SkipConnection
    from monai.networks.nets import UNet


class _LazyPackages(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads monai packages without running their __init__: a package's names resolve on first use."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        """Leaf modules load as usual; a package gets this loader."""
        if name.partition(".")[0] != "monai":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.submodule_search_locations is not None and spec.has_location:
            spec.loader = self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        """The default module object."""

    def exec_module(self, module: ModuleType) -> None:
        """Instead of running __init__, read its `from .x import name` lines for a module __getattr__."""
        assert module.__spec__ is not None and module.__spec__.origin is not None
        exports = {}
        for node in ast.parse(Path(module.__spec__.origin).read_bytes()).body:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                exports.update({a.asname or a.name: (node.module, a.name) for a in node.names})
        module.__getattr__ = functools.partial(_package_attr, module, exports)  # type: ignore[method-assign]


def _package_attr(module: ModuleType, exports: dict[str, tuple[str | None, str]], attr: str) -> Any:
    if attr == "__version__" and module.__name__ == "monai":  # monai/__init__ sets it; MONAI modules import it
        value = importlib.import_module("monai._version").get_versions()["version"]
    elif attr in exports:
        sub, name = exports[attr]
        if sub is None:  # `from . import name`: a submodule
            value = importlib.import_module(f"{module.__name__}.{name}")
        else:
            value = getattr(importlib.import_module(f"{module.__name__}.{sub}"), name)
    else:
        raise AttributeError(f"module {module.__name__!r} has no attribute {attr!r}")
    setattr(module, attr, value)
    return value


def monai_modules(*names: str) -> list[ModuleType]:
    """MONAI modules, without importing all of MONAI where it is not loaded yet.

    monai/__init__ imports every MONAI module (torchvision's model zoo, torch._dynamo, scipy, pandas: 5-8 s
    of predict's start-up on 2 cores) and any `import monai.x` runs it first. Here the packages on the way
    are loaded lazily (their names resolve on use) and the modules asked for load as usual. All of
    them then leave sys.modules again, so a later `import monai` is MONAI's normal, complete import, and its
    import order (monai.data before monai.transforms) is never upset; what was loaded keeps its own copies
    (so save a model's state_dict, as segkit does, never the pickled module). Cache what you get.
    """
    if "monai" in sys.modules:  # training, evaluation: MONAI is loaded anyway
        return [importlib.import_module(n) for n in names]
    before = set(sys.modules)
    finder = _LazyPackages()
    sys.meta_path.insert(0, finder)
    try:
        return [importlib.import_module(n) for n in names]
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            if name.partition(".")[0] == "monai":
                del sys.modules[name]


@functools.cache
def _monai_unet() -> tuple[type[UNet], type[SkipConnection]]:
    """MONAI's UNet and SkipConnection classes (the ~25 modules they need, not all of MONAI)."""
    unet, layers = monai_modules("monai.networks.nets.unet", "monai.networks.layers.simplelayers")
    return unet.UNet, layers.SkipConnection


@functools.cache
def sliding_window() -> Callable[..., Any]:
    """MONAI's sliding_window_inference (3-D models), loaded as _monai_unet loads the UNet."""
    (utils,) = monai_modules("monai.inferers.utils")
    return utils.sliding_window_inference


class GradeHead(nn.Module):
    """Volume grade from pooled encoder features plus the volume's log label fractions.

    The two inputs have their own first layer: the few fraction numbers carry the biomarker
    directly and must not be drowned by hundreds of normalised encoder features. A linear path
    from the log fractions straight to the logits adds the biomarker's own thresholds (a log ratio
    is a difference of log fractions): measured on frozen features, it keeps learning where the
    hidden path alone settled at the class prior.
    """

    def __init__(self, in_features: int, num_fractions: int, hidden: int, num_grades: int, dropout: float) -> None:
        super().__init__()
        self.encoder_path = nn.Sequential(
            nn.LayerNorm(in_features), nn.Dropout(dropout), nn.Linear(in_features, hidden)
        )
        self.fraction_path = nn.Linear(num_fractions, hidden)
        self.out = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_grades))
        self.direct = nn.Linear(num_fractions, num_grades)

    def forward(self, pooled: torch.Tensor, log_fractions: torch.Tensor) -> torch.Tensor:
        """(B, F), (B, K) -> (B, G) grade logits."""
        return self.out(self.encoder_path(pooled) + self.fraction_path(log_fractions)) + self.direct(log_fractions)


def slice_features(bottleneck: torch.Tensor) -> torch.Tensor:
    """Per-slice (3-D: per-patch) descriptor: global mean and max of the deepest encoder map.
    (N, F, h, w[, d]) -> (N, 2F)."""
    dims = tuple(range(2, bottleneck.ndim))
    return torch.cat([bottleneck.mean(dim=dims), bottleneck.amax(dim=dims)], dim=1)


class SegGrader(nn.Module):
    """Wraps a 2-D or 3-D U-Net: forward gives mask logits and per-slice (per-patch) encoder features.

    The grade is a property of the volume, so features are pooled over a case's slices or patches
    (`pool_grade`) before the head; slice grades are never voted.
    """

    def __init__(self, unet: nn.Module, bottleneck: nn.Module, feat_dim: int, cfg: Config) -> None:
        super().__init__()
        self.unet = unet
        self.num_classes = cfg.num_classes
        self.grade_head = GradeHead(
            2 * feat_dim, cfg.num_classes, cfg.model.grade_hidden, len(cfg.task.grades), cfg.model.dropout
        )
        self._feats: torch.Tensor | None = None
        bottleneck.register_forward_hook(self._keep)

    def _keep(self, _m: nn.Module, _inp: object, out: torch.Tensor | list[torch.Tensor]) -> None:
        self._feats = out[-1] if isinstance(out, list | tuple) else out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W[, D]) -> mask logits (N, K, H, W[, D]), slice features (N, F + K)."""
        logits = self.unet(x)
        assert self._feats is not None
        # Soft class fractions per slice; their mean over a volume's slices is its label
        # volume fractions, the quantity the biomarker is built from. Detached: the grade
        # loss must not bend the masks.
        fractions = torch.softmax(logits.detach().float(), dim=1).mean(dim=tuple(range(2, logits.ndim)))
        feats = torch.cat([slice_features(self._feats.float()), fractions], dim=1)
        self._feats = None
        return logits, feats

    def pool_grade(self, feats: torch.Tensor, num_cases: int) -> torch.Tensor:
        """(num_cases * S, F + K) slice features of equal-sized case groups -> (num_cases, G) logits."""
        pooled = feats.view(num_cases, -1, feats.shape[-1]).mean(dim=1)
        k = self.num_classes
        log_fractions = torch.log(pooled[:, -k:] + 1e-4)  # ratios become differences
        return self.grade_head(pooled[:, :-k], log_fractions)


def _monai_bottom(unet: UNet) -> nn.Module:
    """The deepest block of MONAI's recursive UNet (the bottleneck)."""
    _, skip_connection = _monai_unet()
    block = unet.model
    while True:
        assert isinstance(block, nn.Sequential)
        skip = block[1]
        assert isinstance(skip, skip_connection)
        sub = skip.submodule
        if isinstance(sub, nn.Sequential) and len(sub) == 3 and isinstance(sub[1], skip_connection):
            block = sub
        else:
            return sub


def build_monai_unet(cfg: Config) -> SegGrader:
    """MONAI's residual UNet, 2-D on slices with their neighbours as channels (fast on CPU: the default),
    or 3-D on patches of the volume (model.arch monai_unet3d)."""
    unet_class, _ = _monai_unet()
    ch = cfg.model.channels
    unet = unet_class(
        spatial_dims=cfg.spatial_dims,
        in_channels=cfg.in_channels,
        out_channels=cfg.num_classes,
        channels=ch,
        strides=(2,) * (len(ch) - 1),
        num_res_units=cfg.model.num_res_units,
        norm=cfg.model.norm,
        dropout=0.0,
    )
    return SegGrader(unet, _monai_bottom(unet), ch[-1], cfg)


def build_smp_unet(cfg: Config) -> SegGrader:
    """segmentation_models_pytorch Unet with any of its encoders (no weights downloaded by default)."""
    import segmentation_models_pytorch as smp

    try:
        unet = smp.Unet(
            encoder_name=cfg.model.encoder,
            encoder_weights=cfg.model.encoder_weights,
            in_channels=cfg.in_channels,
            classes=cfg.num_classes,
        )
    except KeyError as e:
        raise ConfigError(f"unknown smp encoder {cfg.model.encoder!r} ({e})") from None
    return SegGrader(unet, unet.encoder, unet.encoder.out_channels[-1], cfg)


ARCHS: dict[str, Callable[[Config], SegGrader]] = {
    "monai_unet": build_monai_unet,
    "monai_unet3d": build_monai_unet,
    "smp_unet": build_smp_unet,
}


def build_model(cfg: Config) -> SegGrader:
    """Build the network named by cfg.model.arch."""
    if cfg.model.arch not in ARCHS:
        raise ConfigError(f"unknown model.arch {cfg.model.arch!r}; valid: {', '.join(ARCHS)}")
    return ARCHS[cfg.model.arch](cfg)


def num_parameters(model: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
