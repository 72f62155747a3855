"""Review exports: the HTML review page and DICOM SEG (overlays and label files come from segkit.render;
ONNX from segkit.onnx_export)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import os
import re
import urllib.parse
from collections import Counter
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from segkit.errors import InputError, OutputError
from segkit.io import atomic_write, atomic_write_text
from segkit.render import LEGACY_LABEL_FILES, label_color, label_file_names

log = logging.getLogger(__name__)

FORMATS = ("html", "csv", "dicom-seg", "onnx")
TINY_ML = 0.1  # a graded structure smaller than this (mL) is more likely noise than anatomy


def check_format(fmt: str) -> str:
    """The export format, or InputError listing the valid ones."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    return fmt


def read_predictions(pred_dir: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The predictions folder (an evaluate folder's predictions/ too) and its reports, sorted by name."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"{pred_dir}: not a folder; pass the --out folder of segkit predict or segkit evaluate")
    if not any(pred_dir.glob("*_report.json")) and (pred_dir / "predictions").is_dir():
        pred_dir = pred_dir / "predictions"  # an evaluate folder
    reports = []
    for path in sorted(pred_dir.glob("*_report.json")):
        try:
            report = json.loads(path.read_text())
            report["name"] = str(report["mask"]).removesuffix("_mask.nii.gz")
            report["labels"] = dict(report["labels"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path}: not a segkit prediction report ({type(e).__name__}); re-run predict") from None
        reports.append(report)
    if not reports:
        raise InputError(f"{pred_dir}: no predictions (*_report.json) found; run segkit predict --out {pred_dir} first")
    return pred_dir, reports


def write_table(pred_dir: Path, out: Path) -> Path:
    """out/predictions.csv: one row per prediction of the folder (a cohort's volumes, biomarkers and grades in
    one table): name, input, task, model, grade and each grade's probability, the biomarker, its value and its
    grade, each label's volume in mL, and the case's warnings (; between them; the model's limits, the same on
    every case, are left to its card). Two tasks' predictions share the table, each leaving the other's columns
    empty."""
    pred_dir, reports = read_predictions(pred_dir)
    rows = []
    for r in reports:
        model = r.get("model") or {}
        bio = r.get("biomarker") or {}
        row: dict[str, Any] = {
            "name": r["name"],
            "input": r.get("input"),
            "task": r.get("task"),
            "model": f"{model.get('name', '')} ({model.get('sha256', '')})" if model else "",
            "grade": r.get("grade"),
        }
        row.update({f"p_{g}": p for g, p in (r.get("probabilities") or {}).items()})
        row.update({"biomarker": bio.get("name"), "biomarker_value": bio.get("value")})
        row["biomarker_grade"] = bio.get("grade")
        row.update({f"ml_{k}": v for k, v in (r.get("volumes_ml") or {}).items()})
        row["warnings"] = "; ".join(case_warnings(r))
        rows.append(row)
    fields = list(dict.fromkeys(k for row in rows for k in row if k != "warnings")) + ["warnings"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(out) / "predictions.csv"
    atomic_write_text(path, buf.getvalue())
    return path


def export_dicom_seg(pred_dir: Path, out: Path, dicom: Path | None = None) -> tuple[list[Path], dict[str, str]]:
    """out/<name>_seg.dcm for each prediction made from a DICOM series (or the one series given by --dicom);
    returns the files written and the cases left out, each with why (predicted from NIfTI: a SEG references
    DICOM images; or not the case of the series given by --dicom)."""
    from segkit.dicom import dicom_seg, list_series, read_series
    from segkit.io import read_volume

    pred_dir, reports = read_predictions(pred_dir)
    if dicom is not None:
        chosen = [r for r in reports if Path(str(r.get("input"))).name == Path(dicom).name] or reports
        if len(chosen) != 1:
            raise InputError(
                f"{pred_dir}: holds {len(reports)} predictions and none is named after {Path(dicom).name}; "
                "pass a predictions folder with one case, or drop --dicom to use each report's input"
            )
        pairs = [(chosen[0], Path(dicom))]
    else:
        gone = [r for r in reports if r.get("series_uid") and not Path(str(r.get("input"))).is_dir()]
        if gone:
            raise InputError(
                f"{pred_dir}: {gone[0]['name']} was predicted from the DICOM series in {gone[0].get('input')}, which "
                "is no longer there; pass the series folder with --dicom (with that case's predictions alone)"
            )
        pairs = [(r, Path(r["input"])) for r in reports if r.get("input") and Path(r["input"]).is_dir()]
        if not pairs:
            raise InputError(
                f"{pred_dir}: no prediction was made from a DICOM series folder (or it has moved); "
                "predict a DICOM folder, or pass --dicom SERIES_DIR"
            )
    segs = []  # every SEG made before any is written: a case that fails leaves no other case's file behind
    for report, folder in pairs:
        mask = read_volume(pred_dir / report["mask"], kind="mask")
        labels = tuple(report["labels"][k] for k in sorted(report["labels"], key=int))
        uid = report.get("series_uid")  # the series the mask was predicted from; a SEG must reference no other
        found = list_series(folder)
        if uid and uid not in found:
            raise InputError(
                f"{folder}: does not hold series {uid}, the one {report['name']} was predicted from; a SEG made "
                "against another series would reference the wrong images: pass that series' folder (--dicom)"
            )
        series = read_series(folder, uid or None, found)
        if not mask.data.any():
            log.warning("%s: the mask is empty; its DICOM SEG holds every frame, all empty", report["name"])
        out_path = Path(out) / f"{report['name']}_seg.dcm"
        if out_path.is_file() and out_path.resolve().parent == folder.resolve():  # a source slice of that name
            raise OutputError(f"{out_path}: output would overwrite the input (a series file); choose another --out")
        segs.append((out_path, dicom_seg(mask.data.round().astype(np.uint8), mask.affine, series, labels, out_path)))
    for out_path, seg in segs:
        atomic_write(out_path, seg.save_as)
    done = {id(report) for report, _ in pairs}
    skipped = {
        r["name"]: "not the series given by --dicom" if r.get("series_uid") else "predicted from NIfTI, not DICOM"
        for r in reports
        if id(r) not in done
    }
    return [out_path for out_path, _ in segs], skipped


def review_flags(report: dict[str, Any], low_confidence: float, tiny_ml: float = TINY_ML) -> list[str]:
    """Why a case needs a look first: low confidence, grade vs biomarker, empty or tiny masks, warnings."""
    flags: list[str] = []
    probs = report.get("probabilities") or {}
    bio = report.get("biomarker") or {}
    grade = report.get("grade")
    if grade is None:
        flags.append("no grade")
    elif probs and max(probs.values()) < low_confidence:
        flags.append(f"low confidence {max(probs.values()):.2f}")
    if grade and bio.get("grade") and grade != bio["grade"]:
        flags.append(f"grade {grade} but biomarker {bio['grade']}")
    volumes = report.get("volumes_ml") or {}
    total = sum(volumes.values())
    if total == 0:
        flags.append("empty mask")
    elif total < tiny_ml:
        flags.append(f"tiny mask {total:.3f} mL")
    elif "lesions" not in report:  # lesions (cysts) may be absent from a healthy organ; a ventricle may not
        match = re.match(r"volume\((.+?)\)", str(bio.get("definition", "")))
        for name in match.group(1).split("+") if match else []:
            v = volumes.get(name, 0.0)
            if v < tiny_ml:
                flags.append(f"no {name}" if v == 0 else f"tiny {name} {v:.3f} mL")
    # predict's own low-confidence and disagreement warnings are the two flags above (this page's
    # threshold may differ): list every other warning
    dup = ("low-confidence grade", f"grade {grade} disagrees")
    flags += [f"warning: {w}" for w in case_warnings(report) if not w.startswith(dup)]
    return flags


def case_warnings(report: dict[str, Any]) -> list[str]:
    """A report's warnings about its own case: the model's declared limits, which every report of that model
    repeats, left out (the review page shows them once above its table; the table leaves them to the card)."""
    limits = set((report.get("model") or {}).get("limits") or [])
    return [str(w) for w in report.get("warnings") or [] if w not in limits]


def read_dice(pred_dir: Path) -> dict[str, dict[str, str]]:
    """Per-case rows of an evaluate folder's per_case.csv (next to predictions/); empty when absent."""
    path = pred_dir.parent / "per_case.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {row["case"]: row for row in csv.DictReader(fh) if row.get("case")}


def low_confidence_threshold(model: str | Path | None, report: dict[str, Any]) -> float:
    """eval.low_confidence of the model's config (--model, else the report's checkpoint), else the default."""
    from segkit.checkpoint import load_checkpoint, resolve_checkpoint
    from segkit.config import EvalConfig, config_from_dict
    from segkit.errors import SegkitError

    if model is not None:
        return config_from_dict(load_checkpoint(resolve_checkpoint(model))["config"]).eval.low_confidence
    checkpoint = Path(str((report.get("model") or {}).get("checkpoint") or ""))
    try:  # the checkpoint that made the prediction, when it is still there
        return config_from_dict(load_checkpoint(checkpoint)["config"]).eval.low_confidence
    except SegkitError:
        return EvalConfig().low_confidence


def write_review(
    pred_dir: Path,
    out: Path,
    low_confidence: float | None = None,
    tiny_ml: float | None = None,
    model: str | None = None,
) -> Path:
    """out/index.html: one self-contained, sortable page with a row per case (images embedded); a folder that
    holds two tasks' predictions gets each task's label colours and label files."""
    pred_dir, reports = read_predictions(pred_dir)
    tiny_ml = TINY_ML if tiny_ml is None else tiny_ml
    thresholds: dict[str, float] = {}  # per checkpoint: two tasks' models may set different ones
    for r in reports:
        if _checkpoint(r) not in thresholds:
            own = low_confidence_threshold(model, r) if low_confidence is None else low_confidence
            thresholds[_checkpoint(r)] = own
    dice = read_dice(pred_dir)
    rows = [
        _review_row(r, pred_dir, out, review_flags(r, thresholds[_checkpoint(r)], tiny_ml), dice.get(r["name"]))
        for r in reports
    ]
    num_flagged = sum('data-flags="0"' not in r for r in rows)
    num = Counter(str(r.get("task", "?")) for r in reports)  # cases per task, in the order the tasks first appear
    legend, files = _task_keys(reports, pred_dir, out)
    task_text = (
        "tasks " + ", ".join(f"{t} ({n})" for t, n in num.items()) if len(num) > 1 else f"task {next(iter(num))}"
    )
    levels = " / ".join(f"{v:.2f}" for v in sorted(set(thresholds.values())))
    page = REVIEW_PAGE.substitute(
        title=html.escape(f"segkit review: {pred_dir.resolve().name}"),
        summary=html.escape(
            f"{len(rows)} cases, {num_flagged} flagged · {task_text} · low confidence below {levels} · "
            f"tiny below {tiny_ml:g} mL · from {pred_dir.resolve()}"
        ),
        legend=legend,
        limits=_limits(reports),
        dice_head="<th data-key=dice>Dice</th>" if dice else "",
        rows="\n".join(rows),
        label_files=files,
    )
    atomic_write_text(Path(out) / "index.html", page)
    return Path(out) / "index.html"


def _task_keys(reports: list[dict[str, Any]], pred_dir: Path, out: Path) -> tuple[str, str]:
    """The page's colour key and its label-file line, each task's (named where the folder holds several)."""
    tasks: dict[str, dict[str, Any]] = {}  # each task's first report
    for r in reports:
        tasks.setdefault(str(r.get("task", "?")), r)
    many = len(tasks) > 1
    legend, files = [], []
    for task, r in tasks.items():
        names = [r["labels"][k] for k in sorted(r["labels"], key=int)]
        keys = "".join(
            f'<span class="sw" style="background:rgb{label_color(i)}"></span>{html.escape(n)} '
            for i, n in enumerate(names)
            if i
        )
        legend.append(f"<b>{html.escape(task)}</b>: {keys}" if many else keys)
        found = r.get("label_files") or label_file_names(task)
        if not (pred_dir / found["itksnap"]).is_file() and (pred_dir / LEGACY_LABEL_FILES["itksnap"]).is_file():
            found = LEGACY_LABEL_FILES
        snap, ctbl = (html.escape(os.path.relpath(pred_dir / found[k], out)) for k in ("itksnap", "slicer"))
        files.append(
            (f"{html.escape(task)}: " if many else "")
            + f"ITK-SNAP <code>itksnap -g IMAGE -s MASK -l {snap}</code>; 3D Slicer: load <code>{ctbl}</code>, "
            "then the mask as a labelmap with that colour table."
        )
    return " · ".join(legend), "<br>".join(files)


def _href(path: Path, out: Path) -> str:
    """A link from the page in `out` to path: relative, URL-encoded (a case named a#1?x or with spaces), escaped."""
    return html.escape(urllib.parse.quote(Path(os.path.relpath(path, out)).as_posix()))


def _limits(reports: list[dict[str, Any]]) -> str:
    """The measured limits each model declares (a shipped model's, repeated in every one of its reports), once
    per model: shown above the table instead of as a flag on every case."""
    seen = {_checkpoint(r): (r.get("model") or {}).get("limits") for r in reports}
    head = "<b>Limits the model declares</b> (in each of its reports)"
    return "".join(f'<div class="limits">{head}: {html.escape(" ".join(t))}</div>' for t in seen.values() if t)


def _checkpoint(report: dict[str, Any]) -> str:
    return str((report.get("model") or {}).get("checkpoint"))


def _review_row(r: dict[str, Any], pred_dir: Path, out: Path, flags: list[str], truth: dict[str, str] | None) -> str:
    """One <tr>: case and flags, grade with probability bars, biomarker and volumes, Dice, overlay."""
    esc = html.escape
    probs = r.get("probabilities") or {}
    grades = list(probs) or ["healthy", "moderate", "severe"]  # this case's model's grades
    grade, bio = r.get("grade"), r.get("biomarker") or {}
    gi = grades.index(grade) if grade in grades else -1
    if not (pred_dir / str(r["mask"])).is_file():
        flags.insert(0, "mask missing")  # moved or deleted since predict: the row's numbers have no mask behind them
    flag_html = "".join(f'<span class="flag">{esc(f)}</span>' for f in flags) or '<span class="ok">no flags</span>'
    bars = "".join(
        f'<div class="bar"><span>{esc(g)}</span><em><i style="width:{100 * p:.0f}%" '
        f'class="g{grades.index(g) % 3}"></i></em><b>{p:.2f}</b></div>'
        for g, p in probs.items()
    )
    value = bio.get("value")
    bio_text = "n/a" if value is None else f"{value:.4f}"
    thresholds = " / ".join(f"{t:g}" for t in bio.get("thresholds") or [])
    volumes = "".join(f"<li>{esc(k)} <b>{v:.2f} mL</b></li>" for k, v in (r.get("volumes_ml") or {}).items())
    cells = [
        f'<td><div class="case">{esc(r["name"])}</div>{flag_html}'
        f'<div class="links"><a href="{_href(pred_dir / r["mask"], out)}">mask</a> · '
        f'<a href="{_href(pred_dir / (r["name"] + "_report.json"), out)}">report</a></div></td>',
        f'<td><div class="grade g{gi % 3 if gi >= 0 else "x"}">{esc(grade or "no grade")}</div>{bars}'
        + (_truth(truth["grade_true"], grade) if truth and truth.get("grade_true") else "")
        + "</td>",
        f'<td><div class="bio">{esc(str(bio.get("name", "biomarker")))} <b>{bio_text}</b></div>'
        f'<div class="sub">implies {esc(str(bio.get("grade") or "n/a"))} · thresholds {thresholds}</div>'
        f"<ul>{volumes}</ul></td>",
    ]
    dice_mean = ""
    if truth is not None:
        d = {k[5:]: float(v) for k, v in truth.items() if k.startswith("dice_") and v not in ("", None)}
        found = {k.removeprefix("lesions_found_"): v for k, v in truth.items() if k.startswith("lesions_found_")}
        lesions = "".join(
            f"<li>{esc(n)} lesions: <b>{v} of {truth.get(f'lesions_true_{n}')}</b> found, "
            f"<b>{truth.get(f'lesions_false_{n}')}</b> false</li>"
            for n, v in found.items()
            if v not in ("", None)
        )
        cells.append(
            "<td><ul>" + "".join(f"<li>{esc(k)} <b>{v:.3f}</b></li>" for k, v in d.items()) + lesions + "</ul></td>"
        )
        dice_mean = f"{np.mean(list(d.values())):.4f}" if d else ""
    overlay = pred_dir / str(r.get("overlay", ""))
    if overlay.is_file() and r.get("overlay"):
        uri = "data:image/png;base64," + base64.b64encode(overlay.read_bytes()).decode()
        cells.append(f'<td class="ov"><img src="{uri}" alt="{esc(r["name"])} overlay"></td>')
    else:
        flags.append("overlay missing")
        cells.append('<td class="ov"><div class="missing">overlay missing</div></td>')
    conf = max(probs.values()) if probs else 0.0
    attrs = (
        f'data-name="{esc(r["name"])}" data-flags="{len(flags)}" data-grade="{gi}" data-conf="{conf:.4f}" '
        f'data-bio="{-1 if value is None else value}" data-dice="{dice_mean or -1}"'
    )
    return f'<tr {attrs} class="{"flagged" if flags else ""}">' + "".join(cells) + "</tr>"


def _truth(grade_true: str, grade: str | None) -> str:
    miss = " miss" if grade_true != grade else ""
    return f'<div class="truth{miss}">truth: {html.escape(grade_true)}</div>'


REVIEW_PAGE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>$title</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{margin:0;background:#111418;color:#e6e6e6;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif}
header{position:sticky;top:0;z-index:1;background:#181c22;border-bottom:1px solid #2a3038;padding:10px 18px}
h1{font-size:18px;margin:0 0 2px}.summary{color:#9aa4b0;font-size:12px}
.controls{margin-top:6px;font-size:13px;color:#c0c8d0}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin:0 4px 0 10px;vertical-align:-1px}
table{border-collapse:collapse;width:100%}
th{position:sticky;top:78px;background:#1d222a;text-align:left;padding:6px 10px;font-weight:600;color:#c8d0da;
border-bottom:1px solid #2a3038}
th[data-key]{cursor:pointer;user-select:none}th[data-key]:hover{color:#fff}
th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}
td{vertical-align:top;padding:10px;border-bottom:1px solid #232830}
td:nth-child(1){width:190px}td:nth-child(2){width:150px}td:nth-child(3){width:190px}td.ov{width:auto}
td.ov img{width:100%;max-width:1080px;display:block;border-radius:4px}
tr.flagged td:first-child{box-shadow:inset 4px 0 #e0a030}.case{font-weight:600;font-size:15px;margin-bottom:4px}
.flag{display:inline-block;background:#4a3510;color:#ffd27a;border-radius:3px;padding:1px 6px;margin:2px 4px 2px 0;
font-size:12px}
.ok{color:#6fbf73;font-size:12px}.links{margin-top:6px;font-size:12px}a{color:#7fb8ff}
.grade{font-weight:700;font-size:15px;text-transform:capitalize}
.g0{color:#6fbf73}.g1{color:#ffb347}.g2{color:#ff6b6b}.gx{color:#9aa4b0}
.bar{display:flex;align-items:center;gap:6px;font-size:12px;margin:2px 0}.bar span{width:62px;color:#9aa4b0}
.bar em{display:block;width:90px;height:8px;background:#2a3038;border-radius:2px}
.bar i{display:block;height:8px;border-radius:2px;min-width:1px}.bar b{font-weight:400}
i.g0{background:#6fbf73}i.g1{background:#ffb347}i.g2{background:#ff6b6b}
.truth,.sub{color:#9aa4b0;font-size:12px}.truth.miss{color:#ff8a80}.bio{font-size:13px}
ul{margin:4px 0 0;padding-left:16px;font-size:12px}li{white-space:nowrap}
.limits{padding:6px 18px;color:#ffd27a;font-size:12px;background:#1a1d22;border-bottom:1px solid #2a3038}
.missing{color:#ff6b6b;padding:30px}footer{color:#9aa4b0;font-size:12px;padding:14px 18px}code{color:#c8d0da}
</style></head>
<body>
<header><h1>$title</h1><div class="summary">$summary</div>
<div class="controls"><label><input type="checkbox" id="only"> flagged only</label> · click a column to sort ·
labels: $legend</div></header>
$limits
<table><thead><tr><th data-key=flags class=desc>Case · flags</th><th data-key=grade>Grade</th>
<th data-key=bio>Biomarker · volumes</th>$dice_head
<th>Axial · coronal · sagittal <small>(patient's right on the image's left)</small></th></tr></thead>
<tbody>
$rows
</tbody></table>
<footer>Label names and colours: $label_files</footer>
<script>
(function () {
  var body = document.querySelector("tbody"), heads = document.querySelectorAll("th[data-key]");
  var num = function (tr, key) { return key === "name" ? tr.dataset.name : parseFloat(tr.dataset[key]); };
  function sortBy(key, dir) {
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var d = num(a, key) < num(b, key) ? -1 : num(a, key) > num(b, key) ? 1 : 0;
      if (d === 0 && key === "flags") { d = num(a, "grade") - num(b, "grade"); }
      return dir * d || (a.dataset.name < b.dataset.name ? -1 : 1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  heads.forEach(function (th) {
    th.addEventListener("click", function () {
      var dir = th.classList.contains("desc") ? 1 : -1;
      heads.forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(dir > 0 ? "asc" : "desc");
      sortBy(th.dataset.key, dir);
    });
  });
  document.getElementById("only").addEventListener("change", function (e) {
    Array.prototype.forEach.call(body.rows, function (r) {
      r.style.display = e.target.checked && r.dataset.flags === "0" ? "none" : "";
    });
  });
  sortBy("flags", -1);
  window.addEventListener("load", function () {  // read by the browser test
    var imgs = Array.prototype.slice.call(document.images);
    document.body.dataset.images = imgs.length;
    document.body.dataset.imagesLoaded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
    document.body.dataset.rows = body.rows.length;
  });
})();
</script>
</body></html>
""")
