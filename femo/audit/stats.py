"""Statistics shared by the audits: cluster bootstrap, permutation tests, multiple-comparison
corrections; the two headline metrics (UAR, WAR) come from :mod:`femo.training.metrics`.

Clips of one person are correlated (same face, voice, recording session), so resampling clips
as if they were independent gives intervals that are too narrow. Every resampling routine here
takes a ``cluster`` column (default ``subject``) and resamples or permutes whole clusters when
the column exists; without it, rows are the unit and :class:`Interval` says so
(``clustered=False``).

Two flavours of each routine:

* generic: ``statistic(frame) -> float`` is any function of a DataFrame
  (:func:`cluster_bootstrap`, :func:`permutation_test`); one call per resample.
* count-based and vectorised: per-cluster class counts are summed with integer weights in one
  matrix product (:func:`bootstrap_weights`, :func:`class_counts`, :func:`uar_from_counts`);
  used for the per-group UAR intervals and gap tests, where thousands of resamples are needed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from femo.training.metrics import uar, war  # the one UAR/WAR of femo, re-used by every audit

__all__ = [
    "Interval",
    "cluster_bootstrap",
    "permutation_test",
    "holm",
    "fdr_bh",
    "uar",
    "war",
    "cluster_codes",
    "bootstrap_weights",
    "percentile_interval",
    "class_counts",
    "uar_from_counts",
]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval.

    estimate: the statistic on the full data. low/high: interval bounds (NaN when every
    resample was undefined). n_clusters: resampling units (subjects, or rows when
    ``clustered`` is False).
    """

    estimate: float
    low: float
    high: float
    n_clusters: int
    clustered: bool = True

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` lies outside [low, high] (False when the bounds are NaN)."""
        return bool(self.low > value or self.high < value)


def cluster_codes(frame: pd.DataFrame, cluster: str | None) -> tuple[np.ndarray, int, bool]:
    """Integer cluster id per row, the number of clusters, and whether clustering applies.

    Clusters are numbered in sorted order of their ids, so results do not depend on row order.
    With ``cluster`` None or absent from ``frame``, every row is its own cluster. Missing
    cluster values each become their own cluster (an unknown person is not everyone else).
    """
    n = len(frame)
    if cluster is None or cluster not in frame.columns:
        return np.arange(n), n, False
    values = frame[cluster]
    codes, uniques = pd.factorize(values, sort=True, use_na_sentinel=True)  # sorted: row order is irrelevant
    missing = codes < 0
    codes = codes.copy()
    codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    return codes, len(uniques) + int(missing.sum()), True


def bootstrap_weights(n_clusters: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_clusters) int: how often each cluster is drawn in each resample.

    Drawing ``n_clusters`` clusters with replacement is a multinomial count vector; weighting
    per-cluster sums by it equals concatenating the drawn clusters.
    """
    if n_clusters < 1:
        raise ValueError("bootstrap needs at least one cluster")
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot)


def percentile_interval(values: np.ndarray, ci: float) -> tuple[float, float]:
    """(low, high) percentile interval of ``values`` ignoring NaN; (NaN, NaN) if all NaN."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - ci) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def _check(ci: float, n: int, name: str) -> None:
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")


def cluster_bootstrap(
    frame: pd.DataFrame,
    statistic: Callable[[pd.DataFrame], float],
    *,
    cluster: str | None = "subject",
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``statistic(frame)``, resampling whole clusters.

    frame: one row per clip. statistic: DataFrame -> float; it must not depend on row order
    (resamples list each drawn cluster's rows, duplicated as often as it was drawn).
    Cost: ``n_boot`` statistic calls (a few ms each for UAR on thousands of rows); for counting
    statistics such as UAR, weighting per-cluster counts (:func:`class_counts`,
    :func:`bootstrap_weights`, :func:`uar_from_counts`) does all resamples in one product.
    cluster: column naming the resampling unit; rows are resampled when it is None or absent
    (the result then has ``clustered=False``). Resamples where the statistic is NaN are
    ignored in the interval.
    """
    _check(ci, n_boot, "n_boot")
    if len(frame) == 0:
        raise ValueError("cluster_bootstrap: empty frame")
    estimate = float(statistic(frame))
    codes, n_clusters, clustered = cluster_codes(frame, cluster)
    weights = bootstrap_weights(n_clusters, n_boot, np.random.default_rng(seed))
    rows = np.arange(len(frame))
    values = np.empty(n_boot)
    for b in range(n_boot):
        values[b] = statistic(frame.take(np.repeat(rows, weights[b][codes])))
    low, high = percentile_interval(values, ci)
    return Interval(estimate, low, high, n_clusters, clustered)


def _cluster_labels(frame: pd.DataFrame, group: str, codes: np.ndarray, n: int) -> np.ndarray:
    """The single ``group`` value of each cluster; refuses clusters spanning several groups."""
    labels = frame[group].to_numpy()
    if (pd.Series(labels).groupby(codes).nunique(dropna=False) > 1).any():
        raise ValueError(
            f"permutation_test: column '{group}' varies within a cluster, so clusters cannot be "
            "permuted whole; pass cluster=None to permute rows instead"
        )
    _, first_row = np.unique(codes, return_index=True)  # codes are 0..n-1, so sorted by code
    first = labels[first_row]
    return first


def permutation_test(
    frame: pd.DataFrame,
    statistic: Callable[[pd.DataFrame], float],
    *,
    group: str,
    n_perm: int = 1000,
    seed: int = 0,
    cluster: str | None = None,
) -> float:
    """One-sided permutation p-value that ``statistic`` is larger than under exchangeable groups.

    The ``group`` labels are shuffled within ``frame`` (the evaluation set) ``n_perm`` times;
    p = (1 + #{null >= observed}) / (1 + n_perm), so p is never 0. With ``cluster`` naming a
    column of ``frame``, whole clusters are relabelled (each keeps one group value, which must
    be constant within the cluster). A statistic of NaN under a permutation counts as not
    exceeding the observed value.
    """
    if group not in frame.columns:
        raise ValueError(f"permutation_test: no column '{group}' (columns: {list(frame.columns)})")
    _check(0.5, n_perm, "n_perm")
    observed = float(statistic(frame))
    if not np.isfinite(observed):
        return float("nan")
    rng = np.random.default_rng(seed)
    codes, n_clusters, clustered = cluster_codes(frame, cluster)
    labels = _cluster_labels(frame, group, codes, n_clusters) if clustered else frame[group].to_numpy()
    shuffled = frame.copy()
    exceed = 0
    tolerance = 1e-12 * max(1.0, abs(observed))
    for _ in range(n_perm):
        permuted = rng.permutation(labels)
        shuffled[group] = permuted[codes] if clustered else permuted
        value = statistic(shuffled)
        exceed += bool(np.isfinite(value) and value >= observed - tolerance)
    return (1 + exceed) / (1 + n_perm)


def _sorted_finite(p_values: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.asarray(p_values, dtype=float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    return p, order, p[order]


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, same order as the input; NaN stays NaN and does not
    count as a test. adj_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)) over sorted p."""
    p, order, sorted_p = _sorted_finite(p_values)
    m = len(sorted_p)
    adjusted = np.full(p.shape, np.nan)
    scaled = np.minimum(1.0, (m - np.arange(m)) * sorted_p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def fdr_bh(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), same order as the input;
    NaN stays NaN. adj_(i) = min_{j>=i} min(1, m p_(j) / j) over sorted p."""
    p, order, sorted_p = _sorted_finite(p_values)
    m = len(sorted_p)
    adjusted = np.full(p.shape, np.nan)
    scaled = np.minimum(1.0, m * sorted_p / np.arange(1, m + 1))
    adjusted[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return adjusted


def class_counts(
    y_true: np.ndarray, correct: np.ndarray, units: np.ndarray, n_units: int, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit, per-class tallies for count-based UAR.

    y_true: (N,) int class index. correct: (N,) bool prediction == label. units: (N,) int in
    [0, n_units). Returns (hits, totals), each (n_units, n_classes) float.
    """
    flat = units * n_classes + y_true
    size = n_units * n_classes
    totals = np.bincount(flat, minlength=size).reshape(n_units, n_classes).astype(float)
    hits = np.bincount(flat, weights=correct.astype(float), minlength=size)
    return hits.reshape(n_units, n_classes), totals


def uar_from_counts(hits: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """UAR from (..., C) hit and total counts: mean recall over classes with totals > 0; NaN
    where no class has any clip."""
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(totals > 0, hits / np.where(totals > 0, totals, 1.0), np.nan)
    present = (totals > 0).sum(axis=-1)
    sums = np.nansum(recall, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present > 0, sums / np.maximum(present, 1), np.nan)
