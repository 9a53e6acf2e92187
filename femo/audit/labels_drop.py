"""Acting on suspected label errors: which clips to drop from training, retraining without them on
the same folds, and the UAR of both runs side by side.

``suspect_ids(RUN_OR_CSV)`` gives the clip ids ``femo train --drop-suspects`` leaves out of the
*training* split of every fold (validation and test folds keep them, so both runs are scored on
the same clips with the same recorded labels); :func:`retrain_folds` retrains a run's options on
the same folds without them (and gives a single-fold run its out-of-fold predictions). A run folder's suspects come from its own
out-of-fold predictions (:func:`femo.audit.labels.read_oof`); note that those were made by models
that saw the other folds' labels, so a fold's training set is chosen with some knowledge of its
test labels: the comparison is optimistic in the way cleanlab's usual workflow is.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from femo.audit.labels import audit_labels, read_oof


def suspect_ids(source: str | Path, *, filter_by: str = "prune_by_noise_rate",
                rank_by: str = "self_confidence") -> list[str]:
    """Clip ids to drop, likeliest error first: from a k-fold run folder (its suspects) or a CSV.

    A CSV needs a ``clip_id`` column; with a boolean ``suspect`` column (as in the label-quality
    report's table) only its True rows count. Raises FileNotFoundError / ValueError naming the file.
    """
    path = Path(source)
    if path.is_dir():
        oof = read_oof(path)
        return audit_labels(oof.pred, classes=oof.classes, filter_by=filter_by, rank_by=rank_by,
                            attributes=[]).suspects["clip_id"].tolist()
    if not path.is_file():
        raise FileNotFoundError(f"--drop-suspects: {path} is neither a run folder nor a CSV of clip ids")
    table = pd.read_csv(path, dtype={"clip_id": str})
    if "clip_id" not in table.columns:
        raise ValueError(f"{path}: no clip_id column (columns: {list(table.columns)[:12]})")
    if "suspect" in table.columns:
        flags = table["suspect"].astype(str).str.lower()
        unknown = ~flags.isin(["true", "false", "1", "0"])
        if unknown.any():
            raise ValueError(f"{path}: suspect column rows {np.flatnonzero(unknown.to_numpy())[:10].tolist()} "
                             "are not true/false")
        table = table[flags.isin(["true", "1"])]
    ids = table["clip_id"].dropna().astype(str)
    return list(dict.fromkeys(ids))  # unique, first occurrence order


def run_options(run: str | Path) -> tuple[Path, Any, Any, list[int] | None]:
    """(store, ModelConfig, TrainConfig, folds) a run was trained with: from RUN/fold_<k>/config.json
    of a k-fold run (folds = its folds) or RUN/config.json of a single run (folds = None)."""
    from femo.config import ModelConfig, TrainConfig, from_dict

    run = Path(run)
    fold_configs = sorted(run.glob("fold_*/config.json"), key=lambda p: int(p.parent.name.split("_", 1)[1]))
    path = fold_configs[0] if fold_configs else run / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no config.json; not a `femo train` run folder")
    config = json.loads(path.read_text())
    model = from_dict(ModelConfig, {**config["model"], "modalities": tuple(config["model"]["modalities"])})
    folds = [int(p.parent.name.split("_", 1)[1]) for p in fold_configs] or None
    return Path(config["store"]), model, from_dict(TrainConfig, config["train"]), folds


#: The verdict of a run whose store has no folds (e.g. FER2013's train / public_test / private_test).
SINGLE_SPLIT_VERDICT = (
    "Label quality not assessed: it needs out-of-fold probabilities (every clip scored by a model that never "
    "trained on it), and this run's store has a single train/val/test split and no 'fold' column, so only its "
    "test clips were ever scored out of sample. Give the manifest subject-disjoint folds (a 'fold' column) and "
    "train with `femo train STORE --out RUN --folds all` to audit every clip.")


def oof_problem(run: str | Path) -> str | None:
    """Why ``run`` cannot give out-of-fold probabilities for its clips, in words, or None when it can:
    it is a k-fold run, or its store has a ``fold`` column with two or more folds among its ok clips
    (a single-fold run is then retrained on every fold by :func:`retrain_folds`). A store with a
    single train/val/test split gets :data:`SINGLE_SPLIT_VERDICT`."""
    from femo.audit.labels import has_oof
    from femo.data.store import ok_clips, read_index

    if has_oof(run):
        return None
    index = ok_clips(read_index(run_options(run)[0]))
    folds = index["fold"].dropna().nunique() if "fold" in index.columns else 0
    return None if folds >= 2 else SINGLE_SPLIT_VERDICT


def retrain_folds(run: str | Path, *, out: str | Path, exclude: Sequence[str] = (), progress: bool = False,
                  keep_checkpoints: bool = True) -> dict[str, Any]:
    """Retrain ``run``'s options on its store's folds into ``out``: the same folds for a k-fold run,
    every fold for a single-fold run (which gives it out-of-fold predictions); ``exclude`` is left
    out of every fold's training split. Resumes a finished or interrupted retrain into the same
    ``out``; refuses an ``out`` holding another one. keep_checkpoints=False deletes
    ``out/fold_<k>/*.pt`` afterwards (keeps a report folder small; predictions, metrics and configs
    stay). Returns the k-fold summary (as ``femo train --folds all`` writes it)."""
    from femo.training.loop import train_folds

    store, model, cfg, folds = run_options(run)
    _claim(Path(out), {"run": str(Path(run).resolve()), "exclude": sorted(map(str, exclude))})
    resume = any(Path(out).glob("fold_*/checkpoint.pt"))  # an interrupted retrain into the same folder
    summary = train_folds(store, out=out, folds=folds, model=model, train=cfg, exclude=list(exclude),
                          resume=resume, progress=progress)
    if not keep_checkpoints:
        for checkpoint in Path(out).glob("fold_*/*.pt"):
            checkpoint.unlink()
    return summary


#: Bumped when the retraining or the cached layout changes, so an older retrain is never reused.
RETRAIN_CACHE_VERSION = "1"


def retrain_key(run: str | Path, exclude: Sequence[str] = ()) -> str:
    """24 hex digits over what retraining ``run`` without ``exclude`` depends on: the bytes of every
    fold's ``config.json`` (options, store, folds) and ``best.pt`` (a retrained base run, or one
    trained on a re-extracted store, gets a new key), the store's ``index.csv`` and the sorted
    exclusion list. A moved run folder keeps its key."""
    import hashlib

    from femo.audit.masked import file_digest

    run = Path(run)
    store = run_options(run)[0]
    digest = hashlib.sha256(f"retrain v{RETRAIN_CACHE_VERSION}\n".encode())
    folds = sorted(run.glob("fold_*"), key=lambda p: int(p.name.split("_", 1)[1])) or [run]
    for path in [*(f / name for f in folds for name in ("config.json", "best.pt")), Path(store) / "index.csv"]:
        if path.is_file():
            file_digest(path, digest)
        else:
            digest.update(f"missing {path.name}\n".encode())
    digest.update(json.dumps(sorted(map(str, exclude))).encode())
    return digest.hexdigest()[:24]


def cached_retrain(run: str | Path, *, exclude: Sequence[str] = (), cache_dir: str | Path | None = None,
                   progress: bool = False) -> tuple[Path, bool]:
    """:func:`retrain_folds` of ``run`` without ``exclude`` into ``CACHE/<retrain_key>`` (default
    ``CACHE = STORE/cache/retrain``, never the run folder), or the finished retrain already there.

    Returns ``(folder, reused)``; checkpoints are not kept (predictions, metrics and configs are).
    An interrupted retrain in the same folder resumes; a rerun of the label-quality report on the
    same run and the same suspects costs nothing."""
    import shutil

    store = run_options(run)[0]
    folder = Path(cache_dir or Path(store) / "cache" / "retrain") / retrain_key(run, exclude)
    if (folder / "metrics.json").is_file():
        return folder, True
    marker = folder / "drop_suspects.json"
    if marker.is_file() and json.loads(marker.read_text()).get("run") != str(Path(run).resolve()):
        shutil.rmtree(folder)  # same content from another path: an unfinished cache entry, started afresh
    retrain_folds(run, out=folder, exclude=exclude, progress=progress, keep_checkpoints=False)
    return folder, False


def _claim(out: Path, record: dict) -> None:
    """Write ``out/drop_suspects.json``; refuse a folder that holds another retrain (resuming it
    would mix two exclusion lists)."""
    marker = out / "drop_suspects.json"
    if marker.is_file() and json.loads(marker.read_text()) != record:
        raise ValueError(f"{out}: holds a retrain of another run or exclusion list ({marker}); use another folder")
    if not marker.is_file() and any(out.glob("fold_*")):
        raise ValueError(f"{out}: already holds fold folders of another run; use another folder")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(record, indent=1))


def compare_uar(base: pd.DataFrame, dropped: pd.DataFrame, classes: Sequence[str], *,
                truth: str | None = None) -> pd.DataFrame:
    """Per-fold UAR of two runs' pooled predictions on the same clips (column ``oof_fold`` or ``fold``).

    Rows: one per fold plus ``mean``; columns uar_base, uar_dropped, difference (dropped - base),
    and, with ``truth`` (a column of true labels, e.g. the synthetic set's ``true_emotion``), the
    same against it. Raises ValueError when the two runs did not score the same clips.
    """
    from femo.training.metrics import uar

    fold = "oof_fold" if "oof_fold" in base.columns else "fold"
    if set(base["clip_id"].astype(str)) != set(dropped["clip_id"].astype(str)):
        raise ValueError("the two runs were not tested on the same clips; retrain on the same store and folds")
    merged = base.merge(dropped[["clip_id", "predicted"]], on="clip_id", suffixes=("_base", "_dropped"))
    targets = {"": "label", **({"_true": truth} if truth else {})}
    rows = []
    for k, part in merged.groupby(fold, sort=True):
        row = {"fold": str(k), "n_test": len(part)}
        for suffix, column in targets.items():
            row[f"uar_base{suffix}"] = uar(part[column].astype(str), part["predicted_base"].astype(str), classes)
            row[f"uar_dropped{suffix}"] = uar(part[column].astype(str), part["predicted_dropped"].astype(str), classes)
            row[f"difference{suffix}"] = row[f"uar_dropped{suffix}"] - row[f"uar_base{suffix}"]
        rows.append(row)
    table = pd.DataFrame(rows)
    mean = table.drop(columns=["fold", "n_test"]).mean().to_dict()
    return pd.concat([table, pd.DataFrame([{"fold": "mean", "n_test": int(table["n_test"].sum()), **mean}])],
                     ignore_index=True)
