"""Helpers of benchmarks/ravdess.py: utterance statistics, per-speaker z-scoring, the logistic
regression baselines (C chosen by actor-grouped inner cross-validation on the training actors),
and actor-clustered bootstrap intervals of UAR / WAR and of paired differences."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from femo.data.store import read_clip, write_clip
from femo.features.functionals import utterance_statistics

#: Regularisation strengths tried by the inner cross-validation of every logistic regression.
C_GRID = (0.01, 0.1, 1.0)
INNER_FOLDS = 3


def utterance_stats(z: dict[str, np.ndarray]) -> np.ndarray:
    """(218,) statistics of one clip's stored librosa features: femo's ``librosa`` functional set
    (:func:`femo.features.functionals.utterance_statistics`, names in ``STAT_NAMES``)."""
    return utterance_statistics(z["logmel"], z["mfcc"], z["prosody"])


def derive_store(src: Path, dst: Path, index: pd.DataFrame) -> Path:
    """Write store ``dst`` = store ``src`` (eGeMAPS functionals) with the ``egemaps+librosa`` set.

    Every clip's functionals become its stored eGeMAPS values followed by the librosa statistics
    of its stored log-mel / MFCC / prosody: exactly what extraction with
    ``audio_functionals="egemaps+librosa"`` stores (tests/test_ravdess_lib.py checks this), without
    decoding the audio again. ``index``: ``src``'s index. Resumable: clips already written are
    kept; ``store.json`` and ``index.csv`` are written last.
    """
    from dataclasses import replace

    from femo.data.store import clip_file, read_meta, write_index, write_meta
    from femo.features.functionals import functionals_dim

    meta = read_meta(src)
    if meta.extra.get("extraction", {}).get("audio_functionals") != "egemaps":
        raise ValueError(f"{src}: derive_store needs a store extracted with audio_functionals='egemaps'")
    ok = index.loc[index["status"] == "ok", "clip_id"].astype(str)
    for clip_id in tqdm(ok, desc="egemaps+librosa store", leave=False):
        if clip_file(dst, clip_id).is_file():
            continue
        z = read_clip(src, clip_id)
        # extraction stores all zeros when the clip had nothing to measure (no audio, silence, NaN)
        measured = bool(z["has_audio"]) and bool(z["functionals"].any())
        stats = utterance_stats(z) if measured else np.zeros(218, np.float32)
        write_clip(dst, clip_id, {**z, "functionals": np.concatenate([z["functionals"], stats]).astype(np.float32)})
    extraction = {**meta.extra.get("extraction", {}), "audio_functionals": "egemaps+librosa",
                  "functionals_dim": functionals_dim("egemaps+librosa")}
    write_index(dst, index)
    write_meta(dst, replace(meta, extra={**meta.extra, "extraction": extraction}))
    return dst


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
