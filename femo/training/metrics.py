"""Classification metrics of a run and their JSON form.

Definitions (as in the DFER literature): UAR = unweighted average recall = mean of per-class
recalls over the classes present in ``y_true``; WAR = weighted average recall = accuracy;
macro-F1 over the same classes; ECE = expected calibration error of the top-class probability
with 15 equal-width confidence bins. A k-fold result is the mean of per-fold scores
(:func:`femo.training.evaluate.aggregate_folds`).

:func:`to_jsonable` / :func:`write_json` are the one place numpy/pandas values become JSON
(NaN and inf -> null); run folders and reports both write through them.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ECE_BINS = 15


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, *, bins: int = ECE_BINS) -> float:
    """sum_b |b|/n * |accuracy(b) - mean confidence(b)| over bins (lo, hi] of max probability."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def metrics(y_true, y_pred, probs, classes) -> dict[str, Any]:
    """Classification metrics for integer labels ``y_true``/``y_pred`` (N,) and ``probs`` (N, C).

    Returns uar, war, macro_f1, per_class_recall {class: recall or None when absent from y_true},
    confusion (C x C list, rows = true class, columns = predicted), ece, n.
    """
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    probs = np.asarray(probs, float)
    c = len(classes)
    if len(y_true) == 0:
        raise ValueError("metrics: no samples")
    confusion = np.zeros((c, c), int)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(axis=1)
    present = support > 0
    recall = np.divide(np.diag(confusion), support, out=np.zeros(c), where=present)
    predicted = confusion.sum(axis=0)
    precision = np.divide(np.diag(confusion), predicted, out=np.zeros(c), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(c), where=(precision + recall) > 0)
    return {
        "uar": uar(y_true, y_pred, range(c)),
        "war": float((y_true == y_pred).mean()),
        "macro_f1": float(f1[present].mean()),
        "per_class_recall": {cls: (float(recall[i]) if present[i] else None) for i, cls in enumerate(classes)},
        "confusion": confusion.tolist(),
        "ece": expected_calibration_error(y_true, probs),
        "n": int(len(y_true)),
    }


def _class_codes(values: Sequence, classes: Sequence) -> np.ndarray:
    """(N,) int index into ``classes`` (-1 for values not in it), by hashing, not per-class loops."""
    return pd.Index(list(classes)).get_indexer(np.asarray(values)).astype(np.int64)


def uar(y_true: Sequence, y_pred: Sequence, classes: Sequence) -> float:
    """Unweighted average recall: the mean over classes of per-class recall.

    Only classes present in ``y_true`` count (a class with no true clips has no recall);
    NaN when ``y_true`` is empty. Labels are compared as given (names or indices); a
    prediction outside ``classes`` counts as wrong.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"uar: y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    true, pred = _class_codes(y_true, classes), _class_codes(y_pred, classes)
    known = true >= 0
    totals = np.bincount(true[known], minlength=len(classes))
    hits = np.bincount(true[known & (true == pred)], minlength=len(classes))
    present = totals > 0
    return float(np.mean(hits[present] / totals[present])) if present.any() else float("nan")


def war(y_true: Sequence, y_pred: Sequence, classes: Sequence[str] | None = None) -> float:
    """Weighted average recall, i.e. accuracy (NaN when empty). ``classes`` is accepted for
    symmetry with :func:`uar` and, when given, restricts to clips whose label is in it."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if classes is not None:
        keep = np.isin(y_true, list(classes))
        y_true, y_pred = y_true[keep], y_pred[keep]
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def metrics_from_predictions(pred: pd.DataFrame, classes) -> dict[str, Any]:
    """:func:`metrics` computed from a predictions table (as written to predictions.csv)."""
    classes = list(classes)
    y_true = pred["label"].map(classes.index).to_numpy()
    y_pred = pred["predicted"].map(classes.index).to_numpy()
    probs = pred[[f"p_{c}" for c in classes]].to_numpy(float)
    return metrics(y_true, y_pred, probs, classes)


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy/pandas scalars and arrays turned into JSON types; NaN/inf become None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (pd.Series, pd.Index)):
        return to_jsonable(obj.tolist())
    if isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot write {type(obj).__name__} value {obj!r} to JSON")


def write_json(path: str | Path, data: Mapping[str, Any], *, sort_keys: bool = False) -> Path:
    """Write ``data`` as indented JSON through :func:`to_jsonable` (NaN written as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(data), indent=2, sort_keys=sort_keys) + "\n")
    return path
