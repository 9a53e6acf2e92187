"""Bias audit of emotion predictions across demographic groups and their intersections.

What fairlearn does here: :class:`fairlearn.metrics.MetricFrame` disaggregates the metrics by
group (and by intersection): each group's confusion matrix, subject count and calibration error.
From each group's confusion matrix femo reads UAR, WAR, per-emotion recall (true positive
rate), false positive rate and predicted-emotion rate; the equal-opportunity and rate-parity
gaps are max - min over the *assessable* groups (MetricFrame's ``difference()`` spans every
group, so it would rank groups too small to judge).

What femo adds: intervals that resample *subjects*, not clips (clips of one person are
correlated; see :mod:`femo.audit.disparity`); an assessability rule (a group with fewer than
``min_subjects`` subjects is shown but never ranked -- below 5 subjects a subject-level
interval rests on a handful of people and between-person variation cannot be estimated);
permutation tests of the UAR gap with Holm correction across attributes; the data-composition
audit (:mod:`femo.audit.composition`); and the per-modality breakdown of the gap.

Input: a predictions table following ``RUN/predictions.csv`` (see :mod:`femo.audit.groups`).
Entry point: :func:`audit` -> :class:`femo.audit.report.AuditResult`.
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from femo.audit import composition as comp
from femo.audit.disparity import GapTest, bootstrap_group_uar, gap_test, group_counts
from femo.audit.groups import (
    add_group_columns,
    check_predictions,
    cluster_keys,
    drop_constant,
    parse_intersections,
)
from femo.audit.report import AuditResult, flagged_rows, summarize
from femo.audit.stats import holm, percentile_interval, uar
from femo.training.metrics import expected_calibration_error

__all__ = ["group_metrics", "confusion_matrices", "disparities", "modality_gaps", "audit", "AuditResult"]


@dataclass(frozen=True)
class _Prepared:
    frame: pd.DataFrame  # predictions with string group columns
    columns: list[str]  # attributes then intersections
    clusters: pd.Series  # resampling unit per row
    clustered: bool  # False when there is no subject column
    classes: tuple[str, ...]


def _prepare(pred, *, classes, attributes, intersections, cluster, name="predictions") -> _Prepared:
    check_predictions(pred, classes, name=name)
    frame, columns = add_group_columns(
        pred, attributes=attributes, intersections=parse_intersections(intersections), name=name)
    clusters, clustered = cluster_keys(frame, cluster)
    return _Prepared(frame, columns, clusters, clustered, tuple(classes))


def _metric_frame(p: _Prepared, column: str) -> MetricFrame:
    """MetricFrame by ``column`` of the confusion matrix (C, C), subject count and ECE.

    Three metrics, not one per emotion: MetricFrame's cost grows with metrics x rows, and
    every per-emotion rate follows from the confusion matrix (:func:`_from_confusion`).
    """
    frame, c = p.frame, len(p.classes)
    index = {name: i for i, name in enumerate(p.classes)}
    y_true = frame["label"].astype(str).map(index).to_numpy(np.int64)
    y_pred = frame["predicted"].astype(str).map(index).to_numpy(np.int64)
    columns = [f"p_{name}" for name in p.classes]
    has_probs = all(name in frame.columns for name in columns)
    probs = frame[columns].to_numpy(float) if has_probs else None
    metrics = {
        "confusion": lambda t, y: np.bincount(t * c + y, minlength=c * c).reshape(c, c),
        "n_units": lambda t, y, units: float(len(np.unique(units))),
        # MetricFrame splits only 1-D sample parameters, so ECE receives row numbers
        "ece": lambda t, y, rows: expected_calibration_error(t, probs[rows]) if has_probs else float("nan"),
    }
    return MetricFrame(
        metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=frame[column].rename(column),
        sample_params={"n_units": {"units": p.clusters.to_numpy()}, "ece": {"rows": np.arange(len(frame))}},
    )


def _from_confusion(matrix: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """n_clips, UAR, WAR and per-emotion recall (TPR), false positive rate and predicted rate
    from one (C, C) confusion matrix (rows = true class)."""
    matrix = np.asarray(matrix, dtype=float)
    n, hits = matrix.sum(), np.diag(matrix)
    true, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(true > 0, hits / true, np.nan)
        fpr = np.where(n - true > 0, (predicted - hits) / (n - true), np.nan)
    row = {"n_clips": int(n), "uar": float(np.nanmean(recall)) if (true > 0).any() else float("nan"),
           "war": float(hits.sum() / n) if n else float("nan")}
    for kind, values in (("recall", recall), ("fpr", fpr), ("rate", predicted / max(n, 1.0))):
        row.update({f"{kind}_{name}": float(v) for name, v in zip(classes, values)})
    return row


def _seed(seed: int, column: str) -> list[int]:
    """A per-attribute seed that does not depend on the order attributes are listed in."""
    return [seed, zlib.crc32(column.encode())]


def _group_table(p: _Prepared, *, min_subjects: int, n_boot: int, ci: float, seed: int) -> pd.DataFrame:
    tables = []
    for column in p.columns:
        by_group = _metric_frame(p, column).by_group
        table = pd.DataFrame([_from_confusion(m, p.classes) for m in by_group["confusion"]])
        table.insert(0, "group", by_group.index.astype(str))
        table.insert(0, "attribute", column)
        table.insert(5, "ece", by_group["ece"].to_numpy(float))
        table.insert(3, "n_subjects", by_group["n_units"].to_numpy(float) if p.clustered else np.nan)
        table["assessable"] = (table["n_subjects"] if p.clustered else table["n_clips"]) >= min_subjects
        if n_boot:
            counts = group_counts(p.frame, column, p.classes, p.clusters)
            boot = bootstrap_group_uar(counts, n_boot=n_boot, rng=np.random.default_rng(_seed(seed, column)))
            bounds = np.array([percentile_interval(boot[:, g], ci) for g in range(boot.shape[1])])
            table["uar_low"], table["uar_high"] = bounds[:, 0], bounds[:, 1]
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def group_metrics(
    pred: pd.DataFrame,
    *,
    attributes: Sequence[str],
    classes: Sequence[str],
    intersections: str | Sequence[Sequence[str]] | None = None,
    min_subjects: int = 5,
    cluster: str | None = "subject",
    n_boot: int = 0,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (attribute, group), intersections included.

    Columns: attribute, group, n_clips, n_subjects (NaN without a ``cluster`` column), uar,
    war, ece (NaN without ``p_<class>`` columns), recall_<c> (TPR), fpr_<c>, rate_<c> (share
    of the group's clips predicted as c), assessable (n_subjects >= min_subjects; n_clips
    without subjects) and, when n_boot > 0, uar_low/uar_high from a subject-clustered bootstrap.
    """
    p = _prepare(pred, classes=classes, attributes=attributes, intersections=intersections, cluster=cluster)
    return _group_table(p, min_subjects=min_subjects, n_boot=n_boot, ci=ci, seed=seed)


def confusion_matrices(pred: pd.DataFrame, *, attribute: str, classes: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Per group of ``attribute``: a (C, C) count table, rows = true class, columns = predicted."""
    p = _prepare(pred, classes=classes, attributes=[attribute], intersections=None, cluster=None)
    by_group = _metric_frame(p, attribute).by_group
    names = pd.Index(classes)
    return {str(group): pd.DataFrame(matrix, index=names.rename("true"), columns=names.rename("predicted"))
            for group, matrix in by_group["confusion"].items()}


def _emotion_gaps(by_group: pd.DataFrame, column: str, classes: Sequence[str]) -> list[dict]:
    """Equal-opportunity (recall) and predicted-rate gaps (max - min) among the rows of
    ``by_group`` (MetricFrame.by_group of the assessable groups, indexed by group)."""
    rows = []
    for kind in ("recall", "rate"):
        for c in classes:
            values = by_group[f"{kind}_{c}"].dropna()
            if len(values) < 2:
                continue
            rows.append({"attribute": column, "metric": kind, "emotion": c, "gap": float(values.max() - values.min()),
                         "low_group": str(values.idxmin()), "high_group": str(values.idxmax()),
                         "low": float(values.min()), "high": float(values.max())})
    return rows


def _disparities(p: _Prepared, groups: pd.DataFrame, *, n_boot, n_perm, ci, seed):
    gap_rows, emotion_rows = [], []
    for column in p.columns:
        assessable = groups.loc[(groups["attribute"] == column) & groups["assessable"], "group"].tolist()
        row = {"attribute": column, "n_groups": int((groups["attribute"] == column).sum()),
               "n_assessable": len(assessable)}
        if len(assessable) >= 2:
            counts = group_counts(p.frame, column, p.classes, p.clusters).subset(assessable)
            row.update(vars(gap_test(counts, n_boot=n_boot, n_perm=n_perm, ci=ci, seed=_seed(seed, column))))
            by_group = groups[(groups["attribute"] == column) & groups["assessable"]].set_index("group")
            emotion_rows += _emotion_gaps(by_group, column, p.classes)
        gap_rows.append(row)
    # every GapTest field, NaN where fewer than two groups are assessable
    table = pd.DataFrame(gap_rows).reindex(
        columns=["attribute", "n_groups", "n_assessable", *(f.name for f in fields(GapTest))])
    table["p_adjusted"] = holm(table["p_value"].to_numpy(float))
    return table, pd.DataFrame(emotion_rows, columns=["attribute", "metric", "emotion", "gap", "low_group",
                                                       "high_group", "low", "high"])


def disparities(pred: pd.DataFrame, *, attributes, classes, intersections=None, min_subjects: int = 5,
                cluster: str | None = "subject", n_boot: int = 1000, n_perm: int = 1000, ci: float = 0.95,
                seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(UAR-gap table, per-emotion gap table) among assessable groups.

    Gap table, one row per attribute: n_groups, n_assessable, worst/best group and UAR, gap
    (best - worst) with gap_low/gap_high, ratio (worst / best) with interval, p_value
    (permutation test of the max-min gap, subjects kept whole) and p_adjusted (Holm across
    attributes). Attributes with fewer than two assessable groups get NaN.
    Emotion table: metric "recall" (equal opportunity) or "rate" (predicted-emotion parity),
    emotion, gap (max - min across assessable groups) and which groups are lowest/highest.
    """
    p = _prepare(pred, classes=classes, attributes=attributes, intersections=intersections, cluster=cluster)
    groups = _group_table(p, min_subjects=min_subjects, n_boot=0, ci=ci, seed=seed)
    return _disparities(p, groups, n_boot=n_boot, n_perm=n_perm, ci=ci, seed=seed)


def _align(p: _Prepared, other: pd.DataFrame, name: str) -> _Prepared:
    """``p`` with ``predicted`` replaced by ``other``'s, matched on clip_id."""
    if "clip_id" not in p.frame.columns or "clip_id" not in other.columns:
        raise ValueError(f"modality predictions '{name}': both tables need a clip_id column")
    check_predictions(other, p.classes, name=f"modality predictions '{name}'")
    keyed = other.set_index(other["clip_id"].astype(str))
    clip_ids = p.frame["clip_id"].astype(str)
    mapped = clip_ids.map(keyed["predicted"])
    if mapped.isna().any() or len(other) != len(p.frame):
        raise ValueError(f"modality predictions '{name}': clip_ids differ from the audited predictions")
    if (clip_ids.map(keyed["label"]).astype(str) != p.frame["label"].astype(str)).any():
        raise ValueError(f"modality predictions '{name}': labels differ from the audited predictions")
    return _Prepared(p.frame.assign(predicted=mapped.astype(str)), p.columns, p.clusters, p.clustered, p.classes)


def _modality_gaps(p: _Prepared, groups: pd.DataFrame, frames: Mapping[str, pd.DataFrame], *,
                   n_boot, n_perm, ci, seed) -> pd.DataFrame:
    rows = []
    for name, other in frames.items():
        q = _align(p, other, name)
        table, _ = _disparities(q, groups, n_boot=n_boot, n_perm=n_perm, ci=ci, seed=seed)
        table.insert(0, "modality", name)
        table.insert(2, "uar", uar(q.frame["label"], q.frame["predicted"], q.classes))
        rows.append(table)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def modality_gaps(pred: pd.DataFrame, modality_predictions: Mapping[str, pd.DataFrame], *, attributes, classes,
                  intersections=None, min_subjects: int = 5, cluster: str | None = "subject",
                  n_boot: int = 1000, n_perm: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """The UAR-gap table of :func:`disparities` for each modality's predictions, stacked with a
    ``modality`` and an overall ``uar`` column. ``pred`` supplies the metadata; each frame in
    ``modality_predictions`` needs clip_id, label, predicted for exactly the same clips.
    Assessable groups are those of ``pred`` (the clips are the same)."""
    p = _prepare(pred, classes=classes, attributes=attributes, intersections=intersections, cluster=cluster)
    groups = _group_table(p, min_subjects=min_subjects, n_boot=0, ci=ci, seed=seed)
    return _modality_gaps(p, groups, modality_predictions, n_boot=n_boot, n_perm=n_perm, ci=ci, seed=seed)


def _read_table(table: pd.DataFrame | str | Path | None) -> pd.DataFrame | None:
    if table is None or isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest file")
    return pd.read_csv(path)


def audit(
    pred: pd.DataFrame,
    *,
    attributes: Sequence[str],
    classes: Sequence[str],
    intersections: str | Sequence[Sequence[str]] | None = None,
    manifest: pd.DataFrame | str | Path | None = None,
    modality_predictions: Mapping[str, pd.DataFrame] | None = None,
    min_subjects: int = 5,
    n_boot: int = 1000,
    n_perm: int | None = None,
    alpha: float = 0.05,
    ci: float = 0.95,
    seed: int = 0,
    cluster: str | None = "subject",
) -> AuditResult:
    """Run the whole audit on a predictions table.

    manifest: the full dataset (all splits) for the composition audit; the predictions
    themselves when None. modality_predictions: {name: predictions table} for the per-modality
    gap table. n_perm: permutations per test (default n_boot). A disparity is flagged when its
    Holm-adjusted p-value is below ``alpha``. Single-valued attributes are skipped with a note
    in the summary (a small test fold may hold one culture); ValueError when none is left.
    """
    attributes, intersections, notes = drop_constant(
        pred, attributes=attributes, intersections=parse_intersections(intersections))
    if not attributes and not intersections:
        raise ValueError("audit: no attribute with at least two values to compare; " + "; ".join(notes))
    p = _prepare(pred, classes=classes, attributes=attributes, intersections=intersections, cluster=cluster)
    n_perm = n_boot if n_perm is None else n_perm
    groups = _group_table(p, min_subjects=min_subjects, n_boot=n_boot, ci=ci, seed=seed)
    gaps, emotions = _disparities(p, groups, n_boot=n_boot, n_perm=n_perm, ci=ci, seed=seed)
    data = _read_table(manifest)
    source, data_columns = (p.frame, p.columns) if data is None else add_group_columns(
        data, attributes=attributes, intersections=intersections, name="manifest")
    modality = _modality_gaps(p, groups, modality_predictions or {}, n_boot=n_boot, n_perm=n_perm, ci=ci, seed=seed)
    associations = comp.associations(source, attributes=data_columns, classes=classes, alpha=alpha)
    result = AuditResult(
        summary="", groups=groups, disparities=gaps, emotion_gaps=emotions,
        flagged=flagged_rows(gaps, alpha=alpha), composition=comp.composition(source, attributes=data_columns),
        associations=associations, modality_gaps=modality, clustered=p.clustered,
        n_clips=len(p.frame), n_subjects=int(p.clusters.nunique()) if p.clustered else None,
        alpha=alpha, min_subjects=min_subjects, n_boot=n_boot, ci=ci,
        composition_source="predictions" if data is None else "manifest", notes=notes,
    )
    return result.with_summary(summarize(result))
