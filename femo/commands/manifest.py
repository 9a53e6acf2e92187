"""``femo manifest LAYOUT ROOT --out manifest.csv``: build, validate and write a clip manifest.

Writes the manifest and its ``.meta.json`` sidecar; when clips are excluded, also
``<stem>.excluded.csv`` (clip_id, path, check, reason) next to the manifest, named after it like
the sidecar. ``--strict`` writes nothing and exits 1 with the per-clip reasons when anything would
be excluded. A root holding no usable clip of the layout writes nothing and exits 2, saying what
the layout expects.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd



def _epilog() -> str:
    from femo.data.layouts import LAYOUTS, layout_options

    lines = ["layout options (--NAME VALUE or -O NAME=VALUE; a layout refuses options it does not take):"]
    for name in LAYOUTS:
        opts = ", ".join(f"--{k.replace('_', '-')} (default {v!r})" for k, v in layout_options(name).items())
        lines.append(f"  {name}: {opts or 'none'}")
    return "\n".join(lines)


def _all_options() -> list[str]:
    from femo.data.layouts import LAYOUTS, layout_options

    return sorted({name for layout in LAYOUTS for name in layout_options(layout)})


def register(subparsers) -> None:
    """Add the ``manifest`` sub-command to ``subparsers``."""
    from femo.data.layouts import LAYOUTS

    p = subparsers.add_parser("manifest", help="build a clip manifest for a dataset layout",
                              description=__doc__, epilog=_epilog(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("layout", choices=LAYOUTS, help="dataset layout")
    p.add_argument("root", type=Path, help="dataset root folder")
    p.add_argument("--out", type=Path, required=True, help="manifest CSV to write (sidecar goes next to it)")
    p.add_argument("--strict", action="store_true", help="fail (exit 1) if any clip would be excluded")
    p.add_argument("--no-check-media", dest="check_media", action="store_false",
                   help="skip opening media files (structural checks only)")
    p.add_argument("-O", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="layout option, repeatable (see below)")
    for name in _all_options():
        p.add_argument(f"--{name.replace('_', '-')}", dest=f"layout_{name}", default=None, metavar="VALUE",
                       help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=None, help="threads probing media (default: 2 x CPUs, max 8)")
    p.set_defaults(func=run)


def _parse_options(args: argparse.Namespace) -> dict[str, str]:
    options = {name: getattr(args, f"layout_{name}") for name in _all_options()
               if getattr(args, f"layout_{name}", None) is not None}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"layout option {item!r} is not KEY=VALUE")
        options[key.strip()] = value
    return options


def summary(good: pd.DataFrame, excluded: pd.DataFrame, classes: tuple[str, ...]) -> str:
    """Clips per class (kept) and excluded counts per check, as printable text."""
    counts = good["label"].value_counts() if len(good) else pd.Series(dtype=int)
    width = max([len(c) for c in classes] + [5])
    lines = [f"  {'class':<{width}}  clips"] + [f"  {c:<{width}}  {int(counts.get(c, 0))}" for c in classes]
    if len(excluded):
        lines.append(f"excluded: {len(excluded)} clip(s)")
        lines += [f"  {check:<{width}}  {n}" for check, n in excluded["check"].value_counts().sort_index().items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Build, validate and write; returns the exit status (0 ok, 1 strict failure, 2 bad input)."""
    from femo.data.layouts import build_manifest, layout_expects
    from femo.data.manifest import (
        ManifestError, ManifestWarning, empty_classes, excluded_path, validate_manifest, write_manifest,
    )

    try:
        df, meta = build_manifest(args.layout, args.root, **_parse_options(args))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ManifestWarning)  # reported below with the summary
            good, excluded = validate_manifest(df, meta, check_media=args.check_media, workers=args.workers)
    except (ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    empty = empty_classes(good, meta.classes)
    print(f"{meta.dataset}: {len(good)} clip(s) kept, {len(excluded)} excluded")
    print(summary(good, excluded, meta.classes))
    if not len(good):
        for cid, reason in zip(excluded["clip_id"][:20], excluded["reason"][:20]):
            print(f"{cid}: {reason}", file=sys.stderr)
        print(f"error: {args.root}: no usable clip for layout {args.layout!r}; nothing written; expected "
              f"{layout_expects(args.layout)}", file=sys.stderr)
        return 2
    if empty:
        print(f"warning: class(es) with no usable clip: {empty}")
    if args.strict and len(excluded):
        for cid, reason in zip(excluded["clip_id"], excluded["reason"]):
            print(f"{cid}: {reason}", file=sys.stderr)
        print(f"--strict: {len(excluded)} clip(s) would be excluded; nothing written", file=sys.stderr)
        return 1
    checks = excluded["check"].value_counts().to_dict() if len(excluded) else {}
    meta = replace(meta, extra={**meta.extra, "empty_classes": empty, "n_excluded": len(excluded),
                                "excluded_by_check": {k: int(v) for k, v in checks.items()},
                                "media_checked": bool(args.check_media)})
    out = write_manifest(good, args.out, meta)
    side = excluded_path(out)
    if len(excluded):
        excluded.to_csv(side, index=False)
        print(f"wrote {out} and {side}")
    else:
        side.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
        print(f"wrote {out}")
    return 0
