"""segkit command line: parses arguments, lazy-imports the rest, prints SegkitError on one line (exit 2)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="U-Net segmentation + severity grading.")
data_app = typer.Typer(no_args_is_help=True, help="Make and inspect datasets.")
app.add_typer(data_app, name="data")

TASKS_HELP = (
    "ventricle, ventricle-real (real T1 images, for evaluation), liver-cyst or liver-real (the real CT the"
    " liver scenes are drawn from, for evaluation)"
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("matplotlib", "PIL", "h5py", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # highdicom's note on an empty mask's SEG: segkit says that in words of its own (segkit.export)
    logging.getLogger("highdicom").setLevel(logging.WARNING if verbose else logging.ERROR)
    if not verbose:  # the readers log what segkit then says in one line of its own (twice, for nibabel's checks)
        for reader in ("nibabel", "pydicom"):
            logging.getLogger(reader).setLevel(logging.CRITICAL)


def _say(msg: str) -> None:
    typer.echo(msg)


@data_app.command("make")
def data_make(
    task: Annotated[str, typer.Argument(help=TASKS_HELP)],
    out: Annotated[Path, typer.Option(help="Dataset folder to write (MSD layout).")],
    cases: Annotated[int, typer.Option(min=2, help="Number of cases.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, identical files.")] = 0,
    phantom: Annotated[bool, typer.Option(help="Procedural phantoms instead of real anatomy (tests).")] = False,
) -> None:
    """Build a default dataset: imagesTr/, labelsTr/, dataset.json with grades and splits."""
    if phantom:
        from segkit.data.phantom import make_phantom

        path = make_phantom(task, out, cases, seed)
    else:
        from segkit.data.makers import make_dataset

        path = make_dataset(task, out, cases, seed)
    import json

    made = json.loads(path.read_text())
    rows = made.get("training", [])
    counts = {s: sum(r.get("split") == s for r in rows) for s in ("train", "val", "test")}
    fixed = " (a fixed set of real images: --cases does not apply)" if task.endswith("-real") else ""
    split_text = ", ".join(f"{s} {n}" for s, n in counts.items())
    _say(f"wrote {len(rows)} {task} cases to {out} ({path.name}: {split_text}){fixed}")
    empty = [s for s, n in counts.items() if n == 0]
    if empty and not fixed:
        _say(f"warning: no {' or '.join(empty)} cases; give more --cases to fill every split")


@data_app.command("freesurfer")
def data_freesurfer(
    subjects: Annotated[list[Path], typer.Argument(help="FreeSurfer subject folders, e.g. $SUBJECTS_DIR/*.")],
    out: Annotated[Path, typer.Option(help="Dataset folder to write (MSD layout; labels only, images by path).")],
    image: Annotated[str, typer.Option(help="The scan in each subject's mri/ (orig.mgz, T1.mgz, norm.mgz).")] = (
        "orig.mgz"
    ),
    split: Annotated[
        str, typer.Option(help="test: every subject in the test split; stratified: train/val/test by grade.")
    ] = "test",
    seed: Annotated[int, typer.Option(help="Seed of the stratified split.")] = 0,
) -> None:
    """Your FreeSurfer subjects as a ventricle dataset, aseg.mgz the reference: then `segkit evaluate`."""
    import json

    from segkit.data.freesurfer import make_freesurfer

    path = make_freesurfer(subjects, out, image, split, seed)
    rows = json.loads(path.read_text())["training"]
    counts = ", ".join(f"{s} {n}" for s in ("train", "val", "test") if (n := sum(r["split"] == s for r in rows)))
    _say(f"wrote {len(rows)} FreeSurfer subject{'s' if len(rows) > 1 else ''} to {out} ({path.name}: {counts})")
    _say(f"score segkit against FreeSurfer's aseg: segkit evaluate --data {out} --split test --out {out}/eval")


@data_app.command("show")
def data_show(
    root: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out: Annotated[Path | None, typer.Option(help="PNG to write (default DIR/montage.png).")] = None,
    max_cases: Annotated[int, typer.Option(min=1, help="Cases in the montage.")] = 12,
) -> None:
    """Montage of cases with their masks and grades, to check a dataset by eye."""
    from segkit.data.show import show_dataset

    png = show_dataset(root, out or root / "montage.png", max_cases)
    _say(f"wrote {png}")


@app.command()
def train(
    config: Annotated[Path, typer.Option(help="Experiment YAML, e.g. configs/ventricle.yaml.")],
    data: Annotated[Path | None, typer.Option(help="Dataset folder (default data/<task>).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<task>).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from RUN_DIR/last.pt.")] = False,
    init: Annotated[
        str | None, typer.Option(help="Fine-tune: start from these weights (shipped name, run folder or .pt).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. train.lr=1e-4.")] = None,
    nproc: Annotated[
        int, typer.Option(min=1, help="Processes on this machine (torchrun, DDP): one per GPU, or CPU processes.")
    ] = 1,
) -> None:
    """Train the U-Net and grade head jointly; writes best.pt, last.pt, metrics.csv, curves.png."""
    from segkit.config import load_config
    from segkit.errors import InputError

    overrides = list(set_ or [])
    for option, key, given in (("--epochs", "train.epochs", epochs), ("--device", "train.device", device)):
        if given is None:
            continue
        if any(o.split("=", 1)[0].strip() == key for o in overrides):
            raise InputError(f"{option} and --set {key} both given; give {key} once")  # one would hide the other
        overrides.append(f"{key}={given}")
    cfg = load_config(config, overrides)
    data_dir = data or Path("data") / cfg.task.name
    run_dir = out or Path("runs") / cfg.task.name
    if nproc > 1:
        from segkit.distributed import launch
        from segkit.train import check_run_dir

        check_run_dir(run_dir, resume)  # here, for one line: the ranks' own check would fail inside torchrun

        args = ["train", "--config", str(config), "--data", str(data_dir), "--out", str(run_dir)]
        args += [a for o in overrides for a in ("--set", o)] + (["--resume"] if resume else [])
        raise typer.Exit(launch(nproc, cfg.train.cases_per_batch, args + (["--init", init] if init else [])))
    from segkit.train import fit

    try:
        summary = fit(cfg, data_dir, run_dir, resume, init)
    except KeyboardInterrupt:
        _say(f"interrupted: {run_dir}/last.pt holds the last complete epoch; continue with --resume")
        raise typer.Exit(130) from None
    if summary["rank"] > 0:  # under torchrun rank 0 speaks for the run
        return
    best = summary["best"]
    nan = float("nan")
    early = f" (stopped early: train.patience {cfg.train.patience} epochs without improvement)"
    _say(
        f"done: {summary['epochs']} epochs{early if summary.get('stopped_early') else ''} in {run_dir}; "
        f"best epoch {best.get('epoch')}: "
        f"val Dice {best.get('val_dice', nan):.4f}, "
        f"val grade acc {_final_grade_acc(summary['grade_head'], best):.3f}"
    )


def _final_grade_acc(refit: dict, best: dict) -> float:
    """Val grade accuracy of the saved best.pt: after the refit when it was kept."""
    if refit.get("kept"):
        return float(refit["val_grade_acc_after"])
    return float(best.get("val_grade_acc", float("nan")))


# Options predict and evaluate share.
EngineOption = Annotated[
    str, typer.Option(help="auto (ONNX Runtime on a CPU where the model has ONNX files, else PyTorch), torch or onnx.")
]
TtaOption = Annotated[
    bool | None,
    typer.Option("--tta/--no-tta", help="Mirror test-time augmentation (2x the network time); default: the model's."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Inference setting, e.g. eval.window_overlap=0.25 (eval.* only)."),
]


@app.command()
def predict(
    path: Annotated[
        Path,
        typer.Argument(help="A .nii/.nii.gz (or FreeSurfer .mgz/.mgh) volume, a folder of them, or a DICOM folder."),
    ],
    model: Annotated[
        str | None,
        typer.Option(help="Run folder, .pt, or shipped model (ventricle, liver-cyst); default: shipped, by modality."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("predictions"),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    series: Annotated[
        str | None, typer.Option(help="DICOM folder with several series: the SeriesInstanceUID to predict.")
    ] = None,
    engine: EngineOption = "auto",
    tta: TtaOption = None,
    set_: SetOption = None,
    probabilities: Annotated[
        bool,
        typer.Option(
            "--probabilities",
            help="Also write <name>_probabilities.nii.gz: each label's probability on the input grid (4-D).",
        ),
    ] = False,
) -> None:
    """Mask (input's shape and affine), grade with probabilities, volumes and burden, overlay; warnings."""
    from segkit.infer import predict_paths

    reports, failed = predict_paths(path, model, out, device, series, engine, tta, set_, probabilities)
    used = reports[0]["model"]
    _say(f"model: {used['kind']} {used['name']} ({used['checkpoint']}; {used['engine']})")
    for r in reports:
        bio = r["biomarker"]
        value = "n/a" if bio["value"] is None else f"{bio['value']:.4f}"
        probs = " ".join(f"{k}={v:.2f}" for k, v in r["probabilities"].items())
        grade = f"grade {r['grade']} ({probs})" if r["grade"] is not None else "no grade"
        name = Path(r["input"]).name
        _say(f"{name}: {grade}; {bio['name']} {value} -> {out / r['mask']}")
        for w in r["warnings"]:
            _say(f"warning: {name}: {w}")
    if failed is not None:
        raise failed  # a folder run that went on past failed inputs still exits 2


@app.command()
def evaluate(
    model: Annotated[
        str | None,
        typer.Option(help="Run folder, .pt, or shipped model name; default: the shipped model of the dataset's task."),
    ] = None,
    data: Annotated[Path, typer.Option(help="Dataset folder with dataset.json.")] = Path("data/ventricle"),
    split: Annotated[str, typer.Option(help="test, val, train or all.")] = "test",
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default RUN_DIR/eval-<split>; shipped model: eval-<split>).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    engine: EngineOption = "auto",
    tta: TtaOption = None,
    set_: SetOption = None,
    by: Annotated[
        list[str] | None,
        typer.Option(
            help="dataset.json case field to break results down by, e.g. site or slice_thickness (a number: "
            "by thirds of the cases; repeatable); default: each text or yes/no field with 2-8 values."
        ),
    ] = None,
) -> None:
    """Dice, IoU, HD95, ASSD, NSD per case; lesions found and false; grade accuracy, F1, AUC, confusion, calibration."""
    from segkit.evaluate import evaluate_split

    report = evaluate_split(model, data, split, out, device, engine, tta, set_, by)
    _say(report["summary_line"])
    _say(f"report: {report['out']}/report.md")


@app.command()
def export(
    pred_dir: Annotated[Path | None, typer.Argument(help="Predictions folder of segkit predict or evaluate.")] = None,
    out: Annotated[Path, typer.Option(help="Folder to write.")] = Path("review"),
    format_: Annotated[str, typer.Option("--format", help="html, csv, dicom-seg or onnx.")] = "html",
    model: Annotated[
        str | None, typer.Option(help="Run folder, .pt or shipped model: network (onnx), thresholds (html).")
    ] = None,
    dicom: Annotated[Path | None, typer.Option(help="dicom-seg: source series (default: each report's input).")] = None,
    low_confidence: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="html: flag a top grade probability below this (default: the model's)."),
    ] = None,
    tiny_ml: Annotated[
        float | None, typer.Option(min=0.0, help="html: flag a graded structure below this (mL; 0.1).")
    ] = None,
) -> None:
    """Review page OUT/index.html, a table OUT/predictions.csv, a DICOM SEG per case from DICOM, or ONNX."""
    from segkit.errors import InputError
    from segkit.export import check_format

    fmt = check_format(format_)
    given = {"--model": model, "--dicom": dicom, "--low-confidence": low_confidence, "--tiny-ml": tiny_ml}
    applies = {
        "html": ("--model", "--low-confidence", "--tiny-ml"),
        "csv": (),
        "dicom-seg": ("--dicom",),
        "onnx": ("--model",),
    }
    unused = [k for k, v in given.items() if v is not None and k not in applies[fmt]]
    if unused:  # silently ignored before: a user thought it did something
        raise InputError(f"{', '.join(unused)} does not apply to --format {fmt}; drop it")
    if fmt == "onnx":
        from segkit.onnx_export import export_onnx

        r = export_onnx(model, out)
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in r["max_abs_diff"].items())
        _say(f"wrote {out}/model.onnx and {out}/grade_head.onnx; max |ONNX - PyTorch|: {diffs}")
        return
    if pred_dir is None:
        raise InputError(f"--format {fmt} needs PRED_DIR, the --out folder of segkit predict or evaluate")
    if fmt == "csv":
        from segkit.export import write_table

        _say(f"wrote {write_table(pred_dir, out)}")
        return
    if fmt == "dicom-seg":
        from segkit.export import export_dicom_seg

        written, skipped = export_dicom_seg(pred_dir, out, dicom)
        for path in written:
            _say(f"wrote {path}")
        for why in dict.fromkeys(skipped.values()):
            names = ", ".join(n for n, w in skipped.items() if w == why)
            typer.echo(f"warning: no DICOM SEG for {names}: {why}", err=True)
        return
    from segkit.export import write_review

    _say(f"wrote {write_review(pred_dir, out, low_confidence, tiny_ml, model)}")


def main() -> None:
    """Entry point: SegkitError -> one line on stderr, exit 2."""
    from segkit.allocator import tune_allocator
    from segkit.errors import SegkitError

    verbose = "--verbose" in sys.argv
    if verbose:
        sys.argv.remove("--verbose")
    _setup_logging(verbose)
    tune_allocator()
    try:
        rc = app(standalone_mode=False, prog_name="segkit")  # click returns, not raises, a command's Exit code here
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except SegkitError as e:
        typer.echo(f"segkit: error: {e}", err=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("segkit: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("segkit: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # usage errors: click's, or those of the click that typer >= 0.22 carries inside
        import click

        usage = (click.exceptions.ClickException, getattr(typer, "TyperException", click.exceptions.ClickException))
        if isinstance(e, usage) and hasattr(e, "format_message"):
            ctx = getattr(e, "ctx", None)
            hint = f"; see {ctx.command_path} --help" if ctx is not None else ""
            typer.echo(f"segkit: error: {e.format_message().rstrip('.')}{hint}", err=True)  # one line, as any bad input
            sys.exit(2)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
