"""Checking suspected label errors against planted truth (``femo synth --label-noise P``).

precision = flipped suspects / suspects, recall = flipped suspects / flipped clips, each with a
percentile bootstrap interval that resamples whole subjects (clips of one person are not
independent). The baseline is random flagging of the same number of clips: its expected precision
is the flip rate and its expected recall the flag rate; ``random_*_high`` is the 97.5th percentile
of ``n_random`` random draws, the level a detector must beat. ``precision_at_k`` judges the
ranking alone: the share of flipped clips among the k = (number flipped) clips with the lowest
label-quality score (random ranking: the flip rate).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from femo.audit.stats import bootstrap_weights, cluster_codes, percentile_interval


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def planted_truth(clips: pd.DataFrame, *, flipped: str = "label_flipped", suspect: str = "suspect", quality: str = "quality",
                  cluster: str | None = "subject", n_boot: int = 1000, n_random: int = 2000, ci: float = 0.95,
                  seed: int = 0) -> dict[str, Any]:
    """Precision and recall of the ``suspect`` flags (bool column) for the ``flipped`` clips (bool
    column), with intervals and the random-flagging baseline (module docstring).

    clips: one row per clip, e.g. :attr:`femo.audit.labels.LabelAudit.clips` of a set made with
    ``--label-noise``; ``quality`` (low = likelier error) may be absent (no precision_at_k).
    Raises ValueError when a column is missing.
    """
    missing = [c for c in (flipped, suspect) if c not in clips.columns]
    if missing:
        raise ValueError(f"columns {missing} missing; planted truth needs a set made with `femo synth --label-noise P`")
    flip = clips[flipped].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    flag = clips[suspect].astype(bool).to_numpy()
    codes, n_clusters, clustered = cluster_codes(clips, cluster)
    per = np.zeros((n_clusters, 3))  # per cluster: hits, flagged, flipped
    np.add.at(per, codes, np.stack([flip & flag, flag, flip], axis=1).astype(float))
    rng = np.random.default_rng(seed)
    boot = bootstrap_weights(n_clusters, n_boot, rng) @ per  # (n_boot, 3)
    hits, n_flag, n_flip = per.sum(0)
    n = len(clips)
    out = {"n_clips": n, "n_flipped": int(n_flip), "n_suspect": int(n_flag), "n_hits": int(hits),
           "precision": float(_ratio(hits, n_flag)), "recall": float(_ratio(hits, n_flip)),
           "clustered": clustered, "n_clusters": n_clusters, "ci": ci}
    for name, values in (("precision", _ratio(boot[:, 0], boot[:, 1])), ("recall", _ratio(boot[:, 0], boot[:, 2]))):
        out[f"{name}_low"], out[f"{name}_high"] = percentile_interval(values, ci)
    random_hits = np.array([flip[rng.choice(n, size=int(n_flag), replace=False)].sum() for _ in range(n_random)])
    out["random_precision"] = float(n_flip / n)
    out["random_recall"] = float(n_flag / n)
    tail = 1.0 - (1.0 - ci) / 2.0
    out["random_precision_high"] = float(_ratio(np.quantile(random_hits, tail), n_flag))
    out["random_recall_high"] = float(_ratio(np.quantile(random_hits, tail), n_flip))
    out["p_value_vs_random"] = float((1 + (random_hits >= hits).sum()) / (1 + n_random))
    if quality in clips.columns and n_flip > 0:
        order = np.lexsort((np.arange(n), clips[quality].to_numpy(float)))[: int(n_flip)]
        out["precision_at_k"], out["k"] = float(flip[order].mean()), int(n_flip)
    return out
