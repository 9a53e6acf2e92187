"""The audit's result object, its plain-English summary, its ``metrics.json`` form, and reading
the prediction tables of a run folder."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from femo.audit.groups import UNKNOWN

__all__ = ["AuditResult", "RunPredictions", "flagged_rows", "summarize", "read_run_predictions"]

#: Column types that must stay strings when a predictions CSV is read back.
_STR_COLUMNS = {"clip_id": str, "subject": str}


@dataclass(frozen=True, eq=False)
class RunPredictions:
    """A run's predictions: ``pred`` (RUN/predictions.csv), ``classes`` (RUN/config.json, else
    the order of the ``p_<class>`` columns) and ``modalities`` {name: table} of per-modality
    predictions on the same clips (:func:`femo.audit.masked.run_predictions` computes them; empty
    here), with the reason in ``skipped`` when there are none."""

    pred: pd.DataFrame
    classes: tuple[str, ...]
    modalities: dict[str, pd.DataFrame]
    skipped: list[str]


def read_run_predictions(run_dir: str | Path) -> RunPredictions:
    """Read a run folder's predictions.csv and classes; FileNotFoundError naming the missing file."""
    run = Path(run_dir)
    path = run / "predictions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions; train and evaluate a run first (`femo train ... --out RUN`)")
    pred = pd.read_csv(path, dtype=_STR_COLUMNS)
    config = run / "config.json"
    classes = json.loads(config.read_text()).get("classes") if config.is_file() else None
    if not classes:
        classes = [c[2:] for c in pred.columns if c.startswith("p_")]
    if not classes:
        raise ValueError(f"{path}: no p_<class> columns and no classes in {config}")
    return RunPredictions(pred, tuple(classes), {}, [])


@dataclass(frozen=True, eq=False)
class AuditResult:
    """Everything :func:`femo.audit.fairness.audit` found.

    summary: one paragraph. groups: per (attribute, group) metrics with UAR intervals (see
    :func:`~femo.audit.fairness.group_metrics`). disparities: per-attribute UAR gap, ratio,
    intervals and p-values. emotion_gaps: equal-opportunity (recall) and predicted-rate gaps.
    flagged: disparities significant after Holm correction (see :func:`flagged_rows`).
    composition: {"<attribute> x <label|split|fold>": count table}. associations: emotion-group
    lift table. modality_gaps: the disparities table per modality (empty when none given).
    """

    summary: str
    groups: pd.DataFrame
    disparities: pd.DataFrame
    emotion_gaps: pd.DataFrame
    flagged: list[dict[str, Any]]
    composition: dict[str, pd.DataFrame]
    associations: pd.DataFrame
    modality_gaps: pd.DataFrame
    clustered: bool
    n_clips: int
    n_subjects: int | None
    alpha: float
    min_subjects: int
    n_boot: int
    ci: float
    composition_source: str = "predictions"
    notes: list[str] = field(default_factory=list)

    def with_summary(self, summary: str) -> AuditResult:
        """A copy with ``summary`` set."""
        return replace(self, summary=summary)

    def to_metrics(self) -> dict[str, Any]:
        """The notebook's ``metrics.json``: ``flagged`` and ``groups`` = {attribute: {group:
        {n_clips, n_subjects, uar, uar_low, uar_high, assessable}}}, plus the per-attribute
        ``disparities`` and run facts. NaN becomes None."""
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        for row in self.groups.itertuples(index=False):
            groups.setdefault(row.attribute, {})[row.group] = {
                "n_clips": int(row.n_clips), "n_subjects": _num(row.n_subjects, int), "uar": _num(row.uar),
                "uar_low": _num(getattr(row, "uar_low", None)), "uar_high": _num(getattr(row, "uar_high", None)),
                "assessable": bool(row.assessable),
            }
        disparities = {
            row["attribute"]: {k: _num(v) if isinstance(v, float) else v for k, v in row.items() if k != "attribute"}
            for row in self.disparities.to_dict("records")
        }
        return {
            "flagged": [{k: _num(v) if isinstance(v, float) else v for k, v in f.items()} for f in self.flagged],
            "groups": groups, "disparities": disparities, "n_clips": self.n_clips, "n_subjects": self.n_subjects,
            "clustered": self.clustered, "alpha": self.alpha, "min_subjects": self.min_subjects,
            "n_boot": self.n_boot, "n_associations_flagged": int(self.associations["flagged"].sum()),
        }


def _num(value: Any, kind: type = float) -> Any:
    """JSON-safe number: None for missing/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return kind(value)


def flagged_rows(disparities: pd.DataFrame, *, alpha: float) -> list[dict[str, Any]]:
    """Disparities with Holm-adjusted p < alpha, as {attribute, group (the worst group),
    reference (the best group), metric ("uar_gap"), gap, ci_low, ci_high, p_value (adjusted),
    p_unadjusted}."""
    rows = disparities[disparities["p_adjusted"] < alpha]
    return [
        {"attribute": r["attribute"], "group": r["worst"], "reference": r["best"], "metric": "uar_gap",
         "gap": float(r["gap"]), "ci_low": float(r["gap_low"]), "ci_high": float(r["gap_high"]),
         "p_value": float(r["p_adjusted"]), "p_unadjusted": float(r["p_value"])}
        for r in rows.to_dict("records")
    ]


def _gap_phrase(r: dict[str, Any], ci: float) -> str:
    return (f"{r['attribute']}: '{r['worst']}' (UAR {r['worst_uar']:.2f}) vs '{r['best']}' ({r['best_uar']:.2f}), "
            f"gap {r['gap']:.2f} [{ci:.0%} CI {r['gap_low']:.2f} to {r['gap_high']:.2f}], "
            f"adjusted p = {r['p_adjusted']:.3g}")


def _listing(items: list[str], limit: int = 8) -> str:
    """Comma-joined items, the tail summarised as "and N more"."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _gap_sentences(result: AuditResult) -> list[str]:
    d, alpha = result.disparities, result.alpha
    tested = d[d["p_value"].notna()]
    significant = tested[tested["p_adjusted"] < alpha].to_dict("records")
    calm = tested[~(tested["p_adjusted"] < alpha)].to_dict("records")
    if tested.empty:
        out = ["No attribute has two groups with enough subjects, so no UAR gap could be tested."]
    elif significant:
        out = [f"Significant UAR gaps after Holm correction (alpha {alpha:g}): "
               + "; ".join(_gap_phrase(r, result.ci) for r in significant) + "."]
    else:
        out = [f"No UAR gap is significant after Holm correction (alpha {alpha:g})."]
    if calm:
        out.append("Not significant: " + _listing(
            [f"{r['attribute']} (gap {r['gap']:.2f}, adjusted p = {r['p_adjusted']:.2g})" for r in calm]) + ".")
    untested = d.loc[d["p_value"].isna(), "attribute"].tolist()
    if untested:
        out.append(f"Not tested (fewer than two groups with {result.min_subjects}+ subjects): {', '.join(untested)}.")
    return out


def _coverage_sentences(result: AuditResult) -> list[str]:
    out = []
    small = result.groups[~result.groups["assessable"]].to_dict("records")
    if small:
        unit, count = ("subjects", "n_subjects") if result.clustered else ("clips", "n_clips")
        out.append(f"Too few {unit} to judge (< {result.min_subjects}), shown but not ranked: " + _listing(
            [f"{r['attribute']}='{r['group']}' ({int(r[count])})" for r in small]) + ".")
    if result.notes:
        out.append("Skipped: " + "; ".join(result.notes) + ".")
    unknown = result.groups[result.groups["group"] == UNKNOWN]
    if len(unknown):
        out.append(f"Missing metadata is kept as group '{UNKNOWN}' in: {', '.join(unknown['attribute'])}.")
    return out


def _data_sentence(result: AuditResult) -> str:
    source = result.composition_source
    assoc = result.associations[result.associations["flagged"]]
    if not len(assoc):
        return f"No emotion is significantly over- or under-represented in any group of the {source}."
    examples = [f"'{r['emotion']}' is {r['direction']}-represented in {r['attribute']}='{r['group']}' "
                f"(lift {r['lift']:.2f})" for r in assoc.sort_values("p_adjusted").head(3).to_dict("records")]
    return f"In the {source}, {len(assoc)} emotion-group association(s) are significant, e.g. {', '.join(examples)}."


def summarize(result: AuditResult) -> str:
    """One plain-English paragraph: data, method, significant gaps, untestable groups, data bias."""
    d = result.disparities
    who = f"{result.n_subjects} subjects" if result.clustered else "an unknown number of subjects"
    parts = [f"Audited {result.n_clips} clips from {who} across {len(d)} attribute(s) ({', '.join(d['attribute'])})."]
    if result.clustered:
        parts.append(f"Intervals are {result.ci:.0%} bootstrap intervals resampling subjects "
                     f"({result.n_boot} resamples).")
    else:
        parts.append("There is no subject column, so intervals resample clips and are likely too narrow "
                     "(clips of one person are correlated).")
    return " ".join([*parts, *_gap_sentences(result), *_coverage_sentences(result), _data_sentence(result)])
