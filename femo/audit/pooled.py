"""Model-level audits over a whole run, single or k-fold: every clip is evaluated or explained by the
model that was tested on it (for a ``--folds all`` run, its fold's model, which never trained on
it) and the results are pooled, so a k-fold run's reports cover every clip out of fold.

* :func:`load_runs`: the loaded run(s) of a run folder, one per fold for a k-fold run.
* :func:`pooled_subsets` / :func:`pooled_clip_shapley`: the modality ablation over every run.
* :func:`pooled_predictions` / :func:`explain_runs`: stratified choice and attribution of clips.

Pooled frames number clips 0..N-1 across runs (``index``); the pooled index table (``meta``) has
row ``i`` for clip ``i`` and a ``run_fold`` column (the fold whose model saw the clip in test).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from femo.audit import ablation, attribution_report
from femo.audit.attribution_report import ClipAttributions
from femo.audit.trained import TrainedRun, load_run


def load_runs(run: str | Path, *, store: str | Path | None = None, split: str = "test",
              device: str = "cpu") -> list[TrainedRun]:
    """``[load_run(RUN)]`` for a single run; one loaded run per ``RUN/fold_<k>`` for a k-fold run."""
    from femo.training.runs import RunFolder

    folder = RunFolder(run)
    paths = [f.path for f in folder.folds] if folder.is_kfold else [folder.path]
    return [load_run(p, store=store, split=split, device=device) for p in paths]


def _budget(runs: Sequence[TrainedRun], max_clips: int) -> list[int]:
    """Clips to take from each run: all, or the first ``max_clips`` over the runs in order."""
    sizes = [len(r.dataset) for r in runs]
    if max_clips <= 0:
        return sizes
    out, left = [], max_clips
    for n in sizes:
        out.append(min(n, left))
        left -= out[-1]
    return out


def _meta(run: TrainedRun, n: int) -> pd.DataFrame:
    return run.index.iloc[:n].assign(run_fold=run.config.get("fold"))


def pooled_subsets(runs: Sequence[TrainedRun], *, batch_size: int = 8,
                   max_clips: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`femo.audit.ablation.evaluate_subsets` of every run on its own clips, pooled.

    max_clips: 0 = every clip, else the first ``max_clips`` over the runs in order. Returns the
    long frame (``index`` numbered across runs) and the pooled index table ``meta``.
    """
    longs, metas, offset = [], [], 0
    for run, n in zip(runs, _budget(runs, max_clips)):
        if n == 0:
            continue
        long = ablation.evaluate_subsets(run.model, run.batches(batch_size=batch_size, max_clips=n),
                                         classes=run.classes)
        longs.append(long.assign(index=long["index"] + offset))
        metas.append(_meta(run, n))
        offset += n
    if not longs:
        raise ValueError("pooled_subsets: no clips in any run")
    return pd.concat(longs, ignore_index=True), pd.concat(metas, ignore_index=True)


def pooled_clip_shapley(runs: Sequence[TrainedRun], *, n_clips: int, batch_size: int = 8) -> pd.DataFrame:
    """Per-clip Shapley values (:func:`femo.audit.ablation.clip_shapley`) of the first ``n_clips``
    clips over the runs in order, each with its own run's model; ``index`` numbered across runs."""
    parts, offset = [], 0
    for run, n in zip(runs, _budget(runs, n_clips)):
        if n:
            phi = ablation.clip_shapley(run.model, run.batches(batch_size=batch_size, max_clips=n))
            parts.append(phi.assign(index=phi["index"] + offset))
        offset += len(run.dataset)
    return pd.concat(parts, ignore_index=True)


@torch.no_grad()
def pooled_predictions(runs: Sequence[TrainedRun], *, batch_size: int = 8) -> pd.DataFrame:
    """Every run's prediction of each of its clips: its index rows plus ``run`` (position in
    ``runs``), ``row`` (the clip's row in that run's dataset), ``run_fold`` and ``predicted``
    (class name)."""
    parts = []
    for k, run in enumerate(runs):
        predicted = attribution_report.predict_classes(run.model, run.batches(batch_size=batch_size))
        meta = _meta(run, len(run.dataset)).reset_index(drop=True)
        parts.append(meta.assign(run=k, row=np.arange(len(meta)), predicted=[run.classes[i] for i in predicted]))
    return pd.concat(parts, ignore_index=True)


def explain_runs(runs: Sequence[TrainedRun], chosen: pd.DataFrame, *, means: Sequence[Mapping] | None = None,
                 batch_size: int = 2, n_examples: int = 4, **kwargs) -> ClipAttributions:
    """Attribute the ``chosen`` clips (rows of :func:`pooled_predictions`) each with its own run's
    model and pool the summaries (:func:`femo.audit.attribution_report.attribute_clips`).

    means: per run, the reference means of its training clips (None: each batch's own). kwargs go
    to ``attribute_clips`` (``method``, ``target``, ``n_steps``, ``n_samples``, ...).
    """
    parts = []
    for k, run in enumerate(runs):
        rows = chosen.loc[chosen["run"] == k, "row"].to_numpy()
        if not len(rows):
            continue
        done = sum(len(p.examples.get("faces", ())) for p in parts)
        parts.append(attribution_report.attribute_clips(
            run.model, attribution_report.subset_batches(run.dataset, rows, batch_size=batch_size),
            index=run.index, store=run.store, classes=run.classes, n_examples=max(0, n_examples - done),
            means=None if means is None else means[k], **kwargs))
    if not parts:
        raise ValueError("explain_runs: no clip chosen")
    return concat_attributions(parts)


def concat_attributions(parts: Sequence[ClipAttributions]) -> ClipAttributions:
    """One :class:`ClipAttributions` from several (tables, curves, features and examples stacked)."""
    features = [p.features for p in parts if p.features is not None]
    keys = [k for k in parts[0].examples] if parts[0].examples else []
    examples = {k: np.concatenate([p.examples[k] for p in parts if k in p.examples]) for k in keys}
    return ClipAttributions(pd.concat([p.table for p in parts], ignore_index=True),
                            np.concatenate([p.curves for p in parts]),
                            np.concatenate(features) if features else None, parts[0].regions, examples)
