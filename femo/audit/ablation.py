"""Modality ablation on a trained fusion model: which cue helps, and by how much.

Two modes:

* **mask at evaluation** (:func:`evaluate_subsets`): one trained model, every non-empty subset
  of ``face / landmarks / audio`` kept and the others switched off through the model's own
  missing-modality path (``<modality>_mask`` set to False; never a zero tensor the model never
  saw). One pass over the data per subset.
* **retrain per subset** (:func:`retrain_subsets`, opt-in and costly): one model trained per
  subset for the classical unimodal-vs-multimodal table.

Contributions:

* :func:`shapley_uar`: exact Shapley values of each modality for UAR over the 2^3 subsets.
  The empty subset's value is chance level, ``1 / K`` with K the number of classes present among
  the evaluated clips -- the UAR of the prior (majority-class) prediction, which recalls one
  class fully and the others not at all (UAR averages over present classes only).
* :func:`clip_shapley`: per-clip Shapley values with captum ``ShapleyValues`` over the tuple of
  per-modality *keep* masks, one feature-mask group per modality, so a removed modality goes
  through the same missing path. Value = softmax probability of the target class; the empty
  coalition is the model with every modality missing (its learned prior).

Subsets are named by joining modality names with ``+`` in :data:`~femo.config.MODALITIES` order
(``face+audio``); the full subset is also written as ``fused``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from femo.audit.stats import uar, war
from femo.config import MODALITIES

FUSED = "fused"


def subset_name(subset: Iterable[str], modalities: Sequence[str] = MODALITIES) -> str:
    """Canonical name of a modality subset: members in ``modalities`` order joined by ``+``."""
    members = set(subset)
    unknown = sorted(members - set(modalities))
    if unknown:
        raise ValueError(f"unknown modality {unknown}; choose from {list(modalities)}")
    return "+".join(m for m in modalities if m in members)


def all_subsets(modalities: Sequence[str] = MODALITIES) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities`` (2^M - 1), smallest first, in a stable order."""
    return [c for k in range(1, len(modalities) + 1) for c in itertools.combinations(modalities, k)]


def mask_batch(batch: Mapping[str, torch.Tensor], keep: Iterable[str],
               modalities: Sequence[str] = MODALITIES) -> dict[str, torch.Tensor]:
    """A shallow copy of ``batch`` whose ``<m>_mask`` is all False for every modality not in ``keep``.

    Masks keep their shapes: ``face_mask`` / ``landmarks_mask`` (B, T) bool, ``audio_mask`` (B,) bool.
    """
    keep = set(keep)
    out = dict(batch)
    for m in modalities:
        key = f"{m}_mask"
        if m not in keep and key in out:
            out[key] = torch.zeros_like(out[key], dtype=torch.bool)
    return out


@torch.no_grad()
def evaluate_subsets(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], *,
                     modalities: Sequence[str] = MODALITIES,
                     classes: Sequence[str] | None = None,
                     device: str | torch.device = "cpu") -> pd.DataFrame:
    """Predictions of ``model`` for every non-empty modality subset (the others masked).

    batches: a DataLoader or any iterable of sample dicts (see docs/ARCHITECTURE.md); ``label``
    (B,) int64 is required, ``index`` (B,) int64 is used when present (else a running count).
    Returns a long frame with one row per clip and subset: ``subset`` (name, the full subset
    named :data:`FUSED`), ``index``, ``label``, ``predicted`` (class indices), ``p_<class>``
    softmax probabilities and ``present_<modality>`` (bool: the clip's own mask has at least one
    True element, i.e. the modality exists in that clip before any masking). Each batch is passed
    once per subset (2^M - 1 forward passes per batch).
    """
    model.eval()
    subsets = all_subsets(modalities)
    frames: list[pd.DataFrame] = []
    offset = 0
    for batch in batches:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        labels = batch["label"].cpu().numpy()
        index = batch["index"].cpu().numpy() if "index" in batch else offset + np.arange(len(labels))
        offset += len(labels)
        present = {f"present_{m}": _present(batch, m, len(labels)) for m in modalities}
        for subset in subsets:
            logits = model(mask_batch(batch, subset, modalities))["logits"]  # (B, C)
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            names = list(classes) if classes is not None else [str(c) for c in range(probs.shape[1])]
            if len(names) != probs.shape[1]:
                raise ValueError(f"evaluate_subsets: {len(names)} class names for {probs.shape[1]} logits")
            frame = pd.DataFrame(probs, columns=[f"p_{c}" for c in names])
            full = len(subset) == len(modalities)
            frame.insert(0, "predicted", probs.argmax(axis=1))
            frame.insert(0, "label", labels)
            frame.insert(0, "index", index)
            frame.insert(0, "subset", FUSED if full else subset_name(subset, modalities))
            frames.append(frame.assign(**present))
    if not frames:
        raise ValueError("evaluate_subsets: no batches")
    return pd.concat(frames, ignore_index=True)


def _present(batch: Mapping[str, torch.Tensor], modality: str, n: int) -> np.ndarray:
    """(B,) bool: the modality exists in the clip (any True in its mask; True without a mask key)."""
    mask = batch.get(f"{modality}_mask")
    if mask is None:
        return np.ones(n, bool)
    return mask.reshape(n, -1).any(dim=1).cpu().numpy()


def wide_predictions(long: pd.DataFrame, meta: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per clip: ``index``, ``label``, ``pred_<subset>`` per subset, ``present_<modality>``
    (when ``long`` has them), then ``meta`` columns.

    meta: the dataset's index table (row ``i`` describes sample ``index == i``), e.g. with
    ``clip_id``, ``subject``, condition flags and manifest columns; joined on ``index``.
    """
    wide = long.pivot(index="index", columns="subset", values="predicted")
    wide.columns = [f"pred_{c}" for c in wide.columns]
    labels = long.drop_duplicates("index").set_index("index")["label"]
    wide.insert(0, "label", labels.loc[wide.index].to_numpy())
    present = [c for c in long.columns if c.startswith("present_")]
    if present:
        flags = long.drop_duplicates("index").set_index("index")[present]
        wide = wide.join(flags.loc[wide.index])
    wide = wide.reset_index()
    if meta is not None:
        extra = meta.drop(columns=[c for c in meta.columns if c in ("label",)], errors="ignore")
        wide = wide.join(extra.reset_index(drop=True), on="index", rsuffix="_meta")
    return wide


def subset_tables(long: pd.DataFrame, *, meta: pd.DataFrame | None = None,
                  classes: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """{subset: predictions table} of the long frame of :func:`evaluate_subsets`.

    The columns follow RUN/predictions.csv: ``clip_id`` (when ``meta`` has it), ``label`` and
    ``predicted`` as class names when ``classes`` is given, ``p_<class>``, then the ``meta``
    columns (manifest metadata such as ``subject``), joined on ``index``.
    """
    tables = {}
    for name, frame in long.groupby("subset", sort=False):
        frame = frame.drop(columns=["subset", *[c for c in frame.columns if c.startswith("present_")]])
        frame = frame.reset_index(drop=True)
        if classes is not None:
            frame["label"] = [classes[i] for i in frame["label"]]
            frame["predicted"] = [classes[i] for i in frame["predicted"]]
        if meta is not None:
            extra = meta.drop(columns=[c for c in ("label", "predicted") if c in meta.columns])
            frame = frame.join(extra.reset_index(drop=True), on="index", rsuffix="_meta")
            if "clip_id" in frame.columns:
                frame = frame[["clip_id"] + [c for c in frame.columns if c != "clip_id"]]
        tables[str(name)] = frame
    return tables


def write_subset_predictions(long: pd.DataFrame, out_dir: str | Path, *,
                             meta: pd.DataFrame | None = None,
                             classes: Sequence[str] | None = None) -> list[Path]:
    """Write ``out_dir/predictions_<subset>.csv`` for every subset (``predictions_fused.csv`` for
    all), the tables of :func:`subset_tables`. Returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in subset_tables(long, meta=meta, classes=classes).items():
        path = out / f"predictions_{name}.csv"
        tmp = path.with_name(f".{path.name}.tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)  # a reader never sees a half-written file
        written.append(path)
    return written


def subset_scores(long: pd.DataFrame, n_classes: int) -> pd.DataFrame:
    """UAR and WAR per subset (point estimates): columns ``subset, n_modalities, uar, war``."""
    classes = list(range(n_classes))
    rows = []
    for name, frame in long.groupby("subset", sort=False):
        size = len(name.split("+")) if name != FUSED else len(MODALITIES)
        rows.append({"subset": name, "n_modalities": size,
                     "uar": uar(frame["label"], frame["predicted"], classes),
                     "war": war(frame["label"], frame["predicted"])})
    return pd.DataFrame(rows)


def chance_uar(labels: Iterable) -> float:
    """UAR of the prior (majority-class) prediction: 1 / number of distinct labels (NaN if none)."""
    k = len(set(np.asarray(labels).tolist()))
    return 1.0 / k if k else float("nan")


def shapley_values(value: Callable[[frozenset[str]], float],
                   modalities: Sequence[str] = MODALITIES) -> dict[str, float]:
    """Exact Shapley value of each modality for the set function ``value(coalition) -> float``.

    phi_i = sum over S not containing i of |S|! (M-|S|-1)! / M! * (v(S + i) - v(S)). The values
    sum to v(all) - v(empty) (efficiency).
    """
    m = len(modalities)
    cache: dict[frozenset[str], float] = {}

    def v(s: frozenset[str]) -> float:
        if s not in cache:
            cache[s] = float(value(s))
        return cache[s]

    phi = {}
    for i in modalities:
        others = [x for x in modalities if x != i]
        total = 0.0
        for k in range(m):
            weight = math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m)
            for s in itertools.combinations(others, k):
                total += weight * (v(frozenset(s) | {i}) - v(frozenset(s)))
        phi[i] = total
    return phi


def absent_modalities(frame: pd.DataFrame, modalities: Sequence[str] = MODALITIES) -> frozenset[str]:
    """Modalities missing from every clip of a wide frame (``present_<m>`` all False).

    A frame without ``present_<m>`` columns (made before they existed) counts every modality as
    present somewhere; an empty frame has no absent modality.
    """
    out = set()
    for m in modalities:
        col = f"present_{m}"
        if len(frame) and col in frame.columns and not frame[col].astype(bool).any():
            out.add(m)
    return frozenset(out)


def subset_value_table(frame: pd.DataFrame, n_classes: int, *,
                       modalities: Sequence[str] = MODALITIES) -> dict[frozenset[str], float]:
    """UAR of every subset from a wide frame (``label``, ``pred_<subset>``); empty set = chance.

    A modality absent from every clip (:func:`absent_modalities`) cannot add anything, so a
    coalition's value is that of its present members: v(S) = v(S minus absent). Its Shapley value
    is then exactly 0 (a null player), whatever the model does with an all-False mask.
    """
    classes = list(range(n_classes))
    absent = absent_modalities(frame, modalities)
    measured = {frozenset(): chance_uar(frame["label"])}
    for subset in all_subsets(modalities):
        name = FUSED if len(subset) == len(modalities) else subset_name(subset, modalities)
        measured[frozenset(subset)] = uar(frame["label"], frame[f"pred_{name}"], classes)
    return {s: measured[s - absent] for s in measured}


def shapley_uar(frame: pd.DataFrame, n_classes: int, *,
                modalities: Sequence[str] = MODALITIES) -> pd.DataFrame:
    """Exact Shapley contribution of each modality to UAR on the clips of a wide frame.

    Returns columns ``modality, shapley`` (UAR, summing to UAR(fused) - chance) and ``share``
    (shapley / sum; NaN when the sum is not positive: no gain over chance to share out).
    """
    table = subset_value_table(frame, n_classes, modalities=modalities)
    phi = shapley_values(table.__getitem__, modalities)
    total = sum(phi.values())
    return pd.DataFrame({"modality": list(phi), "shapley": list(phi.values()),
                         "share": [p / total if total > 0 else float("nan") for p in phi.values()]})


def _keep_inputs(batch: Mapping[str, torch.Tensor], modalities: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """One float keep-tensor per modality (1 = present), shaped like its mask: (B, T) or (B,)."""
    return tuple(torch.ones_like(batch[f"{m}_mask"], dtype=torch.float32) for m in modalities)


def clip_shapley(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], *,
                 modalities: Sequence[str] = MODALITIES, target: str = "label",
                 device: str | torch.device = "cpu") -> pd.DataFrame:
    """Per-clip Shapley value of each modality with captum ``ShapleyValues`` (exact, M! orders).

    The attributed inputs are per-modality keep tensors (1 = present, baseline 0 = missing),
    AND-ed with the batch's own masks before the forward, each modality one feature group.
    target: ``"label"`` or ``"predicted"`` (the fused prediction); the value is that class's
    softmax probability. Returns per clip ``index, label, target``, ``p_all`` / ``p_none`` (the
    target probability with every / no modality) and ``phi_<modality>`` (probability points; per
    clip they sum to p_all - p_none).
    """
    from captum.attr import ShapleyValues

    if target not in ("label", "predicted"):
        raise ValueError(f"clip_shapley: target must be 'label' or 'predicted', got {target!r}")
    model.eval()
    rows = []
    offset = 0
    for batch in batches:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

        def forward(*keeps: torch.Tensor, batch=batch) -> torch.Tensor:
            masked = dict(batch)
            for m, keep in zip(modalities, keeps):
                masked[f"{m}_mask"] = batch[f"{m}_mask"] & (keep > 0.5)
            return torch.softmax(model(masked)["logits"].float(), dim=-1)

        keeps = _keep_inputs(batch, modalities)
        masks = tuple(torch.full_like(k, g, dtype=torch.long).contiguous() for g, k in enumerate(keeps))
        zeros = tuple(torch.zeros_like(k) for k in keeps)
        with torch.no_grad():
            p_all = forward(*keeps)
            tgt = batch["label"] if target == "label" else p_all.argmax(dim=-1)
            attr = ShapleyValues(forward).attribute(keeps, baselines=zeros, target=tgt, feature_mask=masks)
            p_none = forward(*zeros)
        n = len(tgt)
        index = batch["index"].cpu().numpy() if "index" in batch else offset + np.arange(n)
        offset += n
        # every element of a group carries the group's value: read the first one
        row = {"index": index, "label": batch["label"].cpu().numpy(), "target": tgt.cpu().numpy(),
               "p_all": p_all.gather(1, tgt[:, None])[:, 0].cpu().numpy(),
               "p_none": p_none.gather(1, tgt[:, None])[:, 0].cpu().numpy()}
        for m, a in zip(modalities, attr):
            row[f"phi_{m}"] = a.reshape(n, -1)[:, 0].cpu().numpy()
        rows.append(pd.DataFrame(row))
    return pd.concat(rows, ignore_index=True)


def clip_shares(clip_phi: pd.DataFrame, modalities: Sequence[str] = MODALITIES) -> pd.Series:
    """Each modality's share of per-clip contribution: mean |phi_m| / sum over m of mean |phi_m|."""
    mean_abs = pd.Series({m: clip_phi[f"phi_{m}"].abs().mean() for m in modalities})
    total = mean_abs.sum()
    return mean_abs / total if total else mean_abs * float("nan")


def retrain_subsets(store: str | Path, out_dir: str | Path, *, model_config: object,
                    subsets: Sequence[Sequence[str]] | None = None,
                    train_fn: Callable[..., object] | None = None,
                    **train_kwargs: object) -> pd.DataFrame:
    """Train one model per modality subset (opt-in: costs one full training each).

    model_config: a frozen dataclass with a ``modalities`` field (``femo.config.ModelConfig``);
    each run uses ``dataclasses.replace(model_config, modalities=subset)``. train_fn: the training
    entry point, by default ``femo.training.loop.train``; it is called as
    ``train_fn(store, out=RUN, model=config, **train_kwargs)`` (e.g. ``train=TrainConfig(...)``,
    ``fold=1``) and must write ``RUN/metrics.json``
    with ``uar`` and ``war``. Runs go to ``out_dir/retrain_<subset>/``. Returns columns
    ``subset, uar, war, run``.
    """
    if train_fn is None:
        from femo.training.loop import train as train_fn  # imported here: training is heavy and optional
    if not any(f.name == "modalities" for f in dataclasses.fields(model_config)):
        raise ValueError(f"retrain_subsets: {type(model_config).__name__} has no 'modalities' field")
    rows = []
    for subset in subsets or all_subsets():
        name = subset_name(subset)
        run = Path(out_dir) / f"retrain_{name}"
        train_fn(store, out=run, model=dataclasses.replace(model_config, modalities=tuple(subset)), **train_kwargs)
        metrics = json.loads((run / "metrics.json").read_text())
        rows.append({"subset": name, "uar": metrics["uar"], "war": metrics["war"], "run": str(run)})
    return pd.DataFrame(rows)


def retrain_like(run: str | Path, store: str | Path, out_dir: str | Path, *, epochs: int, seed: int = 0,
                 **kwargs: object) -> pd.DataFrame:
    """:func:`retrain_subsets` with a trained ``run``'s model config, fold and data settings (for a
    k-fold run, its first fold's), ``epochs`` epochs each; kwargs go to :func:`retrain_subsets`
    (``subsets``, ``train_fn``, ...)."""
    from femo.config import TrainConfig
    from femo.training.runs import RunFolder, model_config_from

    folder = RunFolder(run)
    folder = folder.folds[0] if folder.is_kfold else folder
    return retrain_subsets(store, out_dir, model_config=model_config_from(folder.checkpoint()),
                           train=TrainConfig(epochs=epochs, seed=seed), fold=folder.config.get("fold"),
                           data=folder.data_config(), progress=False, **kwargs)
