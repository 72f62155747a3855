import json

import numpy as np
import pytest

from segkit.data.msd import read_dataset
from segkit.data.phantom import make_phantom
from segkit.io import read_volume
from segkit.measure import grade_from_biomarker, measure
from segkit.tasks import TASKS


@pytest.mark.parametrize("task", ["ventricle", "liver-cyst"])
def test_phantom_grades_agree_with_their_biomarker_and_are_balanced(task, tmp_path):
    make_phantom(task, tmp_path, cases=9, seed=1, shape=(24, 24, 12))
    ds = read_dataset(tmp_path)
    spec = TASKS[task]
    assert sorted(c.grade for c in ds.cases) == sorted(list(spec.grades) * 3)
    for c in ds.cases:
        lab = read_volume(c.label)
        m = measure(lab.data.astype(np.uint8), lab.voxel_ml, spec)
        assert m["biomarker"]["grade"] == c.grade == grade_from_biomarker(c.biomarker, spec)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert set(meta["split"]) == {"train", "val", "test"}
    assert len({c for s in meta["split"].values() for c in s}) == 9  # no case in two splits


def test_a_rows_own_one_value_fields_reach_the_case(tmp_path):
    make_phantom("ventricle", tmp_path, cases=3, seed=0, shape=(24, 24, 12))
    meta = json.loads((tmp_path / "dataset.json").read_text())
    meta["training"][0].update(site="Oslo", scanner_t=3, contrast_agent=False, spacing=[1.0, 1.0, 2.0], sizes={})
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    info = read_dataset(tmp_path).cases[0].info
    assert {k: info[k] for k in ("site", "scanner_t", "contrast_agent")} == {
        "site": "Oslo",
        "scanner_t": 3,
        "contrast_agent": False,
    }
    assert not {"spacing", "sizes", "image", "label", "split", "grade", "case"} & set(info)
