"""Vectorised, subject-clustered uncertainty for per-group UAR and the UAR gap between groups.

Rows are pooled into units = (group, subject) pairs; each unit carries its per-class hit and
clip counts, shape (U, C). A bootstrap resample or a permutation is then an integer weight or
a relabelling of units, and every group's UAR for 1,000 resamples comes from one matrix
product instead of 1,000 DataFrame passes.

* Bootstrap: stratified by group -- each group's units are resampled with replacement within
  the group, so every resample keeps each group's number of subjects.
* Permutation: unit group labels are shuffled across the evaluation set, keeping subjects
  whole (a subject that appears in two groups forms two units).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from femo.audit.groups import unit_codes
from femo.audit.stats import bootstrap_weights, class_counts, percentile_interval, uar_from_counts

__all__ = ["GroupCounts", "group_counts", "bootstrap_group_uar", "permutation_gaps", "GapTest", "gap_test"]


@dataclass(frozen=True)
class GroupCounts:
    """Per-unit tallies of one grouping.

    names: (G,) sorted group names. unit_group: (U,) group index of each unit.
    hits, totals: (U, C) correct predictions and clips per true class.
    """

    names: np.ndarray
    unit_group: np.ndarray
    hits: np.ndarray
    totals: np.ndarray

    def subset(self, keep: Sequence[str]) -> GroupCounts:
        """Only the groups named in ``keep`` (renumbered in sorted order)."""
        names = np.array(sorted(keep), dtype=object)
        old = np.searchsorted(self.names, names)
        units = np.isin(self.unit_group, old)
        remap = np.full(len(self.names), -1)
        remap[old] = np.arange(len(names))
        return GroupCounts(names, remap[self.unit_group[units]], self.hits[units], self.totals[units])

    def uar(self) -> np.ndarray:
        """(G,) observed UAR of each group."""
        onehot = np.eye(len(self.names))[self.unit_group]  # (U, G)
        return uar_from_counts(onehot.T @ self.hits, onehot.T @ self.totals)


def group_counts(frame: pd.DataFrame, column: str, classes: Sequence[str], clusters: pd.Series) -> GroupCounts:
    """Tally ``frame`` (label, predicted, ``column``) per (group, cluster) unit."""
    index = {c: i for i, c in enumerate(classes)}
    y_true = frame["label"].astype(str).map(index).to_numpy()
    correct = (frame["label"].astype(str) == frame["predicted"].astype(str)).to_numpy()
    unit, unit_group, names = unit_codes(frame[column], clusters)
    hits, totals = class_counts(y_true, correct, unit, len(unit_group), len(classes))
    return GroupCounts(names, unit_group, hits, totals)


def bootstrap_group_uar(counts: GroupCounts, *, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, G) UAR of each group in each stratified cluster-bootstrap resample."""
    out = np.empty((n_boot, len(counts.names)))
    for g in range(len(counts.names)):
        units = np.flatnonzero(counts.unit_group == g)
        weights = bootstrap_weights(len(units), n_boot, rng).astype(float)  # (B, k)
        out[:, g] = uar_from_counts(weights @ counts.hits[units], weights @ counts.totals[units])
    return out


def _gap(uars: np.ndarray) -> np.ndarray:
    """Max-min over the last axis, ignoring NaN groups."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, as intended
        return np.nanmax(uars, axis=-1) - np.nanmin(uars, axis=-1)


def permutation_gaps(counts: GroupCounts, *, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """(n_perm,) max-min UAR gap after shuffling unit group labels (the null distribution)."""
    perms = rng.permuted(np.tile(counts.unit_group, (n_perm, 1)), axis=1)  # (P, U)
    uars = np.empty((n_perm, len(counts.names)))
    for g in range(len(counts.names)):
        member = (perms == g).astype(float)  # (P, U)
        uars[:, g] = uar_from_counts(member @ counts.hits, member @ counts.totals)
    return _gap(uars)


@dataclass(frozen=True)
class GapTest:
    """UAR gap between the best and the worst group of one attribute.

    gap = uar[best] - uar[worst] with the pair fixed at the observed ranking; gap_low/high is
    its bootstrap interval (it can cross 0, unlike an interval of max-min). ratio =
    uar[worst] / uar[best] with its interval. p_value: permutation test of max-min gap.
    """

    worst: str
    best: str
    worst_uar: float
    best_uar: float
    gap: float
    gap_low: float
    gap_high: float
    ratio: float
    ratio_low: float
    ratio_high: float
    p_value: float


def gap_test(counts: GroupCounts, *, n_boot: int, n_perm: int, ci: float, seed: int) -> GapTest:
    """Bootstrap interval and permutation p-value of the UAR gap among ``counts``' groups."""
    if len(counts.names) < 2:
        raise ValueError("gap_test needs at least two groups")
    rng = np.random.default_rng(seed)
    observed = counts.uar()
    worst, best = int(np.nanargmin(observed)), int(np.nanargmax(observed))
    boot = bootstrap_group_uar(counts, n_boot=n_boot, rng=rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = boot[:, worst] / boot[:, best]
    null = permutation_gaps(counts, n_perm=n_perm, rng=rng)
    gap = float(observed[best] - observed[worst])
    exceed = int(np.sum(np.isfinite(null) & (null >= gap - 1e-12)))
    ratio = float(observed[worst] / observed[best]) if observed[best] > 0 else float("nan")
    return GapTest(
        str(counts.names[worst]), str(counts.names[best]), float(observed[worst]), float(observed[best]),
        gap, *percentile_interval(boot[:, best] - boot[:, worst], ci),
        ratio, *percentile_interval(ratios, ci),
        (1 + exceed) / (1 + n_perm),
    )
