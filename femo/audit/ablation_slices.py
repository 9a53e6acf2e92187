"""Condition slices for the modality ablation: UAR per subset per recording condition, with
subject-clustered bootstrap intervals, and plain-words findings.

Slices come from the feature store's condition flags (``femo.features.conditions``) and, on
the synthetic set, its planted manifest columns. Thresholds (:data:`DEFAULT_SLICES`):

* natural units where the flag has them: ``|yaw| > 30`` degrees (a clearly turned head),
  ``snr_db < 10`` dB (speech barely above the noise), ``face_ratio < 0.8`` (a face in fewer than
  80% of sampled frames), ``has_audio`` false;
* quantiles of the evaluated clips where the flag has no natural scale: brightness in the lowest
  quartile, occlusion in the highest quartile, duration in the lowest / highest quartile;
* the synthetic set's ``low_light`` and ``occluded`` columns as given.

A slice whose column is absent or has no clips is skipped. All intervals resample whole subjects
(``femo.audit.stats``) with the same resamples for every subset, so the differences between
subsets are paired.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from femo.audit import stats
from femo.audit.ablation import (
    FUSED,
    absent_modalities,
    all_subsets,
    shapley_values,
    subset_name,
    subset_value_table,
)
from femo.config import MODALITIES


@dataclass(frozen=True)
class SliceRule:
    """A condition slice: rows where ``column`` is ``op`` ``threshold``.

    op: ``"<"``, ``">"``, ``"abs>"`` (absolute value above), ``"true"`` / ``"false"`` (boolean
    column), ``"=="`` (the column, as text, equals ``value``). quantile: when set, the threshold
    is that quantile of the column over the evaluated clips (``threshold`` is then ignored).
    """

    name: str
    column: str
    op: str
    threshold: float = 0.0
    quantile: float | None = None
    description: str = ""
    value: str = ""


DEFAULT_SLICES: tuple[SliceRule, ...] = (
    SliceRule("low_light", "brightness", "<", quantile=0.25, description="darkest quarter of clips"),
    SliceRule("few_face_frames", "face_ratio", "<", 0.8, description="face found in < 80% of frames"),
    SliceRule("head_turned", "yaw", "abs>", 30.0, description="|yaw| > 30 degrees"),
    SliceRule("occluded", "occlusion", ">", quantile=0.75, description="most occluded quarter"),
    SliceRule("noisy_audio", "snr_db", "<", 10.0, description="audio SNR < 10 dB"),
    SliceRule("no_audio", "has_audio", "false", description="no audio track"),
    SliceRule("short", "duration", "<", quantile=0.25, description="shortest quarter of clips"),
    SliceRule("long", "duration", ">", quantile=0.75, description="longest quarter of clips"),
    SliceRule("planted_low_light", "low_light", "true", description="synthetic: rendered in low light"),
    SliceRule("planted_occluded", "occluded", "true", description="synthetic: face partly occluded"),
)
_OPS = ("<", ">", "abs>", "true", "false", "==")


def value_slices(frame: pd.DataFrame, column: str) -> list[SliceRule]:
    """One ``==`` slice per distinct value of ``column`` (e.g. the synthetic set's ``informative``:
    face | audio | both), named ``<column>=<value>``; empty when the column is absent."""
    if column not in frame.columns:
        return []
    values = sorted(frame[column].dropna().astype(str).unique())
    return [SliceRule(f"{column}={v}", column, "==", value=v, description=f"{column} is {v}") for v in values]


def _as_bool(values: pd.Series) -> np.ndarray:
    if values.dtype == bool:
        return values.to_numpy()
    text = values.astype(str).str.strip().str.lower()
    return text.isin(["true", "1", "1.0", "yes"]).to_numpy()


def slice_masks(frame: pd.DataFrame, rules: Sequence[SliceRule] = DEFAULT_SLICES) -> dict[str, tuple[np.ndarray, str]]:
    """``{name: (mask (N,) bool, description with the resolved threshold)}`` plus ``"all"``.

    Rules whose column is missing or whose mask is empty are left out.
    """
    out = {"all": (np.ones(len(frame), bool), "every clip")}
    for rule in rules:
        if rule.op not in _OPS:
            raise ValueError(f"slice {rule.name}: unknown op {rule.op!r}; choose from {_OPS}")
        if rule.column not in frame.columns:
            continue
        col = frame[rule.column]
        if rule.op in ("true", "false", "=="):
            if rule.op == "==":
                mask = (col.astype(str) == rule.value).to_numpy()
            else:
                mask = _as_bool(col) if rule.op == "true" else ~_as_bool(col)
            text = rule.description
        else:
            values = pd.to_numeric(col, errors="coerce").to_numpy(float)
            thr = float(np.nanquantile(values, rule.quantile)) if rule.quantile is not None else rule.threshold
            with np.errstate(invalid="ignore"):
                mask = {"<": values < thr, ">": values > thr, "abs>": np.abs(values) > thr}[rule.op]
            mask &= np.isfinite(values)
            text = f"{rule.description} ({rule.column} {rule.op} {thr:.3g})"
        if mask.any():
            out[rule.name] = (mask, text)
    return out


def _label(subset: Sequence[str], modalities: Sequence[str]) -> str:
    """Report name of a subset: ``fused`` for all modalities, else e.g. ``face+audio``."""
    return FUSED if len(set(subset)) == len(modalities) else subset_name(subset, modalities)


def _subset_columns(modalities: Sequence[str]) -> dict[str, str]:
    """subset report name -> wide-frame column ``pred_<name>``."""
    return {_label(s, modalities): f"pred_{_label(s, modalities)}" for s in all_subsets(modalities)}


def bootstrap_subset_uar(frame: pd.DataFrame, n_classes: int, *, modalities: Sequence[str] = MODALITIES,
                         n_boot: int = 200, seed: int = 0, cluster: str = "subject") -> dict[str, np.ndarray]:
    """UAR per subset on ``frame`` and on ``n_boot`` cluster resamples shared by all subsets.

    Returns ``{subset: (n_boot + 1,) float}``: entry 0 is the estimate on ``frame`` itself.
    """
    codes, n_clusters, _ = stats.cluster_codes(frame, cluster)
    weights = stats.bootstrap_weights(n_clusters, n_boot, np.random.default_rng(seed))
    weights = np.vstack([np.ones((1, n_clusters)), weights])  # (n_boot + 1, K)
    y = frame["label"].to_numpy(int)
    out = {}
    for name, col in _subset_columns(modalities).items():
        hits, totals = stats.class_counts(y, frame[col].to_numpy(int) == y, codes, n_clusters, n_classes)
        out[name] = stats.uar_from_counts(weights @ hits, weights @ totals)
    return out


def slice_table(frame: pd.DataFrame, n_classes: int, *, rules: Sequence[SliceRule] = DEFAULT_SLICES,
                modalities: Sequence[str] = MODALITIES, n_boot: int = 200, ci: float = 0.95,
                seed: int = 0, cluster: str = "subject") -> pd.DataFrame:
    """UAR per slice and subset with a cluster-bootstrap interval.

    frame: a wide frame (``label``, ``pred_<subset>``, ``subject``, flag columns). Returns columns
    ``slice, description, subset, uar, uar_low, uar_high, n_clips, n_clusters``.
    """
    rows = []
    for name, (mask, text) in slice_masks(frame, rules).items():
        part = frame[mask]
        boot = bootstrap_subset_uar(part, n_classes, modalities=modalities, n_boot=n_boot, seed=seed, cluster=cluster)
        n_clusters = stats.cluster_codes(part, cluster)[1]
        for subset, values in boot.items():
            low, high = stats.percentile_interval(values[1:], ci)
            rows.append({"slice": name, "description": text, "subset": subset, "uar": float(values[0]),
                         "uar_low": low, "uar_high": high, "n_clips": int(mask.sum()), "n_clusters": n_clusters})
    return pd.DataFrame(rows)


def modality_gains(frame: pd.DataFrame, n_classes: int, *, rules: Sequence[SliceRule] = DEFAULT_SLICES,
                   modalities: Sequence[str] = MODALITIES, n_boot: int = 200, ci: float = 0.95,
                   seed: int = 0, cluster: str = "subject") -> pd.DataFrame:
    """What each modality adds to the fused model per slice: UAR(all) - UAR(all but m), paired
    over the same subject resamples. Columns ``slice, description, modality, gain, low, high,
    n_clips, n_clusters`` (UAR as a fraction)."""
    rows = []
    for name, (mask, text) in slice_masks(frame, rules).items():
        part = frame[mask]
        boot = bootstrap_subset_uar(part, n_classes, modalities=modalities, n_boot=n_boot, seed=seed, cluster=cluster)
        n_clusters = stats.cluster_codes(part, cluster)[1]
        for m in modalities:
            rest = _label([x for x in modalities if x != m], modalities)
            diff = boot[FUSED] - boot[rest]
            low, high = stats.percentile_interval(diff[1:], ci)
            rows.append({"slice": name, "description": text, "modality": m, "gain": float(diff[0]),
                         "low": low, "high": high, "n_clips": int(mask.sum()), "n_clusters": n_clusters})
    return pd.DataFrame(rows)


#: Smallest slice given Shapley values: fewer clips or subjects give values that look like findings
#: but move by tens of UAR points when one subject is left out.
MIN_CLIPS, MIN_SUBJECTS = 20, 5


def judgeable(n_clips: int, n_subjects: int, *, min_clips: int = MIN_CLIPS, min_subjects: int = MIN_SUBJECTS) -> bool:
    """True when a slice has at least ``min_clips`` clips and ``min_subjects`` subjects."""
    return n_clips >= min_clips and n_subjects >= min_subjects


def slice_shapley(frame: pd.DataFrame, n_classes: int, *, rules: Sequence[SliceRule] = DEFAULT_SLICES,
                  modalities: Sequence[str] = MODALITIES, min_clips: int = MIN_CLIPS,
                  min_subjects: int = MIN_SUBJECTS, cluster: str = "subject") -> pd.DataFrame:
    """Exact Shapley contribution of each modality to UAR within each slice.

    Columns ``slice, description, modality, shapley, share, n_clips, n_subjects, judged, absent``
    (share = shapley / sum over modalities; NaN when the sum is not positive, i.e. the fused model
    is no better than chance there, where shares mean nothing). A slice with fewer than ``min_clips`` clips or
    ``min_subjects`` subjects (``cluster`` values; clips when the column is absent) is not judged:
    its ``shapley`` and ``share`` are NaN. A modality missing from every clip of a slice
    (``absent``) gets exactly 0 (see :func:`femo.audit.ablation.subset_value_table`).
    """
    rows = []
    for name, (mask, text) in slice_masks(frame, rules).items():
        part = frame[mask]
        n_subjects = stats.cluster_codes(part, cluster)[1]
        judged = judgeable(int(mask.sum()), n_subjects, min_clips=min_clips, min_subjects=min_subjects)
        absent = absent_modalities(part, modalities)
        if judged:
            phi = shapley_values(subset_value_table(part, n_classes, modalities=modalities).__getitem__, modalities)
        else:
            phi = {m: float("nan") for m in modalities}
        total = sum(phi.values())
        rows += [{"slice": name, "description": text, "modality": m, "shapley": p,
                  "share": p / total if judged and total > 0 else float("nan"), "n_clips": int(mask.sum()),
                  "n_subjects": n_subjects, "judged": judged, "absent": m in absent}
                 for m, p in phi.items()]
    return pd.DataFrame(rows)


def findings(gains: pd.DataFrame, *, ci: float = 0.95, min_clusters: int = MIN_SUBJECTS,
             min_clips: int = MIN_CLIPS) -> list[str]:
    """Plain-words statements for the slice gains whose interval excludes 0.

    Slices resting on fewer than ``min_clusters`` subjects or ``min_clips`` clips are never
    stated: with one or two subjects a bootstrap interval collapses and says nothing. E.g. "In low_light clips (darkest
    quarter of clips (brightness < 0.31)): audio adds 12.5 UAR points (95% CI 4.1 to 20.3; 180
    clips, 24 subjects)."; a negative gain says "costs".
    """
    lines = []
    pct = round(100 * ci)
    for row in gains.itertuples():
        if row.n_clusters < min_clusters or row.n_clips < min_clips or not (row.low > 0 or row.high < 0):
            continue
        verb = "adds" if row.gain > 0 else "costs"
        detail = f" ({row.description})" if row.description else ""
        where = "All clips" if row.slice == "all" else f"In {row.slice} clips{detail}"
        lines.append(f"{where}: {row.modality} {verb} {abs(100 * row.gain):.1f} UAR points "
                     f"({pct}% CI {100 * row.low:.1f} to {100 * row.high:.1f}; "
                     f"{row.n_clips} clips, {row.n_clusters} subjects).")
    return lines


def subset_intervals(frame: pd.DataFrame, n_classes: int, *, modalities: Sequence[str] = MODALITIES,
                     n_boot: int = 200, ci: float = 0.95, seed: int = 0,
                     cluster: str = "subject") -> Mapping[str, dict[str, float]]:
    """``{subset: {uar, uar_low, uar_high, war}}`` over all clips of a wide frame."""
    boot = bootstrap_subset_uar(frame, n_classes, modalities=modalities, n_boot=n_boot, seed=seed, cluster=cluster)
    out = {}
    for name, col in _subset_columns(modalities).items():
        low, high = stats.percentile_interval(boot[name][1:], ci)
        out[name] = {"uar": float(boot[name][0]), "uar_low": low, "uar_high": high,
                     "war": stats.war(frame["label"], frame[col])}
    return out
