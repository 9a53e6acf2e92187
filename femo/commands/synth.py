"""``femo synth OUT``: generate the synthetic audio-visual emotion dataset with planted ground truth.

Writes OUT/clips/*.mp4 (drawn faces + synthetic voice), OUT/manifest.csv and
OUT/manifest.meta.json. The same --seed gives the same files. See femo.data.synth for what is
planted (informative modality, nuisance conditions, subgroups, optional bias and label noise).
--label-noise P flips round(P x clips) labels to another class: the manifest keeps the original
in ``true_emotion`` and marks the clip ``label_flipped``; the media stay those of the same seed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``synth`` sub-command to ``subparsers``."""
    from femo.data.synth import SUBGROUPS, SynthConfig

    defaults = SynthConfig()
    groups = "; ".join(f"{c}={'|'.join(v)}" for c, v in SUBGROUPS.items())
    p = subparsers.add_parser("synth", help="generate the synthetic dataset", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--clips", type=int, default=defaults.clips, help=f"number of clips (default {defaults.clips})")
    p.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed (default {defaults.seed})")
    p.add_argument("--subjects", type=int, default=defaults.subjects,
                   help=f"distinct identities (default {defaults.subjects})")
    p.add_argument("--size", type=int, default=defaults.size, help=f"frame side in pixels (default {defaults.size})")
    p.add_argument("--fps", type=float, default=defaults.fps, help=f"frame rate (default {defaults.fps:g})")
    p.add_argument("--seconds", type=float, default=defaults.seconds,
                   help=f"clip length in seconds (default {defaults.seconds:g})")
    p.add_argument("--plant-bias", default=None, metavar="COLUMN=VALUE",
                   help=f"make one subgroup's expressions subtler and labels noisier ({groups})")
    p.add_argument("--label-noise", type=float, default=0.0, metavar="P",
                   help="fraction of labels flipped to another class, 0 <= P < 1 (default 0)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: all cores)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the dataset; returns 0, or 2 for invalid options."""
    from femo.data.synth import SynthConfig, generate, parse_bias

    try:
        cfg = SynthConfig(clips=args.clips, seed=args.seed, size=args.size, fps=args.fps, seconds=args.seconds,
                          subjects=args.subjects, plant_bias=parse_bias(args.plant_bias), workers=args.workers,
                          label_noise=args.label_noise)
    except ValueError as exc:
        print(f"femo synth: {exc}", file=sys.stderr)
        return 2
    manifest = generate(args.out, cfg)
    print(f"wrote {cfg.clips} clips and {manifest}")
    return 0
