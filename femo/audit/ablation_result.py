"""The modality-ablation report as one object: :func:`ablate` -> :class:`AblationResult`.

From a wide frame of per-subset predictions (:func:`femo.audit.ablation.wide_predictions`), it
computes the UAR of every modality subset with subject-bootstrap intervals, the exact Shapley
contributions overall and per condition slice, the paired per-slice gains with their findings,
and -- on a synthetic set whose manifest records which modality carries the label (column
``informative``: face | audio | both) -- whether the label-carrying modality gets the largest
contribution in its slice (the planted truth). Every part ends in a sentence
(:meth:`AblationResult.verdicts`), and :meth:`AblationResult.to_metrics` is the notebook's
``metrics.json``.

Slices with fewer than ``min_clips`` clips or ``min_subjects`` subjects are reported as "too
small to judge" and get no Shapley values.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from femo.audit import ablation_slices as sl
from femo.audit.ablation import chance_uar, shapley_uar
from femo.audit.stats import cluster_codes
from femo.config import MODALITIES

#: Manifest column of the synthetic set naming the modality that carries each clip's label.
PLANTED_COLUMN = "informative"
#: The modalities that count as "the label-carrying one" per planted value: face frames and
#: landmarks are both read from the face, so either may carry a face-informative clip.
PLANTED_EXPECTED: dict[str, tuple[str, ...]] = {"face": ("face", "landmarks"), "audio": ("audio",)}


@dataclass(frozen=True, eq=False)
class AblationResult:
    """Everything :func:`ablate` found.

    subsets: per subset ``subset, uar, uar_low, uar_high, war`` (fractions). shapley: overall
    ``modality, shapley, share``. slice_shapley: :func:`femo.audit.ablation_slices.slice_shapley`
    (with ``judged`` / ``absent``). slices: UAR per slice and subset. gains: what each modality
    adds per slice. findings: sentences for gains whose interval excludes 0. planted: one row per
    planted slice (``slice, expected, top, top_share, judged, passed``; empty without the column).
    clip_share: per-clip Shapley shares (empty when not computed).
    """

    subsets: pd.DataFrame
    shapley: pd.DataFrame
    slice_shapley: pd.DataFrame
    slices: pd.DataFrame
    gains: pd.DataFrame
    findings: list[str]
    planted: pd.DataFrame
    chance: float
    n_clips: int
    n_subjects: int
    min_clips: int
    min_subjects: int
    ci: float = 0.95
    clip_share: dict[str, float] = field(default_factory=dict)

    @property
    def fused(self) -> dict[str, float]:
        """The full model's ``uar, uar_low, uar_high, war``."""
        return self.subsets.set_index("subset").loc["fused"].to_dict()

    def too_small(self) -> pd.DataFrame:
        """Slices not judged: ``slice, n_clips, n_subjects`` (one row each)."""
        part = self.slice_shapley[~self.slice_shapley["judged"]]
        return part.drop_duplicates("slice")[["slice", "n_clips", "n_subjects"]].reset_index(drop=True)

    def verdicts(self) -> list[str]:
        """The report's findings in plain words, most important first."""
        return [self._fused_sentence(), self._shapley_sentence(), *self._slice_sentences(),
                *self._planted_sentences()]

    def summary(self) -> str:
        """One paragraph: :meth:`verdicts` joined."""
        return " ".join(self.verdicts())

    def _fused_sentence(self) -> str:
        f, pct = self.fused, round(100 * self.ci)
        return (f"The fused model reaches UAR {f['uar']:.2f} ({pct}% subject-bootstrap CI {f['uar_low']:.2f} to "
                f"{f['uar_high']:.2f}) on {self.n_clips} clips from {self.n_subjects} subjects; chance is "
                f"{self.chance:.2f}.")

    def _shapley_sentence(self) -> str:
        f = self.fused
        if not f["uar_low"] > self.chance:
            return ("Its interval reaches down to chance, so the modality contributions below cannot be told "
                    "from noise.")
        phi = self.shapley.set_index("modality")["shapley"]
        parts = ", ".join(f"{m} {100 * phi[m]:+.1f}" for m in phi.index)
        return (f"Exact Shapley contributions to the UAR above chance, in UAR points: {parts}; it leans most on "
                f"{phi.idxmax()}.")

    def _slice_sentences(self) -> list[str]:
        out = []
        small = self.too_small()
        if len(small):
            out.append(f"Too small to judge (fewer than {self.min_clips} clips or {self.min_subjects} subjects), "
                       "so given no Shapley values: " + ", ".join(
                           f"{r.slice} ({r.n_clips} clips, {r.n_subjects} subjects)" for r in small.itertuples()) + ".")
        absent = self.slice_shapley[self.slice_shapley["absent"] & self.slice_shapley["judged"]]
        for row in absent.itertuples():
            out.append(f"{row.modality} is missing from every clip of {row.slice}: its contribution there is 0 by "
                       "construction.")
        out += self.findings or ["No modality's contribution in any judged slice is distinguishable from zero "
                                 "at this sample size."]
        return out

    def _planted_sentences(self) -> list[str]:
        out = []
        for row in self.planted.itertuples():
            if not row.judged:
                out.append(f"Planted truth, {row.slice}: too small to judge.")
                continue
            word = "as planted" if row.passed else f"not {' or '.join(row.expected)} as planted"
            share = "" if math.isnan(row.top_share) else f", share {row.top_share:.2f}"
            out.append(f"Planted truth, {row.slice}: the largest contribution is {row.top} "
                       f"({100 * row.top_shapley:+.1f} UAR points{share}), {word}.")
        return out

    def to_metrics(self) -> dict[str, Any]:
        """The notebook's ``metrics.json``; NaN becomes None."""
        subsets = {r["subset"]: {k: _num(v) for k, v in r.items() if k != "subset"}
                   for r in self.subsets.to_dict("records")}
        slices = {}
        for name, part in self.slices.groupby("slice", sort=False):
            slices[name] = {r.subset: {"uar": _num(r.uar), "uar_low": _num(r.uar_low), "uar_high": _num(r.uar_high)}
                            for r in part.itertuples()} | {"n_clips": int(part["n_clips"].iloc[0])}
        slice_shap = {}
        for name, part in self.slice_shapley.groupby("slice", sort=False):
            first = part.iloc[0]
            slice_shap[name] = {"n_clips": int(first["n_clips"]), "n_subjects": int(first["n_subjects"]),
                                "judged": bool(first["judged"]),
                                "shapley": {r.modality: _num(r.shapley) for r in part.itertuples()},
                                "absent": [r.modality for r in part.itertuples() if r.absent]}
        planted = [{k: (list(v) if isinstance(v, tuple) else _num(v) if isinstance(v, float) else v)
                    for k, v in r.items()} for r in self.planted.to_dict("records")]
        return {
            "subset_uar": subsets, "subsets": subsets,
            "shapley_uar": {r.modality: _num(r.shapley) for r in self.shapley.itertuples()},
            "shapley": {r.modality: _num(r.share) for r in self.shapley.itertuples()},
            "clip_shapley_share": {k: _num(v) for k, v in self.clip_share.items()},
            "slices": slices, "slice_shapley": slice_shap, "findings": list(self.findings),
            "too_small": self.too_small().to_dict("records"),
            "planted": planted, "planted_top_modality": {r["slice"]: r["top"] for r in planted if r["judged"]},
            "verdicts": self.verdicts(), "chance": _num(self.chance), "n_clips": self.n_clips,
            "n_subjects": self.n_subjects, "min_clips": self.min_clips, "min_subjects": self.min_subjects,
        }


def _num(value: Any) -> Any:
    """JSON-safe scalar: None for NaN, plain int/float otherwise."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    value = float(value)
    return None if math.isnan(value) else value


def planted_checks(slice_shapley: pd.DataFrame, expected: Mapping[str, Sequence[str]] = PLANTED_EXPECTED,
                   column: str = PLANTED_COLUMN) -> pd.DataFrame:
    """Per planted slice ``<column>=<value>`` with a value in ``expected``: which modality has the
    largest Shapley value, and whether it is one of the expected ones. Columns ``slice, expected,
    top, top_shapley`` (UAR), ``top_share, judged, passed`` (passed False when the slice is too
    small to judge)."""
    rows = []
    for value, wanted in expected.items():
        part = slice_shapley[slice_shapley["slice"] == f"{column}={value}"]
        if part.empty:
            continue
        judged = bool(part["judged"].iloc[0])
        top = part.loc[part["shapley"].idxmax()] if judged and part["shapley"].notna().any() else None
        rows.append({"slice": f"{column}={value}", "expected": tuple(wanted),
                     "top": None if top is None else str(top["modality"]),
                     "top_shapley": float("nan") if top is None else float(top["shapley"]),
                     "top_share": float("nan") if top is None else float(top["share"]),
                     "judged": judged, "passed": top is not None and top["modality"] in wanted})
    return pd.DataFrame(rows, columns=["slice", "expected", "top", "top_shapley", "top_share", "judged", "passed"])


def ablate(wide: pd.DataFrame, n_classes: int, *, rules: Sequence[sl.SliceRule] = sl.DEFAULT_SLICES,
           modalities: Sequence[str] = MODALITIES, min_clips: int = sl.MIN_CLIPS,
           min_subjects: int = sl.MIN_SUBJECTS, n_boot: int = 200, ci: float = 0.95, seed: int = 0,
           cluster: str = "subject", clip_share: Mapping[str, float] | None = None) -> AblationResult:
    """Run every ablation analysis on a wide frame (one row per clip; see the module docstring).

    rules: condition slices; the planted ``informative=<value>`` slices are added when the frame
    has that column. n_boot: subject resamples for every interval (shared by all subsets).
    """
    rules = [*rules, *sl.value_slices(wide, PLANTED_COLUMN)]
    kw = {"modalities": modalities, "cluster": cluster}
    boot = {"n_boot": n_boot, "ci": ci, "seed": seed, **kw}
    subsets = pd.DataFrame(sl.subset_intervals(wide, n_classes, **boot)).T.rename_axis("subset").reset_index()
    slice_shap = sl.slice_shapley(wide, n_classes, rules=rules, min_clips=min_clips, min_subjects=min_subjects, **kw)
    gains = sl.modality_gains(wide, n_classes, rules=rules, **boot)
    return AblationResult(
        subsets=subsets, shapley=shapley_uar(wide, n_classes, modalities=modalities),
        slice_shapley=slice_shap, slices=sl.slice_table(wide, n_classes, rules=rules, **boot), gains=gains,
        findings=sl.findings(gains, ci=ci, min_clusters=min_subjects, min_clips=min_clips),
        planted=planted_checks(slice_shap), chance=chance_uar(wide["label"]), n_clips=len(wide),
        n_subjects=cluster_codes(wide, cluster)[1], min_clips=min_clips, min_subjects=min_subjects, ci=ci,
        clip_share={m: float(v) for m, v in (clip_share or {}).items()})
