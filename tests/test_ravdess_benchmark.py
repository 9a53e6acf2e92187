"""benchmarks/ravdess.py without the data: the fold rule, the headline rule (validation only, each
configuration by its most-seeded variant) and the paired actor-clustered bootstrap."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import ravdess  # noqa: E402
from ravdess_lib import clustered_bootstrap  # noqa: E402


def test_folds_hold_two_men_and_two_women():
    folds = {k: [a for a in range(1, 25) if ravdess.actor_fold(a) == k] for k in range(1, 7)}
    assert all(len(a) == 4 and sum(x % 2 for x in a) == 2 for a in folds.values())  # odd actors are male


def test_headline_is_chosen_by_validation_over_the_most_seeds(monkeypatch):
    v = ravdess.Variant("s", "functionals", True, "mean", 5, 1e-3, 64)
    monkeypatch.setattr(ravdess, "VARIANTS", {"a": v, "b": v, "b_x3": v._replace(seeds=3, runs="b")})
    assert ravdess.headline({"a": 0.60, "b": 0.62, "b_x3": 0.61}) == "b_x3"  # b's 3-seed validation mean wins
    assert ravdess.headline({"a": 0.60, "b": 0.62, "b_x3": 0.59}) == "a"  # its single seed's score is not used
    assert ravdess.headline({"a": 0.60, "b": 0.62}) == "b"


def test_paired_bootstrap_difference_is_exact_for_identical_models():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 240)
    actors = np.repeat(np.arange(12), 20)
    good = np.where(rng.random(240) < 0.7, y, rng.integers(0, 4, 240))
    boot = clustered_bootstrap(y, {"m": good, "same": good.copy(), "chance": rng.integers(0, 4, 240)}, actors,
                               num_classes=4, draws=200)
    np.testing.assert_array_equal(boot["m/uar"], boot["same/uar"])  # same draws for every model: paired
    assert np.percentile(boot["m/uar"] - boot["chance/uar"], 2.5) > 0.2
    point = np.mean([np.mean(good[y == c] == c) for c in range(4)])
    assert boot["m/uar"].mean() == pytest.approx(point, abs=0.02)  # the bootstrap centres on the point UAR
