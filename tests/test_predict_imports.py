"""What predict imports: only what a NIfTI prediction needs, checked in fresh processes (sys.modules, no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
from conftest import ROOT, TINY, ct_like, write_dicom_series, write_nifti

from segkit.transforms import window

# Heavy modules a NIfTI prediction never uses: the DICOM stack, plots, and what monai/__init__ drags in.
NOT_FOR_NIFTI = ("pydicom", "highdicom", "monai", "torchvision", "torch._dynamo", "skimage", "sklearn", "pandas")
NOT_BEFORE_DRAWING = ("matplotlib", "PIL")

MODULES_AFTER = """
import json, sys
{code}
print(json.dumps(sorted(sys.modules)))
"""

PREDICT = """
from segkit.cli import main
sys.argv = ["segkit", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    assert not e.code, f"segkit exited {e.code}"
"""


def modules_after(code: str, *args: str) -> set[str]:
    """Names in sys.modules after running `code` in a fresh Python process."""
    res = subprocess.run(
        [sys.executable, "-c", MODULES_AFTER.format(code=code), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return set(json.loads(res.stdout.strip().splitlines()[-1]))


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The packages (or any of their submodules) among `modules`."""
    return [p for p in packages if any(m == p or m.startswith(p + ".") for m in modules)]


def test_importing_the_prediction_path_loads_no_dicom_plotting_or_monai_package():
    modules = modules_after("import segkit.cli, segkit.infer")
    assert "nibabel" in modules
    assert loaded(modules, NOT_FOR_NIFTI + NOT_BEFORE_DRAWING + ("torch", "scipy.ndimage", "scipy.signal")) == []


def test_predicting_with_a_shipped_model_on_the_cpu_never_imports_torch(tmp_path):
    """ONNX Runtime runs the network and the config comes from the ONNX files' JSON: torch's 1.3-2.8 s are saved."""
    data = np.random.default_rng(0).normal(300, 60, (40, 48, 36)).clip(0).astype(np.float32)
    src = write_nifti(tmp_path / "scan.nii.gz", data, np.diag([2.0, 2.0, 2.0, 1.0]))
    out = tmp_path / "out"
    modules = modules_after(PREDICT, "predict", str(src), "--model", "ventricle", "--device", "cpu", "--out", str(out))
    report = json.loads((out / "scan_report.json").read_text())
    assert report["model"]["engine"].startswith("onnxruntime") and report["model"]["limits"]
    assert loaded(modules, ("torch", *NOT_FOR_NIFTI)) == []


def test_predicting_a_nifti_with_a_run_of_ones_own_imports_no_torch_dicom_stack_or_plotting_library(tiny_run, tmp_path):
    data = np.random.default_rng(0).normal(300, 60, (24, 20, 14)).clip(0).astype(np.float32)
    src = write_nifti(tmp_path / "scan.nii.gz", data, np.diag([4.0, 4.0, 6.0, 1.0]))
    out = tmp_path / "out"
    args = ("predict", str(src), "--model", str(tiny_run), "--device", "cpu", "--out", str(out))
    modules = modules_after(PREDICT, *args)
    assert (out / "scan_mask.nii.gz").is_file() and (out / "scan_overlay.png").is_file()
    # training wrote the run's ONNX files: its predict runs without torch, like a shipped model's
    assert json.loads((out / "scan_report.json").read_text())["model"]["engine"].startswith("onnxruntime")
    assert loaded(modules, ("torch", *NOT_FOR_NIFTI)) == []
    assert loaded(modules, ("matplotlib",)) == []  # the overlay is drawn with Pillow


def test_predicting_a_dicom_ct_series_with_the_shipped_model_never_imports_torch(tmp_path):
    """A DICOM series without --model: the CT picks the shipped liver-cyst model, run through ONNX Runtime."""
    folder = tmp_path / "series"
    write_dicom_series(folder, ct_like((48, 40, 24)), np.diag([1.5, 1.5, 3.0, 1.0]))
    out = tmp_path / "out"
    modules = modules_after(PREDICT, "predict", str(folder), "--device", "cpu", "--out", str(out))
    (report,) = [json.loads(f.read_text()) for f in out.glob("*_report.json")]
    assert report["task"] == "liver-cyst" and report["model"]["engine"].startswith("onnxruntime")
    assert loaded(modules, ("torch", "monai", "torchvision", "matplotlib")) == []


UNET_TWICE = """
import torch
from segkit.config import load_config
from segkit.models import build_model

cfg = load_config("configs/ventricle.yaml", {tiny!r})
light = build_model(cfg).unet.eval()
assert "monai" not in sys.modules
from monai.losses import DiceCELoss  # a normal, complete MONAI import still works afterwards
from monai.networks.nets import UNet

full = UNet(2, cfg.in_channels, cfg.num_classes, cfg.model.channels, (2,) * (len(cfg.model.channels) - 1),
            num_res_units=cfg.model.num_res_units, norm=cfg.model.norm).eval()
assert type(light) is not UNet and type(light).__qualname__ == "UNet"
full.load_state_dict(light.state_dict())  # strict: same parameter names and shapes, so checkpoints load
x = torch.randn(2, cfg.in_channels, 32, 32, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    assert torch.equal(full(x), light(x))
DiceCELoss(softmax=True, to_onehot_y=True)(full(x), torch.zeros(2, 1, 32, 32))
"""


def test_the_unet_built_without_monai_init_is_monais_unet():
    modules = modules_after(UNET_TWICE.format(tiny=TINY))
    assert "monai.data" in modules  # the later import was MONAI's complete one


def test_ct_window_equals_monais_scale_intensity_range_to_the_bit():
    from monai.transforms import ScaleIntensityRange

    x = np.random.default_rng(0).normal(0, 600, (32, 24, 8)).astype(np.float32)
    x[0, 0, :3] = [-1024.0, 3071.0, 250.0]
    for low, high in ((-100.0, 250.0), (-160.0, 240.0), (-57.3, 199.1), (40.0, 40.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI warns on a zero-width window
            ref = np.asarray(ScaleIntensityRange(low, high, -1.0, 1.0, clip=True)(x), np.float32)
        ours = window(x, low, high)
        assert ours.dtype == np.float32 and np.array_equal(ours, ref), (low, high)
