"""``femo evaluate RUN [--store STORE]``: re-evaluate a run folder's best.pt on its test split.

Rewrites RUN/metrics.json and RUN/predictions.csv (per fold and aggregated for a ``--folds all``
run). ``--store`` evaluates on another feature store with the same classes (default: the store
recorded in RUN/config.json).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``evaluate`` sub-command to ``subparsers``."""
    p = subparsers.add_parser("evaluate", help="evaluate a trained run on its test split", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run folder written by `femo train`")
    p.add_argument("--store", type=Path, default=None, help="feature store (default: the run's own)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.set_defaults(func=run)


def run(args) -> int:
    """Evaluate and print the metrics summary; returns the exit status."""
    from femo.evaluate import evaluate_run

    try:
        result = evaluate_run(args.run, store=args.store, device=args.device)
    except (ValueError, FileNotFoundError) as exc:
        print(f"femo evaluate: {exc}", file=sys.stderr)
        return 1
    keys = ("uar", "war", "macro_f1", "ece", "n_test", "protocol")
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=2))
    return 0
