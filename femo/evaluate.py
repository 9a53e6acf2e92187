"""Metrics, predictions and the run folder's ``metrics.json`` / ``predictions.csv``.

Definitions (as in the DFER literature): UAR = unweighted average recall = mean of per-class
recalls over the classes present in ``y_true``; WAR = weighted average recall = accuracy;
macro-F1 over the same classes; ECE = expected calibration error of the top-class probability
with 15 equal-width confidence bins. A k-fold result is the mean of per-fold scores.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

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
        "uar": float(recall[present].mean()),
        "war": float((y_true == y_pred).mean()),
        "macro_f1": float(f1[present].mean()),
        "per_class_recall": {cls: (float(recall[i]) if present[i] else None) for i, cls in enumerate(classes)},
        "confusion": confusion.tolist(),
        "ece": expected_calibration_error(y_true, probs),
        "n": int(len(y_true)),
    }


@torch.no_grad()
def collect_logits(model: torch.nn.Module, loader: DataLoader, *, device: str | torch.device = "cpu"
                   ) -> dict[str, torch.Tensor]:
    """Run ``model`` in eval mode over ``loader``: logits (N, C), label (N,), votes (N, C), index (N,)."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"logits": [], "label": [], "votes": [], "index": []}
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        parts["logits"].append(model(batch)["logits"].float().cpu())
        for k in ("label", "votes", "index"):
            parts[k].append(batch[k].cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def predict(model: torch.nn.Module, dataset, *, batch_size: int = 32, device: str | torch.device = "cpu"
            ) -> pd.DataFrame:
    """Predictions for every clip of ``dataset`` (a ``FeatureDataset``).

    Columns: clip_id, label, predicted, p_<class> for each class, then every other column of
    ``dataset.index`` (fold/split, subject, metadata, condition flags) untouched.
    """
    out = collect_logits(model, DataLoader(dataset, batch_size=batch_size, shuffle=False), device=device)
    probs = torch.softmax(out["logits"], dim=1).numpy()
    rows = dataset.index.iloc[out["index"].numpy()].reset_index(drop=True)
    classes = list(dataset.classes)
    head = pd.DataFrame({"clip_id": rows["clip_id"].astype(str), "label": rows["label"].astype(str),
                         "predicted": [classes[i] for i in probs.argmax(axis=1)]})
    prob_cols = pd.DataFrame(probs, columns=[f"p_{c}" for c in classes])
    rest = rows.drop(columns=[c for c in ("clip_id", "label") if c in rows.columns])
    return pd.concat([head, prob_cols, rest], axis=1)


def metrics_from_predictions(pred: pd.DataFrame, classes) -> dict[str, Any]:
    """:func:`metrics` computed from a predictions table (as written to predictions.csv)."""
    classes = list(classes)
    y_true = pred["label"].map(classes.index).to_numpy()
    y_pred = pred["predicted"].map(classes.index).to_numpy()
    probs = pred[[f"p_{c}" for c in classes]].to_numpy(float)
    return metrics(y_true, y_pred, probs, classes)


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON (NaN written as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(data), indent=2))
    return path


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def evaluate_model(model: torch.nn.Module, dataset, *, out: str | Path, extra: dict | None = None,
                   batch_size: int = 32, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Predict ``dataset``, write ``out/predictions.csv`` and ``out/metrics.json``; return the metrics."""
    out = Path(out)
    pred = predict(model, dataset, batch_size=batch_size, device=device)
    out.mkdir(parents=True, exist_ok=True)
    pred.to_csv(out / "predictions.csv", index=False)
    result = {**metrics_from_predictions(pred, dataset.classes), "classes": list(dataset.classes), **(extra or {})}
    write_json(out / "metrics.json", result)
    return result


def aggregate_folds(per_fold: dict[int, dict[str, Any]], classes) -> dict[str, Any]:
    """k-fold summary: mean (and std) of per-fold uar/war/macro_f1/ece, per-fold values, mean
    per-class recall over folds where the class occurs, and the summed confusion matrix."""
    keys = ("uar", "war", "macro_f1", "ece")
    folds = sorted(per_fold)
    summary: dict[str, Any] = {k: float(np.mean([per_fold[f][k] for f in folds])) for k in keys}
    summary.update({f"{k}_std": float(np.std([per_fold[f][k] for f in folds])) for k in ("uar", "war")})
    recalls = {c: [per_fold[f]["per_class_recall"].get(c) for f in folds] for c in classes}
    summary["per_class_recall"] = {c: (float(np.mean([r for r in v if r is not None]))
                                       if any(r is not None for r in v) else None) for c, v in recalls.items()}
    summary["confusion"] = np.sum([np.asarray(per_fold[f]["confusion"]) for f in folds], axis=0).tolist()
    summary["folds"] = {str(f): {k: per_fold[f].get(k) for k in (*keys, "n_train", "n_val", "n_test")}
                        for f in folds}
    summary.update(classes=list(classes), protocol=f"{len(folds)}-fold; scores are the mean of per-fold scores",
                   n_test=int(sum(per_fold[f].get("n_test", 0) for f in folds)))
    return summary


def evaluate_run(run: str | Path, *, store: str | Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """Re-evaluate a run folder (one run or ``fold_<k>`` sub-runs) with its best.pt on its test split.

    store: the feature store to evaluate on (default: the one recorded in RUN/config.json); its
    classes must equal the checkpoint's. Rewrites metrics.json and predictions.csv.
    """
    from femo.train import evaluate_single

    run = Path(run)
    fold_dirs = sorted((p for p in run.glob("fold_*") if (p / "best.pt").is_file()),
                       key=lambda p: int(p.name.split("_")[1]))
    if (run / "best.pt").is_file():
        return evaluate_single(run, store=store, device=device)
    if not fold_dirs:
        raise FileNotFoundError(f"{run}: no best.pt and no fold_<k>/best.pt; is this a `femo train` run folder?")
    per_fold = {int(p.name.split("_")[1]): evaluate_single(p, store=store, device=device) for p in fold_dirs}
    classes = next(iter(per_fold.values()))["classes"]
    pd.concat([pd.read_csv(p / "predictions.csv", dtype={"clip_id": str, "subject": str})
               for p in fold_dirs]).to_csv(run / "predictions.csv", index=False)
    summary = aggregate_folds(per_fold, classes)
    write_json(run / "metrics.json", summary)
    return summary
