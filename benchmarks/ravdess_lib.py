"""Helpers of benchmarks/ravdess.py: utterance statistics, per-speaker z-scoring, the logistic
regression baselines (C chosen by actor-grouped inner cross-validation on the training actors),
and actor-clustered bootstrap intervals of UAR / WAR and of paired differences."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from femo.data.store import read_clip

#: Regularisation strengths tried by the inner cross-validation of every logistic regression.
C_GRID = (0.01, 0.1, 1.0)
INNER_FOLDS = 3


def utterance_stats(z: dict[str, np.ndarray]) -> np.ndarray:
    """(218,) statistics of one clip's stored librosa features (see ``STAT_NAMES``)."""
    logmel, mfcc, pro = z["logmel"], z["mfcc"], z["prosody"]  # (64, A), (20, A), (A, 4)
    delta = np.diff(mfcc, axis=1) if mfcc.shape[1] > 1 else np.zeros_like(mfcc)
    voiced = pro[:, 3] > 0.5
    f0 = 12 * np.log2(np.maximum(pro[voiced, 0], 1.0) / 100.0) if voiced.any() else np.zeros(1)  # semitones
    log_rms = np.log(np.maximum(pro[:, 2], 1e-6))
    parts = [logmel.mean(1), logmel.std(1), mfcc.mean(1), mfcc.std(1), delta.mean(1), delta.std(1),
             [f0.mean(), f0.std(), *np.percentile(f0, [10, 50, 90]), np.ptp(f0)], [voiced.mean()],
             [log_rms.mean(), log_rms.std(), np.percentile(log_rms, 90)]]
    return np.concatenate([np.asarray(p, np.float64).ravel() for p in parts]).astype(np.float32)


def load_features(store: Path, index: pd.DataFrame) -> dict[str, np.ndarray]:
    """``{"librosa": (N, 218), "functionals": (N, F)}`` for the rows of ``index`` (in order)."""
    stats, funcs = [], []
    for clip_id in index["clip_id"].astype(str):
        z = read_clip(store, clip_id)
        stats.append(utterance_stats(z))
        funcs.append(np.nan_to_num(z["functionals"].astype(np.float32)))
    return {"librosa": np.stack(stats), "functionals": np.stack(funcs)}


def speaker_zscore(x: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Each speaker's rows of (N, F) ``x`` z-scored with that speaker's own mean / std (std < 1e-6 -> 1)."""
    out = np.empty_like(x, dtype=np.float64)
    for s in np.unique(speakers):
        rows = speakers == s
        sd = x[rows].std(0)
        out[rows] = (x[rows] - x[rows].mean(0)) / np.where(sd > 1e-6, sd, 1.0)
    return out.astype(np.float32)


def _lr(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced"))


def _uar(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import recall_score

    return float(recall_score(y, pred, average="macro"))


def choose_c(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """The C of :data:`C_GRID` with the best mean UAR over actor-grouped inner folds (training rows only)."""
    from sklearn.model_selection import GroupKFold

    scores = {c: [] for c in C_GRID}
    for tr, va in GroupKFold(n_splits=INNER_FOLDS).split(x, y, groups):
        for c in C_GRID:
            scores[c].append(_uar(y[va], _lr(c).fit(x[tr], y[tr]).predict(x[va])))
    return max(C_GRID, key=lambda c: (np.mean(scores[c]), -c))


def lr_predictions(x: np.ndarray, y: np.ndarray, folds: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, list]:
    """Out-of-fold predicted labels (N,) of the inner-CV-tuned logistic regression, and the C per fold."""
    pred, chosen = np.empty_like(y), []
    for k in np.unique(folds):
        tr, te = folds != k, folds == k
        c = choose_c(x[tr], y[tr], groups[tr])
        chosen.append(c)
        pred[te] = _lr(c).fit(x[tr], y[tr]).predict(x[te])
    return pred, chosen


def clustered_bootstrap(y: np.ndarray, preds: dict[str, np.ndarray], clusters: np.ndarray, *, num_classes: int,
                        draws: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """UAR and WAR of every model on ``draws`` resamples of whole clusters (actors) with replacement.

    Returns ``{"<model>/uar": (draws,), "<model>/war": (draws,)}``; the same draws serve every
    model, so differences between two models' arrays are paired bootstrap differences.
    """
    ids, cl = np.unique(clusters, return_inverse=True)
    weights = np.stack([np.bincount(r, minlength=len(ids))
                        for r in np.random.default_rng(seed).integers(0, len(ids), (draws, len(ids)))])
    out = {}
    for name, pred in preds.items():
        counts = np.zeros((len(ids), num_classes, num_classes))
        np.add.at(counts, (cl, y, pred), 1)
        conf = np.tensordot(weights, counts, axes=1)  # (draws, C, C)
        support = conf.sum(2)
        recall = np.divide(np.diagonal(conf, axis1=1, axis2=2), support, out=np.full(support.shape, np.nan),
                           where=support > 0)
        out[f"{name}/uar"] = np.nanmean(recall, axis=1)
        out[f"{name}/war"] = np.trace(conf, axis1=1, axis2=2) / conf.sum((1, 2))
    return out


def score(y: np.ndarray, pred: np.ndarray, boot_uar: np.ndarray, boot_war: np.ndarray) -> dict[str, float]:
    """Point UAR / WAR with 95% percentile intervals from the bootstrap arrays."""
    lo_u, hi_u = np.percentile(boot_uar, [2.5, 97.5])
    lo_w, hi_w = np.percentile(boot_war, [2.5, 97.5])
    return {"uar": _uar(y, pred), "uar_ci": [float(lo_u), float(hi_u)],
            "war": float(np.mean(y == pred)), "war_ci": [float(lo_w), float(hi_w)]}
