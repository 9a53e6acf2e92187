"""Bias audit: speed, false-alarm rate with no planted bias, and detection rate with one.

Simulated predictions (``femo.audit.simulate``: subjects with correlated clips, four subject-level
attributes plus the sex*age_group intersection, a rare culture group of 2 subjects):

* ``speed``: wall seconds of ``audit(...)`` at several sizes, and of 1,000 generic
  ``cluster_bootstrap`` resamples of UAR (the ``stats`` helpers' cost on a few thousand rows).
* ``false alarms``: share of seeds where anything is flagged with no planted effect.
* ``detection``: share of seeds where the planted group (skin_tone=dark, logit shift) is flagged,
  and share where anything else is flagged too.

Usage: python benchmarks/audit_fairness.py [--seeds 40] [--n-boot 200]
Writes benchmarks/results/audit_fairness.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from femo.audit.fairness import audit
from femo.audit.simulate import simulate_predictions
from femo.audit.stats import (
    bootstrap_weights,
    class_counts,
    cluster_bootstrap,
    cluster_codes,
    percentile_interval,
    uar,
    uar_from_counts,
)
from femo.config import CLASSES

ROOT = Path(__file__).resolve().parent.parent
ATTRIBUTES = ["sex", "age_group", "skin_tone", "culture"]


def run_audit(pred, n_boot: int, seed: int):
    return audit(pred, attributes=ATTRIBUTES, intersections="sex*age_group", classes=CLASSES, n_boot=n_boot, seed=seed)


def speed(n_boot: int) -> list[dict]:
    rows = []
    for n_subjects, clips in ((40, 20), (100, 30), (200, 30)):
        pred = simulate_predictions(n_subjects=n_subjects, clips_per_subject=clips, seed=0)
        start = time.perf_counter()
        run_audit(pred, n_boot, 0)
        rows.append({"case": f"audit {n_subjects} subjects x {clips} clips, n_boot={n_boot}",
                     "seconds": time.perf_counter() - start})
    pred = simulate_predictions(n_subjects=100, clips_per_subject=30, seed=0)
    start = time.perf_counter()
    cluster_bootstrap(pred, lambda f: uar(f["label"].to_numpy(), f["predicted"].to_numpy(), CLASSES), n_boot=1000)
    rows.append({"case": "cluster_bootstrap UAR, 3,000 rows, 1,000 resamples", "seconds": time.perf_counter() - start})
    start = time.perf_counter()
    codes, n_clusters, _ = cluster_codes(pred, "subject")
    y = pred["label"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    hits, totals = class_counts(y, (pred["label"] == pred["predicted"]).to_numpy(), codes, n_clusters, len(CLASSES))
    weights = bootstrap_weights(n_clusters, 1000, np.random.default_rng(0)).astype(float)
    percentile_interval(uar_from_counts(weights @ hits, weights @ totals), 0.95)
    rows.append({"case": "count-based UAR bootstrap, 3,000 rows, 1,000 resamples",
                 "seconds": time.perf_counter() - start})
    return rows


def rates(seeds: int, n_boot: int, shift: float) -> dict:
    null_alarms = planted_hits = planted_other = 0
    for seed in range(seeds):
        pred = simulate_predictions(n_subjects=40, clips_per_subject=15, seed=1000 + seed)
        null_alarms += bool(run_audit(pred, n_boot, seed).flagged)
        pred = simulate_predictions(n_subjects=40, clips_per_subject=15, bias={"skin_tone": ("dark", shift)},
                                    seed=2000 + seed)
        flagged = {(f["attribute"], f["group"]) for f in run_audit(pred, n_boot, seed).flagged}
        planted_hits += ("skin_tone", "dark") in flagged
        planted_other += bool({a for a, _ in flagged} - {"skin_tone"})
    return {"seeds": seeds, "false_alarm_rate": null_alarms / seeds, "detection_rate": planted_hits / seeds,
            "other_flag_rate_when_planted": planted_other / seeds, "planted_logit_shift": shift}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--shift", type=float, default=-1.0, help="planted logit shift of skin_tone=dark")
    args = parser.parse_args()
    timing = speed(1000)
    for row in timing:
        print(f"{row['case']:<60} {row['seconds']:7.2f} s")
    result = rates(args.seeds, args.n_boot, args.shift)
    print(f"{'false-alarm rate (no planted bias, any flag)':<60} {result['false_alarm_rate']:7.3f}")
    print(f"{'detection rate (planted skin_tone=dark flagged)':<60} {result['detection_rate']:7.3f}")
    print(f"{'other attribute flagged when planted':<60} {result['other_flag_rate_when_planted']:7.3f}")
    out = ROOT / "benchmarks" / "results" / "audit_fairness.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"speed": timing, "rates": {**result, "n_boot": args.n_boot},
                               "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
