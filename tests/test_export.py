"""Review exports: the HTML page in a real browser, label files, DICOM in and SEG out, ONNX; bad input exits 2."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import ct_like, rotation, run_cli, write_dicom_series
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from segkit.dicom import read_series, write_dicom_seg
from segkit.export import review_flags
from segkit.io import write_volume
from segkit.render import PALETTE, label_color

OBLIQUE_LPS = np.eye(4)
OBLIQUE_LPS[:3, :3] = rotation(2, 25) @ rotation(0, 10) @ np.diag([-0.8, -0.9, 2.5])  # L and P flipped, oblique
OBLIQUE_LPS[:3, 3] = [10.0, -20.0, 30.0]
# Slices stacked against the slice normal: the reader must reverse them and still keep every voxel in place.
REVERSED = np.array([[-1.0, 0, 0, 5], [0, 1.2, 0, -3], [0, 0, 3.0, 7], [0, 0, 0, 1]])


@pytest.mark.filterwarnings("ignore:The DICOM readers are highly experimental")
@pytest.mark.parametrize("affine", [OBLIQUE_LPS, REVERSED], ids=["oblique-LPS", "reversed-slices"])
def test_dicom_series_keeps_every_voxel_at_its_world_position(tmp_path, affine):
    data = ct_like((20, 18, 7))
    uids = write_dicom_series(tmp_path / "ct", data, affine)
    series = read_series(tmp_path / "ct")
    vol = series.volume
    assert vol.data.shape == data.shape and vol.path == tmp_path / "ct"
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in data.shape], indexing="ij"), -1).reshape(-1, 3)
    world = nib.affines.apply_affine(vol.affine, ijk)
    src = np.round(nib.affines.apply_affine(np.linalg.inv(affine), world)).astype(int)
    assert np.allclose(nib.affines.apply_affine(affine, src), world, atol=1e-3)  # lands on source voxel centres
    assert np.array_equal(vol.data[tuple(ijk.T)], data[tuple(src.T)])  # rescale slope/intercept applied
    if np.linalg.det(affine) > 0:
        assert np.allclose(vol.affine, affine, atol=1e-4)
    # datasets[k] is slice k; nibabel's DICOM wrapper is the independent reference for the in-plane geometry
    from nibabel.nicom.dicomwrappers import wrapper_from_data

    for k in (0, data.shape[2] - 1):
        assert series.datasets[k].SOPInstanceUID in uids.values()
        ref = np.diag([-1.0, -1.0, 1, 1]) @ wrapper_from_data(series.datasets[k]).affine  # LPS -> RAS
        # nibabel's array is (rows, columns), ours (columns, rows): its first two axes are swapped
        assert np.allclose(ref[:3, [1, 0]], vol.affine[:3, [0, 1]], atol=1e-4)
        assert np.allclose(ref[:3, 3], (vol.affine @ [0, 0, k, 1])[:3], atol=1e-3)


def seg_frames(path: Path) -> list[tuple[str, int, np.ndarray, list[float]]]:
    """(source SOP UID, segment number, frame (rows, cols), plane position) of every frame of a SEG file."""
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    out = []
    for frame, fg in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        uid = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        number = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        out.append((uid, number, frame, [float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient]))
    return out


def check_seg_matches_mask(path: Path, mask: np.ndarray, series_dir: Path, labels: tuple[str, ...]) -> None:
    """Every SEG frame equals the mask on the slice it references; every labelled slice has its frame."""
    sources = {}
    for f in series_dir.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        sources[ds.SOPInstanceUID] = ds
    series = read_series(series_dir)
    z_of = {ds.SOPInstanceUID: k for k, ds in enumerate(series.datasets)}
    seen = set()
    for uid, number, frame, position in seg_frames(path):
        k = z_of[uid]
        assert np.array_equal(frame.astype(bool), mask[:, :, k].T == number), (k, number)
        assert np.allclose(position, [float(v) for v in sources[uid].ImagePositionPatient], atol=1e-3)
        seen.add((k, number))
    wanted = {(k, n) for n in range(1, len(labels)) for k in range(mask.shape[2]) if (mask[:, :, k] == n).any()}
    assert wanted == seen
    ds = pydicom.dcmread(path)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == list(labels[1:])
    assert {s.SegmentAlgorithmType for s in ds.SegmentSequence} == {"AUTOMATIC"}
    assert ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "segkit"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series.datasets[0].SeriesInstanceUID
    for k, segment in enumerate(ds.SegmentSequence, start=1):  # a viewer shows each label in segkit's colour
        rgb = hd.color.CIELabColor.from_dicom_value(tuple(segment.RecommendedDisplayCIELabValue)).to_rgb()
        assert np.allclose(rgb, label_color(k), atol=1), (k, rgb)


def known_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """Label 1 on slices 1-4, label 2 inside it on slices 2-3, slice 0 and the last empty; asymmetric in x and y."""
    mask = np.zeros(shape, np.uint8)
    mask[3:12, 2:9, 1:5] = 1
    mask[5:8, 4:6, 2:4] = 2
    return mask


def test_dicom_seg_of_reversed_series_lands_on_the_right_slices(tmp_path):
    write_dicom_series(tmp_path / "ct", ct_like((20, 18, 7)), REVERSED)
    series = read_series(tmp_path / "ct")
    mask = known_mask(series.volume.data.shape)
    labels = ("background", "liver", "cyst")
    out = write_dicom_seg(mask, series.volume.affine, series, labels, tmp_path / "seg" / "ct_seg.dcm")
    check_seg_matches_mask(out, mask, tmp_path / "ct", labels)


def test_predict_dicom_folder_then_export_dicom_seg(tiny_run, tmp_path, capsys):
    series_dir = tmp_path / "CT_abdomen"
    write_dicom_series(series_dir, ct_like((32, 28, 10)), OBLIQUE_LPS)
    pred = tmp_path / "pred"
    code, stdout, err = run_cli(["predict", str(series_dir), "--model", str(tiny_run), "--out", str(pred)], capsys)
    assert code == 0, err
    mask_img = nib.load(pred / "CT_abdomen_mask.nii.gz")
    assert mask_img.shape == (32, 28, 10) and np.allclose(mask_img.affine, OBLIQUE_LPS, atol=1e-4)
    report = json.loads((pred / "CT_abdomen_report.json").read_text())
    assert Path(report["input"]) == series_dir.resolve() and report["shape"] == [32, 28, 10]
    # A known mask in place of the tiny model's guess, so every slice's content is checked
    mask = known_mask((32, 28, 10))
    write_volume(pred / "CT_abdomen_mask.nii.gz", mask, mask_img.affine)
    nifti = tmp_path / "other.nii.gz"
    write_volume(nifti, ct_like((20, 20, 6)).astype(np.float32), np.eye(4))
    assert run_cli(["predict", str(nifti), "--model", str(tiny_run), "--out", str(pred)], capsys)[0] == 0
    code, stdout, err = run_cli(["export", str(pred), "--format", "dicom-seg", "--out", str(tmp_path / "seg")], capsys)
    assert code == 0, err
    assert "warning: no DICOM SEG for other: predicted from NIfTI, not DICOM" in err  # was skipped unsaid
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["CT_abdomen_seg.dcm"]
    labels = ("background", "brain", "lateral_ventricles")
    check_seg_matches_mask(tmp_path / "seg" / "CT_abdomen_seg.dcm", mask, series_dir, labels)
    # a second DICOM case beside it, and --dicom naming the first: the second is left out for that reason
    second = tmp_path / "second"
    write_dicom_series(second, ct_like((20, 20, 6)), np.eye(4))
    assert run_cli(["predict", str(second), "--model", str(tiny_run), "--out", str(pred)], capsys)[0] == 0
    args = ["export", str(pred), "--format", "dicom-seg", "--dicom", str(series_dir), "--out", str(tmp_path / "seg2")]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert "no DICOM SEG for second: not the series given by --dicom" in err  # was "predicted from NIfTI"
    assert "no DICOM SEG for other: predicted from NIfTI" in err
    # a SEG written into the series folder never replaces a source slice that bears its name
    slice_file = sorted(series_dir.iterdir())[0]
    victim = slice_file.rename(series_dir / "CT_abdomen_seg.dcm")
    before = victim.read_bytes()
    args = ["export", str(pred), "--format", "dicom-seg", "--dicom", str(series_dir), "--out", str(series_dir)]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "output would overwrite the input" in err and victim.read_bytes() == before


def test_bad_dicom_folders_get_one_line_exit_2(tiny_run, tmp_path, capsys):
    two = tmp_path / "two"
    write_dicom_series(two / "a", ct_like((16, 16, 4)), OBLIQUE_LPS, "axial")
    write_dicom_series(two / "b", ct_like((16, 16, 4)), REVERSED, "coronal")
    junk = tmp_path / "none"
    junk.mkdir()
    (junk / "notes.txt").write_text("no images here")
    no_image = tmp_path / "no_image"
    no_image.mkdir()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.88.22", generate_uid(), "SR"
    ds.save_as(no_image / "report.dcm", enforce_file_format=True)
    cases = {two: "holds 2 DICOM series", junk: ".mgz files and no DICOM series", no_image: "no DICOM"}
    for folder, message in cases.items():
        out = tmp_path / f"out_{folder.name}"
        code, stdout, err = run_cli(["predict", str(folder), "--model", str(tiny_run), "--out", str(out)], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_review_flags_name_what_to_look_at():
    base = {
        "grade": "healthy",
        "probabilities": {"healthy": 0.9, "moderate": 0.05, "severe": 0.05},
        "volumes_ml": {"brain": 1000.0, "lateral_ventricles": 15.0},
        "biomarker": {
            "grade": "healthy",
            "definition": "volume(lateral_ventricles) / volume(brain+lateral_ventricles)",
        },
        "warnings": [],
    }
    assert review_flags(base, 0.6) == []
    assert review_flags({**base, "probabilities": {"healthy": 0.5, "moderate": 0.3, "severe": 0.2}}, 0.6) == [
        "low confidence 0.50"
    ]
    assert review_flags({**base, "biomarker": {**base["biomarker"], "grade": "severe"}}, 0.6) == [
        "grade healthy but biomarker severe"
    ]
    assert review_flags({**base, "volumes_ml": {"brain": 0.0, "lateral_ventricles": 0.0}}, 0.6) == ["empty mask"]
    assert review_flags({**base, "volumes_ml": {"brain": 900.0, "lateral_ventricles": 0.0}}, 0.6) == [
        "no lateral_ventricles"
    ]
    assert review_flags({**base, "volumes_ml": {"brain": 900.0, "lateral_ventricles": 0.02}}, 0.6)[0].startswith("tiny")
    # a liver without cysts is a healthy finding, not a failed mask
    liver = {**base, "volumes_ml": {"liver": 1500.0, "cyst": 0.0, "tumour": 0.0}, "lesions": {"cyst": {"count": 0}}}
    liver["biomarker"] = {"grade": "healthy", "definition": "volume(cyst) / volume(liver+cyst+tumour)"}
    assert review_flags(liver, 0.6) == []


@pytest.fixture(scope="module")
def evaluated(tiny_run, phantom_ventricle, tmp_path_factory) -> Path:
    """An evaluate folder (predictions/ + per_case.csv) of the phantom test split (3 cases)."""
    from segkit.evaluate import evaluate_split

    out = tmp_path_factory.mktemp("eval")
    evaluate_split(tiny_run, phantom_ventricle, "test", out, "cpu")
    return out


def test_review_page_is_one_file_with_a_row_and_image_per_case(evaluated, tmp_path, capsys):
    code, stdout, err = run_cli(["export", str(evaluated / "predictions"), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    reports = sorted((evaluated / "predictions").glob("*_report.json"))
    names = re.findall(r'<tr data-name="([^"]+)"', page)
    assert sorted(names) == sorted(p.name.removesuffix("_report.json") for p in reports)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(reports)
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert "<th data-key=dice>Dice</th>" in page and "lateral_ventricles <b>" in page
    # threshold from the checkpoint's config (eval.low_confidence), shown in the header
    assert "low confidence below 0.60" in page
    # an evaluate folder itself is accepted too (its predictions/ is used)
    code, _, err = run_cli(["export", str(evaluated), "--out", str(tmp_path / "r2"), "--low-confidence", "0.9"], capsys)
    assert code == 0 and "low confidence below 0.90" in (tmp_path / "r2" / "index.html").read_text()


def test_review_page_shows_each_cases_lesions_found_and_false(evaluated, tmp_path, capsys):
    """An evaluate folder of a lesion task: per_case.csv's lesion counts appear in the case's row."""
    folder = tmp_path / "eval"
    shutil.copytree(evaluated, folder)
    with open(folder / "per_case.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, r in enumerate(rows):
        r.update(lesions_true_cyst=3, lesions_found_cyst=i, lesions_pred_cyst=2, lesions_false_cyst=1)
    with open(folder / "per_case.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, _, err = run_cli(["export", str(folder), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    for i, r in enumerate(rows):
        row = page.split(f'<tr data-name="{r["case"]}"')[1].split("</tr>")[0]
        assert f"cyst lesions: <b>{i} of 3</b> found, <b>1</b> false" in row


def find_chromium() -> str | None:
    """Debian's chromium (scripts/test.sh installs it when it can)."""
    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)


def test_review_page_renders_in_headless_chromium(evaluated, tmp_path, capsys):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install chromium; scripts/test.sh does it as root)")
    pred = tmp_path / "pred"
    shutil.copytree(evaluated / "predictions", pred)
    # A confident, consistent case named to come first: the page's script must sort it below the flagged ones
    first = json.loads(sorted(pred.glob("*_report.json"))[0].read_text())
    first.update(mask="aaa_clean_mask.nii.gz", volumes_ml={"brain": 1000.0, "lateral_ventricles": 25.0}, warnings=[])
    first["grade"] = first["biomarker"]["grade"] = "moderate"
    first["probabilities"] = {g: 0.9 if g == first["grade"] else 0.05 for g in first["probabilities"]}
    (pred / "aaa_clean_report.json").write_text(json.dumps(first))
    shutil.copy(sorted(pred.glob("*_mask.nii.gz"))[0], pred / "aaa_clean_mask.nii.gz")  # else flagged: mask missing
    review = tmp_path / "review"
    code, _, err = run_cli(["export", str(pred), "--out", str(review)], capsys)
    assert code == 0, err
    num_cases = len(list(pred.glob("*_report.json")))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,1000",
        "--virtual-time-budget=5000",
    ]
    url = (review / "index.html").resolve().as_uri()
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("rows") == str(num_cases), attrs
    assert attrs.get("images") == attrs.get("images-loaded") == str(num_cases), attrs
    order = [int(n) for n in re.findall(r'<tr data-name="[^"]+" data-flags="(\d+)"', dom)]
    assert len(order) == num_cases and order == sorted(order, reverse=True) and order[-1] == 0  # sorted by flags
    shot = review / "screenshot.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape == (1000, 1400) and img.std() > 10  # something was drawn
    print(f"screenshot: {shot}")


def test_label_files_name_and_colour_every_label(evaluated):
    pred = evaluated / "predictions"
    labels = json.loads(next(pred.glob("*_report.json")).read_text())["labels"]
    snap = [ln for ln in (pred / "ventricle_labels.itksnap.txt").read_text().splitlines() if not ln.startswith("#")]
    ctbl = (pred / "ventricle_labels.ctbl").read_text().splitlines()
    assert ctbl[0].startswith("# Color table file")  # the header 3D Slicer reads as a discrete table
    rows = [ln.split() for ln in ctbl if not ln.startswith("#")]
    assert [(int(r[0]), r[1]) for r in rows] == [(int(k), v) for k, v in labels.items()]
    assert [tuple(int(v) for v in r[2:5]) for r in rows] == PALETTE[: len(rows)]
    assert [ln.split('"')[1] for ln in snap] == list(labels.values())


def test_two_tasks_predicted_into_one_folder_keep_their_own_label_files(tiny_run, tmp_path, capsys):
    """A brain MRI and an abdominal CT predicted into one --out: each task's label names and colours stay, and the
    review page shows both tasks' legends and label files (one pair of files was overwritten by the second run)."""
    from conftest import write_nifti

    out = tmp_path / "out"
    mri = write_nifti(tmp_path / "head.nii.gz", np.random.default_rng(0).random((24, 24, 8), np.float32), np.eye(4))
    ct = write_nifti(tmp_path / "belly.nii.gz", ct_like((40, 40, 6)).astype(np.float32), np.diag([2.0, 2, 5, 1]))
    for src, model in ((mri, str(tiny_run)), (ct, "liver-cyst")):
        code, _, err = run_cli(["predict", str(src), "--model", model, "--out", str(out)], capsys)
        assert code == 0, err
    for task, labels in (("ventricle", ["brain", "lateral_ventricles"]), ("liver-cyst", ["liver", "cyst", "tumour"])):
        snap = (out / f"{task}_labels.itksnap.txt").read_text()
        assert [ln.split('"')[1] for ln in snap.splitlines() if not ln.startswith("#")][1:] == labels
        ctbl = (out / f"{task}_labels.ctbl").read_text().splitlines()
        assert [ln.split()[1] for ln in ctbl if not ln.startswith("#")][1:] == labels
    assert json.loads((out / "belly_report.json").read_text())["label_files"]["slicer"] == "liver-cyst_labels.ctbl"
    code, _, err = run_cli(["export", str(out), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    assert "tasks liver-cyst (1), ventricle (1)" in page  # in the order of the cases (by name)
    assert "<b>ventricle</b>:" in page and "<b>liver-cyst</b>:" in page and "tumour" in page
    assert "../out/ventricle_labels.itksnap.txt" in page and "../out/liver-cyst_labels.ctbl" in page
    # the same folder as one table: a row per case, each task's volumes in its own columns, the other's empty
    code, stdout, err = run_cli(["export", str(out), "--format", "csv", "--out", str(tmp_path / "t")], capsys)
    assert code == 0, err
    rows = {r["name"]: r for r in csv.DictReader((tmp_path / "t" / "predictions.csv").open())}
    assert set(rows) == {"head", "belly"} and rows["belly"]["task"] == "liver-cyst"
    for name, own, other in (("head", "ml_brain", "ml_liver"), ("belly", "ml_liver", "ml_brain")):
        report = json.loads((out / f"{name}_report.json").read_text())
        label = own.removeprefix("ml_")
        assert float(rows[name][own]) == report["volumes_ml"][label] and rows[name][other] == ""
        assert rows[name]["grade"] == str(report["grade"] or "") and rows[name]["input"] == report["input"]
        probs = {k.removeprefix("p_"): float(v) for k, v in rows[name].items() if k.startswith("p_") and v}
        assert probs == report["probabilities"]


def test_onnx_export_matches_pytorch(tiny_run, tmp_path, capsys):
    import onnx
    import onnxruntime
    import torch

    from segkit.infer import load_model

    out = tmp_path / "onnx"
    code, stdout, err = run_cli(["export", "--format", "onnx", "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 0, err
    info = json.loads((out / "onnx.json").read_text())
    assert set(info["max_abs_diff"]) == {"mask_logits", "slice_features", "grade_logits"}
    onnx.checker.check_model(str(out / "model.onnx"))
    net, cfg, _ = load_model(tiny_run, "cpu", engine="torch")  # the reference: PyTorch itself
    x = torch.randn(3, cfg.in_channels, 48, 80, generator=torch.Generator().manual_seed(1))  # not the export shape
    with torch.no_grad():
        logits, feats = net(x)
        grade = net.pool_grade(feats, 1)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got_logits, got_feats = session.run(["mask_logits", "slice_features"], {"image": x.numpy()})
    np.testing.assert_allclose(got_logits, logits.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got_feats, feats.numpy(), atol=1e-4, rtol=1e-4)
    head = onnxruntime.InferenceSession(str(out / "grade_head.onnx"), providers=["CPUExecutionProvider"])
    (got_grade,) = head.run(None, {"slice_features": feats.numpy()[None]})
    np.testing.assert_allclose(got_grade, grade.numpy(), atol=1e-4, rtol=1e-4)


def test_export_bad_input_gets_one_line_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["export", str(empty), "--out", str(tmp_path / "r")], "no predictions"),
        (["export", str(tmp_path / "missing"), "--out", str(tmp_path / "r")], "not a folder"),
        (["export", str(empty), "--format", "pdf", "--out", str(tmp_path / "r")], "unknown export format"),
        (["export", "--out", str(tmp_path / "r")], "needs PRED_DIR"),
        (["export", str(empty), "--format", "dicom-seg", "--out", str(tmp_path / "r")], "no predictions"),
    ]
    for args, message in cases:
        code, _, err = run_cli(args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "r").exists()


def test_dicom_seg_export_needs_a_dicom_source(evaluated, tmp_path, capsys):
    code, _, err = run_cli(
        ["export", str(evaluated / "predictions"), "--format", "dicom-seg", "--out", str(tmp_path / "s")], capsys
    )
    assert code == 2 and "no prediction was made from a DICOM series" in err


def test_a_seg_references_only_the_series_its_mask_was_predicted_from(tiny_run, tmp_path, capsys):
    """--dicom naming another series on the same grid (a second reconstruction, another patient) was accepted and
    the SEG referenced that series' images; now refused. With two cases, the second one failing, no SEG is
    written at all."""
    data = ct_like((20, 18, 6))
    for name in ("first", "other"):
        write_dicom_series(tmp_path / name, data, OBLIQUE_LPS)
    pred = tmp_path / "pred"
    for name in ("first", "other"):
        code, _, err = run_cli(["predict", str(tmp_path / name), "--model", str(tiny_run), "--out", str(pred)], capsys)
        assert code == 0, err
    seg = tmp_path / "seg"
    one = tmp_path / "pred_first"
    one.mkdir()
    for f in pred.glob("first_*"):
        shutil.copy(f, one / f.name)
    args = ["export", str(one), "--format", "dicom-seg", "--out", str(seg)]
    code, _, err = run_cli([*args, "--dicom", str(tmp_path / "other")], capsys)
    assert code == 2 and "does not hold series" in err and "the one first was predicted from" in err, err
    assert len(err.strip().splitlines()) == 1 and not seg.exists()
    code, _, err = run_cli([*args, "--dicom", str(tmp_path / "first")], capsys)
    assert code == 0 and (seg / "first_seg.dcm").is_file(), err
    shutil.rmtree(seg)
    shutil.rmtree(tmp_path / "other")  # the second case's folder now holds another series: the export fails on it
    write_dicom_series(tmp_path / "other", data, OBLIQUE_LPS)
    code, _, err = run_cli(["export", str(pred), "--format", "dicom-seg", "--out", str(seg)], capsys)
    assert code == 2 and "does not hold series" in err and len(err.strip().splitlines()) == 1, err
    assert not seg.exists() or not any(seg.iterdir())  # not first_seg.dcm alone
    shutil.rmtree(tmp_path / "other")  # gone: said, not skipped
    code, _, err = run_cli(["export", str(pred), "--format", "dicom-seg", "--out", str(seg)], capsys)
    assert code == 2 and "other was predicted from the DICOM series in" in err and "no longer there" in err, err


def test_a_dicom_folder_that_also_holds_nifti_files_is_not_guessed(tiny_run, tmp_path, capsys):
    """predict DIR --out DIR writes the masks into the DICOM folder; predicting the folder again then took the
    mask for the input (a CT series predicted as a NIfTI mask by the MRI model). segkit's own mask is skipped
    (its report beside it), so the series is predicted again; a NIfTI of the user's own beside it is refused."""
    folder = tmp_path / "CT"
    write_dicom_series(folder, ct_like((20, 18, 6)), OBLIQUE_LPS)
    code, _, err = run_cli(["predict", str(folder), "--model", str(tiny_run), "--out", str(folder)], capsys)
    assert code == 0 and (folder / "CT_mask.nii.gz").is_file(), err
    out = tmp_path / "again"
    code, _, err = run_cli(["predict", str(folder), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 0, err
    first, again = (nib.load(f / "CT_mask.nii.gz") for f in (folder, out))
    assert np.array_equal(first.get_fdata(), again.get_fdata()) and np.allclose(first.affine, again.affine)
    shutil.copy(folder / "CT_mask.nii.gz", folder / "notes.nii.gz")  # a NIfTI nobody can say is not a scan
    out = tmp_path / "third"
    code, _, err = run_cli(["predict", str(folder), "--model", str(tiny_run), "--out", str(out)], capsys)
    assert code == 2 and "holds both .nii/.nii.gz files (notes.nii.gz, ...) and DICOM files" in err, err
    assert not out.exists()


def test_review_page_flags_a_case_whose_mask_is_gone(evaluated, tmp_path, capsys):
    pred = shutil.copytree(evaluated / "predictions", tmp_path / "pred")
    gone = sorted(pred.glob("*_mask.nii.gz"))[0]
    gone.unlink()
    code, _, err = run_cli(["export", str(pred), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    name = gone.name.removesuffix("_mask.nii.gz")
    row = re.search(rf'<tr data-name="{name}" data-flags="(\d+)".*?</tr>', page, re.S)
    assert row and int(row.group(1)) >= 1 and '<span class="flag">mask missing</span>' in row.group(0)
