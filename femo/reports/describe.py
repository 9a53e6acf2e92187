"""What a feature store holds and lacks, in words a report can print (data report, training report).

Every report runs on every kind of store (video with audio, frame folders, still images, audio
only); instead of failing on what a store does not have, a report lists it with :func:`data_lacks`
and shows only the sections that apply. :func:`frame_sampling` counts clips whose sampled frames
repeat (a still image is one frame shown T times; a 3-frame sequence sampled to T = 16 repeats
each frame five or six times), so nobody mistakes them for motion.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from femo.reports.figures import demographic_columns

#: Fewest test subjects per fold for which a subject-clustered interval is read without a warning.
MIN_TEST_SUBJECTS = 5


def _truthy(values: pd.Series) -> pd.Series:
    return values.astype(str).str.lower().isin(["true", "1", "1.0"])


def modalities_present(index: pd.DataFrame) -> list[str]:
    """Modalities that at least one clip of ``index`` (a store index, ok rows) carries:
    ``face`` and ``landmarks`` when some clip has a face, ``audio`` when some clip has a track."""
    face = pd.to_numeric(index.get("face_ratio", pd.Series(dtype=float)), errors="coerce").fillna(0) > 0
    audio = _truthy(index.get("has_audio", pd.Series(dtype=str)))
    return (["face", "landmarks"] if face.any() else []) + (["audio"] if audio.any() else [])


def has_subjects(index: pd.DataFrame) -> bool:
    """False when every clip is its own subject (the manifest had no person ids)."""
    return bool((index["subject"].astype(str) != index["clip_id"].astype(str)).any())


def data_lacks(index: pd.DataFrame, *, extra: Mapping[str, Any] | None = None) -> list[str]:
    """Sentences naming what the store (ok rows of its index) does not have, [] when nothing."""
    out = []
    visual = pd.to_numeric(index.get("brightness", pd.Series(dtype=float)), errors="coerce").notna()
    faces = pd.to_numeric(index.get("face_ratio", pd.Series(dtype=float)), errors="coerce").fillna(0) > 0
    if not visual.any():
        out.append("no video or images: every clip is audio only (no faces, landmarks or body pose)")
    elif not faces.any():
        out.append("no faces: the face tracker found no face in any clip (face and landmark inputs are masked)")
    if not _truthy(index.get("has_audio", pd.Series(dtype=str))).any():
        out.append("no audio: no clip has an audio track (the audio input is masked)")
    if not has_subjects(index):
        out.append("no subjects: every clip is its own subject (no person ids), so intervals resample clips, "
                   "and clips of one person may sit on both sides of a split")
    if not demographic_columns(index, extra=extra):
        out.append("no demographic columns (none of sex, gender, age, age_group, race, ethnicity, culture, "
                   "skin_tone, perceived_*): the bias audit has no groups unless `femo annotate` adds them")
    if "fold" not in index.columns and "split" not in index.columns:
        out.append("no folds or split: training needs a `fold` or `split` column")
    return out


def frame_sampling(store: str | Path, index: pd.DataFrame, num_frames: int) -> pd.DataFrame:
    """Per visual clip: distinct sampled frames and the kind of sampling.

    Returns columns clip_id, distinct_frames (unique timestamps among the T sampled), sampling:
    ``still image`` (1 distinct frame), ``frames repeated`` (fewer than T distinct: a short clip
    or frame sequence) or ``full`` (T distinct). Audio-only clips (NaN brightness) are left out.
    """
    visual = index[pd.to_numeric(index.get("brightness"), errors="coerce").notna()] if "brightness" in index else index[:0]
    rows = []
    for clip_id, file in zip(visual["clip_id"], visual["file"]):
        with np.load(Path(store) / str(file), allow_pickle=False) as z:
            distinct = int(np.unique(z["times"]).size)
        rows.append((clip_id, distinct))
    table = pd.DataFrame(rows, columns=["clip_id", "distinct_frames"])
    table["sampling"] = np.select([table["distinct_frames"] <= 1, table["distinct_frames"] < num_frames],
                                  ["still image", "frames repeated"], "full")
    return table


def face_misses(index: pd.DataFrame) -> pd.DataFrame:
    """Visual clips in which no frame had a face: kept in the store with the face modality masked."""
    visual = pd.to_numeric(index.get("brightness"), errors="coerce").notna() if "brightness" in index else False
    ratio = pd.to_numeric(index.get("face_ratio"), errors="coerce").fillna(0)
    return index[visual & (ratio == 0)]


def headline_intervals(pred: pd.DataFrame, classes: Sequence[str], *, n_boot: int = 500, seed: int = 0,
                       ci: float = 0.95) -> dict[str, Any]:
    """UAR and WAR of a predictions table with subject-clustered bootstrap intervals.

    pred: one row per test clip with ``label``, ``predicted``, ``subject`` (and ``fold`` for a
    k-fold run). Whole subjects are resampled (clips of one person are not independent); with no
    subject ids every clip is its own cluster. Returns {uar, uar_low, uar_high, war, war_low,
    war_high, n_subjects, clustered, ci, warnings} where warnings name folds with fewer than
    :data:`MIN_TEST_SUBJECTS` test subjects.
    """
    from femo.audit.stats import cluster_bootstrap
    from femo.training.metrics import uar, war

    frame = pred.reset_index(drop=True)
    subjects = has_subjects(frame) if "clip_id" in frame else True
    cluster = "subject" if subjects and "subject" in frame else None
    out: dict[str, Any] = {"ci": ci, "clustered": cluster is not None,
                           "n_subjects": int(frame["subject"].nunique()) if cluster else len(frame)}
    for name, fn in (("uar", lambda f: uar(f["label"], f["predicted"], classes)),
                     ("war", lambda f: war(f["label"], f["predicted"], classes))):
        interval = cluster_bootstrap(frame, fn, cluster=cluster, n_boot=n_boot, ci=ci, seed=seed)
        out.update({name: interval.estimate, f"{name}_low": interval.low, f"{name}_high": interval.high})
    out["warnings"] = _few_subjects(frame) if cluster else []
    return out


def _few_subjects(frame: pd.DataFrame) -> list[str]:
    """One warning naming the test folds (or the test split) with under MIN_TEST_SUBJECTS subjects."""
    per_fold = frame.groupby(frame["fold"] if "fold" in frame else pd.Series(0, index=frame.index))["subject"].nunique()
    small = per_fold[per_fold < MIN_TEST_SUBJECTS]
    if small.empty:
        return []
    where = (f"test fold(s) {', '.join(map(str, small.index))}" if "fold" in frame else "the test split")
    counts = ", ".join(sorted({str(n) for n in small}))
    return [f"{where} hold(s) fewer than {MIN_TEST_SUBJECTS} test subjects ({counts} each): a fold's score moves "
            "with a single person, so read per-fold scores with care"]


def _confusions(confusion: Sequence[Sequence[float]], classes: Sequence[str], top: int = 2) -> list[str]:
    """The ``top`` largest off-diagonal row shares as "A read as B (x% of A's test clips)"."""
    counts = np.asarray(confusion, float)
    totals = counts.sum(1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    np.fill_diagonal(share, 0)
    order = np.dstack(np.unravel_index(np.argsort(-share, axis=None), share.shape))[0][:top]
    return [f"{classes[i]} read as {classes[j]} ({share[i, j]:.0%} of {int(totals[i, 0])} {classes[i]} test clips)"
            for i, j in order if share[i, j] > 0]


def train_findings(metrics: Mapping[str, Any], intervals: Mapping[str, Any], *, classes: Sequence[str]) -> list[str]:
    """Sentences describing a training run's test results, computed from its numbers.

    metrics: the run's metrics.json (per_class_recall, confusion); intervals: :func:`headline_intervals`.
    """
    chance = 1.0 / len(classes)
    lo, hi, u = intervals["uar_low"], intervals["uar_high"], intervals["uar"]
    verdict = ("above chance" if lo > chance else "below chance" if hi < chance
               else "not distinguishable from chance at this number of test subjects")
    unit = "subjects" if intervals["clustered"] else "clips (no subject ids)"
    out = [f"UAR {u:.3f} (95% interval {lo:.3f}-{hi:.3f}, resampling {intervals['n_subjects']} test {unit}) "
           f"against chance {chance:.3f}: {verdict}."]
    recall = {c: r for c, r in metrics["per_class_recall"].items() if r is not None}
    if recall:
        best, worst = max(recall, key=recall.get), min(recall, key=recall.get)
        out.append(f"Best recognised: {best} (recall {recall[best]:.2f}); worst: {worst} ({recall[worst]:.2f}).")
    confusions = _confusions(metrics["confusion"], list(classes))
    if confusions:
        out.append("Most frequent confusions: " + "; ".join(confusions) + ".")
    gap = intervals["war"] - u
    if abs(gap) >= 0.05:
        out.append(f"WAR - UAR = {gap:+.3f}: the {'larger' if gap > 0 else 'smaller'} classes are recognised better.")
    return out + list(intervals.get("warnings", []))
