"""``femo annotate STORE_OR_MANIFEST --out annotated.csv``: add perceived demographics and skin tone.

Appends to each row of a feature store's index (or of a manifest) ``perceived_age``,
``perceived_age_group``, ``perceived_sex`` with their confidences -- *estimates* of how the face
looks, from face-api.js's age/sex network, averaged over the clip's face frames -- the
Individual Typology Angle of facial skin pixels (``ita``, ``ita_skin_tone``, ``ita_skin_group``),
and the face pipeline's view of the clip (``face_found_rate``, ``face_score``). A clip without a
face gets empty values and an ``annotate_reason``. Needs ``femo models fetch --face-weights``.
The bias report audits these columns like any other metadata.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``annotate`` sub-command to ``subparsers``."""
    p = subparsers.add_parser("annotate", help="add perceived age/sex and skin tone columns", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="feature store folder (store.json) or manifest CSV")
    p.add_argument("--out", type=Path, required=True, help="CSV to write (the input rows plus the new columns)")
    p.add_argument("--frames", type=int, default=8, help="frames sampled per video of a manifest (default 8)")
    p.add_argument("--skin-frames", type=int, default=4, help="stored crops per clip measured for skin tone")
    p.add_argument("--no-resume", action="store_true", help="annotate every row again, ignoring rows in --out")
    p.set_defaults(func=run)


def run(args) -> int:
    """Annotate and print a one-line summary; returns the exit status."""
    from femo.annotate import annotate
    from femo.assets import MissingModelError

    if args.out.resolve() == args.source.resolve():
        print("femo annotate: --out must differ from the input", file=sys.stderr)
        return 2
    try:
        table = annotate(args.source, args.out, resume=not args.no_resume, num_frames=args.frames,
                         skin_frames=args.skin_frames)
    except (ValueError, FileNotFoundError, MissingModelError) as exc:
        print(f"femo annotate: {exc}", file=sys.stderr)
        return 1
    missing = int((table["annotate_reason"].fillna("") != "").sum())
    print(f"wrote {args.out}: {len(table)} rows, {len(table) - missing} with a face, {missing} without "
          f"(see the annotate_reason column)")
    return 0
