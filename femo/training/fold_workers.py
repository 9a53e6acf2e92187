"""Folds of a k-fold run trained side by side (``TrainConfig.fold_workers`` > 1, ``femo train --folds all
--fold-workers N``): :func:`femo.training.loop.train_folds` hands the folds to spawned processes here,
one :func:`femo.training.loop.train` each, instead of training them one after another.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm


def _train_with_threads(threads: int, train_fn: Callable[..., dict], store: str | Path,
                        **kwargs: Any) -> dict[str, Any]:
    torch.set_num_threads(threads)
    return train_fn(store, **kwargs)


def train_folds_side_by_side(train_fn: Callable[..., dict], store: str | Path, out: Path, folds: list[int],
                             workers: int, kwargs: dict[str, Any], *, show_bar: bool = True
                             ) -> dict[int, dict[str, Any]]:
    """``train_fn`` (:func:`femo.training.loop.train`, passed in by its caller) of every fold in
    ``workers`` spawned processes (``TrainConfig.fold_workers``); ``show_bar``: the bar over folds.

    Each fold gets ``cores // workers`` torch threads (at least 1); the folds of a last, incomplete
    round share the cores among fewer processes, so they get more (5 folds on 2 cores: 1, 1, 1, 1,
    then 2). Per-fold progress bars would interleave, so the processes train quietly and one bar
    here counts finished folds; a failing fold raises here with its own message once the running
    folds have finished.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if kwargs.get("frame_encoder") is not None:
        raise ValueError("fold_workers > 1 cannot share an already-built frame_encoder; use fold_workers=1")
    cores = os.cpu_count() or 1
    last_round = len(folds) % workers or workers
    threads = [max(1, cores // (workers if i < len(folds) - last_round else last_round)) for i in range(len(folds))]
    quiet = {**kwargs, "progress": False}
    bar = tqdm(total=len(folds), desc=f"folds ({workers} side by side)", unit="fold",
               disable=not (kwargs.get("progress", True) and show_bar))
    per_fold: dict[int, dict[str, Any]] = {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = {pool.submit(_train_with_threads, n, train_fn, store, out=out / f"fold_{k}", fold=k, **quiet): k
                for k, n in zip(folds, threads)}
        for job in as_completed(jobs):
            per_fold[jobs[job]] = job.result()
            bar.update(1)
            bar.set_postfix(fold=jobs[job], uar=f"{per_fold[jobs[job]]['uar']:.3f}")
    bar.close()
    return {k: per_fold[k] for k in folds}
