"""Masked per-modality predictions of a trained run, computed once and cached by content.

The modality-ablation report and the bias audit both need the run's predictions with some
modalities switched off (:func:`femo.audit.ablation.evaluate_subsets`). Either one calls
:func:`masked_predictions` (all 7 subsets) or :func:`modality_predictions` (one table per single
modality and ``fused``); whichever runs first pays for the forward passes and the other reads the
cache. Nothing is written into the run folder, so the reports have no order between them.

The cache file is ``CACHE/<key>.npz`` (default ``CACHE = STORE/cache/masked``), where ``key`` hashes
what the numbers depend on: the bytes of every checkpoint used (``best.pt``, one per fold), the
store's ``index.csv`` and embedding ``meta.json`` files, the split and the number of clips. A
retrained run or a re-extracted store gets a new key; a moved or renamed folder keeps its key.
The npz holds plain arrays (no pickles): the long frame of :func:`evaluate_subsets`.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from femo.audit import ablation
from femo.audit.report import RunPredictions, read_run_predictions
from femo.audit.trained import TrainedRun
from femo.config import MODALITIES

#: Bumped when the cached layout or the computation changes, so old files are never read.
CACHE_VERSION = "1"
#: The tables the bias audit compares: each modality alone, and all of them.
SINGLE = (*MODALITIES, ablation.FUSED)


@dataclass(frozen=True, eq=False)
class MaskedPredictions:
    """Predictions of a run for every modality subset on its ``split`` clips.

    long: one row per clip and subset (``subset, index, label, predicted, p_<class>...,
    present_<modality>``; ``index`` numbers clips 0..N-1 across folds). meta: the pooled index
    table (row ``i`` = clip ``i``, with ``run_fold``). classes: the run's class names. key: the
    content hash of the cache file. cached: True when read from the cache.
    """

    long: pd.DataFrame
    meta: pd.DataFrame
    classes: tuple[str, ...]
    key: str
    cached: bool

    def wide(self) -> pd.DataFrame:
        """One row per clip with ``pred_<subset>`` columns (:func:`ablation.wide_predictions`)."""
        return ablation.wide_predictions(self.long, self.meta)

    def tables(self, subsets: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
        """{subset: predictions table} in RUN/predictions.csv's columns (``clip_id``, ``label`` and
        ``predicted`` as class names, ``p_<class>``, index columns); every subset when None."""
        long = self.long if subsets is None else self.long[self.long["subset"].isin(subsets)]
        missing = set(subsets or ()) - set(long["subset"])
        if missing:
            raise ValueError(f"unknown subset(s) {sorted(missing)}; choose from {sorted(self.long['subset'].unique())}")
        return ablation.subset_tables(long, meta=self.meta, classes=self.classes)


def file_digest(path: Path, digest) -> None:
    """Feed ``path``'s name and bytes (read in 1 MiB blocks) into the hashlib object ``digest``."""
    digest.update(f"{path.name}\n".encode())
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)


def cache_key(runs: Sequence[TrainedRun], *, split: str, n_clips: int) -> str:
    """24 hex digits over the checkpoints' bytes, the store's index and embedding metadata, the
    split and the number of clips (see the module docstring)."""
    digest = hashlib.sha256(f"masked v{CACHE_VERSION} {split} {n_clips}\n".encode())
    for run in runs:
        file_digest(run.path / "best.pt", digest)
    store = runs[0].store
    for path in [store / "index.csv", *sorted(store.glob("embeddings/*/meta.json"))]:
        if path.is_file():
            file_digest(path, digest)
    return digest.hexdigest()[:24]


def _save(long: pd.DataFrame, path: Path) -> None:
    """Write the long frame's columns as plain npz arrays, atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, name in enumerate(long.columns):
        values = long[name].to_numpy()
        arrays[f"col_{i:03d}_{name}"] = values.astype(str) if values.dtype == object else values
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load(path: Path) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as data:
        names = sorted(data.files)
        return pd.DataFrame({name.split("_", 2)[2]: data[name] for name in names})


def masked_predictions(run: str | Path, *, store: str | Path | None = None, split: str = "test",
                       max_clips: int = 0, batch_size: int = 8, cache_dir: str | Path | None = None,
                       runs: Sequence[TrainedRun] | None = None) -> MaskedPredictions:
    """Every modality subset's predictions of ``run`` (single or k-fold, each clip by the model
    that was tested on it) on its ``split`` clips, read from the cache when computed before.

    store: default the store in RUN/config.json. max_clips: 0 = all, else the first ``max_clips``
    over the folds in order. cache_dir: default ``STORE/cache/masked``. runs: the already loaded
    :func:`femo.audit.pooled.load_runs` of the same run and store (loaded here when None).
    """
    from femo.audit.pooled import _budget, _meta, load_runs, pooled_subsets

    runs = list(runs) if runs is not None else load_runs(run, store=store, split=split)
    total = sum(len(r.dataset) for r in runs)
    n_clips = total if max_clips <= 0 else min(max_clips, total)
    key = cache_key(runs, split=split, n_clips=n_clips)
    path = Path(cache_dir if cache_dir is not None else runs[0].store / "cache" / "masked") / f"{key}.npz"
    if path.is_file():
        long = _load(path)
        meta = pd.concat([_meta(r, n) for r, n in zip(runs, _budget(runs, n_clips)) if n], ignore_index=True)
        return MaskedPredictions(long, meta, runs[0].classes, key, cached=True)
    long, meta = pooled_subsets(runs, batch_size=batch_size, max_clips=n_clips)
    _save(long, path)
    return MaskedPredictions(long, meta, runs[0].classes, key, cached=False)


def modality_predictions(run: str | Path, *, store: str | Path | None = None,
                         modalities: Sequence[str] = SINGLE, **kwargs) -> dict[str, pd.DataFrame]:
    """{modality: predictions table} with only that modality kept (``fused``: all), on every clip
    of the run's test split; kwargs go to :func:`masked_predictions` (``split``, ``cache_dir``...)."""
    return masked_predictions(run, store=store, **kwargs).tables(modalities)


def run_predictions(run: str | Path, *, store: str | Path | None = None, **kwargs) -> RunPredictions:
    """The run's own predictions (RUN/predictions.csv) and, when its model checkpoints exist, the
    per-modality tables of :func:`modality_predictions` for the same clips; a run without
    ``best.pt`` gets none, with the reason in ``skipped``."""
    from femo.training.runs import RunFolder

    read = read_run_predictions(run)
    folder = RunFolder(run)
    if not folder.best_path.is_file() and not folder.folds:
        why = f"{folder.best_path}: no model, so no per-modality predictions"
        return RunPredictions(read.pred, read.classes, {}, [why])
    return RunPredictions(read.pred, read.classes, modality_predictions(run, store=store, **kwargs), [])
