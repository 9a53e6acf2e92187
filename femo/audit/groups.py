"""Validating a predictions table and turning metadata columns into audit groups.

A predictions table follows ``RUN/predictions.csv``: ``clip_id``, ``label``, ``predicted``
(canonical class names), optional ``p_<class>`` probabilities, ``subject`` and any metadata
columns. Group values are strings; a missing value becomes the explicit group ``"unknown"``
(never dropped). An intersection ``("sex", "age_group")`` becomes the column ``sex*age_group``
with values like ``female / 18-30``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Group value given to clips whose metadata is missing.
UNKNOWN = "unknown"
#: Joins the column names of an intersection (``sex*age_group``) ...
INTERSECTION_SEP = "*"
#: ... and the values of its groups (``female / 18-30``).
VALUE_SEP = " / "
#: An attribute with more distinct values than this is probably continuous (e.g. raw age).
MAX_GROUPS = 30

__all__ = [
    "UNKNOWN", "check_predictions", "add_group_columns", "parse_intersections", "cluster_keys", "unit_codes",
    "drop_constant",
]


def check_predictions(pred: pd.DataFrame, classes: Sequence[str], *, name: str = "predictions") -> None:
    """Raise ValueError naming the problem when ``pred`` does not follow the predictions schema."""
    missing = [c for c in ("label", "predicted") if c not in pred.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; columns are {list(pred.columns)}")
    if len(pred) == 0:
        raise ValueError(f"{name}: no rows")
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"{name}: classes must be at least two distinct names, got {list(classes)}")
    for column in ("label", "predicted"):
        unknown = sorted(set(pred[column].astype(str)) - set(classes))
        if unknown:
            raise ValueError(f"{name}: column '{column}' has values {unknown[:5]} not in classes {list(classes)}")
    if "clip_id" in pred.columns and pred["clip_id"].duplicated().any():
        dup = pred.loc[pred["clip_id"].duplicated(), "clip_id"].iloc[0]
        raise ValueError(f"{name}: clip_id '{dup}' appears more than once")


def parse_intersections(spec: str | Sequence[Sequence[str]] | None) -> list[tuple[str, ...]]:
    """``"sex*age_group,sex*culture"`` or ``[("sex", "age_group")]`` -> list of column tuples."""
    if spec is None:
        return []
    if isinstance(spec, str):
        spec = [part.split(INTERSECTION_SEP) for part in spec.split(",") if part.strip()]
    out = [tuple(c.strip() for c in combo) for combo in spec]
    for combo in out:
        if len(combo) < 2 or any(not c for c in combo):
            raise ValueError(f"intersection {combo!r} must name at least two columns, e.g. 'sex*age_group'")
    return out


def _as_groups(values: pd.Series) -> pd.Series:
    """String group labels with missing values as UNKNOWN."""
    out = values.astype(object).where(values.notna(), UNKNOWN)
    return out.map(lambda v: str(int(v)) if isinstance(v, float) and float(v).is_integer() else str(v))


def add_group_columns(
    pred: pd.DataFrame,
    *,
    attributes: Sequence[str],
    intersections: Sequence[Sequence[str]] = (),
    name: str = "predictions",
) -> tuple[pd.DataFrame, list[str]]:
    """A copy of ``pred`` whose attribute columns hold string groups, plus intersection columns.

    Returns (frame, group_columns) where group_columns lists the attributes then the
    intersection names. Raises ValueError for a column that does not exist, that has a single
    value (nothing to compare), or that looks continuous (more than MAX_GROUPS values).
    """
    frame = pred.copy()
    wanted = list(dict.fromkeys([*attributes, *(c for combo in intersections for c in combo)]))
    absent = [c for c in wanted if c not in frame.columns]
    if absent:
        raise ValueError(f"{name}: metadata column(s) {absent} do not exist; columns are {list(frame.columns)}")
    for column in wanted:
        frame[column] = _as_groups(pred[column])
        values = frame[column].unique()
        if len(values) == 1:
            raise ValueError(f"{name}: column '{column}' has a single value ({values[0]!r}); nothing to compare")
        if len(values) > MAX_GROUPS:
            raise ValueError(
                f"{name}: column '{column}' has {len(values)} distinct values; bin it into groups "
                f"(e.g. age -> age_group) before auditing"
            )
    columns = list(dict.fromkeys(attributes))
    for combo in intersections:
        joined = INTERSECTION_SEP.join(combo)
        frame[joined] = frame[list(combo)].agg(VALUE_SEP.join, axis=1)
        columns.append(joined)
    return frame, columns


def drop_constant(
    pred: pd.DataFrame, *, attributes: Sequence[str], intersections: Sequence[Sequence[str]] = ()
) -> tuple[list[str], list[tuple[str, ...]], list[str]]:
    """Attributes and intersections without single-valued columns, plus a note per dropped one.

    A column with one value (e.g. one culture in a small test fold) has nothing to compare; a
    report skips it and says so instead of failing. Absent columns are kept (and later refused).
    """
    constant = {c for c in {*attributes, *(c for combo in intersections for c in combo)}
                if c in pred.columns and _as_groups(pred[c]).nunique() == 1}
    notes = [f"'{c}' has a single value ({_as_groups(pred[c]).iloc[0]!r}) in these predictions, so it was skipped"
             for c in sorted(constant)]
    kept = [a for a in attributes if a not in constant]
    combos = [tuple(combo) for combo in intersections if not constant & set(combo)]
    return kept, combos, notes


def cluster_keys(frame: pd.DataFrame, cluster: str | None) -> tuple[pd.Series, bool]:
    """Resampling unit of each row as a string: the subject, or the clip when the subject is
    missing or there is no ``cluster`` column (then the second value is False)."""
    rows = frame["clip_id"].astype(str) if "clip_id" in frame.columns else pd.Series(
        np.arange(len(frame)).astype(str), index=frame.index)
    if cluster is None or cluster not in frame.columns:
        return "clip:" + rows, False
    subject = frame[cluster]
    return ("subject:" + subject.astype(str)).where(subject.notna(), "clip:" + rows), True


def unit_codes(groups: pd.Series, clusters: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Units = (group, cluster) pairs, numbered in sorted order so results ignore row order.

    Returns (unit of each row (N,), group code of each unit (U,), sorted group names (G,)).
    A subject that appears in two groups forms one unit in each.
    """
    names = np.array(sorted(groups.unique()), dtype=object)
    keys = pd.DataFrame({"g": groups.to_numpy(), "c": clusters.to_numpy()})
    unit = keys.groupby(["g", "c"], sort=True).ngroup().to_numpy()
    first = keys.drop_duplicates().sort_values(["g", "c"])["g"].to_numpy()
    unit_group = np.searchsorted(names, first)
    return unit, unit_group, names
