"""Multi-process training on torch's own engine: torchrun's process group, DDP, the sharded forward, rank 0 writes.

Under `torchrun` (or `segkit train --nproc N`, which starts it) every rank draws its own cases of the
global batch from the one seeded stream, runs the network on them and gathers the outputs and labels;
every rank then computes the global batch's loss, so a run of N processes equals the 1-process run of the
same seed up to the order of float sums. Without torchrun's environment every helper here is a no-op.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from segkit.errors import ConfigError

log = logging.getLogger(__name__)

# Rank 0 validates (and refits the grade head) while the others wait at a collective.
TIMEOUT = timedelta(hours=2)


def world_size() -> int:
    """Number of training processes: 1 without torchrun."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank: 0 without torchrun."""
    return dist.get_rank() if world_size() > 1 else 0


def is_main() -> bool:
    """True on the rank that validates and writes every output (rank 0)."""
    return rank() == 0


def backend() -> str | None:
    """The process group's backend (nccl, gloo); None for one process."""
    return str(dist.get_backend()) if world_size() > 1 else None


def join_group(dev: torch.device, num_cases: int) -> torch.device:
    """Join torchrun's process group (RANK, WORLD_SIZE, LOCAL_RANK): nccl on CUDA, gloo on CPU.

    Returns this rank's device (cuda:LOCAL_RANK on CUDA). Without torchrun's environment, or with one
    process, there is no group and the device is returned unchanged.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or world_size() > 1:
        return dev
    check_shardable(num_cases, world)
    if dev.type == "cuda":
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"{os.environ.get('LOCAL_WORLD_SIZE', local + 1)} processes on this machine but "
                f"{torch.cuda.device_count()} GPUs; start at most one process per GPU (--nproc)"
            )
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=TIMEOUT)
    if rank() > 0:  # one log: rank 0's
        logging.getLogger("segkit").setLevel(logging.WARNING)
    log.info("%d processes (%s): each runs 1/%d of every batch; rank 0 validates and writes", world, backend(), world)
    return dev


def leave_group() -> None:
    """Destroy the process group (after training; a no-op for one process)."""
    if world_size() > 1:
        dist.destroy_process_group()


def check_shardable(num_cases: int, num_procs: int) -> None:
    """Every rank takes an equal share of the global batch's cases."""
    if num_cases % num_procs:
        raise ConfigError(
            f"train.cases_per_batch={num_cases} does not split over {num_procs} processes; "
            f"use a multiple of {num_procs} (--set train.cases_per_batch=...) or another --nproc"
        )


def wrap_model(net: nn.Module, dev: torch.device) -> nn.Module:
    """DistributedDataParallel around net under torchrun (batch norm synchronised on CUDA); net itself otherwise.

    The grade head runs outside forward (SegGrader.pool_grade on the gathered features); DDP still
    all-reduces its gradients, because every parameter takes part in each step's backward.
    """
    if world_size() == 1:
        return net
    if dev.type == "cuda":  # batch statistics over the global batch, as in one process (CUDA only)
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)


def unwrap(model: nn.Module) -> Any:
    """The network inside a DDP wrapper (for pool_grade, evaluation, state_dict)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class _GatherRows(torch.autograd.Function):
    """all_gather along dim 0; the backward keeps this rank's rows, times the world size.

    Every rank computes the same loss from the same gathered tensors, so the gradient of each row
    is the same on every rank and needs no communication. DDP then averages the ranks' parameter
    gradients: the factor world_size turns that mean into the sum over all rows, the 1-process gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.rows = x.shape[0]
        return _gather(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad[rank() * ctx.rows : (rank() + 1) * ctx.rows] * world_size()


def shard_rows(num_rows: int, num_cases: int, graded: int, part: int, parts: int) -> torch.Tensor:
    """Rows of cases [part * b, (part + 1) * b), b = num_cases / parts, in sample_batch's layout:
    num_cases * graded rows grouped per case (S = train.slices_per_case), then the seg-only rows grouped per
    case (2, plus train.outside_slices in 2-D)."""
    e = num_rows // num_cases - graded
    b = num_cases // parts
    rows = torch.arange(part * b * graded, (part + 1) * b * graded)
    extra = num_cases * graded + torch.arange(part * b * e, (part + 1) * b * e)
    return torch.cat([rows, extra])


def merge_order(num_rows: int, num_cases: int, graded: int, parts: int) -> torch.Tensor:
    """Where each row of the parts' shares, concatenated in part order, goes in the whole batch: whole =
    concatenated[merge_order(...)] (shard_rows' inverse, for sample_batch's layout)."""
    return torch.argsort(torch.cat([shard_rows(num_rows, num_cases, graded, p, parts) for p in range(parts)]))


def forward_shard(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, grades: torch.Tensor, num_cases: int, graded: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """This process's share of the batch (segkit.batches.sample_batch's part rank() of world_size(): its
    cases' rows x (n, C, ...), labels y, grades) through the network. Returns the mask logits (N, K, ...), slice
    features (N, F + K), labels and grades of the whole batch (num_cases cases with `graded` graded rows
    each) in sample_batch's row order: one process's own;
    under torchrun every rank's, gathered (logits in float32, as the loss reads them)."""
    logits, feats = model(x)
    if world_size() == 1:
        return logits, feats, y, grades
    back = merge_order(x.shape[0] * world_size(), num_cases, graded, world_size()).to(x.device)
    gathered = _GatherRows.apply(logits.float())[back], _GatherRows.apply(feats)[back]
    return *gathered, _gather(y)[back], _gather(grades)  # ranks hold consecutive cases: grades in order


def _gather(t: torch.Tensor) -> torch.Tensor:
    """Every rank's t (the same shape on each) concatenated along dim 0, in rank order."""
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def share(value: Any) -> Any:
    """Rank 0's value (any picklable object) on every rank: one validation result, one stopping decision."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (a no-op for one process)."""
    if world_size() > 1:
        dist.barrier()


def check_in_sync(net: nn.Module) -> None:
    """Raise when the ranks' weights differ (DDP keeps them identical after every step; fit checks each epoch)."""
    if world_size() == 1:
        return
    sums = torch.stack([p.detach().double().sum() for p in net.parameters()])  # (P,) one per tensor
    parts = [torch.empty_like(sums) for _ in range(world_size())]
    dist.all_gather(parts, sums)
    # identical weights give identical sums; a rank that missed one all-reduce is off by ~lr per weight
    bad = [r for r, p in enumerate(parts) if not torch.allclose(p, parts[0], rtol=1e-9, atol=1e-9)]
    if bad:
        raise RuntimeError(f"ranks {bad} hold other weights than rank 0: gradients were not all-reduced")


def torchrun_args(nproc: int, args: list[str]) -> list[str]:
    """torchrun's arguments that run `segkit ARGS` in nproc processes on this machine (on a free port)."""
    return ["--standalone", "--nproc-per-node", str(nproc), "-m", "segkit.cli", *args]


def launch(nproc: int, num_cases: int, args: list[str]) -> int:
    """Run `segkit ARGS` in nproc local processes with torchrun (started here); returns an exit code.

    A worker that failed printed its own error: its exit code (2 for a SegkitError) is returned.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if "WORLD_SIZE" in os.environ:
        raise ConfigError("--nproc inside torchrun: torchrun already started the processes; drop --nproc")
    check_shardable(num_cases, nproc)
    try:
        run(parse_args(torchrun_args(nproc, args)))
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it
    except SignalException:  # Ctrl-C or a kill reached torchrun, which stopped the workers
        return 130
    return 0
