"""The attribution report as one object: :class:`AttributionResult` bundles the per-clip
attributions of a run (:class:`femo.audit.attribution_report.ClipAttributions`), their summaries
(region shares overall, per predicted emotion, per subgroup; geometry features) and the sanity
checks (:mod:`femo.audit.attribution_sanity`), and says in words what they found
(:meth:`AttributionResult.verdicts`, sanity checks first) and what could not be judged.
:meth:`AttributionResult.to_metrics` is the notebook's ``metrics.json``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from femo.audit.attribution_report import DROP, ClipAttributions, region_summary
from femo.audit.attribution_sanity import ConvergenceCheck, RandomisationCheck


@dataclass(frozen=True, eq=False)
class AttributionResult:
    """Everything the attribution report found.

    clips: per-clip attributions. per_emotion / per_group: mean region shares per predicted
    emotion / per value of ``group_by`` with ``n_clips``. occlusion_per_emotion / occlusion_per_group:
    the same for the region-occlusion drops (:mod:`femo.audit.occlusion`; empty when not computed).
    features: geometry-feature table (empty without a landmarks input). planted:
    :func:`~femo.audit.attribution_report.planted_region_check` on the occlusion drops (None on
    real data); planted_pixels: the same check on the IG region shares of the crops.
    n_candidates: clips of the split the explained ones were drawn from; per_emotion_target: clips
    wanted per predicted emotion.
    """

    clips: ClipAttributions
    method: str
    convergence: ConvergenceCheck
    randomisation: RandomisationCheck | None
    per_emotion: pd.DataFrame = field(default_factory=pd.DataFrame)
    per_group: pd.DataFrame = field(default_factory=pd.DataFrame)
    group_by: str = ""
    features: pd.DataFrame = field(default_factory=pd.DataFrame)
    planted: dict | None = None
    planted_pixels: dict | None = None
    occlusion_per_emotion: pd.DataFrame = field(default_factory=pd.DataFrame)
    occlusion_per_group: pd.DataFrame = field(default_factory=pd.DataFrame)
    fast_method: str = ""
    fast_share: dict[str, float] = field(default_factory=dict)
    seconds_per_clip: dict[str, float] = field(default_factory=dict)
    n_candidates: int = 0
    per_emotion_target: int = 5
    predicted_counts: Mapping[str, int] = field(default_factory=dict)
    privacy: str = ""

    @property
    def region_share(self) -> dict[str, float]:
        """Mean share per facial region over clips with a face (empty without face crops)."""
        return region_summary(self.clips)

    @property
    def occlusion(self) -> dict[str, float]:
        """Mean target-logit drop per region (hidden from crops and landmarks) over the clips that
        have it; empty when occlusion was not computed."""
        cols = [c for c in self.clips.table.columns if c.startswith(DROP)]
        part = self.clips.table[cols].dropna(how="all")
        return {c[len(DROP):]: float(part[c].mean()) for c in cols} if len(part) else {}

    @property
    def n_clips(self) -> int:
        """Clips explained."""
        return len(self.clips.table)

    def verdicts(self) -> list[str]:
        """Plain-word findings: the sanity checks first, then coverage, regions, planted truth."""
        out = []
        if self.randomisation is not None:
            out.append(self.randomisation.verdict())
        out.append(self.convergence.verdict())
        out += self._coverage()
        share = self.region_share
        if share:
            named = {k: v for k, v in share.items() if k != "other"}
            top = max(named, key=named.get)
            out.append(f"Across the explained clips the face attribution sits most on the {top} "
                       f"(share {named[top]:.2f} of the face map; 'other' -- cheeks, forehead, background -- "
                       f"{share.get('other', float('nan')):.2f}).")
            if self.fast_share:
                fast_top = max((k for k in self.fast_share if k != "other"), key=self.fast_share.get)
                agree = "agrees" if fast_top == top else f"disagrees (it puts {fast_top} first)"
                out.append(f"{self.fast_method} {agree} on the top region.")
        else:
            out.append("The model reads cached face embeddings, not crops: no facial-region shares.")
        drops = self.occlusion
        if drops:
            named = {k: v for k, v in drops.items() if k != "other"}
            order = sorted(named, key=named.get, reverse=True)
            out.append(f"Hiding one region at a time from every face input (its pixels blurred, its landmarks and "
                       f"facial actions set to the training mean), the target logit drops most without the "
                       f"{order[0]} ({named[order[0]]:+.2f}), then the {order[1]} ({named[order[1]]:+.2f}).")
        if self.planted is not None:
            out.append(_planted_sentence(self.planted))
        if self.planted_pixels is not None and self.planted is None:
            out.append(_planted_sentence(self.planted_pixels))
        elif self.planted_pixels is not None and self.planted_pixels["judged"]:
            values = self.planted_pixels["values"]
            top = self.planted_pixels["top"]
            out.append(f"The crops' integrated-gradients shares alone put the {top} first in those clips "
                       f"({values[top]:.2f}; {self.planted_pixels['expected']} "
                       f"{values.get(self.planted_pixels['expected'], float('nan')):.2f}); those shares also carry "
                       "the input's edges whatever the model (section 3b), so the check reads the occlusion drops.")
        return out

    def _coverage(self) -> list[str]:
        n = self.n_clips
        out = [f"Explained {n} of {self.n_candidates} clips with {self.method}, chosen stratified by predicted "
               f"emotion (up to {self.per_emotion_target} each)."]
        thin = {k: v for k, v in self.predicted_counts.items() if v < self.per_emotion_target}
        if thin:
            out.append("Fewer clips than that are predicted as " + ", ".join(f"{k} ({v})" for k, v in thin.items())
                       + ": their rows in the per-emotion table rest on those only.")
        return out

    def summary(self) -> str:
        """One paragraph: :meth:`verdicts` joined."""
        return " ".join(self.verdicts())

    def to_metrics(self) -> dict[str, Any]:
        """The notebook's ``metrics.json``; NaN becomes None."""
        def table(frame: pd.DataFrame) -> dict:
            rows = frame.drop(columns="n_clips", errors="ignore").to_dict(orient="index")
            return {str(k): {c: _num(v) for c, v in r.items()} for k, r in rows.items()}

        top = self.features.head(10)[["feature", "share"]].to_dict(orient="records") if len(self.features) else []
        rand = self.randomisation.to_metrics() if self.randomisation is not None else None
        return {
            "verdicts": self.verdicts(),
            "region_share": {k: _num(v) for k, v in self.region_share.items()},
            "per_emotion": table(self.per_emotion), "per_group": table(self.per_group), "group_by": self.group_by,
            "per_emotion_clips": {str(k): int(v) for k, v in self.per_emotion.get("n_clips", pd.Series()).items()},
            "fast_region_share": {k: _num(v) for k, v in self.fast_share.items()},
            "convergence": self.convergence.to_metrics(),
            "convergence_relative_delta": _num(self.convergence.median),
            "convergence_delta": _num(float(self.clips.table["delta"].abs().median())) if self.n_clips else None,
            "randomisation": rand,
            "randomisation_similarity": rand["spearman_final"] if rand else None,
            "randomisation_passed": rand["passed"] if rand else None,
            "planted_region": _clean(self.planted) if self.planted is not None else None,
            "planted_region_pixels": _clean(self.planted_pixels) if self.planted_pixels is not None else None,
            "occlusion": {k: _num(v) for k, v in self.occlusion.items()},
            "occlusion_per_emotion": table(self.occlusion_per_emotion),
            "occlusion_per_group": table(self.occlusion_per_group),
            "top_features": [{"feature": r["feature"], "share": _num(r["share"])} for r in top],
            "seconds_per_clip": {k: _num(v) for k, v in self.seconds_per_clip.items()},
            "method": self.method, "privacy": self.privacy, "n_clips": self.n_clips,
            "n_candidates": self.n_candidates,
        }


def _planted_sentence(planted: dict) -> str:
    where = f"clips whose expression is drawn only in the {planted['value']} ({planted['n_clips']} explained)"
    measure = planted.get("measure", "regional share")
    if not planted["judged"]:
        return f"Planted truth ({measure}): too few {where} to judge."
    values = planted.get("values", planted.get("shares", {}))
    value = values.get(planted["top"], float("nan"))
    word = "as planted" if planted["passed"] else f"not the {planted['expected']} as planted"
    return f"Planted truth ({measure}): in {where} the {planted['top']} comes first ({value:.2f}), {word}."


def _num(value: Any) -> Any:
    """JSON-safe scalar: None for NaN; bools, strings and integers as they are."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    value = float(value)
    return None if math.isnan(value) else value


def _clean(mapping: dict) -> dict:
    return {k: ({kk: _num(vv) for kk, vv in v.items()} if isinstance(v, dict) else _num(v)) for k, v in mapping.items()}
