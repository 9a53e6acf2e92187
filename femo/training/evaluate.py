"""Evaluate a model on a dataset and write the run folder's ``metrics.json`` / ``predictions.csv``.

:func:`predict` gives one row per clip (probabilities + the index's columns); :func:`evaluate_model`
writes them with their metrics (:mod:`femo.training.metrics`); :func:`evaluate_run` re-evaluates a
finished run folder (one run or ``fold_<k>`` sub-runs) through :class:`femo.training.runs.RunFolder`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from femo.training.metrics import metrics_from_predictions, write_json
from femo.training.runs import RunFolder, check_classes


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
    from femo.data.speaker_norm import PROTOCOL_NOTE

    note = f"; {PROTOCOL_NOTE}" if any(PROTOCOL_NOTE in str(per_fold[f].get("protocol", "")) for f in folds) else ""
    summary.update(classes=list(classes), protocol=f"{len(folds)}-fold; scores are the mean of per-fold scores" + note,
                   n_test=int(sum(per_fold[f].get("n_test", 0) for f in folds)))
    return summary


def _protocol(config: dict) -> str:
    split = "the split == test rows" if config["fold"] is None else f"fold {config['fold']}"
    from femo.data.speaker_norm import protocol_note

    val = (f"{config['train']['val_fraction']:.0%} of the training subjects (subject-disjoint)"
           if config["fold"] is not None else
           f"the split == val rows when the store has them, else {config['train']['val_fraction']:.0%} of the "
           "training subjects (subject-disjoint)")
    return f"test = {split}; best epoch by validation UAR on {val}" + protocol_note(config.get("data", {}))


def evaluate_best(run: str | Path, test_ds, *, info: dict[str, Any], device: str | torch.device = "cpu",
                  frame_encoder: torch.nn.Module | None = None, write: bool = True) -> dict[str, Any]:
    """Evaluate RUN/best.pt on ``test_ds``; write metrics.json / predictions.csv when ``write``.

    info: n_train, n_val, n_excluded and the epoch ``history`` (list of rows) of the run.
    Returns the metrics with classes, protocol, fold, best_epoch, val_uar and the split sizes.
    """
    folder = RunFolder(run)
    ckpt = folder.checkpoint()
    config = folder.config
    best_row = next(r for r in info["history"] if r["epoch"] == ckpt["epoch"])
    extra = {"classes": list(ckpt["classes"]), "protocol": _protocol(config), "fold": config["fold"],
             "best_epoch": int(ckpt["epoch"]), "val_uar": best_row["val_uar"], "n_train": info["n_train"],
             "n_val": info["n_val"], "n_test": len(test_ds), "n_excluded": info["n_excluded"]}
    if not write:
        return extra
    net = folder.load_model(device=device, frame_encoder=frame_encoder)
    return evaluate_model(net, test_ds, out=folder.path, extra=extra, device=device)


def _evaluate_single(folder: RunFolder, *, store, device) -> dict[str, Any]:
    """Re-evaluate one run's best.pt on its test split of ``store`` (default: the run's store)."""
    from femo.data.dataset import FeatureDataset

    store = folder.store(store)
    split = folder.split(store)
    embeddings = folder.model_config().embeddings
    test_ds = FeatureDataset(store, index=split.test, config=folder.data_config(), embeddings=embeddings)
    check_classes(folder.classes, test_ds.classes, checkpoint=folder.best_path, store=store)
    info = dict(n_train=len(split.train), n_val=len(split.val), n_excluded=split.n_excluded,
                history=folder.history().to_dict("records"))
    return evaluate_best(folder, test_ds, info=info, device=torch.device(device))


def evaluate_run(run: str | Path, *, store: str | Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """Re-evaluate a run folder (one run or ``fold_<k>`` sub-runs) with its best.pt on its test split.

    store: the feature store to evaluate on (default: the one recorded in RUN/config.json); its
    classes must equal the checkpoint's. Rewrites metrics.json and predictions.csv.
    """
    folder = RunFolder(run)
    if folder.best_path.is_file():
        return _evaluate_single(folder, store=store, device=device)
    if not folder.folds:
        raise FileNotFoundError(f"{folder.path}: no best.pt and no fold_<k>/best.pt; "
                                "is this a `femo train` run folder?")
    per_fold = {int(f.path.name.split("_")[1]): _evaluate_single(f, store=store, device=device) for f in folder.folds}
    classes = next(iter(per_fold.values()))["classes"]
    pd.concat([f.predictions() for f in folder.folds]).to_csv(folder.path / "predictions.csv", index=False)
    summary = aggregate_folds(per_fold, classes)
    write_json(folder.path / "metrics.json", summary)
    return summary
