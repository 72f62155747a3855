"""Average the weights of checkpoints fine-tuned from one model: a uniform model soup.

    .venv/bin/python scripts/soup.py OUT_DIR MODEL MODEL ... [--about TEXT]

MODEL: a shipped name, a run folder (its best.pt) or a .pt, as `segkit predict --model` takes. Fine-tunes of one
starting model stay in one basin of the loss, and the mean of their weights often generalises better than any
one of them (Wortsman et al. 2022, "Model soups"). Every floating-point tensor of the soup is the mean of the
ingredients' (integer buffers come from the first); the config, inference settings included, is the first
ingredient's. The ingredients must hold the same tensors (names, shapes) of one task and architecture.
Writes OUT_DIR/best.pt (no epoch: a soup has none; no grade-head refit or post-processing record, which belonged
to the first ingredient: redo them on the soup with scripts/refit_grade_head.py and scripts/choose_postprocess.py)
and OUT_DIR/run.json, which records each ingredient (what it was given as, path, epoch, SHA-256) for the model card
(scripts/ship_model.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from segkit.checkpoint import file_sha256, load_checkpoint, resolve_model, save_checkpoint


def soup(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform soup of state dicts with the same tensors: floating tensors averaged (in float64, then cast
    back), any other (integer buffers) taken from the first."""
    first = states[0]
    for i, s in enumerate(states[1:], start=2):
        if s.keys() != first.keys():
            raise SystemExit(
                f"ingredient {i} holds other tensors than the first: {sorted(s.keys() ^ first.keys())[:4]}"
            )
        bad = [k for k, v in first.items() if s[k].shape != v.shape]
        if bad:
            raise SystemExit(
                f"ingredient {i}: {bad[0]} has shape {tuple(s[bad[0]].shape)}, the first's {tuple(first[bad[0]].shape)}"
            )
    return {
        k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
        for k, v in first.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--about", default=None, help="what the ingredients are (the model card repeats it)")
    a = ap.parse_args()
    if len(a.models) < 2:
        raise SystemExit("a soup needs two ingredients or more")
    refs = [resolve_model(m) for m in a.models]
    cks = [load_checkpoint(r.path) for r in refs]
    tasks = {(c["config"]["task"]["name"], c["config"]["model"]["arch"]) for c in cks}
    if len(tasks) > 1:
        raise SystemExit(f"ingredients of different tasks or architectures: {sorted(tasks)}")
    ingredients = [
        {"model": m, "path": str(r.path), "epoch": c.get("epoch"), "sha256_16": file_sha256(r.path)[:16]}
        for m, r, c in zip(a.models, refs, cks, strict=True)
    ]
    first = cks[0]
    state = {
        "model": soup([c["model"] for c in cks]),
        "config": first["config"],
        "epoch": None,
        "soup": ingredients,
        "segkit_version": first.get("segkit_version"),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(a.out / "best.pt", state)
    (a.out / "run.json").write_text(json.dumps({"soup": ingredients, "about": a.about}, indent=1) + "\n")
    print(f"{a.out / 'best.pt'}: the mean of {len(cks)} checkpoints")
    for i in ingredients:
        print(f"  {i['model']} ({i['path']}, epoch {i['epoch']}, sha256 {i['sha256_16']})")


if __name__ == "__main__":
    main()
