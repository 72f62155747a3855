"""`segkit data freesurfer`: a user's FreeSurfer subjects as a ventricle test set, aseg.mgz the reference."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from conftest import ROOT, TINY, run_cli

# FreeSurfer's conformed grid, shrunk: 1 mm voxels, array axes running left, inferior, anterior
LIA = np.array([[-1.0, 0, 0, 12], [0, 0, 1, -12], [0, -1, 0, 12], [0, 0, 0, 1]])


def fake_subject(root: Path, name: str, ventricle_half_width: int, seed: int = 0, depth: int = 8) -> Path:
    """A subject folder as recon-all leaves it (mri/orig.mgz and mri/aseg.mgz), with head tissue (label 500s),
    cortex, white matter, sulcal CSF (24) and lateral ventricles (4 left, 43 right) in its aseg."""
    aseg = np.zeros((24, 24, 24), np.int32)
    aseg[2:22, 2:22, 2:22] = 517  # head tissue around the brain: not brain
    aseg[4:20, 4:20, 4:20] = 3  # cortex
    aseg[6:18, 6:18, 6:18] = 2  # white matter
    aseg[4:6, 10:12, 10:14] = 24  # CSF: brain, as in the training data
    aseg[11:13, 16:18, 8:16] = 251  # corpus callosum (recon-all's aseg): brain
    w = ventricle_half_width
    aseg[12 - w : 12, 9:15, 8 : 8 + depth] = 4
    aseg[12 : 12 + w, 9:15, 8 : 8 + depth] = 43
    mri = root / name / "mri"
    mri.mkdir(parents=True)
    scan = (np.random.default_rng(seed).normal(80, 5, aseg.shape) + 40 * (aseg == 2)).astype(np.float32)
    nib.save(nib.MGHImage(scan, LIA), mri / "orig.mgz")
    nib.save(nib.MGHImage(aseg, LIA), mri / "aseg.mgz")
    return root / name


def test_subjects_become_a_test_set_that_evaluate_scores(tiny_run, tmp_path, capsys):
    """Labels: 4/43 -> lateral ventricles, other brain labels (CSF included) -> brain, head tissue -> background,
    on the scan's own LIA grid; the grade is the biomarker's from the aseg; images stay where they are."""
    small, large = fake_subject(tmp_path / "fs", "bert", 1), fake_subject(tmp_path / "fs", "ernie", 3, seed=1)
    out = tmp_path / "fsdata"
    code, stdout, err = run_cli(["data", "freesurfer", str(small), str(large), "--out", str(out)], capsys)
    assert code == 0, err
    assert "wrote 2 FreeSurfer subjects" in stdout and "segkit evaluate --data" in stdout
    spec = json.loads((out / "dataset.json").read_text())
    rows = {r["case"]: r for r in spec["training"]}
    assert set(rows) == {"bert", "ernie"} and all(r["split"] == "test" for r in rows.values())
    assert rows["bert"]["image"] == str((small / "mri" / "orig.mgz").resolve())
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "labelsTr"]
    aseg = np.asarray(nib.load(small / "mri" / "aseg.mgz").dataobj)
    label = nib.load(out / "labelsTr" / "bert.nii.gz")
    assert label.shape == aseg.shape and np.allclose(label.affine, LIA)
    got = np.asarray(label.dataobj)
    assert np.array_equal(got == 2, np.isin(aseg, (4, 43)))
    assert np.array_equal(got == 1, np.isin(aseg, (2, 3, 24, 251)))
    assert not got[aseg == 517].any()
    lv = [int(np.isin(np.asarray(nib.load(s / "mri" / "aseg.mgz").dataobj), (4, 43)).sum()) for s in (small, large)]
    brain = 16**3
    assert np.isclose(rows["bert"]["biomarker"], lv[0] / brain, atol=1e-6)
    assert rows["bert"]["grade"] == "moderate" and rows["ernie"]["grade"] == "severe"  # 0.023 and 0.070
    code, stdout, err = run_cli(
        ["evaluate", "--model", str(tiny_run), "--data", str(out), "--split", "test", "--out", str(out / "eval")],
        capsys,
    )
    assert code == 0, err
    assert [r["case"] for r in csv.DictReader((out / "eval" / "per_case.csv").open())] == ["bert", "ernie"]
    # both images are orig.mgz: each case's prediction is named by its case id (by file name, ernie's replaced bert's)
    masks = sorted(p.name for p in (out / "eval" / "predictions").glob("*_mask.nii.gz"))
    assert masks == ["bert_mask.nii.gz", "ernie_mask.nii.gz"]


def test_what_is_no_subject_is_skipped_and_an_unfinished_subject_refused(tmp_path, capsys, caplog):
    """$SUBJECTS_DIR/* holds fsaverage and folders without mri/ (lh.EC_average): each skipped with a line; a
    subject whose recon-all did not finish (no aseg.mgz) is refused in one line and nothing is written."""
    good = fake_subject(tmp_path / "fs", "bert", 2)
    fake_subject(tmp_path / "fs", "fsaverage", 2)
    (tmp_path / "fs" / "lh.EC_average").mkdir()
    (tmp_path / "fs" / "README").write_text("notes")
    out = tmp_path / "fsdata"
    with caplog.at_level("WARNING"):
        code, stdout, err = run_cli(
            ["data", "freesurfer", *map(str, sorted((tmp_path / "fs").iterdir())), "--out", str(out)], capsys
        )
    assert code == 0, err
    assert "wrote 1 FreeSurfer subject" in stdout
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert "fsaverage: FreeSurfer's template" in skipped and "lh.EC_average: no mri/" in skipped and "README" in skipped
    unfinished = fake_subject(tmp_path / "fs2", "ernie", 2)
    (unfinished / "mri" / "aseg.mgz").unlink()
    out = tmp_path / "fsdata2"
    code, _, err = run_cli(["data", "freesurfer", str(good), str(unfinished), "--out", str(out)], capsys)
    assert code == 2 and "ernie: no mri/aseg.mgz" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    broken = fake_subject(tmp_path / "fs", "ernie", 2)
    (broken / "mri" / "aseg.mgz").write_bytes(b"not an mgz")  # found, read after bert's label was written
    code, _, err = run_cli(["data", "freesurfer", str(good), str(broken), "--out", str(out)], capsys)
    assert code == 2 and "ernie/mri/aseg.mgz: damaged or truncated gzip" in err
    assert not out.exists()  # bert's label went with it


def test_a_stratified_split_fine_tunes(tmp_path, capsys):
    """--split stratified: train, val and test by grade (each subject in one split), and segkit train runs on it."""
    sizes = {"healthy": (1, 4), "moderate": (1, 8), "severe": (3, 8)}  # ratios 0.012, 0.023, 0.070
    subjects = [
        fake_subject(tmp_path / "fs", f"{grade}{i}", w, seed=i, depth=d)
        for grade, (w, d) in sizes.items()
        for i in range(4)
    ]
    out = tmp_path / "fsdata"
    code, stdout, err = run_cli(
        ["data", "freesurfer", *map(str, subjects), "--out", str(out), "--split", "stratified"], capsys
    )
    assert code == 0, err
    rows = json.loads((out / "dataset.json").read_text())["training"]
    assert all(r["grade"] == r["case"].rstrip("0123456789") for r in rows)
    by_split = {s: sorted(r["case"] for r in rows if r["split"] == s) for s in ("train", "val", "test")}
    assert "train 6, val 3, test 3" in stdout and all(by_split.values())
    assert sorted(sum(by_split.values(), [])) == sorted(s.name for s in subjects)  # each subject once
    run = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "ventricle.yaml"), "--data", str(out), "--out", str(run)]
    code, _, err = run_cli(
        [*args, "--epochs", "1", *(x for o in TINY if "epochs" not in o for x in ("--set", o))], capsys
    )
    assert code == 0, err
    assert (run / "best.pt").is_file()
    code, _, err = run_cli(
        ["data", "freesurfer", str(subjects[0]), "--out", str(tmp_path / "x"), "--split", "all"], capsys
    )
    assert code == 2 and "--split all: give test" in err


def test_predict_given_a_subject_folder_names_the_scan_to_pass(tmp_path, capsys):
    subject = fake_subject(tmp_path / "fs", "bert", 2)
    code, _, err = run_cli(["predict", str(subject), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "a FreeSurfer subject folder; pass its scan" in err and "bert/mri/orig.mgz" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_subjects_predicted_into_one_folder_keep_their_own_masks(tiny_run, tmp_path, capsys):
    """Every subject's scan is mri/orig.mgz: its outputs are named after the subject (bert_orig_mask.nii.gz), so a
    loop over subjects into one --out keeps every mask (by file name alone, each replaced the last)."""
    out = tmp_path / "pred"
    for name, w in (("bert", 1), ("ernie", 3)):
        scan = fake_subject(tmp_path / "fs", name, w) / "mri" / "orig.mgz"
        code, _, err = run_cli(["predict", str(scan), "--model", str(tiny_run), "--out", str(out)], capsys)
        assert code == 0, err
    assert sorted(p.name for p in out.glob("*_mask.nii.gz")) == ["bert_orig_mask.nii.gz", "ernie_orig_mask.nii.gz"]
    report = json.loads((out / "ernie_orig_report.json").read_text())
    assert report["input"].endswith("ernie/mri/orig.mgz") and report["mask"] == "ernie_orig_mask.nii.gz"
