"""Data audit before model audit: who is in the data, in which split, with which emotions.

A dataset where one group mostly shows one emotion teaches the model that association
(dataset bias propagates into predictions), so the audit measures it:

* composition: clip counts of group x split (or fold) and group x emotion.
* stereotypical association: lift = P(emotion | group) / P(emotion) per (attribute, group,
  emotion), with a two-sided Fisher exact test on the 2x2 table (in group or not) x (this
  emotion or not), Holm-corrected over every row of the table.

The test counts clips as independent. In acted corpora each actor usually performs every
emotion, so a significant association there points to missing clips or labelling; in
in-the-wild corpora the clips of one person share a scene, so treat p-values as a screen.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact

from femo.audit.stats import holm

__all__ = ["composition", "associations"]

#: Columns that describe where a clip is used, in the order they are tabulated.
SPLIT_COLUMNS: tuple[str, ...] = ("split", "fold")


def composition(frame: pd.DataFrame, *, attributes: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Clip-count tables keyed ``"<attribute> x <label|split|fold>"``, groups as rows, with an
    ``All`` margin. ``frame`` holds string group columns (missing = "unknown") and ``label``."""
    missing = [c for c in [*attributes, "label"] if c not in frame.columns]
    if missing:
        raise ValueError(f"composition: column(s) {missing} missing; columns are {list(frame.columns)}")
    tables = {}
    for attribute in attributes:
        for by in ("label", *[c for c in SPLIT_COLUMNS if c in frame.columns]):
            tables[f"{attribute} x {by}"] = pd.crosstab(
                frame[attribute], frame[by].astype(str), margins=True, margins_name="All")
    return tables


def _fisher(table: np.ndarray) -> float:
    return float(fisher_exact(table, alternative="two-sided").pvalue)


def associations(
    frame: pd.DataFrame, *, attributes: Sequence[str], classes: Sequence[str], alpha: float = 0.05
) -> pd.DataFrame:
    """One row per (attribute, group, emotion) with clips of that emotion.

    Columns: attribute, group, emotion, n (clips of the group with this emotion), n_group,
    p_given_group = P(emotion | group), p_overall = P(emotion), lift = their ratio, p_value
    (Fisher exact), p_adjusted (Holm over all rows), flagged (p_adjusted < alpha),
    direction ("over" when lift > 1 else "under").
    """
    labels = frame["label"].astype(str)
    total = len(frame)
    rows = []
    for attribute in attributes:
        groups = frame[attribute]
        for group in sorted(groups.unique()):
            in_group = (groups == group).to_numpy()
            n_group = int(in_group.sum())
            for emotion in classes:
                is_emotion = (labels == emotion).to_numpy()
                n_emotion = int(is_emotion.sum())
                if n_emotion == 0:
                    continue
                n = int((in_group & is_emotion).sum())
                table = np.array([[n, n_group - n], [n_emotion - n, total - n_group - n_emotion + n]])
                p_given, p_all = n / n_group, n_emotion / total
                rows.append({"attribute": attribute, "group": group, "emotion": emotion, "n": n,
                             "n_group": n_group, "p_given_group": p_given, "p_overall": p_all,
                             "lift": p_given / p_all, "p_value": _fisher(table)})
    out = pd.DataFrame(rows, columns=["attribute", "group", "emotion", "n", "n_group", "p_given_group",
                                      "p_overall", "lift", "p_value"])
    out["p_adjusted"] = holm(out["p_value"].to_numpy(float))
    out["flagged"] = out["p_adjusted"] < alpha
    out["direction"] = np.where(out["lift"] > 1, "over", "under")
    return out
