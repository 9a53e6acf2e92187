"""Audit of the face pipeline itself: does the face detector see every group equally well?

A group whose faces are missed more often silently loses the face modality before any emotion
model runs. Given one row per clip with group columns (demographic labels, or the estimates
``femo annotate`` adds: ``perceived_*``, ``ita_*``) and per-clip pipeline measures --
``face_found_rate`` (share of sampled frames with a face; the store's ``face_ratio``) and
``face_score`` (mean detector confidence, see :mod:`femo.annotate.faces`) -- this module gives,
per group, the mean of each measure with a subject-clustered bootstrap interval, and per
attribute the gap between the best and worst assessable group with the same permutation test
as the UAR gaps of :mod:`femo.audit.fairness` (Holm-corrected across attributes).

The statistics are those of :mod:`femo.audit.disparity`: a per-clip measure is tallied per
(group, subject) unit as a one-"class" count (sum of the measure, number of clips), so the
group "UAR" of those counts is the group mean, and bootstrap and permutation reuse the
vectorised routines unchanged.

Groups derived from the face itself (``perceived_*``, ``ita_*``) are empty exactly when no
face was found, so their ``unknown`` group is shown but never ranked: its miss rate is 100% by
construction.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from femo.audit.disparity import GroupCounts, bootstrap_group_uar, gap_test
from femo.audit.groups import UNKNOWN, add_group_columns, cluster_keys, drop_constant, unit_codes
from femo.audit.stats import holm, percentile_interval

__all__ = ["PIPELINE_MEASURES", "PERCEIVED_ATTRIBUTES", "PipelineAudit", "pipeline_audit", "with_face_columns"]

#: Per-clip measures audited by default (either may be absent from a table).
PIPELINE_MEASURES: tuple[str, ...] = ("face_found_rate", "face_score")
#: Attribute prefixes whose values come from the face: their "unknown" group is never ranked.
FACE_DERIVED: tuple[str, ...] = ("perceived_", "ita_")
#: Columns of :attr:`PipelineAudit.groups` (also when nothing was measured).
GROUP_COLUMNS: tuple[str, ...] = ("attribute", "measure", "group", "n_clips", "n_subjects", "mean", "low", "high",
                                  "assessable")

#: Grouping columns ``femo annotate`` adds (estimates; audited like any metadata column).
PERCEIVED_ATTRIBUTES: tuple[str, ...] = ("perceived_age_group", "perceived_sex", "ita_skin_group")


def with_face_columns(pred: pd.DataFrame, index: pd.DataFrame, annotated: pd.DataFrame | None = None) -> pd.DataFrame:
    """``pred`` (one row per clip, ``clip_id``) plus the pipeline measures and annotations per clip.

    ``face_found_rate`` comes from the store index's ``face_ratio`` (share of sampled frames
    with a face); with ``annotated`` (the table ``femo annotate`` wrote) its ``face_score``,
    ``perceived_*`` and ``ita*`` columns are added too, replacing any of the same name in
    ``pred``. Rows stay those of ``pred``, in order; a clip missing from ``index`` (or an index
    without ``face_ratio``) gets a missing ``face_found_rate``, which the audit leaves out.
    """
    ids = pred["clip_id"].astype(str)
    by_id = index.assign(clip_id=index["clip_id"].astype(str)).set_index("clip_id")
    by_id = by_id[~by_id.index.duplicated()]
    out = pred.copy()
    ratio = pd.to_numeric(by_id["face_ratio"], errors="coerce") if "face_ratio" in by_id else pd.Series(dtype=float)
    out["face_found_rate"] = ids.map(ratio).to_numpy(float)
    if annotated is not None:
        ann = annotated.assign(clip_id=annotated["clip_id"].astype(str)).set_index("clip_id")
        added = [c for c in ann.columns if c == "face_score" or c.startswith(("perceived_", "ita"))]
        out = out.drop(columns=[c for c in added if c in out.columns])
        for column in added:
            values = ids.map(ann[column])
            if not pd.api.types.is_numeric_dtype(values):
                values = values.where(values.fillna("") != "")  # "" (no face) -> missing -> group "unknown"
            out[column] = values.to_numpy()
    return out


def _num(value: Any) -> Any:
    """JSON-ready scalar: numpy scalars as Python ones, NaN as None."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if value is None or (isinstance(value, float) and not np.isfinite(value)) else value


@dataclass(frozen=True)
class PipelineAudit:
    """What :func:`pipeline_audit` found.

    groups: one row per (attribute, group, measure): n_clips, n_subjects, mean, low, high,
    assessable. gaps: one row per (attribute, measure): worst, best, worst_mean, best_mean, gap
    (best - worst) with gap_low/gap_high, p_value (permutation), p_adjusted (Holm across the
    attributes of that measure), flagged (p_adjusted < alpha); NaN where fewer than two groups
    are assessable. notes: what was skipped and why.
    """

    groups: pd.DataFrame
    gaps: pd.DataFrame
    measures: tuple[str, ...]
    clustered: bool
    n_clips: int
    alpha: float
    ci: float
    min_subjects: int
    notes: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> list[dict[str, Any]]:
        """Gap rows significant after correction, as dicts."""
        rows = self.gaps[self.gaps["flagged"]] if len(self.gaps) else self.gaps
        return [{k: _num(v) for k, v in r.items()} for r in rows.to_dict("records")]

    def to_metrics(self) -> dict[str, Any]:
        """``metrics.json`` form: {measure: {attribute: {group: {n_clips, n_subjects, mean, low,
        high, assessable}}}} under ``groups``, the gap rows under ``gaps``, ``flagged``, facts."""
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        for r in self.groups.to_dict("records"):
            groups.setdefault(r["measure"], {}).setdefault(r["attribute"], {})[r["group"]] = {
                "n_clips": int(r["n_clips"]), "n_subjects": int(r["n_subjects"]), "mean": _num(r["mean"]),
                "low": _num(r["low"]), "high": _num(r["high"]), "assessable": bool(r["assessable"])}
        return {"groups": groups, "gaps": [{k: _num(v) for k, v in r.items()} for r in self.gaps.to_dict("records")],
                "flagged": self.flagged, "measures": list(self.measures), "clustered": self.clustered,
                "n_clips": self.n_clips, "alpha": self.alpha, "min_subjects": self.min_subjects, "notes": self.notes}

    def summary(self) -> str:
        """One paragraph: which measure gaps survive correction, or that none does."""
        if self.gaps.empty or self.gaps["p_value"].isna().all():
            return "No attribute has two assessable groups, so no face-pipeline gap could be tested."
        if not self.flagged:
            return (f"No face-pipeline gap is significant after Holm correction (alpha {self.alpha}); "
                    "see the table for the size of each gap and its interval.")
        parts = [f"{f['measure']} by {f['attribute']}: {f['worst']} {f['worst_mean']:.3f} vs {f['best']} "
                 f"{f['best_mean']:.3f} (gap {f['gap']:.3f}, adjusted p {f['p_adjusted']:.3g})" for f in self.flagged]
        return "The face pipeline sees some groups less well: " + "; ".join(parts) + "."


def _counts(groups: pd.Series, clusters: pd.Series, values: np.ndarray) -> GroupCounts:
    """Per-(group, cluster) unit sums of ``values`` and clip counts as one-class tallies (U, 1)."""
    unit, unit_group, names = unit_codes(groups, clusters)
    n_units = len(unit_group)
    sums = np.bincount(unit, weights=values, minlength=n_units)[:, None]
    counts = np.bincount(unit, minlength=n_units).astype(float)[:, None]
    return GroupCounts(names, unit_group, sums, counts)


def _one(frame: pd.DataFrame, attribute: str, measure: str, clusters: pd.Series, *, min_subjects: int,
         n_boot: int, n_perm: int, ci: float, seed: int) -> tuple[list[dict], dict]:
    keep = np.isfinite(frame[measure].to_numpy(float))
    counts = _counts(frame.loc[keep, attribute], clusters[keep], frame.loc[keep, measure].to_numpy(float))
    boot = bootstrap_group_uar(counts, n_boot=n_boot, rng=np.random.default_rng(seed))
    means = counts.uar()
    derived = attribute.startswith(FACE_DERIVED)
    rows, ranked = [], []
    for g, name in enumerate(counts.names):
        in_group = counts.unit_group == g
        n_units = int(in_group.sum())
        assessable = n_units >= min_subjects and not (derived and name == UNKNOWN)
        ranked += [str(name)] if assessable else []
        rows.append({"attribute": attribute, "measure": measure, "group": str(name),
                     "n_clips": int(counts.totals[in_group].sum()), "n_subjects": n_units, "mean": float(means[g]),
                     **dict(zip(("low", "high"), percentile_interval(boot[:, g], ci))), "assessable": assessable})
    gap = {"attribute": attribute, "measure": measure, "n_groups": len(counts.names), "n_assessable": len(ranked)}
    if len(ranked) >= 2:
        t = gap_test(counts.subset(ranked), n_boot=n_boot, n_perm=n_perm, ci=ci, seed=seed)
        gap.update(worst=t.worst, best=t.best, worst_mean=t.worst_uar, best_mean=t.best_uar, gap=t.gap,
                   gap_low=t.gap_low, gap_high=t.gap_high, p_value=t.p_value)
    return rows, gap


def pipeline_audit(table: pd.DataFrame, *, attributes: Sequence[str], measures: Sequence[str] = PIPELINE_MEASURES,
                   cluster: str | None = "subject", min_subjects: int = 5, n_boot: int = 1000, n_perm: int = 1000,
                   ci: float = 0.95, alpha: float = 0.05, seed: int = 0) -> PipelineAudit:
    """Per-group face-pipeline measures with intervals and gap tests (see the module docstring).

    table: one row per clip with the ``attributes`` columns, the ``measures`` columns (float,
    NaN = not measured; a measure absent from the table is skipped with a note) and
    optionally ``cluster`` (the subject; without it clips are the resampling unit).
    """
    if not any(m in table.columns for m in measures):
        raise ValueError(f"pipeline_audit: none of the measures {list(measures)} is a column; columns are "
                         f"{list(table.columns)}")
    present = [m for m in measures if m in table.columns and pd.to_numeric(table[m], errors="coerce").notna().any()]
    notes = [f"measure '{m}' is not in the table or never measured, so it was skipped"
             for m in measures if m not in present]
    kept, _, dropped = drop_constant(table, attributes=attributes)
    frame, columns = add_group_columns(table, attributes=kept, name="pipeline table")
    clusters, clustered = cluster_keys(frame, cluster)
    group_rows, gap_rows = [], []
    for measure in present:
        for attribute in columns:
            rows, gap = _one(frame, attribute, measure, clusters, min_subjects=min_subjects, n_boot=n_boot,
                             n_perm=n_perm, ci=ci, seed=seed)
            group_rows += rows
            gap_rows.append(gap)
    groups = (pd.DataFrame(group_rows) if group_rows
              else pd.DataFrame(columns=list(GROUP_COLUMNS)).astype({"assessable": bool, "mean": float}))
    gaps = pd.DataFrame(gap_rows).reindex(columns=[
        "attribute", "measure", "n_groups", "n_assessable", "worst", "best", "worst_mean", "best_mean", "gap",
        "gap_low", "gap_high", "p_value"])
    gaps["p_adjusted"] = np.nan
    for measure in present:
        sel = gaps["measure"] == measure
        gaps.loc[sel, "p_adjusted"] = holm(gaps.loc[sel, "p_value"].to_numpy(float))
    gaps["flagged"] = gaps["p_adjusted"].lt(alpha)
    return PipelineAudit(groups, gaps, tuple(present), clustered, len(table), alpha, ci,
                         min_subjects, notes + dropped)
