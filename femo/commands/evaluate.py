"""``femo evaluate RUN [--store STORE] [--classes MAP|intersection --out DIR]``: score a trained run.

Without ``--classes``: re-evaluate RUN's best.pt on its test split and rewrite RUN/metrics.json and
RUN/predictions.csv (per fold and aggregated for a ``--folds all`` run). ``--store`` evaluates on
another feature store with the same classes (default: the store recorded in RUN/config.json).

With ``--classes``: cross-corpus evaluation on ``--store`` (required), a store whose classes differ
from the run's. ``--classes intersection`` keeps the classes both have; ``--classes map.json``
maps every run class to a store class or null (dropped), several run classes may merge into one,
e.g. ``{"happy": "happy", "calm": "neutral", "neutral": "neutral", "contempt": null}``. Every ok
clip of the store with a shared class is scored (``--split test`` keeps only the store's test
rows); a k-fold run is scored with the mean of its folds' probabilities per clip. Metrics
(UAR/WAR with subject-clustered bootstrap intervals, per-class recall, confusion over the shared
classes) and the mapping go to DIR/metrics.json and DIR/predictions.csv; DIR must lie outside RUN,
whose own metrics are never overwritten.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``evaluate`` sub-command to ``subparsers``."""
    p = subparsers.add_parser("evaluate", help="evaluate a trained run on its test split or on another corpus",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run folder written by `femo train`")
    p.add_argument("--store", type=Path, default=None, help="feature store (default: the run's own)")
    p.add_argument("--classes", default=None, metavar="MAP.json|intersection",
                   help="cross-corpus: how the run's classes map onto --store's (needs --out)")
    p.add_argument("--out", type=Path, default=None, help="cross-corpus output folder (outside RUN)")
    p.add_argument("--split", default=None, help="cross-corpus: score only the store's rows with this split")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.set_defaults(func=run)


def _cross(args) -> dict:
    from femo.training.cross import cross_evaluate

    if args.store is None or args.out is None:
        raise ValueError("--classes needs --store OTHER_STORE and --out DIR")
    return cross_evaluate(args.run, store=args.store, classes=args.classes, out=args.out, split=args.split,
                          device=args.device)


def run(args) -> int:
    """Evaluate and print the metrics summary; returns the exit status."""
    from femo.training.evaluate import evaluate_run

    if args.classes is None and (args.out is not None or args.split is not None):
        print("femo evaluate: --out and --split are for cross-corpus scoring; add --classes MAP.json|intersection",
              file=sys.stderr)
        return 2
    try:
        result = _cross(args) if args.classes is not None else evaluate_run(args.run, store=args.store,
                                                                             device=args.device)
    except (ValueError, FileNotFoundError) as exc:
        hint = ("; to score a store with other classes add --classes MAP.json|intersection --out DIR"
                if args.classes is None and args.store is not None and "classes" in str(exc) else "")
        print(f"femo evaluate: {exc}{hint}", file=sys.stderr)
        return 1
    keys = ("uar", "uar_ci", "war", "war_ci", "macro_f1", "ece", "n_test", "classes", "class_map", "protocol")
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=2))
    return 0
