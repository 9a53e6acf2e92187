"""Cross-corpus evaluation: score a trained run on a store whose class list differs from the run's.

A run trained on corpus A (classes ``A``) is applied to every ok clip of store B (classes ``B``).
The classes are reconciled by a *class map* ``{run class: B class or None}``:

* ``"intersection"``: every run class that B also has maps to itself, the others to None;
* a JSON file ``{"calm": "neutral", "contempt": null, ...}``: every run class must be a key (an
  explicit map drops nothing silently); a value is a class of B, or null to drop the run class.
  Several run classes may map to one B class (they are merged).

Scoring: the run's probabilities (N, C_run) are summed per target class and renormalised over
the targets, p_t = sum_{a -> t} p_a / sum_{a -> any} p_a, so a dropped run class takes no part in
the decision; ``predicted`` = argmax over the targets. B's clips whose label no run class maps
to are left out (counted per class). A k-fold run is scored with the mean of its folds' softmax
probabilities per clip (every fold's model sees every clip of B: B is not the training corpus).

Metrics over the shared (target) classes: UAR, WAR, macro-F1, ECE, per-class recall, confusion
(:func:`femo.training.metrics.metrics`), and 95% percentile intervals of UAR / WAR from a
bootstrap that resamples B's subjects (``subject`` column; clip ids when absent) with replacement.

Outputs, in a folder that must not lie inside the run (the run's own metrics stay untouched):
``OUT/metrics.json`` (metrics, class_map, shared classes, dropped classes and clip counts,
protocol) and ``OUT/predictions.csv`` (clip_id, label, predicted, p_<shared class>..., the run's
own top class ``run_predicted`` and the run classes merged into the label, ``label_from``, then
B's index columns).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from femo.training.metrics import metrics, write_json
from femo.training.runs import RunError, RunFolder

BOOTSTRAP_DRAWS = 2000


class ClassMapError(ValueError):
    """The class map does not fit the run's or the store's classes; the message says which entry."""


def resolve_class_map(spec: str | Path | dict, run_classes, store_classes) -> dict[str, str | None]:
    """``{run class: store class or None}`` from ``"intersection"``, a JSON file path or a dict.

    Raises :class:`ClassMapError` naming the file and entry for a missing or unknown run class, a
    target that is not a store class, or a map that keeps no class at all.
    """
    run_classes, store_classes = list(run_classes), list(store_classes)
    if isinstance(spec, str) and spec == "intersection":
        mapping = {c: (c if c in store_classes else None) for c in run_classes}
        where = "intersection"
    elif isinstance(spec, dict):
        mapping, where = dict(spec), "class map"
    else:
        path = Path(spec)
        if not path.is_file():
            raise ClassMapError(f"{path}: class map file not found (or pass 'intersection')")
        try:
            mapping = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ClassMapError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(mapping, dict):
            raise ClassMapError(f"{path}: expected a JSON object {{run class: store class or null}}")
        where = str(path)
    unknown = sorted(set(mapping) - set(run_classes))
    missing = [c for c in run_classes if c not in mapping]
    bad = sorted({str(v) for v in mapping.values() if v is not None and v not in store_classes})
    problems = ([f"unknown run class(es) {unknown} (the run has {run_classes})"] if unknown else []) + \
               ([f"run class(es) {missing} not mapped (map each to a store class or null)"] if missing else []) + \
               ([f"target(s) {bad} are not store classes {store_classes}"] if bad else [])
    if problems:
        raise ClassMapError(f"{where}: " + "; ".join(problems))
    if all(v is None for v in mapping.values()):
        raise ClassMapError(f"{where}: no run class maps to a store class (run {run_classes}, store {store_classes})")
    return {c: mapping[c] for c in run_classes}


def shared_classes(mapping: dict[str, str | None], store_classes) -> list[str]:
    """The target classes, in the store's class order."""
    targets = {v for v in mapping.values() if v is not None}
    return [c for c in store_classes if c in targets]


def merge_probabilities(probs: np.ndarray, run_classes, mapping: dict[str, str | None], shared) -> np.ndarray:
    """(N, C_run) run probabilities -> (N, C_shared): summed per target, renormalised over the targets."""
    out = np.zeros((len(probs), len(shared)))
    for j, run_class in enumerate(run_classes):
        if mapping[run_class] is not None:
            out[:, shared.index(mapping[run_class])] += probs[:, j]
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.full_like(out, 1.0 / len(shared)), where=total > 0)


def clustered_intervals(y: np.ndarray, pred: np.ndarray, clusters: np.ndarray, num_classes: int, *,
                        draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict[str, list[float]]:
    """95% percentile intervals of UAR and WAR over ``draws`` resamples of whole clusters.

    y, pred: (N,) int class indices; clusters: (N,) subject ids. A class absent from a resample
    is left out of that resample's UAR (as in :func:`femo.training.metrics.uar`).
    """
    ids, cl = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    counts = np.zeros((len(ids), num_classes, num_classes))
    np.add.at(counts, (cl, y, pred), 1)
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(r, minlength=len(ids)) for r in rng.integers(0, len(ids), (draws, len(ids)))])
    conf = np.tensordot(weights, counts, axes=1)  # (draws, C, C)
    support = conf.sum(axis=2)
    recall = np.divide(np.diagonal(conf, axis1=1, axis2=2), support, out=np.full(support.shape, np.nan),
                       where=support > 0)
    uar = np.nanmean(recall, axis=1)
    war = np.trace(conf, axis1=1, axis2=2) / np.maximum(conf.sum(axis=(1, 2)), 1)
    return {"uar_ci": np.percentile(uar, [2.5, 97.5]).tolist(), "war_ci": np.percentile(war, [2.5, 97.5]).tolist()}


def check_out_folder(run: Path, out: Path) -> None:
    """Refuse an output folder that is the run folder or lies inside it (its metrics would be mixed)."""
    run_abs, out_abs = run.resolve(), out.resolve()
    if out_abs == run_abs or run_abs in out_abs.parents:
        raise RunError(f"{out}: lies inside the run folder {run}; choose an output folder outside it, so the run's "
                       "own metrics.json and predictions.csv stay as training wrote them")


def run_probabilities(folder: RunFolder, store: Path, index: pd.DataFrame, *, device: str = "cpu",
                      batch_size: int = 64) -> tuple[np.ndarray, list[int]]:
    """(N, C_run) softmax probabilities of ``index``'s clips of ``store``, averaged over the folds
    of a k-fold run; also the fold numbers used ([] for a single run)."""
    from torch.utils.data import DataLoader

    from femo.data.dataset import FeatureDataset
    from femo.training.evaluate import collect_logits

    models = folder.folds if folder.is_kfold else [folder]
    if not models[0].best_path.is_file():
        raise RunError(f"{folder.path}: no best.pt and no fold_<k>/best.pt; is this a `femo train` run folder?")
    total = np.zeros((len(index), len(models[0].classes)))
    for sub in models:
        cfg = sub.model_config()
        ds = FeatureDataset(store, index=index, config=sub.data_config(), embeddings=cfg.embeddings,
                            modalities=cfg.modalities)
        out = collect_logits(sub.load_model(device=device), DataLoader(ds, batch_size=batch_size), device=device)
        probs = torch.softmax(out["logits"], dim=1).numpy()  # (N, C_run), rows in ds.index order
        total[out["index"].numpy()] += probs
    folds = [int(m.path.name.split("_")[1]) for m in models] if folder.is_kfold else []
    return total / len(models), folds


def cross_evaluate(run: str | Path, *, store: str | Path, classes: str | Path | dict = "intersection",
                   out: str | Path, split: str | None = None, device: str = "cpu",
                   draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict[str, Any]:
    """Score ``run`` on every ok clip of ``store`` (only ``split == split`` rows when given) through
    the class map ``classes``; writes OUT/metrics.json and OUT/predictions.csv, returns the metrics."""
    from femo.data.store import ok_clips, read_index, read_meta

    run, store, out = Path(run), Path(store), Path(out)
    check_out_folder(run, out)
    folder = RunFolder(run)
    run_classes = list((folder.folds[0] if folder.is_kfold else folder).classes)
    store_classes = list(read_meta(store).classes)
    mapping = resolve_class_map(classes, run_classes, store_classes)
    shared = shared_classes(mapping, store_classes)
    index = ok_clips(read_index(store))
    if split is not None:
        if "split" not in index.columns:
            raise ValueError(f"{store}: the index has no 'split' column; drop --split")
        index = index[index["split"].astype(str) == split]
    keep = index["label"].astype(str).isin(shared)
    dropped_clips = index.loc[~keep, "label"].astype(str).value_counts().to_dict()
    index = index[keep].reset_index(drop=True)
    if index.empty:
        raise ValueError(f"{store}: no ok clip has a shared class {shared}")
    probs, folds = run_probabilities(folder, store, index, device=device)
    merged = merge_probabilities(probs, run_classes, mapping, shared)
    y = index["label"].astype(str).map(shared.index).to_numpy()
    pred = merged.argmax(axis=1)
    result = metrics(y, pred, merged, shared)
    subjects = index["subject"] if "subject" in index.columns else index["clip_id"]
    result.update(clustered_intervals(y, pred, subjects.to_numpy(), len(shared), draws=draws, seed=seed))
    result.update(_record(folder, store, mapping, shared, run_classes, store_classes, dropped_clips, folds, len(index)))
    out.mkdir(parents=True, exist_ok=True)
    _predictions(index, merged, probs, run_classes, mapping, shared).to_csv(out / "predictions.csv", index=False)
    write_json(out / "metrics.json", result)
    return result


def _record(folder, store, mapping, shared, run_classes, store_classes, dropped_clips, folds, n) -> dict[str, Any]:
    averaged = (f"mean of the {len(folds)} fold models' softmax probabilities per clip (folds {folds})" if folds
                else "the run's single best.pt")
    return {"classes": shared, "class_map": mapping, "run": str(folder.path), "store": str(store),
            "run_classes": run_classes, "store_classes": store_classes,
            "dropped_run_classes": [c for c, v in mapping.items() if v is None],
            "dropped_store_classes": [c for c in store_classes if c not in shared],
            "n_dropped_clips": {str(k): int(v) for k, v in dropped_clips.items()}, "n_test": n, "folds_averaged": folds,
            "protocol": (f"cross-corpus: every ok clip of {store} with a shared class; model = {averaged}; run "
                         "probabilities summed per shared class and renormalised over them; 95% intervals: "
                         f"bootstrap over subjects ({BOOTSTRAP_DRAWS} draws)")}


def _predictions(index, merged, probs, run_classes, mapping, shared) -> pd.DataFrame:
    sources = {t: "+".join(a for a in run_classes if mapping[a] == t) for t in shared}
    head = pd.DataFrame({"clip_id": index["clip_id"].astype(str), "label": index["label"].astype(str),
                         "predicted": [shared[i] for i in merged.argmax(axis=1)]})
    head = pd.concat([head, pd.DataFrame(merged, columns=[f"p_{c}" for c in shared])], axis=1)
    head["run_predicted"] = [run_classes[i] for i in probs.argmax(axis=1)]
    head["label_from"] = head["label"].map(sources)
    rest = index.drop(columns=[c for c in ("clip_id", "label") if c in index.columns])
    return pd.concat([head, rest.reset_index(drop=True)], axis=1)
