"""Benchmark of `segkit predict` (issue #12): whole-process time and memory, a phase split, two baselines.

Run:  .venv/bin/python scripts/bench.py [--repeats 3] [--out bench.json] [--parts a,b,c,d,e,f] [--device cuda]

(a) whole `segkit predict` processes: median wall time of N runs and peak RSS, on a seeded 182x218x182
    brain-like MRI (shipped ventricle model; --engine auto, i.e. ONNX Runtime, and --engine torch) and a
    512x512x300 CT-like volume (shipped liver-cyst model);
(b) one predict split into start-up (imports), model load, read, preprocess, network (predict_preprocessed),
    inverse (invert_probs), write (mask, overlay, report), timed around the real functions in a fresh process;
(c) MONAI sliding_window_inference (roi = patch size, sw_batch_size 1, overlap 0.25, constant) on the same
    2.5-D slice stacks and PyTorch model, against segkit's network on its default engine (and on PyTorch):
    Dice against segkit's mask and the time ratio; again with roi = the whole slice (padded as segkit pads
    it), the one roi at which MONAI's defaults give segkit's masks;
(d) the network forward in fp32 vs bf16 autocast on CPU (with the CPU's bf16/AMX flags); on CUDA fp32 vs
    fp16 and bf16 autocast, with the largest probability change;
(e) training: the compute bound (forward + backward + Adam on a batch in memory) against segkit's own
    train_one_epoch on loaded cases (sampling, cropping, augmentation included), and their ratio; the wait
    for an epoch's first batch, from fresh sampling workers and from the run's (what `segkit train` keeps);
    where segkit's helper process shares each batch, how long the main process draws its share and then
    waits for the helper's, right after a step and with torch idle.
    `--device cuda` trains on the GPU: the bound in fp32, fp16 and bf16, and the loop with each worker
    count in --workers. On a CPU with native bf16 (what train.amp auto then picks) the bound in fp32 and bf16.
(f) a MONAI user's predict of the same brain with the same network, as a whole process (monai_child: MONAI's
    loading, orientation, resizing, intensity, sliding_window_inference with roi = the whole slice, Invertd,
    argmax, largest component, SaveImaged), against `segkit predict --no-tta --device cpu --set
    eval.strip_to_organ=false` (the same network work: one pass, no mirror, both on the CPU), alternating runs:
    wall time, peak RSS, both split by phase, Dice between their masks.
On a lent GPU machine, scripts/device_check.sh runs (d) and (e) there, with the CLI's train, predict and
evaluate on CUDA.
Children run with the MALLOC_* settings in CHILD_ENV (recorded in the JSON). A benchmark, never a test:
numbers taken while something else loads the machine say little.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy, torch and segkit load inside functions: the split child times its own imports
    import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEGKIT = [str(Path(sys.executable).parent / "segkit")]  # the console script users run
# glibc: serve every allocation from the heap and never trim it, so big arrays are not re-faulted each time
CHILD_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(4 * 1024**3)}
CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def brain_like(path: Path) -> Path:
    """182x218x182 T1-like head at 1 mm on the MNI grid: scalp, brain, two dark lateral ventricles, noise."""
    import nibabel as nib
    import numpy as np

    shape = (182, 218, 182)
    x, y, z = np.ogrid[[slice(-1, 1, complex(0, n)) for n in shape]]
    head = (x / 0.85) ** 2 + (y / 0.9) ** 2 + (z / 0.8) ** 2
    img = np.where(head < 1, 250.0, 0.0) + np.where(head < 0.75, 350.0, 0.0)
    for side in (-0.1, 0.1):
        img[((x - side) / 0.07) ** 2 + ((y - 0.05) / 0.3) ** 2 + ((z - 0.1) / 0.12) ** 2 < 1] = 150.0
    img += np.random.default_rng(0).normal(0, 20, shape) * (head < 1)
    affine = np.array([[1.0, 0, 0, -90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(img.clip(0).astype(np.int16), affine), str(path))
    return path


def ct_like(path: Path) -> Path:
    """512x512x300 abdomen-like CT in int16 HU: air, body, liver with cysts, spine, noise; LPS-like 0.75x0.75x1.5."""
    import nibabel as nib
    import numpy as np

    shape = (512, 512, 300)
    x, y, z = np.ogrid[[slice(-1, 1, complex(0, n)) for n in shape]]
    vol = np.full(shape, -1000, np.int16)
    vol[((x / 0.8) ** 2 + (y / 0.6) ** 2 < 1)[:, :, 0]] = 40
    vol[(((x + 0.3) / 0.3) ** 2 + ((y + 0.1) / 0.3) ** 2 + (z / 0.5) ** 2) < 1] = 60
    for cx, cz in ((-0.35, 0.1), (-0.2, -0.2)):
        vol[((x - cx) / 0.05) ** 2 + ((y + 0.1) / 0.05) ** 2 + ((z - cz) / 0.04) ** 2 < 1] = 5
    vol[((x / 0.06) ** 2 + ((y - 0.45) / 0.06) ** 2 < 1)[:, :, 0]] = 700
    vol += np.random.default_rng(1).integers(-15, 16, shape, dtype=np.int16)
    nib.save(nib.Nifti1Image(vol, np.diag([-0.75, -0.75, 1.5, 1.0])), str(path))
    return path


def pick_model(name: str, tmp: Path) -> tuple[str, str | None]:
    """The shipped model, or (when the file no longer loads against this code) a fresh one of its config."""
    import torch

    from segkit.checkpoint import load_checkpoint, save_checkpoint, weights_dir
    from segkit.config import config_from_dict
    from segkit.errors import CheckpointError
    from segkit.infer import load_model
    from segkit.models import build_model

    try:
        load_model(name, "cpu")
        return name, None
    except CheckpointError as e:
        state = load_checkpoint(weights_dir() / f"{name}.pt")
        torch.manual_seed(0)
        path = tmp / f"{name}-fresh.pt"
        net = build_model(config_from_dict(state["config"]))
        save_checkpoint(path, {"model": net.state_dict(), "config": state["config"], "epoch": None})
        missing = sorted(set(net.state_dict()) - set(state["model"])) or [str(e)[:100]]
        why = f"shipped {name}.pt does not load against this code (missing {', '.join(missing[:4])})"
        return str(
            path
        ), f"{why}: benched a freshly initialised model of its config instead (same architecture and size)"


def run_predict(image: Path, model: str, out: Path, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    """One whole `segkit predict` process: (wall seconds, peak RSS MiB), from wait4's rusage of that child."""
    cmd = [*SEGKIT, "predict", str(image), "--model", model, "--out", str(out), *extra]
    return run_child(cmd, out.parent / f"{out.name}.stderr")[:2]


def whole_process(image: Path, model: str, tmp: Path, repeats: int, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    runs = [run_predict(image, model, tmp / f"out{i}", extra) for i in range(repeats)]
    walls, rss = [w for w, _ in runs], [r for _, r in runs]
    return {"wall_s": walls, "median_s": statistics.median(walls), "peak_rss_mib": max(rss)}


# the segkit.infer functions one predict spends its time in, in order (write_prediction holds the last two)
TIMED = ("load_model", "read_input", "resample_volume", "normalize", "predict_preprocessed", "invert_probs")
WRITES = ("write_prediction", "write_volume", "write_overlay")


def split_child(image: str, model: str, out: str, *settings: str) -> None:
    """In a fresh process: predict_paths with perf_counter around the real functions it calls; JSON on stdout.
    settings: predict's `eval.key=value` settings, `no-tta` (--no-tta) and `cpu` (--device cpu)."""
    t0 = time.perf_counter()
    import segkit.cli  # noqa: F401  (what the console script imports before predict)
    import segkit.infer as infer

    times = {"startup_imports": time.perf_counter() - t0}
    for name in TIMED + WRITES:

        def timed(*a: Any, _real: Any = getattr(infer, name), _name: str = name, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return _real(*a, **k)
            finally:
                times[_name] = times.get(_name, 0.0) + time.perf_counter() - t

        setattr(infer, name, timed)
    tta = False if "no-tta" in settings else None
    device = "cpu" if "cpu" in settings else "auto"
    rest = [x for x in settings if x not in ("no-tta", "cpu")]
    infer.predict_paths(Path(image), model, Path(out), device=device, tta=tta, settings=rest)
    total = time.perf_counter() - t0
    times["other"] = total - sum(v for k, v in times.items() if k not in WRITES[1:])
    times["total"] = total
    print(json.dumps({k: round(v, 3) for k, v in times.items()}))


def phase_split(image: Path, model: str, tmp: Path, settings: tuple[str, ...] = ()) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--split-child", str(image), model, str(tmp / "split"), *settings]
    res = subprocess.run(cmd, env={**os.environ, **CHILD_ENV}, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def dice(a: np.ndarray, b: np.ndarray, labels: tuple[str, ...]) -> dict[str, float]:
    """Dice per foreground label between two masks (1.0 when both are empty)."""
    counts = [(int(((a == i) & (b == i)).sum()), int((a == i).sum() + (b == i).sum())) for i in range(1, len(labels))]
    return {
        n: round(2 * both / total, 4) if total else 1.0 for n, (both, total) in zip(labels[1:], counts, strict=True)
    }


def sliding_window_baseline(image: Path, model: str) -> dict[str, Any]:
    """segkit's network (its default engine, and PyTorch) vs MONAI sliding_window_inference with default
    settings on the PyTorch model, all fp32."""
    from segkit.infer import load_model, predict_preprocessed, read_input
    from segkit.transforms import preprocess_image, probs_to_mask

    net, cfg, _ = load_model(model, "cpu", "torch", tta=False)
    fast, _, info = load_model(model, "cpu", tta=False)  # what segkit predict runs: ONNX Runtime where the model has it
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp="off"))
    vol = read_input(image)
    pre, grid = preprocess_image(vol.data, vol.affine, cfg)
    t = time.perf_counter()
    probs, _, _ = predict_preprocessed(fast, pre, cfg)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    probs_torch, _, _ = predict_preprocessed(net, pre, cfg)
    ours_torch = time.perf_counter() - t

    def monai(whole_slice: bool) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        out = monai_slices(net, pre, cfg, whole_slice)
        return out, time.perf_counter() - t

    swi, theirs = monai(False)
    whole, theirs_whole = monai(True)
    mask = probs_to_mask(probs, grid)
    times = {"segkit_network_s": ours, "segkit_torch_network_s": ours_torch, "sliding_window_s": theirs}
    times["time_ratio_sliding_over_segkit"] = theirs / ours
    times["sliding_window_whole_slice_s"] = theirs_whole
    times["time_ratio_whole_slice_over_segkit"] = theirs_whole / ours
    return {
        "roi": list(cfg.train.patch_size),
        "engine": info["engine"],
        **times,
        "dice_sliding_vs_segkit": dice(probs_to_mask(swi, grid), mask, cfg.task.labels),
        "dice_whole_slice_vs_segkit": dice(probs_to_mask(whole, grid), mask, cfg.task.labels),
        "dice_torch_vs_engine": dice(probs_to_mask(probs_torch, grid), mask, cfg.task.labels),
    }


def monai_slices(net: Any, pre: np.ndarray, cfg: Any, whole_slice: bool) -> np.ndarray:
    """Class probabilities (K, X, Y, Z) of the PyTorch model over the preprocessed volume through MONAI's
    sliding_window_inference with its defaults (sw_batch_size 1, overlap 0.25, constant blend): roi = the training
    patch, or roi = the whole slice padded as predict_preprocessed pads it (one window a slice: segkit's masks).
    The 2.5-D glue (stacks of 16 slices with their context slices as channels) is segkit's."""
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from segkit.transforms import context_stack, pad_to_multiple

    out = None
    with torch.no_grad():
        for z0 in range(0, pre.shape[2], 16):  # (N, C, X, Y) stacks of 5 context slices, as segkit's
            z = np.arange(z0, min(pre.shape[2], z0 + 16))
            x = context_stack(pre, z, cfg.preprocess.context_slices)
            h, w = x.shape[2:]
            if whole_slice:
                x = pad_to_multiple(x)[0]
            roi = x.shape[2:] if whole_slice else tuple(cfg.train.patch_size)
            logits = sliding_window_inference(torch.from_numpy(x), roi, 1, lambda p: net(p)[0], overlap=0.25)
            probs = torch.softmax(logits[:, :, :h, :w].float(), 1).permute(1, 2, 3, 0).numpy()
            if out is None:
                out = np.empty((probs.shape[0], *pre.shape), np.float32)
            out[..., z0 : z0 + len(z)] = probs
    assert out is not None
    return out


def monai_child(image: str, model: str, out: str) -> None:
    """(f, in a fresh process) what a MONAI user writes to predict with the same network, timed by phase:
    MONAI's LoadImaged, Orientationd, Resized (trilinear, the model grid segkit plans), the model's intensity
    standardisation in a Lambdad (segkit.transforms.normalize: MONAI's percentile clip counts the background), the
    network through sliding_window_inference (monai_slices, roi = the
    whole slice: the one roi giving segkit's masks), Invertd (linear) back to the input grid, AsDiscreted
    (argmax), KeepLargestConnectedComponentd where the model keeps the largest piece, SaveImaged. JSON on stdout."""
    t0 = time.perf_counter()
    import numpy as np
    import torch
    from monai.data import MetaTensor
    from monai.transforms import (
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        Invertd,
        KeepLargestConnectedComponentd,
        Lambdad,
        LoadImaged,
        Orientationd,
        Resized,
        SaveImaged,
    )

    times = {"startup_imports": time.perf_counter() - t0}

    def phase(name: str, fn: Any, *a: Any) -> Any:
        t = time.perf_counter()
        result = fn(*a)
        times[name] = time.perf_counter() - t
        return result

    from segkit.infer import load_model
    from segkit.transforms import normalize, plan_grid

    def standardise(t: MetaTensor) -> MetaTensor:
        """The model's own intensity step (MONAI has no percentile clip over the body alone): the same input."""
        x = torch.from_numpy(normalize(t.numpy(), cfg.task.modality, cfg.preprocess))
        return MetaTensor(x, meta=t.meta, applied_operations=t.applied_operations)

    net, cfg, info = phase("load_model", load_model, model, "cpu", "torch", False)
    data = phase("read", LoadImaged("image", image_only=True), {"image": image})
    data = EnsureChannelFirstd("image", channel_dim="no_channel")(data)
    grid = plan_grid(tuple(data["image"].shape[1:]), data["image"].affine.numpy(), cfg.preprocess)
    pre = Compose(
        [
            Orientationd("image", axcodes="RAS"),
            Resized("image", spatial_size=grid.model_shape, mode="trilinear"),
            Lambdad("image", standardise),
        ]
    )
    data = phase("preprocess", pre, data)
    probs = phase("network", monai_slices, net, data["image"][0].numpy(), cfg, True)
    image = data["image"]  # the probabilities carry the image's record of its transforms, for Invertd
    data["pred"] = MetaTensor(torch.from_numpy(probs), meta=image.meta, applied_operations=image.applied_operations)
    inverse = Invertd("pred", pre, orig_keys="image", nearest_interp=False)
    data = phase("inverse", lambda d: AsDiscreted("pred", argmax=True)(inverse(d)), data)
    largest = [i + 1 for i, rule in enumerate(info["keep_components"].values()) if rule == "largest"]
    post = [KeepLargestConnectedComponentd("pred", applied_labels=largest)] if largest else []
    save = SaveImaged("pred", output_dir=out, output_postfix="mask", output_dtype=np.uint8, separate_folder=False)
    phase("postprocess_write", Compose([*post, save]), data)
    times["total"] = time.perf_counter() - t0
    print(json.dumps({k: round(v, 3) for k, v in times.items()}))


def run_child(cmd: list[str], err_path: Path) -> tuple[float, float, str]:
    """A whole child process: (wall seconds, peak RSS MiB from wait4's rusage, its stdout)."""
    with open(err_path, "w+") as err, tempfile.TemporaryFile("w+") as stdout:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env={**os.environ, **CHILD_ENV}, stdout=stdout, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status):
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read()}")
        stdout.seek(0)
        return wall, usage.ru_maxrss / 1024, stdout.read()


def monai_whole_process(image: Path, model: str, tmp: Path, repeats: int) -> dict[str, Any]:
    """(f) segkit predict in one pass without TTA (the same network work as MONAI's) against monai_child, both
    as whole processes, alternating: median wall time, peak RSS, each one's phases, Dice between the masks."""
    import nibabel as nib
    import numpy as np

    from segkit.infer import load_model

    labels = load_model(model, "cpu", tta=False)[1].task.labels
    one_pass = ("--no-tta", "--device", "cpu", "--set", "eval.strip_to_organ=false")  # MONAI's child runs on the CPU
    walls: dict[str, list[float]] = {"segkit": [], "monai": []}
    rss: dict[str, float] = {"segkit": 0.0, "monai": 0.0}
    phases = {}
    for i in range(repeats):
        wall, peak = run_predict(image, model, tmp / f"ours{i}", one_pass)
        walls["segkit"].append(wall)
        rss["segkit"] = max(rss["segkit"], peak)
        cmd = [sys.executable, __file__, "--monai-child", str(image), model, str(tmp / f"monai{i}")]
        wall, peak, stdout = run_child(cmd, tmp / "monai.stderr")
        walls["monai"].append(wall)
        rss["monai"] = max(rss["monai"], peak)
        phases["monai"] = json.loads(stdout.strip().splitlines()[-1])
    phases["segkit"] = phase_split(image, model, tmp, ("no-tta", "cpu", "eval.strip_to_organ=false"))
    name = image.name.removesuffix(".nii.gz")
    theirs = np.asarray(nib.load(str(tmp / "monai0" / f"{name}_mask.nii.gz")).dataobj)
    ours = np.asarray(nib.load(str(tmp / "ours0" / f"{name}_mask.nii.gz")).dataobj)
    med = {k: statistics.median(v) for k, v in walls.items()}
    return {
        "segkit_args": ["predict", "IMAGE", "--model", model, *one_pass],
        "wall_s": walls,
        "median_s": med,
        "peak_rss_mib": rss,
        "time_ratio_monai_over_segkit": med["monai"] / med["segkit"],
        "phases_s": phases,
        "dice_monai_vs_segkit": dice(theirs, ours, labels),
    }


def precision(image: Path, model: str, repeats: int) -> dict[str, Any]:
    """Forward of 16 context stacks: fp32 vs bf16 autocast on CPU; fp32 vs AMP (fp16) on CUDA when there is one."""
    import numpy as np
    import torch

    from segkit.infer import load_model, read_input
    from segkit.transforms import context_stack, pad_to_multiple, preprocess_image

    net, cfg, _ = load_model(model, "cpu", "torch")
    vol = read_input(image)
    pre, _ = preprocess_image(vol.data, vol.affine, cfg)
    mid = pre.shape[2] // 2
    x = torch.from_numpy(
        pad_to_multiple(context_stack(pre, np.arange(mid - 8, mid + 8), cfg.preprocess.context_slices))[0]
    )

    def forward(dev: str, dtype: torch.dtype | None) -> tuple[float, torch.Tensor]:
        times, out = [], None
        for _ in range(repeats + 1):  # the first run warms up
            t = time.perf_counter()
            with torch.no_grad(), torch.autocast(dev, dtype=dtype or torch.float32, enabled=dtype is not None):
                out = torch.softmax(net(x.to(dev))[0].float(), 1).cpu()
            if dev == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return statistics.median(times[1:]), out

    from segkit.forward import native_bf16

    result: dict[str, Any] = {
        "slices": int(x.shape[0]),
        "native_bf16": native_bf16(),  # what `amp: auto` trains with on this CPU
        "mkldnn_bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported(),  # oneDNN's check: yes on any AVX512 CPU
    }
    fp32, ref = forward("cpu", None)
    bf16, low = forward("cpu", torch.bfloat16)
    result["cpu"] = {"fp32_s": fp32, "bf16_s": bf16, "max_prob_diff": float((low - ref).abs().max())}
    if torch.cuda.is_available():
        net.cuda()
        fp32, ref = forward("cuda", None)
        amp, low = forward("cuda", torch.float16)
        bf16, low_bf16 = forward("cuda", torch.bfloat16)
        result["cuda"] = {
            "device": torch.cuda.get_device_name(),
            "fp32_s": fp32,
            "amp_fp16_s": amp,
            "amp_bf16_s": bf16,
            "max_prob_diff": float((low - ref).abs().max()),
            "max_prob_diff_bf16": float((low_bf16 - ref).abs().max()),
        }
    return result


def train_loop(
    data: Path | None, tmp: Path, steps: int, cases: int, rounds: int, device: str = "cpu", workers: str = ""
) -> dict[str, Any]:
    """(e) Compute bound vs the real train loop, default ventricle config, on this process's threads.

    Bound: forward + backward + Adam step on one batch already in memory (under the config's AMP, as
    `segkit train` runs it). Loop: segkit's own train_one_epoch on `cases` loaded training cases (slice
    sampling, cropping and augmentation included, in worker processes where train.workers gives any; the
    data pool is drawn beforehand by `segkit data make`). `rounds` rounds of `steps` steps each way,
    alternating, so a slow spell of the machine hits both; the medians are reported. On a CPU, then the
    same with torch on one thread fewer and one sampling worker (train.workers=1): what a worker buys where
    a core is left to it. On CUDA, the loop with each sampling-worker count in `workers` (how many the GPU
    needs to be fed) and the bound under each AMP setting; on a CPU with native bf16, the bound in fp32 and
    bf16. Then one rank's sampling time a step when 1, 2 or 4 ranks share the batch; the wait for an epoch's
    first batch (fresh workers against the run's); with a helper process, where its batch's wait goes
    (_helper_split); last, torch's default layout against channels_last.
    """
    import numpy as np
    import torch

    from segkit.allocator import tune_allocator
    from segkit.batches import sample_batch, sampling_helpers, training_threads
    from segkit.config import load_config
    from segkit.data.msd import read_dataset
    from segkit.forward import native_bf16
    from segkit.train import load_cases

    if data is None or not (data / "dataset.json").is_file():
        data = tmp / "ventricle"
        subprocess.run(
            [*SEGKIT, "data", "make", "ventricle", "--out", str(data), "--cases", str(cases + 4)], check=True
        )
    tune_allocator()  # as `segkit train` does, for both measurements
    threads = torch.get_num_threads()
    config = ROOT / "configs" / "ventricle.yaml"
    base = load_config(config, [f"train.steps_per_epoch={steps}"])
    train = load_cases(read_dataset(data).split("train")[:cases], base, "bench")
    batch = sample_batch(train, base, np.random.default_rng(0), None)
    out: dict[str, Any] = {"data": str(data), "cases_loaded": len(train), "steps": steps, "rounds": rounds}
    out["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    out["slices_per_step"] = int(batch[0].shape[0])
    # train.workers -1 (auto) on a CPU: what segkit does, the main process and this many helpers drawing each batch
    helpers = sampling_helpers(base, torch.device("cpu")) if device == "cpu" else 0
    helper_row = f"inline + {helpers} helper process{'es' if helpers > 1 else ''} (segkit's rule)"
    if device == "cuda":
        variants = {f"{w} workers": (threads, int(w)) for w in (workers or "4,8,14").split(",")}
        out["bound_by_amp"] = {
            amp: _median_bound(load_config(config, [f"train.amp={amp}"]), batch, rounds, steps, device)
            for amp in ("off", "fp16", "bf16")
        }
    else:
        if native_bf16():  # what train.amp auto picks here (bf16): measured against fp32
            out["bound_by_amp"] = {
                amp: _median_bound(load_config(config, [f"train.amp={amp}"]), batch, rounds, steps, device)
                for amp in ("off", "bf16")
            }
        variants = {"inline": (threads, 0)}
        if helpers:
            variants[helper_row] = (threads, -1)
        if threads > 1:
            variants[f"{threads - 1} threads + 1 worker"] = (threads - 1, 1)
        rule = training_threads(base, torch.device("cpu"))  # from 6 cores: what `segkit train` does by default
        if rule:
            variants[f"{rule} threads + {threads - rule} workers (segkit's rule)"] = (rule, threads - rule)
    for num_threads in dict.fromkeys(t for t, _ in variants.values()):  # same threads: loops in the same rounds
        torch.set_num_threads(num_threads)
        group = {
            n: load_config(config, [f"train.steps_per_epoch={steps}", f"train.workers={w}"])
            for n, (t, w) in variants.items()
            if t == num_threads
        }
        bounds, loops = _bound_and_loops(group, train, batch, rounds, device)
        bound = float(np.median(bounds))
        for name, times in loops.items():
            loop = float(np.median(times))
            out[name] = {
                "threads": num_threads,
                "workers": variants[name][1],
                "bound_s_per_step": round(bound, 4),
                "loop_s_per_step": round(loop, 4),
                "bound_slices_per_s": round(out["slices_per_step"] / bound, 1),
                "loop_slices_per_s": round(out["slices_per_step"] / loop, 1),
                "loop_over_bound": round(bound / loop, 3),
                "loop_over_bound_per_round": [round(b / lo, 3) for b, lo in zip(bounds, times, strict=True)],
            }
    torch.set_num_threads(threads)
    out["sampling_per_rank_s"] = _sampling_per_rank(train, base, steps)
    if helpers:
        out["helper_split_ms"] = split = _helper_split(train, base, batch, helpers, steps)
        bound, least = out[helper_row]["bound_s_per_step"], split["back_to_back"]["batch"] / 1000
        out["loop_ceiling"] = round(bound / (bound + least), 3)
    out["epoch_start_s"] = _epoch_start(data, cases, device, rounds)
    out["memory_format"] = memory_formats(base, batch, rounds, steps, device)
    return out


def _epoch_start(data: Path, cases: int, device: str, rounds: int) -> dict[str, float]:
    """The wait for an epoch's first batch after the main process paused 0.5 s (as when it validates), with
    fresh sampling workers each epoch and with workers that live for the run (what `segkit train` does),
    in a fresh process that has drawn no batch itself, as `segkit train`'s: medians over `rounds` epochs."""
    cmd = [sys.executable, __file__, "--epoch-start-child", str(data), str(cases), device, str(rounds)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def epoch_start_child(data: str, cases: str, device: str, rounds: str) -> None:
    """(in a fresh process) _epoch_start's measurement, 1 worker, 4-step epochs; JSON on stdout."""
    import torch

    from segkit.batches import epoch_batches
    from segkit.config import load_config
    from segkit.data.msd import read_dataset
    from segkit.train import load_cases

    cfg = load_config(ROOT / "configs" / "ventricle.yaml", ["train.workers=1", "train.steps_per_epoch=4"])
    train = load_cases(read_dataset(Path(data)).split("train")[: int(cases)], cfg, "bench")
    dev, epochs = torch.device(device), int(rounds)

    def run_long() -> Iterator[Iterator[Any]]:  # started when first asked, not beside the fresh workers' timing
        stream = epoch_batches(train, cfg, 0, dev, end=epochs + 1)
        for _ in range(epochs + 1):
            yield stream

    streams = {
        "fresh_workers_each_epoch_s": (epoch_batches(train, cfg, e, dev) for e in range(epochs + 1)),
        "run_long_workers_s": run_long(),
    }
    out = {}
    for name, per_epoch in streams.items():
        times = []
        for batches in per_epoch:
            t = time.perf_counter()
            next(batches)
            times.append(time.perf_counter() - t)
            for _ in range(cfg.train.steps_per_epoch - 1):
                next(batches)
            time.sleep(0.5)  # the main process validating
        out[name] = statistics.median(times[1:])  # the first epoch also pays the one import in this process
    print(json.dumps(out))


def _sampling_per_rank(train: list, cfg: Any, steps: int) -> dict[str, float]:
    """Seconds a step of one rank's sampling and augmentation takes (main process, torch's threads idle) when
    1, 2 or 4 torchrun ranks share the batch: each draws only its own cases (segkit.batches.sample_batch)."""
    import numpy as np

    from segkit.batches import EpochBatches, sample_batch

    aug = EpochBatches(train, cfg, 0).aug
    out = {}
    for parts in (1, 2, 4):
        t = time.perf_counter()
        for k in range(steps):
            sample_batch(train, cfg, np.random.default_rng([cfg.train.seed, 0, k]), aug, 0, parts)
        out[str(parts)] = round((time.perf_counter() - t) / steps, 4)
    return out


def _helper_split(train: list, cfg: Any, batch: tuple, helpers: int, steps: int) -> dict[str, dict[str, float]]:
    """Where the helper loop's wait for a batch goes (segkit.batches.split_stream, timed around its own draw and
    wait): median ms the main process draws its share, then waits for the helpers' shares, and the whole batch
    (merge included). Once right after a training step, as in the loop (torch's OpenMP threads may still spin
    on the helpers' cores), once with torch idle for 0.2 s before each batch (no OpenMP thread spinning): the
    difference in the wait is what the spinning costs the helpers; and once batch after batch, nothing between:
    the least a batch takes on these cores, which caps the loop at bound / (bound + that) however well the
    sampling were overlapped with nothing (train_loop's loop_ceiling)."""
    import segkit.batches as batches

    times: dict[str, list[float]] = {"own": [], "wait": [], "batch": []}
    draw, wait = batches.EpochBatches.draw, batches._wait

    def timed_draw(self: Any, index: int, sub: int = 0, subs: int = 1) -> Any:
        t = time.perf_counter()
        out = draw(self, index, sub, subs)
        times["own"].append(time.perf_counter() - t)
        return out

    def timed_wait(end: Any) -> None:
        t = time.perf_counter()
        wait(end)
        times["wait"].append(time.perf_counter() - t)

    run = _training_step(cfg, batch)[3]
    run(1)  # warm-up
    out = {}
    batches.EpochBatches.draw, batches._wait = timed_draw, timed_wait  # type: ignore[method-assign]
    try:
        stream = batches.split_stream(batches.EpochBatches(train, cfg, 0, 4), helpers)
        next(stream)  # forks the helpers: not timed
        situations = (("after_a_step", lambda: run(1)), ("torch_idle_0.2s", lambda: time.sleep(0.2)))
        for name, before in (*situations, ("back_to_back", lambda: None)):
            for v in times.values():
                v.clear()
            for _ in range(steps):
                before()
                t = time.perf_counter()
                next(stream)
                times["batch"].append(time.perf_counter() - t)
            out[name] = {k: round(1000 * statistics.median(v), 1) for k, v in times.items()}
        stream.close()
    finally:
        batches.EpochBatches.draw, batches._wait = draw, wait  # type: ignore[method-assign]
    return out


def _median_bound(cfg: Any, batch: tuple, rounds: int, steps: int, device: str) -> float:
    """Median seconds per step of the compute bound (a fresh model, the batch in memory)."""
    run = _training_step(cfg, batch, None, device)[3]
    run(1)  # warm-up
    return float(statistics.median(_timed_steps(run, steps, device) for _ in range(rounds)))


def _timed_steps(run: Any, steps: int, device: str) -> float:
    """Seconds per step of run(steps), the GPU's queue drained before the clock stops."""
    import torch

    t = time.perf_counter()
    run(steps)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def memory_formats(cfg: Any, batch: tuple, rounds: int, steps: int, device: str = "cpu") -> dict[str, Any]:
    """The compute bound in torch's default (NCHW) layout against channels_last, alternating rounds."""
    import numpy as np
    import torch

    steps_of = {
        name: _training_step(cfg, batch, fmt, device)[3]
        for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last))
    }
    times: dict[str, list[float]] = {name: [] for name in steps_of}
    for run in steps_of.values():
        run(1)  # warm-up
    for _ in range(rounds):
        for name, run in steps_of.items():
            times[name].append(_timed_steps(run, steps, device))
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"bound_s_per_step": med, "channels_last_over_contiguous": med["channels_last"] / med["contiguous"]}


def _training_step(cfg: Any, batch: tuple, memory_format: Any = None, device: str = "cpu") -> tuple[Any, Any, Any, Any]:
    """A fresh seeded model in train mode on `device` (in the given memory format), its optimizer and loss,
    and run(n): n steps of segkit's own train_one_epoch on the batch held in memory, no sampling: the compute
    bound, with the loop's own per-step work (AMP and its GradScaler as configured): (net, loss_fn, opt, run)."""
    import dataclasses
    import itertools

    import torch

    from segkit.losses import SegGradeLoss
    from segkit.models import build_model
    from segkit.train import _build_optimizer, train_one_epoch

    dev = torch.device(device)
    fmt = memory_format or torch.contiguous_format
    x, y, g = (t.to(dev) for t in batch)
    in_memory = (x.contiguous(memory_format=fmt), y, g)
    torch.manual_seed(0)
    net = build_model(cfg).to(dev, memory_format=fmt)
    opt, _ = _build_optimizer(net, cfg)
    loss_fn = SegGradeLoss.for_config(cfg)

    def run(n: int) -> None:
        steps = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps_per_epoch=n))
        train_one_epoch(net, loss_fn, opt, [], steps, epoch=0, batches=itertools.repeat(in_memory))

    net.train()
    return net, loss_fn, opt, run


def _bound_and_loops(
    cfgs: dict[str, Any], train: list, batch: tuple, rounds: int, device: str = "cpu"
) -> tuple[list[float], dict[str, list[float]]]:
    """Seconds per step of the compute bound (batch in memory) and of train_one_epoch under each config of
    `cfgs` (one model, the same torch threads), in alternating rounds, the configs' order reversed every
    other round, so a slow spell of the machine hits each alike.

    Each loop takes its epochs from one stream of batches, as `segkit train` does (its sampling processes
    live for the run); a first epoch, not timed, starts them and warms the loop up."""
    import torch

    from segkit.batches import epoch_batches
    from segkit.train import train_one_epoch

    first = next(iter(cfgs.values()))
    steps = first.train.steps_per_epoch
    net, loss_fn, opt, run = _training_step(first, batch, None, device)
    streams = {n: epoch_batches(train, cfg, 0, torch.device(device), end=rounds + 1) for n, cfg in cfgs.items()}

    def epoch(name: str, r: int) -> None:
        train_one_epoch(net, loss_fn, opt, train, cfgs[name], epoch=r, batches=streams[name])

    run(1)  # warm-up
    for name in cfgs:
        epoch(name, 0)
    bounds: list[float] = []
    loops: dict[str, list[float]] = {n: [] for n in cfgs}
    for r in range(1, rounds + 1):
        bounds.append(_timed_steps(run, steps, device))
        for name in list(cfgs)[:: 1 if r % 2 else -1]:
            loops[name].append(_timed_steps(lambda _n, n=name, r=r: epoch(n, r), steps, device))
    return bounds, loops


def machine() -> dict[str, Any]:
    import torch

    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout  # its Flags line
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("Flags")), []))
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "cpu_flags": {f: f in flags for f in CPU_FLAGS},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "child_env": CHILD_ENV,
    }


def table(result: dict[str, Any]) -> str:
    rows = ["| measure | value |", "|---|---|"]
    for case, r in result.get("predict", {}).items():
        n, rss = len(r.get("wall_s", [])), r.get("peak_rss_mib", 0)
        value = r.get("skipped") or f"{r['median_s']:.2f} s (median of {n}), peak RSS {rss:.0f} MiB"
        rows.append(f"| `segkit predict` {case} | {value} |")
    for phase, s in result.get("split", {}).items():
        rows.append(f"| split: {phase} | {s:.3f} s |")
    if swi := result.get("sliding_window"):
        rows.append(f"| sliding window / segkit time | {swi['time_ratio_sliding_over_segkit']:.2f}x |")
        rows.append(f"| sliding window vs segkit Dice | {swi['dice_sliding_vs_segkit']} |")
        if "time_ratio_whole_slice_over_segkit" in swi:
            ratio, agree = swi["time_ratio_whole_slice_over_segkit"], swi["dice_whole_slice_vs_segkit"]
            rows.append(f"| sliding window, roi = whole slice: time / segkit's, Dice | {ratio:.2f}x, {agree} |")
    for name, tl in result.get("train_loop", {}).items():
        if not isinstance(tl, dict) or "loop_s_per_step" not in tl:
            continue
        times = f"{tl['bound_s_per_step']:.3f} / {tl['loop_s_per_step']:.3f} s/step"
        rows.append(
            f"| train ({name}): compute bound / loop | {times}, "
            f"loop at {tl['loop_over_bound']:.2f} of the bound (per round {tl['loop_over_bound_per_round']}) |"
        )
    if per_rank := result.get("train_loop", {}).get("sampling_per_rank_s"):
        values = " / ".join(f"{1000 * v:.1f}" for v in per_rank.values())
        rows.append(f"| train: one rank's sampling + augmentation a step, {' / '.join(per_rank)} ranks | {values} ms |")
    if split := result.get("train_loop", {}).get("helper_split_ms"):
        a, idle = split["after_a_step"], split["torch_idle_0.2s"]
        rows.append(
            f"| train: helper loop's batch, main process's own share then wait for the helper's: right after a "
            f"step / with torch idle 0.2 s | {a['own']:.1f} + {a['wait']:.1f} / "
            f"{idle['own']:.1f} + {idle['wait']:.1f} ms |"
        )
        batch = " / ".join(f"{split[k]['batch']:.1f}" for k in ("after_a_step", "torch_idle_0.2s", "back_to_back"))
        rows.append(f"| train: the helper loop's batch: after a step / torch idle 0.2 s / back to back | {batch} ms |")
    if (ceiling := result.get("train_loop", {}).get("loop_ceiling")) is not None:
        rows.append(f"| train: the helper loop's ceiling, bound / (bound + a batch after a batch) | {ceiling} |")
    if start := result.get("train_loop", {}).get("epoch_start_s"):
        fresh, kept = start["fresh_workers_each_epoch_s"], start["run_long_workers_s"]
        rows.append(
            f"| train: wait for an epoch's first batch, fresh / run-long workers | {fresh:.3f} / {kept:.3f} s |"
        )
    if amps := result.get("train_loop", {}).get("bound_by_amp"):
        values = " / ".join(f"{v:.4f}" for v in amps.values())
        rows.append(f"| train compute bound, amp {' / '.join(amps)} | {values} s/step |")
    if mf := result.get("train_loop", {}).get("memory_format"):
        b = mf["bound_s_per_step"]
        rows.append(
            f"| train compute bound: NCHW / channels_last | {b['contiguous']:.3f} / {b['channels_last']:.3f} s/step |"
        )
    if mp := result.get("monai_process"):
        med = mp["median_s"]
        rows.append(
            f"| whole process, one pass, no TTA: MONAI user's / `segkit predict` | {med['monai']:.2f} / "
            f"{med['segkit']:.2f} s: {mp['time_ratio_monai_over_segkit']:.2f}x; peak RSS "
            f"{mp['peak_rss_mib']['monai']:.0f} / {mp['peak_rss_mib']['segkit']:.0f} MiB; "
            f"Dice {mp['dice_monai_vs_segkit']} |"
        )
        for who in ("monai", "segkit"):
            split = ", ".join(f"{k} {v:.2f}" for k, v in mp["phases_s"][who].items())
            rows.append(f"| {who} phases (s) | {split} |")
    if p := result.get("precision"):
        for dev, r in ((d, p[d]) for d in ("cpu", "cuda") if d in p):
            values = ", ".join(f"{k} {v:.3g}" for k, v in r.items() if isinstance(v, float))
            rows.append(f"| {dev} forward of {p['slices']} slices | {values} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="whole-process runs per volume (median reported)")
    ap.add_argument("--out", type=Path, default=Path("bench.json"))
    ap.add_argument("--parts", default="a,b,c,d,e,f", help="which of a,b,c,d,e,f to run")
    ap.add_argument(
        "--data", type=Path, default=Path("data/ventricle"), help="(e) a ventricle dataset (else a small one is made)"
    )
    ap.add_argument("--steps", type=int, default=20, help="(e) training steps timed, each way")
    ap.add_argument("--cases", type=int, default=24, help="(e) training cases loaded")
    ap.add_argument("--rounds", type=int, default=5, help="(e) alternating rounds of bound and loop (medians)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="(e) where the model trains")
    ap.add_argument("--workers", default="", help="(e, cuda) sampling-worker counts to try, e.g. 4,8,14")
    ap.add_argument("--split-child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--monai-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--epoch-start-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.split_child:
        split_child(*args.split_child)
        return
    if args.monai_child:
        monai_child(*args.monai_child)
        return
    if args.epoch_start_child:
        epoch_start_child(*args.epoch_start_child)
        return
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {"machine": machine(), "models": {}, "notes": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        brain = brain_like(tmp / "brain.nii.gz")
        model, note = pick_model("ventricle", tmp)
        result["models"]["ventricle"] = {"model": model, "note": note}
        if "a" in parts:
            variants = {  # the default (the checkpoint's TTA, ONNX Runtime), then one change at a time
                "default": (),
                "--no-tta": ("--no-tta",),
                "--no-tta --engine torch": ("--no-tta", "--engine", "torch"),
            }
            result["predict"] = {
                f"brain 182x218x182 {name}": whole_process(brain, model, tmp, args.repeats, extra)
                for name, extra in variants.items()
            }
            from segkit.checkpoint import weights_dir

            if (weights_dir() / "liver-cyst.pt").is_file():
                ct_model, note = pick_model("liver-cyst", tmp)
                result["models"]["liver-cyst"] = {"model": ct_model, "note": note}
                ct = ct_like(tmp / "ct.nii.gz")
                result["predict"]["CT 512x512x300"] = whole_process(ct, ct_model, tmp, args.repeats)
            else:
                result["predict"]["CT 512x512x300"] = {"skipped": "no shipped liver-cyst.pt"}
        if "b" in parts:
            result["split"] = phase_split(brain, model, tmp)
        if "c" in parts:
            result["sliding_window"] = sliding_window_baseline(brain, model)
            if result["models"]["ventricle"]["note"]:
                result["notes"].append("the sliding-window Dice compares an untrained network's near-random masks")
        if "f" in parts:
            result["monai_process"] = monai_whole_process(brain, model, tmp, args.repeats)
        if "d" in parts:
            result["precision"] = precision(brain, model, args.repeats)
        if "e" in parts:
            result["train_loop"] = train_loop(
                args.data, tmp, args.steps, args.cases, args.rounds, args.device, args.workers
            )
    result["notes"] += [m["note"] for m in result["models"].values() if m["note"]]
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(table(result))
    for note in result["notes"]:
        print(f"\nnote: {note}")


if __name__ == "__main__":
    main()
