"""write_evaluation writes all seven files, with the columns, rules and undefined values stated."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from segkit.metrics import (
    EMPTY_RULE,
    LESION_RULE,
    SURFACE_RULE,
    confusion_counts,
    dice_from_counts,
    lesion_counts,
    lesion_table,
    segmentation_metrics,
)
from segkit.report import FILES, LESION_FILE, per_case_columns, write_evaluation

LABELS = ("background", "liver", "cyst")
GRADES = ("healthy", "moderate", "severe")


def synthetic_rows(grades_true: list[int], seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Per-case rows from real masks: healthy cases have no cyst, one with a false positive."""
    rng = np.random.default_rng(seed)
    rows, probs = [], []
    for i, g in enumerate(grades_true):
        t = np.zeros((16, 16, 12), dtype=np.uint8)
        t[2:14, 2:14, 2:10] = 1
        if g > 0:
            t[5 : 7 + 2 * g, 5 : 7 + 2 * g, 4:8] = 2
        p = np.roll(t, int(rng.integers(0, 2)), axis=0)
        if g == 0 and i == 1:
            p[10:12, 10:12, 5:7] = 2  # false-positive cyst in a healthy case
        m = segmentation_metrics(p, t, (1.0, 1.0, 2.5), LABELS, 2.0)
        logits = rng.normal(size=3) + 1.5 * np.eye(3)[g]
        pr = np.exp(logits) / np.exp(logits).sum()
        rows.append(
            {
                "case": f"case_{i:02d}",
                **m,
                "biomarker_true": 0.01 * g,
                "biomarker_pred": None,
                "grade_true": GRADES[g],
                "grade_pred": GRADES[int(pr.argmax())],
                "grade_biomarker": None if i == 2 else GRADES[g],
                **{f"p_{k}": float(pr[j]) for j, k in enumerate(GRADES)},
            }
        )
        probs.append(pr)
    return rows, np.array(probs)


META = {
    "model": "monai_unet",
    "checkpoint": "best.pt",
    "dataset": "synthetic",
    "split": "test",
    "segkit_version": "0.1.0",
    "config": {"eval": {"nsd_tolerance_mm": 2.0}},
}


def test_write_evaluation_writes_all_files_with_expected_columns(tmp_path: Path):
    y = [0, 0, 0, 1, 1, 2, 2, 2]
    rows, probs = synthetic_rows(y)
    report = write_evaluation(rows, probs, np.array(y), GRADES, LABELS, tmp_path, META, 200, 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)  # no temp files left
    for name in FILES:
        if name.endswith(".png"):
            assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "per_case.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows)
    header = list(table[0])
    assert header == per_case_columns(rows, GRADES, LABELS)
    for col in (
        "case",
        "dice_cyst",
        "iou_cyst",
        "hd95_cyst",
        "assd_cyst",
        "nsd_cyst",
        "vol_true_ml_cyst",
        "vol_pred_ml_cyst",
        "vol_diff_ml_cyst",
        "biomarker_true",
        "biomarker_pred",
        "grade_true",
        "grade_pred",
        "p_healthy",
        "p_moderate",
        "p_severe",
    ):
        assert col in header
    assert table[1]["empty_cyst"] == "truth" and table[1]["hd95_cyst"] == ""  # undefined: blank
    assert table[0]["empty_cyst"] == "both" and float(table[0]["dice_cyst"]) == 1.0
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["grading"]["confusion"] == report["grading"]["confusion"]
    assert on_disk["meta"]["model"] == "monai_unet"
    assert on_disk["segmentation"]["cyst"]["empty"]["both"] == ["case_00", "case_02"]


def test_report_md_states_empty_rule_and_clinical_tables(tmp_path: Path):
    y = [0, 0, 0, 1, 1, 2, 2, 2]
    rows, probs = synthetic_rows(y)
    meta = {**META, "epoch": None}  # a model soup has no epoch
    report = write_evaluation(rows, probs, np.array(y), GRADES, LABELS, tmp_path, meta, 200, 2.0)
    md = (tmp_path / "report.md").read_text()
    assert "| **epoch** | none recorded |" in md and "None" not in md
    assert EMPTY_RULE in md and SURFACE_RULE in md and report["surface_rule"] == SURFACE_RULE
    assert md.index("monai_unet") < md.index("## Summary")  # metadata comes first
    assert "| Actual \\ Predicted | healthy | moderate | severe |" in md
    cm = report["grading"]["confusion"]
    assert f"| **moderate** | {cm[1][0]} | {cm[1][1]} | {cm[1][2]} |" in md
    assert "NSD at 2 mm" in md and "wide" in md and "Support" in md
    assert "Expected calibration error" in md and "Cohen's kappa" in md
    fp = report["healthy_false_positive_ml"]["labels"]["cyst"]
    assert fp["num_with_fp"] == 1 and fp["max"] == pytest.approx(8 * 2.5 / 1000)
    assert report["agreement"]["classifier_vs_biomarker"]["num_undefined"] == 1


def test_single_class_split_reports_auc_undefined_with_reason(tmp_path: Path):
    y = [0, 0, 0, 0]
    rows, probs = synthetic_rows(y)
    report = write_evaluation(rows, probs, np.array(y), GRADES, LABELS, tmp_path, META, 100)
    assert report["grading"]["auc_macro"] is None
    md = (tmp_path / "report.md").read_text()
    assert "undefined (no severe cases in this split)" in md
    assert "undefined (every case is healthy" in md
    assert "0.500" not in md.split("ROC-AUC, each grade")[1].split("###")[0]
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_cases_without_true_grade_are_left_out_of_grading(tmp_path: Path):
    rows, probs = synthetic_rows([0, 1, 2])
    report = write_evaluation(rows, probs, np.array([-1, -1, -1]), GRADES, LABELS, tmp_path, META)
    assert report["grading"] is None and report["num_graded"] == 0
    assert "grading not evaluated" in (tmp_path / "report.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)


def test_report_json_has_no_nan(tmp_path: Path):
    rows, probs = synthetic_rows([1, 2])
    for r in rows:
        r["hd95_liver"] = float("nan")
    write_evaluation(rows, probs, np.array([1, 2]), GRADES, LABELS, tmp_path, META, 50)

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in report.json")

    json.loads((tmp_path / "report.json").read_text(), parse_constant=refuse)


def test_pooled_dice_in_the_report_is_the_dice_of_all_cases_together(tmp_path: Path):
    """A healthy case with a small false cyst and a cyst case found exactly: per-case mean 0.5, pooled ~0.94,
    equal to the Dice of the two masks laid side by side (same spacing)."""
    truth = np.zeros((2, 16, 16, 12), dtype=np.uint8)
    truth[:, 2:14, 2:14, 2:10] = 1
    truth[1, 5:9, 5:9, 4:8] = 2  # 64 cyst voxels in case 1; case 0 is healthy
    pred = truth.copy()
    pred[0, 10:12, 10:12, 5:7] = 2  # 8 false cyst voxels in the healthy case
    pred[1, 2, 2:14, 2:10] = 0  # and some liver missed
    rows = [
        {"case": f"c{i}", **segmentation_metrics(pred[i], truth[i], (1.0, 1.0, 2.5), LABELS, 2.0), "grade_true": g}
        for i, g in enumerate(("healthy", "moderate"))
    ]
    report = write_evaluation(rows, np.full((2, 3), 1 / 3), np.array([0, 1]), GRADES, LABELS, tmp_path, META, 50, 2.0)
    cyst = report["segmentation"]["cyst"]
    assert cyst["dice"]["mean"] == pytest.approx(0.5)
    together = dice_from_counts(confusion_counts(np.concatenate(pred), np.concatenate(truth), 3))
    assert cyst["dice_pooled"] == pytest.approx(together[1]) and together[1] == pytest.approx(128 / 136)
    assert report["segmentation"]["liver"]["dice_pooled"] == pytest.approx(together[0])
    assert "Pooled Dice" in (tmp_path / "report.md").read_text()


def test_results_are_broken_down_by_a_case_field_and_by_true_grade(tmp_path: Path):
    y = [0, 1, 2, 0, 1, 2]
    rows, probs = synthetic_rows(y)
    for i, r in enumerate(rows):
        r["site"] = "A" if i < 4 else "B"
    report = write_evaluation(rows, probs, np.array(y), GRADES, LABELS, tmp_path, META, 50, by=("site",))
    a, b = report["subgroups"]["site"]["A"], report["subgroups"]["site"]["B"]
    assert (a["num_cases"], b["num_cases"]) == (4, 2)
    assert a["dice"]["liver"]["mean"] == pytest.approx(np.mean([r["dice_liver"] for r in rows[:4]]))
    assert b["dice"]["cyst"]["mean"] == pytest.approx(np.mean([r["dice_cyst"] for r in rows[4:]]))
    assert b["grade_accuracy"] == pytest.approx(np.mean([r["grade_pred"] == r["grade_true"] for r in rows[4:]]))
    assert list(report["subgroups"]["grade_true"]) == ["healthy", "moderate", "severe"]
    assert report["subgroups"]["grade_true"]["healthy"]["num_cases"] == 2
    md = (tmp_path / "report.md").read_text()
    assert "### site" in md and "| `B` | 2 |" in md
    assert next(csv.reader((tmp_path / "per_case.csv").open()))[-1] == "site"


def test_subgroup_fields_are_the_categorical_ones_or_those_asked_for(tmp_path: Path):
    from segkit.data.msd import Case
    from segkit.errors import InputError
    from segkit.evaluate import subgroup_fields

    def case(i: int, **info) -> Case:
        return Case(f"c{i}", tmp_path / "i.nii.gz", None, "healthy", None, "test", info)

    cases = [
        case(i, contrast="T1" if i % 2 else "T2", skull=i < 2, subject=f"s{i}", only="x", thick=1.0 + i, fov=None)
        for i in range(10)
    ]
    cases[0].info["fov"] = "+x"
    # two values each; ten subjects are too many groups, one value no breakdown, numbers are not categories
    assert subgroup_fields(cases, None, tmp_path) == ("contrast", "skull", "fov")
    assert subgroup_fields(cases[:4], None, tmp_path) == ("contrast", "skull", "fov")  # 4 subjects name 4 cases
    assert subgroup_fields(cases, ["thick", "subject"], tmp_path) == ("thick", "subject")
    with pytest.raises(InputError, match="no case of the split has field 'site'"):
        subgroup_fields(cases, ["site"], tmp_path)


def test_a_numeric_field_is_reported_by_thirds_of_the_cases_in_ascending_order(tmp_path: Path):
    y = [0, 1, 2, 0, 1, 2, 0, 1, 2]
    rows, probs = synthetic_rows(y)
    thickness = [5.0, 1.0, 1.2, 3.0, 1.1, 1.5, 1.4, 1.3, 2.0]
    for r, t in zip(rows, thickness, strict=True):
        r["slice_thickness"] = t
    report = write_evaluation(rows, probs, np.array(y), GRADES, LABELS, tmp_path, META, 50, by=("slice_thickness",))
    groups = report["subgroups"]["slice_thickness"]
    assert list(groups) == ["1 to 1.2", "1.3 to 1.5", "2 to 5"]
    thick = [r["dice_liver"] for r, t in zip(rows, thickness, strict=True) if t >= 2.0]
    assert groups["2 to 5"]["num_cases"] == 3
    assert groups["2 to 5"]["dice"]["liver"]["mean"] == pytest.approx(np.mean(thick))


def test_lesion_detection_is_pooled_over_cases_and_split_by_lesion_size(tmp_path: Path):
    """Two cases at 1 mm: a 1 mL cyst found and a 0.008 mL one missed; a 6 mL cyst found and a false 0.027 mL
    one. Recall 2 of 3 (0 of 1 under 0.5 mL, 1 of 1 at 0.5-5, 1 of 1 from 5), precision 2 of 3."""
    y = [0, 1]
    rows, probs = synthetic_rows(y)
    records = []
    for i, (truth_boxes, pred_boxes) in enumerate(
        [
            ([(0, 10, 0, 10, 0, 10), (30, 32, 30, 32, 30, 32)], [(0, 10, 0, 10, 0, 10)]),
            ([(0, 20, 0, 20, 0, 15)], [(2, 20, 0, 20, 0, 15), (30, 33, 30, 33, 30, 33)]),
        ]
    ):
        t, p = np.zeros((40, 40, 40), np.uint8), np.zeros((40, 40, 40), np.uint8)
        for mask, boxes in ((t, truth_boxes), (p, pred_boxes)):
            for a, b, c, d, e, f in boxes:
                mask[a:b, c:d, e:f] = 2
        table = lesion_table(p, t, (1.0, 1.0, 1.0), LABELS, ("cyst",))
        rows[i].update(lesion_counts(table, ("cyst",)))
        records += [{"case": rows[i]["case"], **r} for r in table]
    report = write_evaluation(rows, probs, np.array(y), GRADES, LABELS, tmp_path, META, 50, 2.0, (), ("cyst",), records)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted((*FILES, LESION_FILE))
    cyst = report["lesions"]["labels"]["cyst"]
    assert (cyst["true"], cyst["found"], cyst["predicted"], cyst["false"]) == (3, 2, 3, 1)
    assert cyst["recall"] == pytest.approx(2 / 3) and cyst["precision"] == pytest.approx(2 / 3)
    assert cyst["f1"] == pytest.approx(2 / 3) and cyst["false_per_case"] == 0.5
    assert [(b["true"], b["found"]) for b in cyst["recall_by_size"]] == [(1, 0), (1, 1), (1, 1)]
    assert cyst["false_ml_largest"] == pytest.approx(0.027)
    with open(tmp_path / LESION_FILE, newline="") as fh:
        lesions = list(csv.DictReader(fh))
    assert len(lesions) == 6 and {r["case"] for r in lesions} == {"case_00", "case_01"}
    with open(tmp_path / "per_case.csv", newline="") as fh:
        per_case = list(csv.DictReader(fh))
    assert [r["lesions_false_cyst"] for r in per_case] == ["0", "1"]
    md = (tmp_path / "report.md").read_text()
    assert LESION_RULE in md
    assert (
        "| cyst | 3 | 2 (0.667) | 0.000 (0 / 1) | 1.000 (1 / 1) | 1.000 (1 / 1) | 3 | 1 | 0.667 | 0.667 | 0.50 |" in md
    )
    assert (
        json.loads((tmp_path / "report.json").read_text())["lesions"]["labels"]["cyst"]["recall_by_size"][2]["max_ml"]
        is None
    )
