"""The shipped models: they load, name their task, and still segment a real image as measured.

A regression guard on the committed weights: the real-image Dice may not fall more than a few
points below what the model card reports (segkit/weights/<task>.json, written by
scripts/ship_model.py from `segkit evaluate` on the real-image set).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import ROOT, load_script

from segkit.checkpoint import weights_dir
from segkit.infer import load_model, predict_volume
from segkit.io import read_volume
from segkit.metrics import dice_per_label

SHIPPED = ROOT / "segkit" / "weights"


def test_every_shipped_model_has_its_card_and_figures():
    for pt in SHIPPED.glob("*.pt"):
        assert (SHIPPED / f"{pt.stem}.md").is_file(), f"{pt.name} has no model card"
        figures = json.loads((SHIPPED / f"{pt.stem}.json").read_text())
        assert figures["task"] == pt.stem and figures["evaluations"]


@pytest.mark.skipif(not (SHIPPED / "ventricle.pt").is_file(), reason="no shipped ventricle model in this checkout")
@pytest.mark.skipif(importlib.util.find_spec("nilearn") is None, reason="nilearn not installed")
def test_shipped_ventricle_model_segments_a_real_t1_as_its_card_says(monkeypatch, tmp_path):
    from segkit.data.ventricle_real import real_case

    monkeypatch.delenv("SEGKIT_WEIGHTS_DIR", raising=False)
    assert weights_dir() == SHIPPED
    net, cfg, info = load_model("ventricle", "cpu")
    assert cfg.task.name == "ventricle" and info["kind"] == "shipped"
    figures = json.loads((SHIPPED / "ventricle.json").read_text())
    real = next(e for e in figures["evaluations"] if "ventricle-real" in str(e["data"]))
    card = next(float(c["dice_lateral_ventricles"]) for c in real["per_case"] if c["case"] == "icbm2009a_t1")

    t1, label, affine = real_case("icbm2009a_t1")
    from conftest import write_nifti

    vol = read_volume(write_nifti(tmp_path / "t1.nii.gz", t1, affine))
    pred = predict_volume(net, cfg, vol)
    dice = dice_per_label(pred.mask, label, cfg.num_classes)
    assert pred.mask.shape == t1.shape
    assert dice[1] >= card - 0.02, f"lateral-ventricle Dice {dice[1]:.3f}, model card says {card:.3f}"
    assert np.isfinite(dice).all()


def test_shipped_liver_model_reads_the_real_ct_as_its_card_says(monkeypatch, tmp_path):
    """The real LiTS 117 crop (tumours, no cysts): the whole liver as measured, and no tumour left called cyst
    (eval.cyst_max_hu: before the density rule 69 mL of it was, and the mask's cyst burden graded it moderate)."""
    from conftest import write_nifti

    from segkit.data.liver import base_ct

    monkeypatch.delenv("SEGKIT_WEIGHTS_DIR", raising=False)
    net, cfg, info = load_model("liver-cyst", "cpu")
    assert cfg.task.name == "liver-cyst" and info["kind"] == "shipped" and cfg.eval.cyst_max_hu > 0
    figures = json.loads((SHIPPED / "liver-cyst.json").read_text())
    real = next(e for e in figures["evaluations"] if "liver-real" in str(e["data"]))
    card = float(real["per_case"][0]["dice_liver"])

    hu, lits, affine = base_ct()
    pred = predict_volume(net, cfg, read_volume(write_nifti(tmp_path / "ct.nii.gz", hu, affine)))
    truth = np.where(lits == 2, 3, lits).astype(np.uint8)  # LiTS tumour -> segkit tumour
    assert dice_per_label(pred.mask, truth, cfg.num_classes)[0] >= card - 0.02
    assert pred.measurements["biomarker"]["grade"] == "healthy" and pred.grade == "healthy"


def test_each_model_card_is_what_ship_model_writes_from_its_figures_and_weights():
    """A card edited by hand, or left behind when the figures or the card's wording changed, drifts from what
    the model measured: each committed card must equal scripts/ship_model.py's card of the committed files."""
    from segkit.checkpoint import load_checkpoint

    ship_model = load_script("ship_model")
    for pt in SHIPPED.glob("*.pt"):
        figures = json.loads((SHIPPED / f"{pt.stem}.json").read_text())
        card = ship_model.model_card(figures, load_checkpoint(pt))
        assert card == (SHIPPED / f"{pt.stem}.md").read_text(), f"{pt.stem}.md: rewrite it with scripts/ship_model.py"
        refit = figures.get("grade_head_refit") or {}
        if refit.get("data"):  # a head refit on another pool names it (its val split judged the refit)
            assert f"volumes of `{refit['data']}`" in card


def test_a_real_ct_without_a_liver_gets_no_grade(monkeypatch, tmp_path):
    """pydicom's CT_small.dcm, one real chest CT slice of another patient (a vertebra, no liver): the mask holds
    no liver, so no grade is given (the head, reading slices without the organ, said "severe" at 1.00)."""
    import shutil

    from pydicom.data import get_testdata_file

    from segkit.infer import predict_paths

    monkeypatch.delenv("SEGKIT_WEIGHTS_DIR", raising=False)
    series = tmp_path / "series"
    series.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), series)
    (report,), failed = predict_paths(series, None, tmp_path / "out")
    assert failed is None and report["model"]["name"] == "liver-cyst"
    assert report["volumes_ml"]["liver"] == 0 and report["biomarker"]["value"] is None
    assert report["grade"] is None and report["probabilities"] == {}
    assert any("no liver+cyst+tumour found, so no biomarker and no grade" in w for w in report["warnings"])


def test_evaluating_the_shipped_liver_model_scores_each_tumour_of_the_real_ct(monkeypatch, tmp_path):
    """The shipped checkpoint predates task.lesions: evaluate takes the built-in task's lesion labels, and counts
    the real crop's tumours as scikit-image's 26-connected labelling of the reference does."""
    import csv

    from skimage.measure import label as components

    from segkit.data.liver import make_liver_real
    from segkit.data.msd import read_case, read_dataset
    from segkit.evaluate import evaluate_split

    monkeypatch.delenv("SEGKIT_WEIGHTS_DIR", raising=False)
    data = make_liver_real(tmp_path / "real").parent  # returns its dataset.json
    report = evaluate_split("liver-cyst", data, "test", tmp_path / "eval", "cpu")
    _, truth = read_case(read_dataset(data).split("test")[0], ("background", "liver", "cyst", "tumour"))
    tumour = report["lesions"]["labels"]["tumour"]
    assert tumour["true"] == components(truth == 3, connectivity=3).max() > 10
    assert report["lesions"]["labels"]["cyst"]["true"] == 0
    with open(tmp_path / "eval" / "lesions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    found = [r for r in rows if r["label"] == "tumour" and r["source"] == "truth" and r["matched"] == "True"]
    assert len(found) == tumour["found"] and all(float(r["overlap"]) > 0 for r in found)
    big = [b for b in tumour["recall_by_size"] if b["min_ml"] >= 5.0][0]
    assert big["true"] > 0 and big["recall"] == 1.0  # every tumour of 5 mL or more (9 on the card's model)
