"""Training batches: the fused slice crop, and the same batches from worker processes as from the main process."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from conftest import ROOT

from segkit.batches import (
    EpochBatches,
    _case_slices,
    epoch_batches,
    num_workers,
    sampling_helpers,
    slice_patch,
    split_stream,
    training_threads,
)
from segkit.config import load_config
from segkit.data.msd import read_dataset
from segkit.train import load_cases, slices_contiguous
from segkit.transforms import context_stack
from segkit.validate import CaseData

CPU = torch.device("cpu")


def _workers(cfg, n: int):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, workers=n))


def _reference_patch(c: CaseData, z: int, context: int, size, rng) -> tuple[np.ndarray, np.ndarray]:
    """The plain way: stack the context slices, pad (image and label: edge values) to the patch, random crop."""
    x = context_stack(c.image, np.array([z]), context)[0]  # (C, X, Y)
    y = c.label[:, :, z]
    short = [max(0, p - n) for n, p in zip(x.shape[1:], size, strict=True)]
    pads = [(k // 2, k - k // 2) for k in short]
    x = np.pad(x, [(0, 0), *pads], mode="edge")
    y = np.pad(y, pads, mode="edge")
    i = rng.integers(0, x.shape[1] - size[0] + 1)
    j = rng.integers(0, x.shape[2] - size[1] + 1)
    return x[:, i : i + size[0], j : j + size[1]].transpose(1, 2, 0), y[i : i + size[0], j : j + size[1]]


@pytest.mark.parametrize("size", [(32, 32), (48, 16), (16, 48), (64, 64)])
def test_slice_patch_equals_stack_pad_and_crop(size):
    rng = np.random.default_rng(0)
    image = slices_contiguous(rng.normal(size=(40, 24, 9)).astype(np.float32))
    label = slices_contiguous(rng.integers(0, 3, size=(40, 24, 9)).astype(np.uint8))
    case = CaseData("c", image, label, 0, np.arange(9), np.arange(9))
    for z, seed, context in itertools.product((0, 1, 4, 7, 8), range(3), (2, 0)):  # ends repeat their edge slices
        got = slice_patch(case, z, context, size, np.random.default_rng(seed))
        want = _reference_patch(case, z, context, size, np.random.default_rng(seed))
        assert got[0].shape == (*size, 2 * context + 1) and got[0].dtype == np.float32
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_outside_slices_come_from_slices_without_the_organ():
    """train.outside_slices adds seg-only slices from outside the organ (the liver model, rarely shown a slice
    above the liver, called a real heart liver); a volume the organ fills gives random ones; 0 draws nothing."""
    rng = np.random.default_rng(0)
    label = np.zeros((32, 32, 20), np.uint8)
    label[8:24, 8:24, 5:12] = 1  # the organ on slices 5-11
    image = slices_contiguous(rng.normal(size=label.shape).astype(np.float32))
    case = CaseData("c", image, slices_contiguous(label), 0, np.arange(5, 12), np.arange(5, 12))
    cfg = load_config(ROOT / "configs" / "ventricle.yaml", ["train.patch_size=[32,32]", "augment.enabled=false"])
    s = cfg.train.slices_per_case
    assert len(_case_slices(case, cfg, np.random.default_rng(1), None)) == s + 2
    cfg3 = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, outside_slices=3))
    for seed in range(20):
        rows = _case_slices(case, cfg3, np.random.default_rng(seed), None)
        assert len(rows) == s + 5
        assert all(y.any() for _, y in rows[:s])  # graded slices hold the organ
        assert not any(y.any() for _, y in rows[s + 2 :])  # the outside slices do not
    full = CaseData("f", image, case.label, 0, np.arange(20), np.arange(5, 12))  # the organ on every slice
    assert len(_case_slices(full, cfg3, np.random.default_rng(0), None)) == s + 5


def test_lesion_sampling_shows_a_small_lesion_as_often_as_a_large_one():
    """train.target_sampling: a random slice of the target picks a 20-slice cyst 20 times as often as a one-slice
    one (the liver model misses most cysts under 0.5 mL); "lesion" picks a random lesion, then a slice of it."""
    from segkit.train import target_parts

    label = np.zeros((32, 32, 40), np.uint8)
    label[:, :, 2:38] = 1  # the organ
    label[4:20, 4:20, 5:25] = 2  # a large cyst on slices 5-24
    label[26, 26, 30] = 2  # a one-voxel cyst on slice 30
    label[28:30, 2:4, 30:32] = 2  # another small one, on slices 30-31 (apart from the first: diagonal gap > 1)
    parts = target_parts(label, [2])
    assert [p.tolist() for p in parts] == [list(range(5, 25)), [30], [30, 31]]
    assert target_parts(np.zeros_like(label), [2]) == []
    image = slices_contiguous(np.zeros(label.shape, np.float32))
    base = load_config(ROOT / "configs" / "liver-cyst.yaml", ["train.patch_size=[32,32]", "augment.enabled=false"])
    s = base.train.slices_per_case

    def share_through_small(mode: str) -> float:
        cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, target_sampling=mode))
        target_z = np.flatnonzero((label == 2).any(axis=(0, 1)))  # what load_cases gives: slices 5-24, 30, 31
        case = CaseData("c", image, slices_contiguous(label), 0, np.arange(2, 38), target_z, 0.0, parts)
        rows = [_case_slices(case, cfg, np.random.default_rng(seed), None)[s + 1] for seed in range(600)]
        return float(np.mean([not (y[4:20, 4:20] == 2).any() for _, y in rows]))

    assert share_through_small("slice") < 0.15  # 2 of 22 target slices
    assert 0.55 < share_through_small("lesion") < 0.8  # 2 of 3 lesions
    with pytest.raises(Exception, match="target_sampling"):
        load_config(ROOT / "configs" / "liver-cyst.yaml", ["train.target_sampling=cyst"])


def test_slices_contiguous_keeps_values_and_stores_each_slice_in_one_block():
    v = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    s = slices_contiguous(v)
    assert np.array_equal(s, v) and s.shape == v.shape
    assert s[:, :, 3].flags.c_contiguous and not v[:, :, 3].flags.c_contiguous


def test_workers_draw_the_batches_the_main_process_draws(phantom_ventricle):
    """Step k's batch comes from its own seed, augmentation included: 2 worker processes give the same
    epoch, in the same order, as drawing in the main process (so a run does not depend on the core count)."""
    cfg = load_config(ROOT / "configs" / "ventricle.yaml", ["train.steps_per_epoch=5", "train.patch_size=[32, 32]"])
    cases = load_cases(read_dataset(phantom_ventricle).split("train"), cfg, "t")
    inline = list(
        epoch_batches(
            cases, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, workers=0)), 3, torch.device("cpu")
        )
    )
    two = list(
        epoch_batches(
            cases, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, workers=2)), 3, torch.device("cpu")
        )
    )
    assert len(inline) == len(two) == 5
    for a, b in zip(inline, two, strict=True):
        assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(inline[0][0], inline[1][0])  # steps differ from each other
    other_epoch = next(
        epoch_batches(
            cases, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, workers=0)), 4, torch.device("cpu")
        )
    )
    assert not torch.equal(inline[0][0], other_epoch[0])


@pytest.mark.parametrize(
    ("config", "outside"), [("ventricle.yaml", 0), ("ventricle.yaml", 1), ("ventricle-3d.yaml", 0)]
)
def test_each_rank_draws_exactly_its_cases_rows_of_the_whole_batch(phantom_ventricle, config, outside):
    """Under torchrun each rank samples and augments only its share of the batch: part r of n must be the
    rows distributed.shard_rows gives that rank of the batch one process draws, labels and grades included
    (the augmentation's pipelines passed on in whatever state the last part left them); also with slices from
    outside the organ (the liver recipe: more seg-only rows per case)."""
    from segkit.batches import sample_batch
    from segkit.distributed import shard_rows

    size = ["train.patch_size=[32, 32]"] if config == "ventricle.yaml" else ["train.patch_size=[16, 16, 16]"]
    more = ["train.cases_per_batch=4", "train.slices_per_case=2", f"train.outside_slices={outside}"]
    cfg = load_config(ROOT / "configs" / config, [*size, *more])
    cases = load_cases(read_dataset(phantom_ventricle).split("train"), cfg, "t")
    aug = EpochBatches(cases, cfg, 0).aug
    whole = sample_batch(cases, cfg, np.random.default_rng(7), aug)
    assert whole[0].shape[0] == 4 * (2 + 2 + outside)
    for parts in (2, 4):
        for part in range(parts):
            x, y, g = sample_batch(cases, cfg, np.random.default_rng(7), aug, part, parts)
            rows = shard_rows(whole[0].shape[0], 4, 2, part, parts)
            assert torch.equal(x, whole[0][rows]) and torch.equal(y, whole[1][rows])
            share = 4 // parts
            assert torch.equal(g, whole[2][part * share : (part + 1) * share])
    assert not torch.equal(whole[0][:4], whole[0][4:8])  # the cases' rows differ


@pytest.mark.parametrize(
    ("config", "outside"), [("ventricle.yaml", 0), ("ventricle.yaml", 1), ("ventricle-3d.yaml", 0)]
)
def test_batches_drawn_with_helper_processes_equal_those_drawn_alone(phantom_ventricle, config, outside):
    """split_stream: the main process and its helpers each draw a share of a batch's cases, and the batch put
    back together is row for row the one the main process draws alone (labels and grades included), with
    1 helper (2 cases each) or 3 (1 case each); with slices from outside the organ (the liver's recipe); 3-D
    patches as 2-D slices."""
    size = ["train.patch_size=[32, 32]"] if config == "ventricle.yaml" else ["train.patch_size=[16, 16, 16]"]
    more = ["train.steps_per_epoch=3", "train.cases_per_batch=4", "train.slices_per_case=2"]
    more += [f"train.outside_slices={outside}"] if outside else []
    cfg = load_config(ROOT / "configs" / config, [*size, *more])
    cases = load_cases(read_dataset(phantom_ventricle).split("train"), cfg, "t")
    alone = list(EpochBatches(cases, cfg, 1, end=3))
    assert len(alone) == 6 and alone[0][0].shape[0] == 4 * (2 + 2 + outside)
    for helpers in (1, 3):
        shared = list(split_stream(EpochBatches(cases, cfg, 1, end=3), helpers))
        assert len(shared) == 6
        for a, b in zip(alone, shared, strict=True):
            assert all(torch.equal(p, q) and p.stride() == q.stride() for p, q in zip(a, b, strict=True))
    # torch's default layout either way (a channels-last stack trained to other figures in the 5th digit)
    assert all(t.is_contiguous() for batch in alone for t in batch)
    assert not torch.equal(alone[0][0], alone[1][0])


def test_sampling_helpers_stop_with_their_stream(phantom_ventricle):
    """Helpers live as long as their stream: closed early (an interrupted run), none is left behind."""
    import multiprocessing

    cfg = load_config(ROOT / "configs" / "ventricle.yaml", ["train.patch_size=[32, 32]", "train.steps_per_epoch=5"])
    cases = load_cases(read_dataset(phantom_ventricle).split("train"), cfg, "t")
    before = set(multiprocessing.active_children())
    stream = split_stream(EpochBatches(cases, cfg, 0), 1)
    next(stream)
    helpers = set(multiprocessing.active_children()) - before
    assert len(helpers) == 1
    stream.close()
    assert not any(h.is_alive() for h in helpers)


def test_a_helper_that_fails_stops_the_stream_instead_of_hanging(phantom_ventricle, monkeypatch):
    cfg = load_config(ROOT / "configs" / "ventricle.yaml", ["train.patch_size=[32, 32]", "train.steps_per_epoch=2"])
    cases = load_cases(read_dataset(phantom_ventricle).split("train"), cfg, "t")
    draw = EpochBatches.draw

    def failing(self, index, sub=0, subs=1):
        if sub == 1:
            raise ValueError("a helper's bug")
        return draw(self, index, sub, subs)

    monkeypatch.setattr(EpochBatches, "draw", failing)  # the forked helper inherits it
    with pytest.raises(RuntimeError, match="helper process ended early"):
        list(split_stream(EpochBatches(cases, cfg, 0), 1))


def test_automatic_sampling_helpers(monkeypatch):
    """Inline sampling on a CPU whose cores torch uses takes a helper per further core, as many as share
    the batch's cases evenly; none where sampling workers run, on a GPU, or with train.workers set."""
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cfg = load_config(ROOT / "configs" / "ventricle.yaml")
    assert cfg.train.cases_per_batch == 4
    cores = {"n": 2}
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores["n"])), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: cores["n"])
    assert num_workers(cfg, CPU) == 0 and sampling_helpers(cfg, CPU) == 1  # 2 cores: 2 cases each
    assert sampling_helpers(cfg, torch.device("cuda")) == 0  # a GPU: workers draw ahead
    assert sampling_helpers(_workers(cfg, 0), CPU) == 0  # train.workers 0: all in the main process
    cores["n"] = 3
    assert sampling_helpers(cfg, CPU) == 1  # 4 cases do not split 3 ways: 2 processes
    cores["n"] = 5
    assert sampling_helpers(cfg, CPU) == 3  # one case each
    odd = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, cases_per_batch=3))
    cores["n"] = 2
    assert sampling_helpers(odd, CPU) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun's 2 processes on 2 cores: one core each
    assert sampling_helpers(cfg, CPU) == 0
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    cores["n"] = 1
    assert sampling_helpers(cfg, CPU) == 0
    cores["n"] = 2
    monkeypatch.setattr("multiprocessing.get_all_start_methods", lambda: ["spawn"])
    assert sampling_helpers(cfg, CPU) == 0  # no fork (Windows): inline


def test_automatic_worker_count(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cfg = load_config(ROOT / "configs" / "ventricle.yaml")
    assert cfg.train.workers == -1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert num_workers(cfg, torch.device("cpu")) == 0  # torch's threads use every core: sample inline
    assert num_workers(cfg, torch.device("cuda")) == 4  # a GPU step: spare cores draw batches (at most 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 14)
    assert num_workers(cfg, torch.device("cpu")) == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert num_workers(cfg, torch.device("cuda")) == 0  # one core: nothing to spare
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun's 4 processes on this machine share its cores
    assert num_workers(cfg, torch.device("cuda")) == 3
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert num_workers(cfg, CPU) == 2
    assert num_workers(_workers(cfg, 3), CPU) == 3


def test_a_run_long_stream_gives_each_epochs_batches_in_order(phantom_ventricle):
    """`segkit train` takes every epoch from one stream (its workers live for the run): from any start
    epoch, with workers, it holds exactly the batches each epoch draws on its own."""
    cfg = load_config(ROOT / "configs" / "ventricle.yaml", ["train.steps_per_epoch=3", "train.patch_size=[32, 32]"])
    cases = load_cases(read_dataset(phantom_ventricle).split("train"), cfg, "t")
    stream = list(epoch_batches(cases, _workers(cfg, 2), 2, CPU, end=5))
    alone = [b for epoch in (2, 3, 4) for b in epoch_batches(cases, _workers(cfg, 0), epoch, CPU)]
    assert len(stream) == len(alone) == 9
    for a, b in zip(stream, alone, strict=True):
        assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(stream[0][0], stream[3][0])  # epochs differ


def test_the_augmentation_is_built_by_the_process_that_starts_the_workers(phantom_ventricle):
    """Workers are started per stream (each epoch's own, or one for a whole `segkit train` run). Built in the
    parent, the pipelines (and albumentations and OpenCV) come with the fork; built in the workers, fresh
    workers imported them again before their first batch (0.94 s against 0.29 s on 2 cores)."""
    cfg = load_config(ROOT / "configs" / "ventricle.yaml", ["train.steps_per_epoch=2", "train.patch_size=[32, 32]"])
    cases = load_cases(read_dataset(phantom_ventricle).split("train"), cfg, "t")
    spatial, intensity = EpochBatches(cases, cfg, 0).aug
    assert callable(spatial) and callable(intensity)
    off = load_config(ROOT / "configs" / "ventricle.yaml", ["augment.enabled=false"])
    assert EpochBatches(cases, off, 0).aug is None


def test_workers_leave_the_global_torch_stream_alone(phantom_ventricle):
    """Dropout draws from torch's global generator: starting workers must not advance it, or a run with
    workers would train differently from one without."""
    cfg = load_config(ROOT / "configs" / "ventricle.yaml", ["train.steps_per_epoch=2", "train.patch_size=[32, 32]"])
    cases = load_cases(read_dataset(phantom_ventricle).split("train"), cfg, "t")
    torch.manual_seed(5)
    list(epoch_batches(cases, _workers(cfg, 1), 0, CPU))
    after_workers = torch.rand(3)
    torch.manual_seed(5)
    list(epoch_batches(cases, _workers(cfg, 0), 0, CPU))
    assert torch.equal(torch.rand(3), after_workers)


def test_a_run_with_sampling_workers_trains_exactly_like_one_without(phantom_ventricle, tmp_path, monkeypatch):
    """`segkit train` with 2 sampling processes, or with a helper drawing half of each batch beside the main
    process: the same losses, epoch by epoch, as a run that samples inline."""
    import csv
    import json

    from conftest import TINY

    from segkit.train import fit

    keys = ("train_loss", "train_seg_loss", "train_grade_loss", "val_dice")
    losses = []
    for workers in (0, 2, -1):
        cfg = load_config(ROOT / "configs" / "ventricle.yaml", [*TINY, f"train.workers={workers}"])
        if workers == -1:  # as on 2 cores whose torch threads take both: the main process and a helper
            monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
            monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
            assert num_workers(cfg, CPU) == 0 and sampling_helpers(cfg, CPU) == 1
        fit(cfg, phantom_ventricle, tmp_path / str(workers))
        rows = list(csv.DictReader((tmp_path / str(workers) / "metrics.csv").open()))
        losses.append([[r[k] for k in keys] for r in rows])
    assert len(losses[0]) == 2 and losses[0] == losses[1] == losses[2]
    plans = [json.loads((tmp_path / str(w) / "run.json").read_text())["sampling"] for w in (0, 2, -1)]
    assert [(p["workers"], p["helpers"]) for p in plans] == [(0, 0), (2, 0), (0, 1)]  # run.json says how


def test_a_many_core_cpu_leaves_cores_to_sampling_workers(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cfg = load_config(ROOT / "configs" / "ventricle.yaml")
    threads = {"n": 16}
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads["n"])
    threads["n"] = training_threads(cfg, CPU)
    assert threads["n"] == 14 and num_workers(cfg, CPU) == 2  # 14 torch threads + 2 sampling workers
    assert training_threads(cfg, torch.device("cuda")) is None  # a GPU run: workers take the spare cores anyway
    set_threads = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, num_threads=16))
    assert training_threads(set_threads, CPU) is None and training_threads(_workers(cfg, 0), CPU) is None
    threads["n"] = 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert training_threads(cfg, CPU) is None and num_workers(cfg, CPU) == 0  # 2 cores: inline (measured faster)
    threads["n"] = 64
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert training_threads(cfg, CPU) == 60  # at most MAX_WORKERS workers
    threads["n"] = 8  # 8 of 16 logical cores (SMT): torch leaves 8 spare, workers take them as before
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert training_threads(cfg, CPU) is None and num_workers(cfg, CPU) == 4


def test_an_epochs_losses_are_the_means_of_its_steps_losses(phantom_ventricle):
    """train_one_epoch sums the losses on the device and reads them once: the epoch's figures must be the
    means of the step losses computed one by one (lr 0: the weights do not move between steps)."""
    from conftest import TINY

    from segkit.losses import SegGradeLoss, grade_class_weights
    from segkit.models import build_model
    from segkit.train import _build_optimizer, train_one_epoch

    cfg = load_config(ROOT / "configs" / "ventricle.yaml", [*TINY, "train.lr=0", "train.steps_per_epoch=3"])
    cases = load_cases(read_dataset(phantom_ventricle).split("train"), cfg, "t")
    torch.manual_seed(0)
    net = build_model(cfg)
    opt, _ = _build_optimizer(net, cfg)
    loss_fn = SegGradeLoss.for_config(cfg, grade_class_weights([c.grade for c in cases], len(cfg.task.grades)))
    got = train_one_epoch(net, loss_fn, opt, cases, cfg, epoch=1)
    torch.manual_seed(cfg.train.seed * 100_003 + 1)  # dropout's stream, as train_one_epoch seeds it
    net.train()
    steps = []
    with torch.no_grad():
        for x, y, g in epoch_batches(cases, _workers(cfg, 0), 1, CPU):
            logits, feats = net(x)
            grade = net.pool_grade(
                feats[: cfg.train.cases_per_batch * cfg.train.slices_per_case], cfg.train.cases_per_batch
            )
            steps.append([float(v) for v in loss_fn(logits, y, grade, g)])
    want = np.mean(steps, axis=0)
    assert len(steps) == 3 and len({s[0] for s in steps}) == 3  # three different batches
    assert [got["train_loss"], got["train_seg_loss"], got["train_grade_loss"]] == pytest.approx(want, rel=1e-5)


def test_garbage_made_before_the_workers_start_is_collected_by_this_process(phantom_ventricle, tmp_path):
    """A worker that collected an inherited ONNX Runtime session (garbage left by an earlier evaluation) hung in
    its destructor holding the GIL. Garbage from before the fork must be freed in the parent, before the workers
    exist (automatic collection is off here, so only epoch_batches can have collected it)."""
    import gc
    import os

    cfg = load_config(ROOT / "configs" / "ventricle.yaml", ["train.steps_per_epoch=1", "train.patch_size=[32, 32]"])
    cases = load_cases(read_dataset(phantom_ventricle).split("train"), cfg, "t")
    marker = tmp_path / "freed_by"

    class Session:  # stands for the session: its finaliser says which process ran it
        def __del__(self) -> None:
            marker.write_text(str(os.getpid()))

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        cycle = [Session()]
        cycle.append(cycle)  # unreachable once dropped: only a collection frees it
        del cycle
        batches = epoch_batches(cases, _workers(cfg, 1), 0, CPU)
        assert marker.read_text() == str(os.getpid())
        assert len(list(batches)) == 1 and gc.get_freeze_count() == 0  # the parent's collector is whole again
    finally:
        if was_enabled:
            gc.enable()
