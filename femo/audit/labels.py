"""Label quality: likely label errors from out-of-fold probabilities, and annotator agreement.

``audit_labels(pred, classes=...)`` takes the pooled test predictions of a k-fold run (every clip
scored once by the model that never trained on it: :func:`read_oof`) and finds the clips whose
recorded label the model contradicts with cleanlab's confident learning
(``cleanlab.filter.find_label_issues``, ``filter_by`` one of :data:`FILTERS`). Suspects are
ranked by cleanlab's label-quality score (``rank_by``: ``self_confidence`` = the probability of
the recorded label, or ``normalized_margin`` = p(label) - max p(other), rescaled to [0, 1]); the
lowest score is the likeliest error. Each suspect's *suggested* class is the most probable class
other than its recorded label.

Where the predictions (or the manifest) carry ``vote_<class>`` columns, each clip also gets its
annotator agreement: ``majority_share`` = top vote count / all votes (1 = unanimous) and
``vote_entropy`` = entropy of the vote distribution divided by log(C) (0 = unanimous, 1 = votes
spread evenly). Whether suspects are the low-agreement clips is tested with a one-sided
Mann-Whitney U test on majority share (suspects lower), reported with the AUROC of
(1 - majority share) for telling suspects from the rest (0.5 = no relation). Clips of one subject
are not independent: treat the p-value as a screen.

The result is one :class:`LabelAudit`; ``.to_metrics()`` gives ``n_suspect``,
``suspect_rate_per_class`` and ``agreement`` (None without votes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

FILTERS: tuple[str, ...] = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                            "predicted_neq_given")
RANKINGS: tuple[str, ...] = ("self_confidence", "normalized_margin")
_STR_COLUMNS = {"clip_id": str, "subject": str}


class OutOfFoldError(ValueError):
    """A run does not hold out-of-fold probabilities for its clips; the message says what to run."""


@dataclass(frozen=True, eq=False)
class OutOfFold:
    """Pooled test predictions of a k-fold run: ``pred`` (one row per clip: clip_id, label,
    predicted, p_<class>, and every index column), ``classes`` and the ``folds`` it pools."""

    pred: pd.DataFrame
    classes: tuple[str, ...]
    folds: tuple[int, ...]


def _fold_dirs(run: Path) -> list[Path]:
    return sorted((p for p in run.glob("fold_*") if (p / "predictions.csv").is_file()),
                  key=lambda p: int(p.name.split("_", 1)[1]))


def has_oof(run: str | Path) -> bool:
    """Whether ``run`` is a k-fold run folder (two or more RUN/fold_<k>/predictions.csv)."""
    return len(_fold_dirs(Path(run))) >= 2


def read_oof(run: str | Path) -> OutOfFold:
    """Read RUN/fold_<k>/predictions.csv of a ``femo train --folds all`` run, pooled.

    Raises :class:`OutOfFoldError` for a single-fold run (its predictions cover one test fold only)
    or for folds that score a clip twice; FileNotFoundError for a missing folder.
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder not found: {run}")
    folds = _fold_dirs(run)
    hint = f"train every fold with `femo train STORE --out {run} --folds all`"
    if len(folds) < 2:
        what = "one test fold's predictions" if (run / "predictions.csv").is_file() or folds else "no predictions"
        raise OutOfFoldError(f"{run}: holds {what}, not out-of-fold probabilities for every clip; {hint}")
    parts = [pd.read_csv(p / "predictions.csv", dtype=_STR_COLUMNS).assign(oof_fold=int(p.name.split("_", 1)[1]))
             for p in folds]
    pred = pd.concat(parts, ignore_index=True)
    twice = pred.loc[pred["clip_id"].duplicated(keep=False)]
    if len(twice):
        raise OutOfFoldError(f"{run}: clips scored by more than one fold (e.g. {sorted(set(twice['clip_id']))[:5]}); "
                             f"the folds overlap, so these are not out-of-fold probabilities; {hint}")
    return OutOfFold(pred, _classes(run, folds[0], pred), tuple(int(p.name.split("_", 1)[1]) for p in folds))


def _classes(run: Path, first_fold: Path, pred: pd.DataFrame) -> tuple[str, ...]:
    for config in (run / "config.json", first_fold / "config.json"):
        if config.is_file() and json.loads(config.read_text()).get("classes"):
            return tuple(json.loads(config.read_text())["classes"])
    classes = tuple(c[2:] for c in pred.columns if c.startswith("p_"))
    if not classes:
        raise OutOfFoldError(f"{first_fold}/predictions.csv: no p_<class> columns and no classes in config.json")
    return classes


def probabilities(pred: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """(N, C) float64 rows of the ``p_<class>`` columns, renormalised to sum to 1; ValueError naming
    missing columns or rows that are not probabilities."""
    cols = [f"p_{c}" for c in classes]
    missing = [c for c in cols if c not in pred.columns]
    if missing:
        raise ValueError(f"predictions lack probability columns {missing}")
    probs = pred[cols].to_numpy(float)
    bad = ~np.isfinite(probs).all(1) | (probs < 0).any(1) | (probs.sum(1) <= 0)
    if bad.any():
        raise ValueError(f"predictions rows {np.flatnonzero(bad)[:10].tolist()} (clip_id "
                         f"{pred['clip_id'].iloc[np.flatnonzero(bad)[:5]].tolist()}) are not probabilities")
    return probs / probs.sum(1, keepdims=True)


def vote_matrix(frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray | None:
    """(N, C) vote counts of the ``vote_<class>`` columns, or None when there are none.

    Refuses (ValueError naming the rows and clip ids) a partial set of vote columns and rows whose
    votes are missing, negative, or do not sum to a positive count.
    """
    cols = [f"vote_{c}" for c in classes]
    present = [c for c in cols if c in frame.columns]
    if not present:
        return None
    if len(present) < len(cols):
        raise ValueError(f"vote columns incomplete: have {present}, missing {sorted(set(cols) - set(present))}")
    votes = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = ~np.isfinite(votes).all(1) | (votes < 0).any(1) | (np.nan_to_num(votes).sum(1) <= 0)
    if bad.any():
        rows = np.flatnonzero(bad)
        ids = frame["clip_id"].iloc[rows[:10]].tolist() if "clip_id" in frame.columns else []
        raise ValueError(f"{len(rows)} row(s) whose vote columns do not sum to a positive count of valid votes: "
                         f"rows {rows[:10].tolist()}, clip_id {ids}; fix or drop them in the manifest")
    return votes


def agreement(votes: np.ndarray) -> pd.DataFrame:
    """Per-clip agreement of ``votes`` (N, C) counts: n_votes, majority_share in (0, 1],
    vote_entropy in [0, 1] (entropy / log C) and majority (column index of the top count)."""
    n = votes.sum(1)
    share = votes / n[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(share > 0, share * np.log(share), 0.0).sum(1)
    return pd.DataFrame({"n_votes": n, "majority_share": share.max(1),
                         "vote_entropy": ent / np.log(votes.shape[1]), "majority": share.argmax(1)})


def suspect_agreement_test(share: np.ndarray, suspect: np.ndarray) -> dict[str, Any]:
    """Are suspects the low-agreement clips? One-sided Mann-Whitney U on majority ``share`` (N,)
    (suspects lower) and AUROC of low agreement for ``suspect`` (N,) bool; None fields when a side is empty."""
    from scipy.stats import mannwhitneyu

    sus, rest = share[suspect], share[~suspect]
    out = {"n_suspect": int(len(sus)), "n_rest": int(len(rest)),
           "median_share_suspect": float(np.median(sus)) if len(sus) else None,
           "median_share_rest": float(np.median(rest)) if len(rest) else None, "auroc": None, "p_value": None}
    if len(sus) and len(rest):
        test = mannwhitneyu(rest, sus, alternative="greater")  # U = #(rest share > suspect share) + ties / 2
        out.update(auroc=float(test.statistic / (len(sus) * len(rest))), p_value=float(test.pvalue))
    return out


#: Subgroup columns used when ``attributes`` is not given (those present in the predictions).
DEFAULT_ATTRIBUTES: tuple[str, ...] = ("sex", "gender", "age_group", "race", "ethnicity", "culture", "skin_tone")


@dataclass(frozen=True, eq=False)
class LabelAudit:
    """Everything :func:`audit_labels` found.

    clips: one row per clip: clip_id, label, suggested (most probable other class), p_label,
    p_suggested, quality (cleanlab's label-quality score, 0..1, low = likely error), suspect (bool),
    oof_correct (the out-of-fold top class is the recorded label), rank (1 = likeliest error; NaN
    for non-suspects), agreement columns when votes exist
    (n_votes, majority_share, vote_entropy, majority_class, label_is_majority), then the other
    prediction columns (subject, fold, metadata). per_class: per recorded class n_clips,
    n_suspect, suspect_rate. suggestions: suspects x suggested class counts (rows = recorded
    label). groups: per (attribute, group) n_clips, n_subjects, n_suspect, suspect_rate (+ mean
    majority_share / vote_entropy with votes). agreement_per_class: per recorded class the mean
    majority_share / vote_entropy and the share of clips whose label is the majority vote (empty
    without votes). agreement_test: :func:`suspect_agreement_test` (None without votes).
    """

    clips: pd.DataFrame
    per_class: pd.DataFrame
    suggestions: pd.DataFrame
    groups: pd.DataFrame
    agreement_per_class: pd.DataFrame
    agreement_test: dict[str, Any] | None
    classes: tuple[str, ...]
    filter_by: str
    rank_by: str
    verdict: str = ""

    @property
    def assessed(self) -> bool:  # False for the empty result of not_assessed (no out-of-fold probabilities)
        return not self.verdict

    @property
    def has_votes(self) -> bool:
        return self.agreement_test is not None

    @property
    def suspects(self) -> pd.DataFrame:
        """The suspect rows of :attr:`clips`, likeliest error first."""
        return self.clips[self.clips["suspect"]].sort_values("rank").reset_index(drop=True)

    def to_metrics(self) -> dict[str, Any]:
        """JSON-ready summary: n_clips, n_suspect, oof_accuracy (top class == recorded label), suspect_rate, suspect_rate_per_class {class: rate
        or None when the class has no clips}, n_suspect_per_class, method, agreement (None without votes)."""
        rates = {c: (None if r.n_clips == 0 else float(r.suspect_rate)) for c, r in self.per_class.iterrows()}
        n = len(self.clips)
        out = {"n_clips": int(n), "n_suspect": int(self.clips["suspect"].sum()),
               "oof_accuracy": float(self.clips["oof_correct"].mean()) if n else None,
               "suspect_rate": float(self.clips["suspect"].mean()) if n else None, "suspect_rate_per_class": rates,
               "n_suspect_per_class": {c: int(n) for c, n in self.per_class["n_suspect"].items()},
               "method": {"library": "cleanlab.filter.find_label_issues", "filter_by": self.filter_by,
                          "rank_by": self.rank_by, "probabilities": "out-of-fold"}, "agreement": None,
               "assessed": self.assessed, "verdict": self.verdict}
        if self.has_votes:
            per_class = self.agreement_per_class[["majority_share", "vote_entropy"]].astype(object)
            out["agreement"] = {
                "mean_majority_share": float(self.clips["majority_share"].mean()),
                "mean_vote_entropy": float(self.clips["vote_entropy"].mean()),
                "label_is_majority": float(self.clips["label_is_majority"].mean()),
                "per_class": per_class.where(per_class.notna(), None).to_dict("index"),
                "suspect_vs_rest": dict(self.agreement_test)}
        return out

    def summary(self) -> str:
        """One paragraph in words."""
        if not self.assessed:
            return self.verdict
        m = self.to_metrics()
        worst = self.per_class[self.per_class["n_clips"] > 0]["suspect_rate"].idxmax() if m["n_suspect"] else None
        text = (f"{m['n_suspect']} of {m['n_clips']} clips ({m['suspect_rate']:.1%}) are suspected label errors "
                f"(cleanlab, {self.filter_by}, ranked by {self.rank_by}).")
        if worst is not None:
            text += f" The highest suspect rate is in class {worst} ({self.per_class.loc[worst, 'suspect_rate']:.1%})."
        if m["oof_accuracy"] < 0.5:
            text += (f" The out-of-fold model agrees with only {m['oof_accuracy']:.0%} of the recorded labels: with a "
                     "model this weak, suspects mostly mark clips it gets wrong, not labels that are wrong.")
        t = self.agreement_test
        if t and t["auroc"] is not None:
            lower = "lower" if t["auroc"] > 0.5 and t["p_value"] < 0.05 else "not clearly lower"
            text += (f" Annotator agreement is {lower} on suspects (median majority share {t['median_share_suspect']:.2f} "
                     f"vs {t['median_share_rest']:.2f}; AUROC {t['auroc']:.2f}, one-sided Mann-Whitney p = {t['p_value']:.3g}).")
        elif not self.has_votes:
            text += " The data has no vote_<class> columns, so annotator agreement is not assessed."
        return text


def _label_codes(pred: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    unknown = ~pred["label"].astype(str).isin(classes)
    if unknown.any():
        rows = np.flatnonzero(unknown.to_numpy())
        raise ValueError(f"labels {sorted(set(pred['label'].astype(str)[unknown]))} (rows {rows[:10].tolist()}) "
                         f"are not among the classes {list(classes)}")
    return pred["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy(int)


def find_suspects(labels: np.ndarray, probs: np.ndarray, *, filter_by: str = "prune_by_noise_rate",
                  rank_by: str = "self_confidence") -> tuple[np.ndarray, np.ndarray]:
    """(suspect (N,) bool, quality (N,) float) for integer ``labels`` (N,) and ``probs`` (N, C)
    with cleanlab: ``find_label_issues`` decides, ``get_label_quality_scores`` ranks."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if filter_by not in FILTERS:
        raise ValueError(f"unknown filter_by {filter_by!r}; choose from {list(FILTERS)}")
    if rank_by not in RANKINGS:
        raise ValueError(f"unknown rank_by {rank_by!r}; choose from {list(RANKINGS)}")
    suspect = find_label_issues(labels, probs, filter_by=filter_by, n_jobs=1)
    return np.asarray(suspect, bool), get_label_quality_scores(labels, probs, method=rank_by)


def _clip_table(pred: pd.DataFrame, classes: Sequence[str], labels: np.ndarray, probs: np.ndarray,
                suspect: np.ndarray, quality: np.ndarray) -> pd.DataFrame:
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -1.0  # the suggestion is never the recorded label
    suggested = others.argmax(1)
    table = pd.DataFrame({"clip_id": pred["clip_id"].astype(str).to_numpy(), "label": pred["label"].astype(str).to_numpy(),
                          "suggested": np.asarray(classes, dtype=object)[suggested],
                          "p_label": probs[np.arange(len(labels)), labels],
                          "p_suggested": probs[np.arange(len(labels)), suggested], "quality": quality,
                          "suspect": suspect, "oof_correct": probs.argmax(1) == labels})
    order = np.lexsort((table["clip_id"].to_numpy(), quality))  # lowest quality first, ties by clip id
    ranks = np.full(len(table), np.nan)
    ranks[order[suspect[order]]] = np.arange(1, suspect.sum() + 1)
    table["rank"] = ranks
    return table


def _agreement_columns(table: pd.DataFrame, votes: np.ndarray, classes: Sequence[str], labels: np.ndarray) -> pd.DataFrame:
    agree = agreement(votes)
    table = table.copy()
    for column in ("n_votes", "majority_share", "vote_entropy"):
        table[column] = agree[column].to_numpy()
    table["majority_class"] = np.asarray(classes, dtype=object)[agree["majority"].to_numpy()]
    # a tie for the top count counts as agreeing when the label is among the tied classes
    table["label_is_majority"] = votes[np.arange(len(labels)), labels] == votes.max(1)
    return table


def _group_table(clips: pd.DataFrame, attributes: Sequence[str], has_votes: bool) -> pd.DataFrame:
    rows = []
    for attribute in attributes:
        values = clips[attribute].astype("string").fillna("unknown").astype(str)
        for group, part in clips.groupby(values, sort=True):
            row = {"attribute": attribute, "group": group, "n_clips": len(part),
                   "n_subjects": part["subject"].nunique() if "subject" in part else np.nan,
                   "n_suspect": int(part["suspect"].sum()), "suspect_rate": float(part["suspect"].mean())}
            if has_votes:
                row.update(majority_share=part["majority_share"].mean(), vote_entropy=part["vote_entropy"].mean())
            rows.append(row)
    columns = ["attribute", "group", "n_clips", "n_subjects", "n_suspect", "suspect_rate"]
    return pd.DataFrame(rows, columns=columns + (["majority_share", "vote_entropy"] if has_votes else []))


def audit_labels(pred: pd.DataFrame, *, classes: Sequence[str], filter_by: str = "prune_by_noise_rate",
                 rank_by: str = "self_confidence", attributes: Sequence[str] | None = None,
                 manifest: pd.DataFrame | None = None) -> LabelAudit:
    """Suspected label errors and annotator agreement of out-of-fold predictions (module docstring).

    pred: one row per clip (clip_id, label, p_<class> for every class; other columns kept), e.g.
    :attr:`OutOfFold.pred`. attributes: subgroup columns for the per-group table (default: the
    :data:`DEFAULT_ATTRIBUTES` present). manifest: rows keyed by clip_id whose columns the
    predictions lack (e.g. votes) are joined in. Raises ValueError for bad labels, probabilities
    or votes (naming the rows).
    """
    classes = tuple(classes)
    if "clip_id" not in pred.columns or "label" not in pred.columns or len(pred) == 0:
        raise ValueError(f"predictions need clip_id and label columns and at least one row; got {list(pred.columns)[:12]}")
    pred = pred.reset_index(drop=True)
    if manifest is not None:
        extra = [c for c in manifest.columns if c not in pred.columns]
        keyed = manifest[["clip_id", *extra]].assign(clip_id=manifest["clip_id"].astype(str))
        pred = pred.merge(keyed, on="clip_id", how="left")
    labels, probs = _label_codes(pred, classes), probabilities(pred, classes)
    suspect, quality = find_suspects(labels, probs, filter_by=filter_by, rank_by=rank_by)
    clips = _clip_table(pred, classes, labels, probs, suspect, quality)
    votes = vote_matrix(pred, classes)
    if votes is not None:
        clips = _agreement_columns(clips, votes, classes, labels)
    rest = pred.drop(columns=[c for c in pred.columns if c in clips.columns or c.startswith("p_")])
    clips = pd.concat([clips, rest], axis=1)
    attributes = [a for a in DEFAULT_ATTRIBUTES if a in clips] if attributes is None else list(attributes)
    missing = [a for a in attributes if a not in clips.columns]
    if missing:
        raise ValueError(f"attributes {missing} are not columns of the predictions or the manifest")
    return LabelAudit(clips=clips, per_class=_per_class(clips, classes), suggestions=_suggestions(clips, classes),
                      groups=_group_table(clips, attributes, votes is not None),
                      agreement_per_class=_agreement_per_class(clips, classes, votes is not None),
                      agreement_test=(suspect_agreement_test(clips["majority_share"].to_numpy(), suspect)
                                      if votes is not None else None),
                      classes=classes, filter_by=filter_by, rank_by=rank_by)


def _per_class(clips: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    grouped = clips.groupby("label")["suspect"]
    table = pd.DataFrame({"n_clips": grouped.size(), "n_suspect": grouped.sum()}).reindex(list(classes), fill_value=0)
    table["n_suspect"] = table["n_suspect"].astype(int)
    table["suspect_rate"] = table["n_suspect"] / table["n_clips"].where(table["n_clips"] > 0)
    table.index.name = "label"
    return table


def _suggestions(clips: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    sus = clips[clips["suspect"]]
    table = pd.crosstab(sus["label"], sus["suggested"]).reindex(index=list(classes), columns=list(classes), fill_value=0)
    table.index.name, table.columns.name = "label", "suggested"
    return table.astype(int)


def _agreement_per_class(clips: pd.DataFrame, classes: Sequence[str], has_votes: bool) -> pd.DataFrame:
    if not has_votes:
        return pd.DataFrame(columns=["n_clips", "majority_share", "vote_entropy", "label_is_majority"])
    grouped = clips.groupby("label")
    table = pd.DataFrame({"n_clips": grouped.size(), "majority_share": grouped["majority_share"].mean(),
                          "vote_entropy": grouped["vote_entropy"].mean(),
                          "label_is_majority": grouped["label_is_majority"].mean()}).reindex(list(classes))
    table["n_clips"] = table["n_clips"].fillna(0).astype(int)
    table.index.name = "label"
    return table


def empty_oof(classes: Sequence[str]) -> OutOfFold:
    """An :class:`OutOfFold` with no rows (columns clip_id, label, predicted, p_<class>, oof_fold)."""
    return OutOfFold(pd.DataFrame(columns=["clip_id", "label", "predicted", *(f"p_{c}" for c in classes), "oof_fold"]),
                     tuple(classes), ())


def not_assessed(classes: Sequence[str], verdict: str) -> LabelAudit:
    """The :class:`LabelAudit` of data that cannot be audited: no clips, zero counts per class,
    ``verdict`` (words, non-empty) as its summary and in ``to_metrics()["verdict"]``."""
    if not verdict:
        raise ValueError("not_assessed needs a verdict saying why the labels were not assessed")
    classes, none = tuple(classes), np.zeros(0)
    clips = _clip_table(pd.DataFrame({"clip_id": [], "label": []}), classes, none.astype(int),
                        np.zeros((0, len(classes))), none.astype(bool), none)
    return LabelAudit(clips, _per_class(clips, classes), _suggestions(clips, classes), _group_table(clips, [], False),
                      _agreement_per_class(clips, classes, False), None, classes, "prune_by_noise_rate",
                      "self_confidence", verdict=verdict)
