"""fit(), train_one_epoch(), evaluate(): a training loop you can read in one sitting."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from segkit import __version__, distributed
from segkit.batches import Batch, epoch_batches, sampling_plan, training_threads
from segkit.checkpoint import load_checkpoint, resolve_model, save_checkpoint
from segkit.config import Config, config_from_dict, config_to_dict, write_config
from segkit.data.msd import Case, read_case, read_dataset
from segkit.errors import CheckpointError, ConfigError, InputError, SegkitError
from segkit.forward import amp_dtype, autocast, pick_device
from segkit.io import atomic_write, atomic_write_text, ensure_dir, voxel_sizes
from segkit.losses import SegGradeLoss, grade_class_weights
from segkit.models import SegGrader, build_model, num_parameters
from segkit.transforms import preprocess_label, preprocess_volume
from segkit.validate import CaseData, evaluate, finish_run

log = logging.getLogger(__name__)


def load_cases(cases: list[Case], cfg: Config, desc: str) -> list[CaseData]:
    """Read, check and preprocess cases with the same pipeline predict uses."""
    organ = [cfg.task.labels.index(n) for n in cfg.task.denominator]
    target = [cfg.task.labels.index(n) for n in cfg.task.numerator]
    out = []
    for case in tqdm(cases, desc=desc, leave=False, disable=not sys.stderr.isatty()):
        img, truth = read_case(case, cfg.task.labels)
        for note in img.warnings:
            log.warning("%s: %s", case.image, note)
        if not np.ptp(img.data):  # an export that failed, not a scan: it would teach that nothing is there
            raise InputError(
                f"{case.image}: case {case.case_id}'s image holds one value ({img.data.flat[0]:g}) everywhere; "
                "fix the image or drop the case from dataset.json"
            )
        image, grid = preprocess_volume(img, cfg)
        label = preprocess_label(truth, grid)
        image, label = slices_contiguous(image), slices_contiguous(label)
        organ_z = np.flatnonzero(np.isin(label, organ).any(axis=(0, 1)))
        target_z = np.flatnonzero(np.isin(label, target).any(axis=(0, 1)))
        grade = cfg.task.grades.index(case.grade) if case.grade else 0
        parts = target_parts(label, target) if cfg.train.target_sampling == "lesion" else []
        out.append(CaseData(case.case_id, image, label, grade, organ_z, target_z, max(voxel_sizes(img.affine)), parts))
    return out


def target_parts(label: np.ndarray, target: list[int]) -> list[np.ndarray]:
    """The slices (z indices) of each 26-connected piece of the target labels: every lesion, large or small."""
    from scipy import ndimage as ndi

    comp, n = ndi.label(np.isin(label, target), np.ones((3, 3, 3), bool))
    if n == 0:
        return []
    boxes = ndi.find_objects(comp)
    return [np.flatnonzero((comp[box] == k + 1).any(axis=(0, 1))) + box[2].start for k, box in enumerate(boxes)]


def slices_contiguous(volume: np.ndarray) -> np.ndarray:
    """The same (X, Y, Z) array, stored slice after slice: a slice (or its crop) is then one block of memory
    instead of values strided across z (part of segkit.batches.slice_patch's saving)."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(volume, 2, 0)), 0, 2)


def train_one_epoch(
    net: nn.Module,
    loss_fn: SegGradeLoss,
    opt: torch.optim.Optimizer,
    cases: list[CaseData],
    cfg: Config,
    epoch: int,
    batches: Iterator[Batch] | None = None,
) -> dict[str, float]:
    """One epoch of steps_per_epoch sampled batches, taken from `batches` (the run's stream, positioned at
    this epoch) or drawn for this epoch alone; returns mean losses.

    train.cases_per_batch is the global batch. Under torchrun each rank draws its cases_per_batch /
    world_size cases of that batch from the one seeded stream (each case from its own generator, so they
    are the rows one process would draw), runs the network on them, and computes the loss of the whole
    batch from the gathered outputs and labels: the run equals the 1-process run up to float summation
    order, and sampling and augmentation are split across the ranks as the network's work is.
    """
    dev = next(net.parameters()).device
    torch.manual_seed(cfg.train.seed * 100_003 + epoch)  # dropout: same draws on resume
    if batches is None:  # sampling and augmentation, in workers where cores are spare
        batches = epoch_batches(cases, cfg, epoch, dev)
    dtype = amp_dtype(dev, cfg.train.amp)
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
    num_graded = cfg.train.cases_per_batch * cfg.train.slices_per_case
    net.train()
    # summed on the device: a .item() each step would make the CPU wait for the GPU's queue to drain every step
    sums = torch.zeros(3, dtype=torch.float64, device=dev)
    show = sys.stderr.isatty()
    bar = tqdm(range(cfg.train.steps_per_epoch), desc=f"epoch {epoch + 1}", leave=False, disable=not show)
    for step in bar:
        _pause_if_asked(epoch, step)
        x, y, g = next(batches)
        x, y, g = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True), g.to(dev)
        with autocast(dev, cfg.train.amp):
            # this rank's rows in; the whole batch's logits (N, K, H, W), features (N, F + K), labels, grades out
            logits, feats, y, g = distributed.forward_shard(
                net, x, y, g, cfg.train.cases_per_batch, cfg.train.slices_per_case
            )
            grade_logits = distributed.unwrap(net).pool_grade(feats[:num_graded], cfg.train.cases_per_batch)
        total, seg, grd = loss_fn(logits, y, grade_logits, g)
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()
        sums += torch.stack([total.detach(), seg.detach(), grd.detach()]).double()
        if show and step % 10 == 0:
            bar.set_postfix(loss=f"{total.item():.3f}")
    m = (sums / cfg.train.steps_per_epoch).tolist()
    return {"train_loss": m[0], "train_seg_loss": m[1], "train_grade_loss": m[2]}


def _sampling_words(plan: dict[str, int]) -> str:
    if plan["workers"]:
        return f"{plan['workers']} sampling worker processes"
    if plan["helpers"]:
        n = plan["helpers"]
        return f"drawn by this process and {n} helper process{'es' if n > 1 else ''} at once"
    return "drawn by this process"


def _pause_if_asked(epoch: int, step: int) -> None:
    """Hold at a step boundary when $SEGKIT_PAUSE_AT is "EPOCH:STEP" (1-based epoch, 0-based step).

    Crash tests interrupt training at a point they control: the trainer says on stderr that it
    holds, then waits for a signal, so a test never races the clock.
    """
    want = os.environ.get("SEGKIT_PAUSE_AT", "")
    if want != f"{epoch + 1}:{step}":
        return
    print(f"segkit: paused at epoch {epoch + 1} step {step} (SEGKIT_PAUSE_AT)", file=sys.stderr, flush=True)
    while True:
        signal.pause()  # SIGINT raises KeyboardInterrupt here; SIGKILL ends the process


def run_info(cfg: Config) -> dict[str, Any]:
    """Seed, versions and git hash, recorded in every run folder."""
    try:
        git = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = ""
    import monai

    return {
        "segkit": __version__,
        "git": git or None,
        "seed": cfg.train.seed,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def init_weights(net: SegGrader, model: str | Path, cfg: Config) -> dict[str, Any]:
    """Start from another model's weights (a shipped name, run folder or .pt): fine-tuning.

    The network must be the same (arch, channels, labels, input channels); grade-head layers that
    the source lacks keep their fresh initialisation, and so do normalisation layers where the config
    changes model.norm (instance norm keeps no parameters: batch norm starts at weight 1, bias 0 and learns
    its running statistics). Returns what was loaded, for run.json.
    """
    ref = resolve_model(model)
    state = load_checkpoint(ref.path)
    src = config_from_dict(state["config"])
    fields = {
        "model.arch": (src.model.arch, cfg.model.arch),
        "model.channels": (list(src.model.channels), list(cfg.model.channels)),
        "task.labels": (list(src.task.labels), list(cfg.task.labels)),
        "input channels (preprocess.context_slices)": (src.in_channels, cfg.in_channels),
    }
    differ = [f"{k} {a} here {b}" for k, (a, b) in fields.items() if a != b]
    if differ:
        todo = (
            "its output layer has one channel per label, so train from scratch (drop --init)"
            if any(d.startswith("task.labels") for d in differ)
            else "fine-tune with the config it was trained with"
        )
        raise ConfigError(f"--init {model}: its network differs from this config's ({'; '.join(differ)}); {todo}")
    missing, unexpected = net.load_state_dict(state["model"], strict=False)
    renormed = src.model.norm != cfg.model.norm
    bad = [
        k
        for k in [*missing, *unexpected]
        if not k.startswith("grade_head.") and not (renormed and _is_norm_layer(net, k))
    ]
    if bad:
        raise ConfigError(f"--init {model}: weights do not fit this network ({', '.join(bad[:3])})")
    return {
        "init": ref.name,
        "path": str(ref.path),
        "epoch": state.get("epoch"),
        "fresh_layers": list(missing),
        "max_spacing_mm": src.eval.max_spacing_mm,
    }


def _is_norm_layer(net: nn.Module, key: str) -> bool:
    """Whether a state-dict key belongs to a batch or instance normalisation layer of net."""
    try:
        return isinstance(net.get_submodule(key.rsplit(".", 1)[0]), nn.modules.batchnorm._NormBase)
    except AttributeError:
        return False


def fit(
    cfg: Config, data_dir: Path, run_dir: Path, resume: bool = False, init: str | Path | None = None
) -> dict[str, Any]:
    """Train on data_dir's train split, select on its val split; the test split is never read.

    init: start from another model's weights (fine-tuning); ignored on resume (last.pt has them).
    Under torchrun (`segkit train --nproc N`) the ranks split each batch; rank 0 alone validates and
    writes (see segkit.distributed and train_one_epoch).
    """
    check_run_dir(run_dir, resume)  # every rank, before the group forms: before rank 0 writes anything
    dev = distributed.join_group(pick_device(cfg.train.device), cfg.train.cases_per_batch)
    try:
        return _fit(cfg, data_dir, run_dir, dev, resume, init)
    finally:
        distributed.leave_group()


# a folder holding any of these holds a run with a finished epoch (run.json alone: a run that stopped in its first
# epoch, which --resume cannot continue, so a fresh run may start over it)
RUN_FILES = ("last.pt", "best.pt", "metrics.csv")
# train.* keys a resumed run may change: how long and where it runs, not what it learns from or how
RESUME_MAY_CHANGE = ("epochs", "patience", "device", "num_threads", "workers")


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """InputError when a fresh run would write over another run's files (its checkpoints, metrics and record
    would end up mixed with this one's)."""
    held = [name for name in RUN_FILES if (Path(run_dir) / name).exists()]
    if held and not resume:
        raise InputError(
            f"{run_dir}: holds a run already ({', '.join(held)}); continue it with --resume, or train into a new "
            "--out (or delete that folder first)"
        )


def _fit(
    cfg: Config, data_dir: Path, run_dir: Path, dev: torch.device, resume: bool, init: str | Path | None
) -> dict[str, Any]:
    threads = cfg.train.num_threads or training_threads(cfg, dev)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.train.seed)
    train, val = _read_splits(cfg, data_dir)
    net = build_model(cfg).to(dev)
    opt, sched = _build_optimizer(net, cfg)
    state: dict[str, Any] = {"epoch": 0, "best": -1.0, "bad_epochs": 0, "history": []}
    info = {**run_info(cfg), "world_size": distributed.world_size(), "backend": distributed.backend()}
    info["sampling"] = sampling_plan(cfg, dev)
    earlier = 0.0  # the coarsest spacing a model this run continues was trained on
    if resume:
        state = _resume(run_dir / "last.pt", cfg, net, opt, sched)
        earlier = state.pop("max_spacing_mm")
        _check_more_to_train(state, cfg, run_dir)
    elif init is not None:
        info["init"] = init_weights(net, init, cfg)
        earlier = info["init"]["max_spacing_mm"]
        log.info("weights from %s (epoch %s)", info["init"]["path"], info["init"]["epoch"])
    cfg = with_spacing(cfg, train, earlier)
    main = distributed.is_main()
    if main:
        _write_start(cfg, run_dir, info, resume)
    model = distributed.wrap_model(net, dev)  # net itself for one process
    weights = grade_class_weights([c.grade for c in train], len(cfg.task.grades)).to(dev)
    loss_fn = SegGradeLoss.for_config(cfg, weights)
    log.info(
        "model %s: %d parameters; %d train / %d val cases on %s (%d threads; batches: %s)",
        cfg.model.arch,
        num_parameters(net),
        len(train),
        len(val),
        dev,
        info["sampling"]["torch_threads"],
        _sampling_words(info["sampling"]),
    )
    writer = _tensorboard(run_dir) if main else None
    batches = epoch_batches(train, cfg, state["epoch"], dev, end=cfg.train.epochs)  # one set of workers for the run
    for epoch in range(state["epoch"], cfg.train.epochs):
        if state["bad_epochs"] >= cfg.train.patience:
            break
        t0 = time.time()
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]}
        row.update(train_one_epoch(model, loss_fn, opt, train, cfg, epoch, batches))
        sched.step()
        distributed.check_in_sync(net)
        if main:  # the other ranks wait in share() meanwhile
            row.update(evaluate(net, val, cfg))
            row["seconds"] = round(time.time() - t0, 2)
        row = distributed.share(row)  # one history on every rank: the same early-stopping decision
        improved = _update_state(state, row, cfg)
        if main:
            _save_epoch(_checkpoint(net, opt, sched, cfg, state), run_dir, improved)
            _log_epoch(run_dir, state["history"], writer, row, improved)
        distributed.barrier()
    del batches  # stops the sampling workers (early stopping leaves their batches unused)
    if writer is not None:
        writer.close()
    best = max(state["history"], key=lambda r: r[cfg.train.monitor]) if state["history"] else {}
    summary = {"run_dir": str(run_dir), "epochs": state["epoch"], "best": best, "grade_head": {}}
    summary["stopped_early"] = state["epoch"] < cfg.train.epochs  # patience ran out
    if main and state["history"]:
        summary["grade_head"] = finish_run(net, train, val, cfg, run_dir)
        summary["onnx"] = export_best(run_dir / "best.pt")
        write_curves(state["history"], run_dir / "curves.png")
    return {**summary, "rank": distributed.rank()}


def export_best(best: Path) -> bool:
    """best.onnx, best.grade.onnx and best.onnx.json beside the final best.pt (checked against PyTorch), so
    that predict and evaluate run this run through ONNX Runtime without importing torch. A failed export
    leaves the run as it is: those commands then use PyTorch."""
    from segkit.onnx_export import write_onnx

    try:
        write_onnx(best)
    except SegkitError as e:
        log.warning("no ONNX files for %s (predict and evaluate use PyTorch): %s", best, e)
        return False
    return True


def _read_splits(cfg: Config, data_dir: Path) -> tuple[list[CaseData], list[CaseData]]:
    """Train and val cases on the model grid, every one checked before any output (val: rank 0 only)."""
    ds = read_dataset(data_dir)
    if tuple(ds.labels) != cfg.task.labels:
        raise InputError(
            f"{data_dir}: dataset labels {list(ds.labels)} differ from config task.labels {list(cfg.task.labels)}; "
            "make them the same names in the same order (README: Your own data)"
        )
    if tuple(ds.grades) != cfg.task.grades:
        raise InputError(
            f"{data_dir}/dataset.json: grades {list(ds.grades)} differ from config task.grades "
            f"{list(cfg.task.grades)}; make them the same names in the same order"
        )
    train_cases, val_cases = ds.split("train"), ds.split("val")
    if not train_cases or not val_cases:
        raise InputError(
            f"{data_dir}: needs cases in both the train and val splits (has {len(train_cases)}, {len(val_cases)}); "
            'give each case of dataset.json a "split": "train", "val" or "test" (a case without one is train)'
        )
    if 0 < cfg.train.val_cases < len(val_cases):  # evenly spread: every grade, and the real images listed last
        val_cases = [val_cases[int(i)] for i in np.linspace(0, len(val_cases) - 1, cfg.train.val_cases).round()]
    train = load_cases(train_cases, cfg, "loading train")
    val = load_cases(val_cases, cfg, "loading val") if distributed.is_main() else []
    return train, val


def _build_optimizer(net: SegGrader, cfg: Config) -> tuple[torch.optim.Optimizer, Any]:
    """Adam (the grade head in its own group) and a cosine schedule over the epochs."""
    head = list(net.grade_head.parameters())
    body = [p for p in net.parameters() if all(p is not h for h in head)]
    # The grade head in its own group: its rate is lr * grade_lr_scale (1: at 10 it settled at chance).
    groups: list[dict[str, Any]] = [{"params": body}, {"params": head, "lr": cfg.train.lr * cfg.train.grade_lr_scale}]
    opt = torch.optim.Adam(groups, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.epochs, eta_min=cfg.train.lr * 0.02)
    return opt, sched


def _write_start(cfg: Config, run_dir: Path, info: dict[str, Any], resume: bool) -> None:
    """The run folder, its config.yaml and run.json; a resume keeps the record of how the run began."""
    ensure_dir(run_dir)
    write_config(cfg, run_dir / "config.yaml")
    if not resume or not (run_dir / "run.json").is_file():
        atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2))


def _save_epoch(ckpt: dict[str, Any], run_dir: Path, improved: bool) -> None:
    if improved:
        save_checkpoint(run_dir / "best.pt", ckpt)
    save_checkpoint(run_dir / "last.pt", ckpt)


def _update_state(state: dict[str, Any], row: dict[str, Any], cfg: Config) -> bool:
    """Append the epoch's row; returns whether the monitored metric improved."""
    state["history"].append(row)
    improved = row[cfg.train.monitor] > state["best"]
    state["best"] = max(state["best"], row[cfg.train.monitor])
    state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
    state["epoch"] = row["epoch"]
    return improved


def _check_more_to_train(state: dict[str, Any], cfg: Config, run_dir: Path) -> None:
    """Refuse a resume with no epoch to train: it would only redo the run's end (the grade head's refit, the
    post-processing choice) and rewrite what records them."""
    done, epochs = state["epoch"], cfg.train.epochs
    if done >= epochs:
        raise InputError(
            f"{run_dir}: has trained {done} epochs already, all of train.epochs {epochs}; to train on, resume with "
            f"--epochs above {done}"
        )
    if state["bad_epochs"] >= cfg.train.patience:
        raise InputError(
            f"{run_dir}: stopped early after {state['bad_epochs']} epochs without improvement (train.patience "
            f"{cfg.train.patience}); to train on, resume with --set train.patience=N above {state['bad_epochs']}"
        )


def _resume(path: Path, cfg: Config, net: SegGrader, opt: torch.optim.Optimizer, sched: Any) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: nothing to resume; run without --resume to start training")
    ck = load_checkpoint(path)
    changed = resume_changes(config_to_dict(config_from_dict(ck["config"])), config_to_dict(cfg))
    if changed:
        shown = ", ".join(f"{k} {a} -> {b}" for k, a, b in changed[:3])
        raise CheckpointError(
            f"{path}: this config changes {shown}; a resumed run keeps the config it began with (only train."
            f"{'/'.join(RESUME_MAY_CHANGE)} may change): resume with --config {path.parent / 'config.yaml'}, "
            "or start a new run with --init"
        )
    net.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    if sched.T_max != cfg.train.epochs:  # --epochs changed on resume: the cosine runs on to the new last epoch
        sched.T_max = cfg.train.epochs
        # the scheduler steps each lr from the one before: set this epoch's on the new curve (its closed form),
        # the lr a run begun with these epochs would have now (set T_max alone, every added epoch kept the floor)
        t = sched.last_epoch
        for group, base in zip(opt.param_groups, sched.base_lrs, strict=True):
            group["lr"] = sched.eta_min + (base - sched.eta_min) * (1 + math.cos(math.pi * t / sched.T_max)) / 2
    log.info("resuming after epoch %d", ck["epoch"])
    return {
        "epoch": ck["epoch"],
        "best": ck["best"],
        "bad_epochs": ck["bad_epochs"],
        "history": ck["history"],
        "max_spacing_mm": float(ck["config"]["eval"].get("max_spacing_mm", 0.0)),
    }


def resume_changes(before: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, before, now) for each setting that differs and that a resumed run may not change (the eval section
    is inference settings, chosen again at the end of training)."""
    changed = []
    for section in ("task", "preprocess", "augment", "model", "train"):
        for key in sorted(set(before[section]) | set(now[section])):
            a, b = before[section].get(key), now[section].get(key)
            if a != b and not (section == "train" and key in RESUME_MAY_CHANGE):
                changed.append((f"{section}.{key}", a, b))
    return changed


def with_spacing(cfg: Config, train: list[CaseData], earlier: float = 0.0) -> Config:
    """cfg with eval.max_spacing_mm recorded: the coarsest voxel spacing among the training scans, or of the
    scans behind the model this run continues (`earlier`) where that is coarser. Predict warns on an input
    coarser still: a brain MRI of 6.5 mm slices, given to the ventricle model trained on slices of at most
    6 mm, came out with ventricle patches a slice away from the ventricles and most of them missed."""
    coarsest = round(max([c.spacing_mm for c in train] + [earlier]), 3)
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, max_spacing_mm=coarsest))


def _checkpoint(
    net: SegGrader, opt: torch.optim.Optimizer, sched: Any, cfg: Config, state: dict[str, Any]
) -> dict[str, Any]:
    return {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "config": config_to_dict(cfg),
        "epoch": state["epoch"],
        "best": state["best"],
        "bad_epochs": state["bad_epochs"],
        "history": state["history"],
        "segkit_version": __version__,
    }


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _log_epoch(run_dir: Path, history: list[dict[str, Any]], writer: Any, row: dict[str, Any], improved: bool) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[-1].keys()))
    w.writeheader()
    for r in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())
    if writer is not None:
        for k, v in row.items():
            if k != "epoch":
                writer.add_scalar(k, v, row["epoch"])
        writer.flush()
    mark = " *" if improved else ""  # best so far on train.monitor
    log.info(
        "epoch %d  loss %.4f  val dice %.4f (pooled %.4f)  val grade acc %.3f  (%.1fs)%s",
        row["epoch"],
        row["train_loss"],
        row["val_dice"],
        row["val_dice_pooled"],
        row["val_grade_acc"],
        row["seconds"],
        mark,
    )


def write_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and validation curves over epochs."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for k in ("train_loss", "train_seg_loss", "train_grade_loss", "val_grade_loss"):
        a.plot(ep, [r[k] for r in history], label=k)
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    a.set_title("losses")
    for k in [k for k in history[0] if k.startswith("val_dice")] + ["val_grade_acc"]:
        b.plot(ep, [r[k] for r in history], label=k)
    b.set_xlabel("epoch")
    b.set_ylim(0, 1)
    b.legend(fontsize=8)
    b.set_title("validation")
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, format="png", dpi=90))
    plt.close(fig)
