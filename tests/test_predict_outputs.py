"""Predict writes each case's mask, report and overlay as a set; a folder run goes on past a failed case."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import GEOMETRIES, rotation, run_cli, write_nifti

import segkit.infer
from segkit.errors import OutputError
from segkit.io import write_all

LABEL_FILES = {"ventricle_labels.itksnap.txt", "ventricle_labels.ctbl"}


def case_files(name: str) -> set[str]:
    return {f"{name}_mask.nii.gz", f"{name}_report.json", f"{name}_overlay.png"}


def brain_like(shape=(24, 24, 8), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32) * 100


def test_write_all_leaves_nothing_when_one_write_fails(tmp_path):
    (tmp_path / "old_b.txt").write_text("from an earlier run")

    def boom(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OutputError, match="b.txt: cannot write it"):
        write_all([(tmp_path / "a.txt", lambda t: t.write_text("a")), (tmp_path / "b.txt", boom)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old_b.txt"]  # no a.txt, no temp files
    write_all([(tmp_path / "a.txt", lambda t: t.write_text("a")), (tmp_path / "b.txt", lambda t: t.write_text("b"))])
    assert (tmp_path / "a.txt").read_text() == "a" and (tmp_path / "b.txt").read_text() == "b"


def test_folder_run_reports_failed_cases_goes_on_and_exits_2(tiny_run, tmp_path, capsys, caplog, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, name in enumerate(("a", "b", "c")):
        write_nifti(inputs / f"{name}.nii.gz", brain_like(seed=i), np.diag([1.5, 1.5, 3.0, 1.0]))
    (inputs / "d.nii.gz").write_text("not an image")  # unreadable: logged, and the run goes on
    real = segkit.infer.write_overlay

    def overlay_fails_for_b(image, mask, affine, labels, out, title):
        if title.startswith("b:"):
            Path(out).write_bytes(b"\x89PNG half")  # a partial file, as a crash mid-write leaves it
            raise RuntimeError("overlay drawing crashed")
        real(image, mask, affine, labels, out, title)

    monkeypatch.setattr(segkit.infer, "write_overlay", overlay_fails_for_b)
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        code, stdout, err = run_cli(["predict", str(inputs), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert {p.name for p in out.iterdir()} == case_files("a") | case_files("c") | LABEL_FILES  # nothing of b, d
    assert "a.nii.gz: grade" in stdout and "c.nii.gz: grade" in stdout and "b.nii.gz" not in stdout
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 2, lines  # one line per failed input
    assert any("b.nii.gz: RuntimeError: overlay drawing crashed" in ln for ln in lines), lines
    assert any("d.nii.gz" in ln and "not a readable NIfTI" in ln for ln in lines), lines
    assert err.strip().splitlines() == [
        f"segkit: error: 2 of 4 inputs failed (b.nii.gz, d.nii.gz); nothing written for them, the others are in {out}"
    ]


def test_single_input_failure_is_one_line_and_leaves_no_files(tiny_run, tmp_path, capsys, monkeypatch):
    src = write_nifti(tmp_path / "x.nii.gz", brain_like(), np.eye(4))

    def no_overlay(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(segkit.infer, "write_overlay", no_overlay)
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", str(src), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "No space left on device" in err, err
    assert "x_overlay.png: cannot write it" in err and not any(out.iterdir())


@pytest.mark.parametrize("shape", [(484, 300, 1), (40, 32, 2)], ids=["one-slice", "two-slices"])
def test_thin_nifti_predicts_with_a_drawable_overlay(tiny_run, tmp_path, capsys, shape):
    src = write_nifti(tmp_path / "thin.nii.gz", brain_like(shape), np.diag([0.7, 0.7, 4.0, 1.0]))
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", str(src), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert {p.name for p in out.iterdir()} == case_files("thin") | LABEL_FILES
    assert nib.load(out / "thin_mask.nii.gz").shape == shape
    assert (out / "thin_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_report_gives_its_volume_s_time_per_stage(tiny_run, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):  # read ahead while the one before is predicted
        write_nifti(inputs / f"v{i}.nii.gz", brain_like(seed=i), np.diag([1.5, 1.5, 3.0, 1.0]))
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", str(inputs), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 0, err
    for i in range(3):
        seconds = json.loads((out / f"v{i}_report.json").read_text())["seconds"]
        assert list(seconds) == ["read", "preprocess", "network", "inverse", "postprocess", "write", "total"]
        assert all(v >= 0 for v in seconds.values()) and seconds["write"] > 0
        assert seconds["total"] == pytest.approx(sum(v for k, v in seconds.items() if k != "total"), abs=2e-3)


def test_a_folder_run_predicts_each_volume_as_a_run_of_its_own(tiny_run, tmp_path, capsys):
    """A folder run reads the next volume while the network runs (and shares the loaded model): each case's
    mask, grade and measurements must be those of predicting it alone (a constant volume too)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, affine in enumerate((np.diag([1.5, 1.5, 3.0, 1.0]), np.diag([-1.0, -1.2, 2.0, 1.0]), np.eye(4))):
        write_nifti(inputs / f"v{i}.nii.gz", brain_like(shape=(24 + 4 * i, 20, 8), seed=i), affine)
    write_nifti(inputs / "v3.nii.gz", np.full((16, 16, 6), 7.0, np.float32), np.eye(4))
    code, _, err = run_cli(["predict", str(inputs), "--model", str(tiny_run), "--out", str(tmp_path / "all")], capsys)
    assert code == 0, err
    for i in range(4):
        one = tmp_path / f"one{i}"
        code, _, err = run_cli(
            ["predict", str(inputs / f"v{i}.nii.gz"), "--model", str(tiny_run), "--out", str(one)], capsys
        )
        assert code == 0, err
        together, alone = nib.load(tmp_path / "all" / f"v{i}_mask.nii.gz"), nib.load(one / f"v{i}_mask.nii.gz")
        assert np.array_equal(np.asarray(together.dataobj), np.asarray(alone.dataobj))
        assert np.allclose(together.affine, alone.affine)
        a, b = (json.loads((d / f"v{i}_report.json").read_text()) for d in (tmp_path / "all", one))
        for key in ("grade", "probabilities", "volumes_ml", "biomarker", "warnings"):
            assert a[key] == b[key], (i, key)


OBLIQUE_LPS = np.eye(4)
OBLIQUE_LPS[:3, :3] = rotation(2, 25) @ rotation(0, 10) @ np.diag([-1.2, -1.1, 3.0])  # L and P flipped, oblique
OBLIQUE_LPS[:3, 3] = [10.0, -20.0, 30.0]


@pytest.mark.parametrize("affine", [GEOMETRIES["LPS"], OBLIQUE_LPS], ids=["LPS", "oblique-LPS"])
def test_probability_map_keeps_the_input_grid_and_agrees_with_the_mask(tiny_run, tmp_path, capsys, affine):
    src = write_nifti(tmp_path / "x.nii.gz", brain_like((26, 22, 9)), affine)
    out = tmp_path / "out"
    args = ["predict", str(src), "--model", str(tiny_run), "--out", str(out), "--probabilities"]
    code, _, err = run_cli([*args, "--set", "eval.keep_components=[]"], capsys)  # no post-processing: pure argmax
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == case_files("x") | {"x_probabilities.nii.gz"} | LABEL_FILES
    report = json.loads((out / "x_report.json").read_text())
    assert report["probability_map"] == "x_probabilities.nii.gz" and list(report["labels"].values()) == [
        "background",
        "brain",
        "lateral_ventricles",
    ]
    img = nib.load(out / "x_probabilities.nii.gz")
    assert img.shape == (26, 22, 9, 3) and img.get_data_dtype() == np.uint8
    assert np.allclose(img.affine, affine, atol=1e-5) and int(img.header["sform_code"]) > 0
    probs = img.get_fdata()  # the stored 0-255 times the header's slope, 1/255
    assert probs.min() >= 0 and probs.max() <= 1 + 1e-6 and np.abs(probs.sum(-1) - 1).max() <= 1.5 / 255 + 1e-6
    mask = np.asarray(nib.load(out / "x_mask.nii.gz").dataobj)
    top2 = np.sort(probs, -1)
    clear = top2[..., -1] - top2[..., -2] > 1.5 / 255  # no tie left after rounding
    assert len(np.unique(mask)) > 1 and clear.mean() > 0.9
    assert np.array_equal(probs.argmax(-1)[clear], mask[clear])


def test_a_folder_run_never_overwrites_another_input_of_the_run(tiny_run, tmp_path, capsys):
    """x.nii.gz and x_mask.nii.gz (another scan) in one folder, predicted into that folder: x's mask would have
    replaced the other scan. Refused before anything is written."""
    folder = tmp_path / "scans"
    folder.mkdir()
    write_nifti(folder / "x.nii.gz", brain_like(), np.eye(4))
    other = write_nifti(folder / "x_mask.nii.gz", brain_like(seed=1), np.eye(4))
    before = other.read_bytes()
    code, _, err = run_cli(["predict", str(folder), "--model", str(tiny_run), "--out", str(folder)], capsys)
    assert code == 2 and "x_mask.nii.gz: output would overwrite the input" in err, err
    assert other.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["x.nii.gz", "x_mask.nii.gz"]


def test_two_inputs_with_one_name_are_refused_before_either_is_written(tiny_run, tmp_path, capsys):
    """foo.nii and foo.nii.gz both write foo_mask.nii.gz: the second case's files replaced the first's."""
    folder = tmp_path / "scans"
    folder.mkdir()
    write_nifti(folder / "foo.nii", brain_like(), np.eye(4))
    write_nifti(folder / "foo.nii.gz", brain_like(seed=1), np.eye(4))
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", str(folder), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 2 and "foo.nii and foo.nii.gz would both write foo_mask.nii.gz" in err, err
    assert not out.exists()


def test_a_write_that_fails_names_the_file_that_failed(tiny_run, tmp_path, capsys):
    """A folder named like the mask in --out: the mask's rename fails, and the message named the report (the last
    file of the set) and told the user to free space."""
    src = write_nifti(tmp_path / "y.nii.gz", brain_like(), np.eye(4))
    out = tmp_path / "out"
    (out / "y_mask.nii.gz").mkdir(parents=True)
    code, _, err = run_cli(["predict", str(src), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 2 and "y_mask.nii.gz: cannot write it" in err and "a folder of that name" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["y_mask.nii.gz"]  # the folder, and nothing of the set


def test_a_freesurfer_mgz_is_predicted_on_its_own_grid_as_its_nifti_is(tiny_run, tmp_path, capsys):
    """FreeSurfer's orig.mgz (LIA, conformed): the mask is a NIfTI of the input's shape and affine, voxel for voxel
    the mask of the same scan given as NIfTI; a folder of .mgz files is predicted too."""
    lia = np.array([[-1.5, 0, 0, 20], [0, 0, 3.0, -20], [0, -1.5, 0, 20], [0, 0, 0, 1]])
    data = brain_like((24, 8, 24))
    scans = tmp_path / "scans"
    scans.mkdir()
    nib.save(nib.MGHImage(data, lia), scans / "orig.mgz")
    src = write_nifti(tmp_path / "orig.nii.gz", data, lia)
    masks = {}
    for name, path in (("mgz", scans), ("nifti", src)):
        code, _, err = run_cli(["predict", str(path), "--model", str(tiny_run), "--out", str(tmp_path / name)], capsys)
        assert code == 0, err
        img = nib.load(tmp_path / name / "orig_mask.nii.gz")
        assert img.shape == data.shape and np.allclose(img.affine, lia, atol=1e-5)
        assert nib.aff2axcodes(img.affine) == ("L", "I", "A")
        masks[name] = np.asarray(img.dataobj)
    assert len(np.unique(masks["nifti"])) > 1 and np.array_equal(masks["mgz"], masks["nifti"])
    assert json.loads((tmp_path / "mgz" / "orig_report.json").read_text())["input"].endswith("orig.mgz")
