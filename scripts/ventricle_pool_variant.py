"""A ventricle pool drawn with a changed recipe, for fine-tuning experiments (segkit's own recipe is unchanged).

    .venv/bin/python scripts/ventricle_pool_variant.py OUT CASES SEED [--healthy LO HI] [--thick LO HI]
        [--p-thick P] [--inplane LO HI] [--lesions P]

`segkit data make ventricle`'s draws, with the healthy grade's target ventricle ratio range (default 0.004-0.017),
the thick-slice range in mm (3-6), the share of draws with thick slices (0.3) and the in-plane spacing range
(0.9-1.6 mm) replaced, and with --lesions a share P of draws given tumour-like lesions
(segkit.data.ventricle.add_lesions; none in segkit's own recipe). Used on 2026-11-28 (README, "Small ventricles
and thicker slices"):

    .venv/bin/python scripts/ventricle_pool_variant.py data/ventricle-s4small 300 4 --healthy 0.004 0.010 \\
        --thick 3 7 --p-thick 0.4 --inplane 0.75 1.6

The arguments are read and the recipe patched when the module loads: the drawing pool's spawned workers
re-import this script with the parent's sys.argv, and so draw with the same recipe.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import segkit.data.ventricle as ventricle
from segkit.data import synth

PARSER = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
PARSER.add_argument("out", type=Path)
PARSER.add_argument("cases", type=int)
PARSER.add_argument("seed", type=int)
PARSER.add_argument("--healthy", type=float, nargs=2)
PARSER.add_argument("--thick", type=float, nargs=2)
PARSER.add_argument("--p-thick", type=float)
PARSER.add_argument("--inplane", type=float, nargs=2)
PARSER.add_argument("--lesions", type=float, default=0.0)
ARGS = PARSER.parse_args()

ventricle.P_LESION = ARGS.lesions

if ARGS.healthy:
    ventricle.TARGETS = {**ventricle.TARGETS, "healthy": tuple(ARGS.healthy)}
_random_spacing = synth.random_spacing


def _spacing(rng, inplane, thick, p_thick):  # type: ignore[no-untyped-def]
    """synth.random_spacing with the ranges given on the command line."""
    return _random_spacing(
        rng,
        tuple(ARGS.inplane or inplane),
        tuple(ARGS.thick or thick),
        p_thick if ARGS.p_thick is None else ARGS.p_thick,
    )


synth.random_spacing = _spacing

if __name__ == "__main__":
    ventricle.make_ventricle(ARGS.out, ARGS.cases, ARGS.seed)
