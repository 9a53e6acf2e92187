"""Tests of femo.audit.stats against hand-computed answers and simulated known truth."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from femo.audit.stats import (
    Interval,
    bootstrap_weights,
    class_counts,
    cluster_bootstrap,
    cluster_codes,
    fdr_bh,
    holm,
    percentile_interval,
    permutation_test,
    uar,
    uar_from_counts,
    war,
)


def clustered_frame(rng, *, n_subjects=30, clips=20, effect_sd=1.0, shift=0.0):
    """Rows of y = subject effect + noise; subjects are correlated clusters. True mean = shift."""
    subject = np.repeat(np.arange(n_subjects), clips)
    effect = rng.normal(0.0, effect_sd, n_subjects)[subject]
    return pd.DataFrame({"subject": subject.astype(str), "y": shift + effect + rng.normal(0, 1, len(subject))})


def mean_y(frame: pd.DataFrame) -> float:
    return float(frame["y"].to_numpy().mean())


def test_uar_war_hand_computed():
    y_true = ["a", "a", "a", "b", "c", "c"]
    y_pred = ["a", "b", "a", "b", "a", "c"]
    # recalls: a 2/3, b 1, c 1/2 -> UAR = (2/3 + 1 + 1/2) / 3; WAR = 4/6
    assert uar(y_true, y_pred, ["a", "b", "c", "d"]) == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert war(y_true, y_pred) == pytest.approx(4 / 6)
    assert np.isnan(uar([], [], ["a"]))
    with pytest.raises(ValueError, match="shape"):
        uar(["a"], ["a", "b"], ["a", "b"])


def test_count_based_uar_matches_direct():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 500)
    p = np.where(rng.random(500) < 0.5, y, rng.integers(0, 4, 500))
    units = rng.integers(0, 7, 500)
    hits, totals = class_counts(y, y == p, units, 7, 4)
    assert totals.sum() == 500
    assert uar_from_counts(hits.sum(0), totals.sum(0)) == pytest.approx(uar(y, p, range(4)))
    per_unit = uar_from_counts(hits, totals)
    assert per_unit[3] == pytest.approx(uar(y[units == 3], p[units == 3], range(4)))
    assert np.isnan(uar_from_counts(np.zeros(4), np.zeros(4)))


def test_holm_and_bh_hand_computed():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> Holm 4*.005=.02, 3*.01=.03, 2*.03=.06, max(.04, .06)=.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: .005*4/1=.02, .01*4/2=.02, .03*4/3=.04, .04*4/4=.04
    assert fdr_bh(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    adjusted = holm([0.5, np.nan, 0.2])
    assert np.isnan(adjusted[1]) and adjusted[[0, 2]] == pytest.approx([0.5, 0.4])
    assert holm([0.4, 0.3]) == pytest.approx([0.6, 0.6])  # 2*.3=.6, max(.4, .6)
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]).shape == (0,)
    with pytest.raises(ValueError, match="p-values"):
        holm([1.5])


def test_cluster_codes_missing_values_are_separate_clusters():
    frame = pd.DataFrame({"subject": ["a", None, "a", None, "b"]})
    codes, n, clustered = cluster_codes(frame, "subject")
    assert clustered and n == 4 and codes[0] == codes[2] and codes[1] != codes[3]
    codes, n, clustered = cluster_codes(frame, "nope")
    assert not clustered and n == 5


def test_bootstrap_weights_sum_to_cluster_count():
    w = bootstrap_weights(13, 50, np.random.default_rng(0))
    assert w.shape == (50, 13) and (w.sum(1) == 13).all()


def test_percentile_interval_ignores_nan():
    values = np.r_[np.arange(101.0), np.nan]
    assert percentile_interval(values, 0.9) == pytest.approx((5.0, 95.0))
    assert all(np.isnan(percentile_interval(np.array([np.nan]), 0.9)))


def test_bootstrap_is_deterministic_and_falls_back_to_rows():
    frame = clustered_frame(np.random.default_rng(0), n_subjects=10, clips=5)
    a = cluster_bootstrap(frame, mean_y, n_boot=100, seed=3)
    assert a == cluster_bootstrap(frame, mean_y, n_boot=100, seed=3)
    assert a.clustered and a.n_clusters == 10 and a.low < a.estimate < a.high
    rows = cluster_bootstrap(frame.drop(columns="subject"), mean_y, n_boot=100)
    assert not rows.clustered and rows.n_clusters == 50
    with pytest.raises(ValueError, match="empty"):
        cluster_bootstrap(frame.iloc[:0], mean_y)
    with pytest.raises(ValueError, match="ci"):
        cluster_bootstrap(frame, mean_y, ci=95)


def test_cluster_bootstrap_covers_truth_at_nominal_rate_and_row_bootstrap_does_not():
    rng = np.random.default_rng(2024)
    covered_cluster, covered_rows, widths = 0, 0, []
    n_sims = 50
    for sim in range(n_sims):
        frame = clustered_frame(rng, n_subjects=25, clips=12, effect_sd=1.0)
        by_subject = cluster_bootstrap(frame, mean_y, n_boot=100, ci=0.9, seed=sim)
        by_row = cluster_bootstrap(frame, mean_y, cluster=None, n_boot=100, ci=0.9, seed=sim)
        covered_cluster += by_subject.low <= 0.0 <= by_subject.high
        covered_rows += by_row.low <= 0.0 <= by_row.high
        widths.append((by_subject.high - by_subject.low) / (by_row.high - by_row.low))
    # nominal 90%; with 50 simulations a binomial 99% band is roughly 79-99%
    assert 0.78 <= covered_cluster / n_sims <= 0.99
    assert covered_rows / n_sims < 0.7  # clip-level resampling ignores the subject correlation
    assert np.median(widths) > 2.0


def gap_statistic(frame: pd.DataFrame) -> float:
    """|mean(y | g = a) - mean(y | g = b)|."""
    y, in_a = frame["y"].to_numpy(), (frame["g"] == "a").to_numpy()
    return float(abs(y[in_a].mean() - y[~in_a].mean()))


def two_group_frame(rng, shift):
    frame = clustered_frame(rng, n_subjects=20, clips=8, effect_sd=0.5)
    group_b = frame["subject"].astype(int) % 2 == 1
    frame["g"] = np.where(group_b, "b", "a")
    frame.loc[group_b, "y"] += shift
    return frame


def test_permutation_detects_planted_difference():
    frame = two_group_frame(np.random.default_rng(0), shift=1.5)
    p = permutation_test(frame, gap_statistic, group="g", n_perm=199, cluster="subject")
    assert p == pytest.approx(1 / 200)


def test_permutation_null_is_not_small():
    rng = np.random.default_rng(7)
    p_values = [
        permutation_test(two_group_frame(rng, 0.0), gap_statistic, group="g", n_perm=99, seed=s, cluster="subject")
        for s in range(40)
    ]
    p_values = np.array(p_values)
    assert 0.35 < p_values.mean() < 0.65  # roughly uniform under the null
    assert (p_values < 0.05).mean() <= 0.15
    assert (p_values > 0).all() and (p_values <= 1).all()


def test_permutation_refuses_groups_that_split_a_cluster():
    frame = two_group_frame(np.random.default_rng(0), 0.0)
    frame.loc[0, "g"] = "b" if frame.loc[0, "g"] == "a" else "a"
    with pytest.raises(ValueError, match="varies within a cluster"):
        permutation_test(frame, gap_statistic, group="g", n_perm=10, cluster="subject")
    assert 0 < permutation_test(frame, gap_statistic, group="g", n_perm=10) <= 1
    with pytest.raises(ValueError, match="no column"):
        permutation_test(frame, gap_statistic, group="nope")


def test_interval_excludes():
    assert Interval(0.2, 0.1, 0.3, 5).excludes(0.0)
    assert not Interval(0.2, -0.1, 0.3, 5).excludes(0.0)
    assert not Interval(0.2, np.nan, np.nan, 5).excludes(0.0)


def test_bootstrap_ignores_row_order():
    frame = clustered_frame(np.random.default_rng(5), n_subjects=12, clips=6)
    shuffled = frame.sample(frac=1.0, random_state=1)
    a = cluster_bootstrap(frame, mean_y, n_boot=200, seed=2)
    b = cluster_bootstrap(shuffled, mean_y, n_boot=200, seed=2)
    assert (b.estimate, b.low, b.high) == pytest.approx((a.estimate, a.low, a.high))
