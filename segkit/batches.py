"""Training batches (2-D slices; 3-D patches from segkit.patches), and the epoch's stream of batches, drawn in
worker processes (torch's DataLoader) where there are cores to spare.

Step k of epoch e draws its batch from its own generator (seed, e, k), and each case of the batch from its
own generator seeded from that one, augmentation included, so the batches are the same whether the main
process draws them or any number of workers do, a resumed run draws what the uninterrupted one would have,
and each torchrun rank draws only its own cases of the batch.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import multiprocessing as mp
import os
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from segkit import distributed
from segkit.config import Config
from segkit.patches import build_augment_3d, case_patches, seed_augment_3d
from segkit.transforms import augment_hwc, build_augment, seed_augment
from segkit.validate import CaseData

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
MAX_WORKERS = 4  # a cap: each worker holds a prefetched batch or two and its own copy of the Python state


def sample_batch(
    cases: list[CaseData], cfg: Config, rng: np.random.Generator, aug: Any | None, part: int = 0, parts: int = 1
) -> Batch:
    """train.cases_per_batch cases (B), each with S = train.slices_per_case organ-stratified slices (grade + seg;
    3-D: patches centred in the organ), then one random slice and one through the small target structure
    (seg only: nnU-Net-style oversampling); augmented with `aug` (build_augment's or build_augment_3d's pipelines).

    rng picks the cases and seeds one generator per case slot, which draws that case's slices, crops and
    augmentation: part p of `parts` (a torchrun rank) draws cases [p * B / parts, (p + 1) * B / parts) alone
    and gets exactly those rows of the whole batch (distributed.shard_rows), so no rank samples what another
    will train on. Returns x (N, C, H, W) or (N, 1, X, Y, Z), y (N, ...), grades of the part's cases; the
    first cases * S rows are grouped per case, then two seg-only rows per case.
    """
    t = cfg.train
    picked = rng.choice(len(cases), size=t.cases_per_batch, replace=len(cases) < t.cases_per_batch)
    seeds = rng.integers(2**63, size=t.cases_per_batch)
    draw, reseed = (case_patches, seed_augment_3d) if cfg.spatial_dims == 3 else (_case_slices, seed_augment)
    share = t.cases_per_batch // parts
    slots = range(part * share, (part + 1) * share)
    per_case = []
    for i in slots:
        slot_rng = np.random.default_rng(seeds[i])
        slot_aug = None if aug is None else reseed(aug, int(slot_rng.integers(2**31)))
        per_case.append(draw(cases[picked[i]], cfg, slot_rng, slot_aug))
    s = t.slices_per_case
    rows = [r for p in per_case for r in p[:s]] + [r for p in per_case for r in p[s:]]
    xs, ys = zip(*rows, strict=True)
    grades = torch.tensor([cases[picked[i]].grade for i in slots])
    return torch.from_numpy(_stacked(xs)), torch.from_numpy(_stacked(ys)), grades


def _stacked(rows: tuple[np.ndarray, ...]) -> np.ndarray:
    """The rows stacked in C order, (N, C, H, W) laid out as torch's default layout expects: np.stack keeps
    the rows' own layout, and 2-D rows are transposed views of (H, W, C) crops (their stack was channels-last
    in memory, which the first convolution computes along another path)."""
    out = np.empty((len(rows), *rows[0].shape), np.result_type(*rows))
    return np.stack(rows, out=out)


def _case_slices(
    c: CaseData, cfg: Config, rng: np.random.Generator, aug: tuple | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One case's S graded slices (one from each of S equal bins across the organ: an unbiased sample of the
    volume), then a random slice, one through the target (train.target_sampling: a random slice of it, so a large
    lesion is chosen more often than a small one, or a random slice of a random lesion) and train.outside_slices
    from outside the organ (random where the organ fills the volume): (C, H, W) image and (H, W) label each."""
    t = cfg.train
    zs = c.organ_z if len(c.organ_z) else np.arange(c.image.shape[2])
    edges = np.linspace(0, len(zs), t.slices_per_case + 1)
    idx = [rng.integers(int(a), max(int(a) + 1, int(b))) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    picks = [zs[min(int(i), len(zs) - 1)] for i in idx]
    targets = c.target_z if len(c.target_z) else zs
    if t.target_sampling == "lesion" and c.target_parts:  # every lesion as likely as any other, however small
        targets = c.target_parts[rng.integers(0, len(c.target_parts))]
    picks += [rng.integers(0, c.image.shape[2]), targets[rng.integers(0, len(targets))]]
    if t.outside_slices:  # the liver model, shown few slices above the liver, called a real heart liver
        outside = np.setdiff1d(np.arange(c.image.shape[2]), c.organ_z)
        outside = outside if len(outside) else np.arange(c.image.shape[2])
        picks += list(outside[rng.integers(0, len(outside), t.outside_slices)])
    out = []
    for z in picks:
        x, y = slice_patch(c, int(z), cfg.preprocess.context_slices, t.patch_size, rng)
        if aug is not None:
            x, y = augment_hwc(x, y, aug)
        out.append((x.transpose(2, 0, 1), y))
    return out


def slice_patch(
    c: CaseData, z: int, context: int, size: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random size[0] x size[1] crop of slice z with its context slices as channels: image (H, W, C)
    float32, label (H, W). Where the slice is smaller than the patch it is centred and padded with edge
    values, the label as the image: replicated tissue keeps its own label (as background it taught the liver
    model that liver running into an image edge is not liver). The same values as context_stack, np.pad(edge)
    and a crop (tested), copying only the crop. OpenCV interleaves the context slices and pads the image: a
    NumPy gather across slices gave channels strided in memory, which the padding's fancy indexing (~90 us a
    slice) and albumentations' own contiguous copy then paid for; a batch's sampling took 29.2 ms of one core
    that way against 25.3 now (the same batches; 10 alternating rounds, ad hoc)."""
    import cv2  # albumentations' own image library, already loaded where batches are augmented

    starts = []
    for n, p in zip(c.image.shape[:2], size, strict=True):
        short = max(0, p - n)
        starts.append(int(rng.integers(0, n + short - p + 1)) - short // 2)  # < 0 where the slice is padded
    (r0, k0), (p0, p1) = starts, size
    lo0, lo1 = max(0, r0), max(0, k0)
    hi0, hi1 = min(c.image.shape[0], r0 + p0), min(c.image.shape[1], k0 + p1)
    zs = np.clip(np.arange(z - context, z + context + 1), 0, c.image.shape[2] - 1)  # ends repeat their slice
    image = cv2.merge([c.image[lo0:hi0, lo1:hi1, int(k)] for k in zs])  # (h, w, C): a copy of the crop only
    label = c.label[lo0:hi0, lo1:hi1, z]
    pads = (lo0 - r0, r0 + p0 - hi0, lo1 - k0, k0 + p1 - hi1)
    if any(pads):  # centred in a patch larger than the slice: edge values, the label as the image
        image, label = (cv2.copyMakeBorder(a, *pads, cv2.BORDER_REPLICATE) for a in (image, label))
    return np.asarray(image.reshape(p0, p1, len(zs)), dtype=np.float32), np.ascontiguousarray(label)


class EpochBatches(torch.utils.data.IterableDataset):
    """The train.steps_per_epoch batches of each epoch from `epoch` up to `end` (default: that one epoch),
    in order; worker w of n draws the stream's batches w, w + n, ... Under torchrun, this rank's share of
    each batch (sample_batch's part).

    The DataLoader asks its workers in turn, so the batches arrive in order. Batch k of an epoch comes
    from its own seed (train.seed, epoch, k), so the stream does not depend on where it starts or on
    the number of workers.
    """

    def __init__(self, cases: list[CaseData], cfg: Config, epoch: int, end: int | None = None) -> None:
        self.cases, self.cfg = cases, cfg
        self.epochs = range(epoch, epoch + 1 if end is None else end)
        self.part, self.parts = distributed.rank(), distributed.world_size()
        # Built once, here, in the process that forks the workers: they inherit the pipelines and the
        # libraries behind them (albumentations, cv2, MONAI's transforms), which fresh workers would otherwise
        # import again (~1 s before their first batch on 2 cores, the 2-D step 0.02 s on a GPU); each case
        # of each batch reseeds them.
        self.aug: Any = None
        if cfg.augment.enabled:
            self.aug = build_augment_3d(cfg.augment, 0) if cfg.spatial_dims == 3 else build_augment(cfg.augment)

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        first, every = (0, 1) if info is None else (info.id, info.num_workers)
        for index in range(first, self.num_batches(), every):
            yield self.draw(index)

    def num_batches(self) -> int:
        return len(self.epochs) * self.cfg.train.steps_per_epoch

    def draw(self, index: int, sub: int = 0, subs: int = 1) -> Batch:
        """Batch `index` of the stream (this rank's part of it), or its share `sub` of `subs` (split_stream's
        processes): each case's rows are the same whichever process draws them."""
        per_epoch = self.cfg.train.steps_per_epoch
        epoch, step = self.epochs[index // per_epoch], index % per_epoch
        rng = np.random.default_rng([self.cfg.train.seed, epoch, step])
        return sample_batch(self.cases, self.cfg, rng, self.aug, self.part * subs + sub, self.parts * subs)


def training_threads(cfg: Config, device: torch.device) -> int | None:
    """torch's thread count for training on a CPU, where train.num_threads and train.workers are on auto and
    torch's threads would take every core: with 6 or more cores per process, ceil(cores / 8) of them are left
    to sampling workers (16 cores: 14 threads + 2 workers). None: keep torch's default.

    The rule comes from the 2-core figures (scripts/bench.py --parts e): sampling and augmentation cost one
    core 0.06-0.16 s a step (single-threaded, so no less on a bigger CPU), inline it adds that to every
    step, and a worker with a core of its own hides it (the loop at 0.92 of its bound); a core taken from
    torch costs 1/n of the compute. On 2 cores inline wins (0.52 against 0.79 s a step); from about 6 cores
    the worker should. Not yet measured on a CPU that large."""
    if device.type != "cpu" or cfg.train.num_threads or cfg.train.workers != -1:
        return None
    cores, local = _cores(), _local_processes()
    per_process = cores // local
    if per_process < 6 or (cores - torch.get_num_threads() * local) // local > 0:
        return None  # too few cores to give one up, or some are spare already
    return per_process - min(MAX_WORKERS, -(-per_process // 8))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _local_processes() -> int:
    """Training processes on this machine (torchrun's LOCAL_WORLD_SIZE), which share its cores."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def num_workers(cfg: Config, device: torch.device) -> int:
    """train.workers, or (-1, auto) as many sampling processes as there are cores to spare, at most
    MAX_WORKERS: on a GPU every core of this process's share of the machine (torchrun's processes on this
    node split it) but its own; on a CPU the cores that the processes' torch threads leave free, none
    when they use them all (2 cores: a worker drawing ahead slowed the step more than it saved,
    scripts/bench.py --parts e; there sampling_helpers share each batch instead; from 6 cores
    training_threads leaves some)."""
    if cfg.train.workers >= 0:
        return cfg.train.workers
    cores, local = _cores(), _local_processes()
    if device.type == "cuda":
        spare = cores // local - 1
    else:
        spare = (cores - torch.get_num_threads() * local) // local
    return max(0, min(MAX_WORKERS, spare))


def sampling_helpers(cfg: Config, device: torch.device) -> int:
    """Helper processes that draw a share of each batch beside the main process, in step with it, where it
    samples inline on a CPU whose cores torch's threads take (train.workers on auto; 2-5 cores a process):
    while torch waits for the batch its cores are idle, so the batch's cases are drawn on all of them at
    once, and the helpers sleep while torch trains (a worker drawing ahead slowed the step more than it
    saved, scripts/bench.py --parts e). One fewer than the processes that share the batch's cases evenly."""
    if device.type != "cpu" or cfg.train.workers != -1 or num_workers(cfg, device) > 0:
        return 0
    if "fork" not in mp.get_all_start_methods():  # (Windows) helpers inherit the loaded cases by forking
        return 0
    per_process = _cores() // _local_processes()
    cases = cfg.train.cases_per_batch // distributed.world_size()
    return max(k for k in range(1, per_process + 1) if cases % k == 0) - 1


def sampling_plan(cfg: Config, device: torch.device) -> dict[str, int]:
    """How this process will draw its batches (recorded in run.json): torch's threads, sampling workers drawing
    ahead, helpers sharing each batch."""
    workers, helpers = num_workers(cfg, device), sampling_helpers(cfg, device)  # never both
    return {"torch_threads": torch.get_num_threads(), "workers": workers, "helpers": helpers}


def epoch_batches(
    cases: list[CaseData], cfg: Config, epoch: int, device: torch.device, end: int | None = None
) -> Iterator[Batch]:
    """The batches of epochs epoch..end-1 (default: that one epoch) in order, from worker processes when
    num_workers() gives any, else drawn in the main process with sampling_helpers() beside it. `segkit
    train` takes its whole run from one such stream: its workers live for the run and draw the next epoch's
    first batches while the main process validates, where fresh workers each epoch would start from
    nothing after it."""
    data = EpochBatches(cases, cfg, epoch, end)
    plan = sampling_plan(cfg, device)
    if not plan["workers"]:
        return split_stream(data, plan["helpers"]) if plan["helpers"] else iter(data)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=None,
        num_workers=plan["workers"],
        prefetch_factor=2,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # its workers' base seed, not drawn from the global stream dropout uses
    )
    with _frozen_heap():
        return iter(loader)  # forks the workers


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Fork inside this: garbage made before the fork is freed first, and what exists then is frozen out of
    the children's collector (a DataLoader worker that collected an inherited ONNX Runtime session ran its
    destructor on condition variables of threads that exist only in this process, and hung holding the GIL;
    seen in the test suite)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def split_stream(data: EpochBatches, helpers: int) -> Iterator[Batch]:
    """data's batches, each drawn by this process and `helpers` forked processes at once, share j of the
    batch's cases by process j, and put back in sample_batch's row order: the same batches as iter(data)
    (tested). The helpers live as long as the stream, block between batches and hand their shares over in
    memory shared with this process (through a pipe, 1.3 MB a share took longer than drawing it)."""
    subs = helpers + 1
    if not data.num_batches():
        return
    first = data.draw(0, 0, subs)  # every share has its shapes
    shared = [tuple(_shared_like(t) for t in first) for _ in range(helpers)]
    ctx = mp.get_context("fork")
    ends: list[Any] = []
    procs = []
    with _frozen_heap():
        for sub in range(1, subs):
            mine, theirs = ctx.Pipe()
            ends.append(mine)
            args = (data, sub, subs, theirs, ends, shared[sub - 1])
            procs.append(ctx.Process(target=_helper, args=args, daemon=True))
            procs[-1].start()
            theirs.close()
    rows = subs * first[0].shape[0]  # each share: its cases' graded rows, then their seg-only rows
    cases = data.cfg.train.cases_per_batch // data.parts
    places = [distributed.shard_rows(rows, cases, data.cfg.train.slices_per_case, j, subs).numpy() for j in range(subs)]
    try:
        for index in range(data.num_batches()):
            for end in ends:
                end.send(index)
            own = tuple(t.numpy() for t in (first if index == 0 else data.draw(index, 0, subs)))
            x, y = (np.empty((rows, *a.shape[1:]), a.dtype) for a in own[:2])
            for j, (sx, sy, _) in enumerate([own, *shared]):
                if j:  # the helpers' shares once they are written; this process's own while they may still draw
                    _wait(ends[j - 1])
                x[places[j]], y[places[j]] = sx, sy  # each share's rows straight to their places: one copy
            g = np.concatenate([own[2], *(share[2] for share in shared)])  # the shares hold consecutive cases
            yield torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(g)
    finally:
        for end in ends:
            end.close()  # a helper reads end of file and returns
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()


def _shared_like(t: torch.Tensor) -> np.ndarray:
    """An array of t's shape and dtype in anonymous shared memory: a process forked after sees the same bytes."""
    dtype = t.numpy().dtype
    return np.frombuffer(mmap.mmap(-1, max(1, t.numel() * dtype.itemsize)), dtype, t.numel()).reshape(t.shape)


def _wait(end: Any) -> None:
    try:
        end.recv_bytes()
    except EOFError:
        raise RuntimeError("a batch-sampling helper process ended early (its error is printed above)") from None


def _helper(data: EpochBatches, sub: int, subs: int, conn: Any, ends: list[Any], out: tuple) -> None:
    """A split_stream helper: draws share `sub` of each batch it is asked for into `out` (shared memory) until
    its pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    torch.set_num_threads(1)  # as DataLoader workers: a forked OpenMP pool must not start again
    for end in ends:
        end.close()  # the main process's ends: once it closes them (or dies), recv here ends
    try:
        while True:
            for array, t in zip(out, data.draw(conn.recv(), sub, subs), strict=True):
                array[...] = t.numpy()
            conn.send_bytes(b"")
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return
