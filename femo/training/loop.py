"""Training loop and k-fold protocol for :class:`femo.models.net.FemoNet` on a feature store.

``train(store, out=RUN, model=ModelConfig(...), train=TrainConfig(...), fold=K)`` trains on the
store's clips outside the test split, selects the best epoch by UAR on a validation split carved
from the *training subjects* (never the test fold), and writes the run folder of
:class:`femo.training.runs.RunFolder` (config.json, checkpoint.pt, best.pt, history.csv, metrics.json,
predictions.csv). ``train_folds`` runs every fold into RUN/fold_<k> and writes the mean of the
per-fold scores to RUN/metrics.json.

Optimisation: AdamW, linear warm-up then cosine decay (per step), class-balanced loss weights or
sampler, ``ce`` or ``kl`` (to the vote distribution) loss with optional label smoothing, plus
``aux_weight`` x the per-modality heads' loss. Mixed precision only on CUDA. Determinism: the seed
fixes model init, each epoch's shuffling (a generator reseeded per epoch) and torch's global RNG,
whose state is checkpointed, so ``resume=True`` after a kill reproduces the uninterrupted run
(on CPU with ``num_workers=0``; CUDA kernels may add nondeterminism).

Several GPUs: launch with ``torchrun --nproc_per_node=N -m femo train STORE --out RUN --device cuda``.
When ``LOCAL_RANK`` is set the model is wrapped in ``DistributedDataParallel`` (NCCL on CUDA,
gloo on CPU), the training set is sharded with ``DistributedSampler`` (class-balanced sampling
falls back to loss weights), every rank validates on the full validation split and only rank 0
writes files. The shuffled order is one permutation per (seed, epoch) dealt round-robin to the
ranks, so N ranks at ``batch_size`` B take the batches one process takes at N x B: with
``balance="none"``, no dropout and no augmentation the runs agree to float rounding (the
``weights`` balance normalises the loss per rank, so it agrees only approximately).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Collection

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm.auto import tqdm

import femo
from femo.config import DataConfig, ModelConfig, TrainConfig, to_dict
from femo.data.dataset import FeatureDataset
from femo.data.store import STATUS_OK, read_index, read_meta
from femo.models.net import FemoNet
from femo.training.evaluate import aggregate_folds, collect_logits, evaluate_best
from femo.training.metrics import metrics, write_json
from femo.training.defaults import default_fold, untrained_frozen
from femo.training.runs import (CheckpointError, RunFolder, check_classes, claim_run_folder, load_checkpoint,
                                save_checkpoint, seen_modalities, split_index)

LOSSES = ("ce", "kl")
BALANCES = ("weights", "sampler", "none")


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (C' * count_c) over the C' classes present; 0 for absent ones."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    present = counts > 0
    w = np.zeros(num_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(w, dtype=torch.float32)


def loss_fn(logits: torch.Tensor, batch: dict, cfg: TrainConfig, weights: torch.Tensor | None) -> torch.Tensor:
    """Per-batch loss of ``logits`` (B, C): weighted CE on ``label`` or KL to the smoothed ``votes``."""
    if cfg.loss == "ce":
        return F.cross_entropy(logits.float(), batch["label"], weight=weights, label_smoothing=cfg.label_smoothing)
    target = batch["votes"].float()
    target = target * (1 - cfg.label_smoothing) + cfg.label_smoothing / target.shape[1]
    per = F.kl_div(F.log_softmax(logits.float(), dim=1), target, reduction="none").sum(1)  # (B,)
    w = torch.ones_like(per) if weights is None else weights[batch["label"]]
    return (per * w).sum() / w.sum().clamp(min=1e-8)


def _total_loss(out: dict, batch: dict, cfg: TrainConfig, weights) -> torch.Tensor:
    loss = loss_fn(out["logits"], batch, cfg, weights)
    if cfg.aux_weight > 0:
        present = out["present"]  # (B, M)
        for i, logits in enumerate(out["modality_logits"].values()):
            if present[:, i].any():
                sub = {k: batch[k][present[:, i]] for k in ("label", "votes")}
                loss = loss + cfg.aux_weight * loss_fn(logits[present[:, i]], sub, cfg, weights)
    return loss


def adamw(params: list[torch.nn.Parameter], **kwargs) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where the parameters' device has one (CPU, CUDA): on the CPU
    the default per-tensor loop costs about as much as the heads' forward pass for small models
    (``benchmarks/train.py --profile``); the fused update is the same algorithm, equal up to float
    rounding."""
    devices = {p.device.type for p in params}
    fused = len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)


def _schedule(optimizer, *, total: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total`` steps."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _device(cfg: TrainConfig) -> torch.device:
    cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    if "LOCAL_RANK" in os.environ and cuda and torch.cuda.is_available():  # one GPU per rank
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={cfg.device!r} requested but CUDA is not available")
    return torch.device(cfg.device)


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _train_loader(ds: FeatureDataset, cfg: TrainConfig, gen: torch.Generator, distributed: bool):
    if distributed or cfg.balance != "sampler":
        from torch.utils.data.distributed import DistributedSampler

        # one permutation per (seed, epoch), dealt round-robin to the ranks: N ranks at batch B take the
        # batches one process takes at batch N * B (see tests/test_ddp.py)
        world, rank = ((torch.distributed.get_world_size(), torch.distributed.get_rank()) if distributed else (1, 0))
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed * 100_003)
        return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                          drop_last=len(sampler) > cfg.batch_size)
    if cfg.balance == "sampler":
        per_class = np.bincount(ds.labels, minlength=len(ds.classes)).astype(float)
        sampler = WeightedRandomSampler(torch.tensor(1.0 / per_class[ds.labels]), len(ds), generator=gen)
        return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                          generator=gen, drop_last=len(ds) > cfg.batch_size)
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=cfg.num_workers,
                      drop_last=len(ds) > cfg.batch_size)


class _Trainer:
    """State of one training run (model, optimiser, schedule, loaders, history)."""

    def __init__(self, net: torch.nn.Module, train_ds: FeatureDataset, val_ds: FeatureDataset,
                 cfg: TrainConfig, device: torch.device) -> None:
        self.cfg, self.device, self.net = cfg, device, net
        self.distributed = "LOCAL_RANK" in os.environ
        self.model = net
        if self.distributed:
            self.model = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
        self.gen = torch.Generator()
        self.loader = _train_loader(train_ds, cfg, self.gen, self.distributed)
        self.val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
        self.weights = (class_weights(train_ds.labels, len(train_ds.classes)).to(device)
                        if cfg.balance == "weights" or (self.distributed and cfg.balance == "sampler") else None)
        params = [p for p in net.parameters() if p.requires_grad]
        self.optimizer = adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = len(self.loader)
        self.scheduler = _schedule(self.optimizer, total=max(1, steps * cfg.epochs),
                                   warmup=max(1, round(steps * cfg.warmup_epochs)))
        self.amp = device.type == "cuda" and cfg.amp
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)

    def epoch(self, epoch: int, progress: bool) -> float:
        """One pass over the training set; returns the mean training loss."""
        self.gen.manual_seed(self.cfg.seed * 100_003 + epoch)
        if hasattr(self.loader.sampler, "set_epoch"):
            self.loader.sampler.set_epoch(epoch)
        self.model.train()
        total, n = 0.0, 0
        for batch in tqdm(self.loader, desc=f"epoch {epoch + 1}", leave=False, disable=not progress or not _is_main()):
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                loss = _total_loss(self.model(batch), batch, self.cfg, self.weights)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total, n = total + float(loss.detach()) * len(batch["label"]), n + len(batch["label"])
        return total / max(n, 1)

    def validate(self, classes) -> dict[str, float]:
        """Validation loss (unweighted, main head), UAR and WAR."""
        out = collect_logits(self.net, self.val_loader, device=self.device)
        loss = float(loss_fn(out["logits"], {"label": out["label"], "votes": out["votes"]}, self.cfg, None))
        probs = torch.softmax(out["logits"], 1).numpy()
        m = metrics(out["label"].numpy(), probs.argmax(1), probs, classes)
        return {"val_loss": loss, "val_uar": m["uar"], "val_war": m["war"]}

    def state(self, epoch: int, history: list, best: float, extra: dict) -> dict:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": epoch, "history": history,
                "best_uar": best, "rng": torch.get_rng_state(), **extra}

    def restore(self, ckpt: dict) -> tuple[int, list, float]:
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        return int(ckpt["epoch"]), list(ckpt["history"]), float(ckpt["best_uar"])


def _datasets(store: Path, *, fold, data: DataConfig, model: ModelConfig, cfg: TrainConfig, exclude=()):
    split = split_index(store, fold=fold, val_fraction=cfg.val_fraction, seed=cfg.seed)
    # ``exclude`` (e.g. suspected label errors) leaves the training split only: validation and test keep every clip
    left_out = split.train["clip_id"].astype(str).isin(set(map(str, exclude)))
    make = lambda idx, aug: FeatureDataset(store, index=idx, config=data, embeddings=model.embeddings,
                                           augment=aug, cache=cfg.cache, modalities=model.modalities)
    return (make(split.train[~left_out].reset_index(drop=True), cfg.augment), make(split.val, False),
            make(split.test, False), split.n_excluded, sorted(split.train.loc[left_out, "clip_id"].astype(str)))


def data_config_for(store: str | Path) -> DataConfig:
    """A :class:`DataConfig` matching the store's frames per clip, face size and classes."""
    meta = read_meta(store)
    return DataConfig(num_frames=meta.num_frames, face_size=meta.face_size, sample_rate=meta.sample_rate,
                      classes=tuple(meta.classes))


def _check_options(model: ModelConfig, cfg: TrainConfig) -> None:
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; choose one of {list(LOSSES)}")
    if cfg.balance not in BALANCES:
        raise ValueError(f"unknown balance {cfg.balance!r}; choose one of {list(BALANCES)}")
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.fold_workers < 1:
        raise ValueError(f"fold_workers must be >= 1, got {cfg.fold_workers}")


def _log(msg: str) -> None:
    if _is_main():
        print(msg, file=sys.stderr)


def extraction_settings(store: str | Path) -> dict[str, Any]:
    """The store's extraction settings (:data:`femo.training.runs.EXTRACTION_KEYS`), recorded in
    RUN/config.json so that inference reproduces them without the store."""
    from femo.features.clip import ExtractConfig

    meta = read_meta(store)
    default = ExtractConfig()
    recorded = meta.extra.get("extraction", {})
    return {"num_frames": meta.num_frames, "face_size": meta.face_size,
            **{k: recorded.get(k, getattr(default, k)) for k in ("pose_stride", "pitch", "max_side")}}


def _run_config(store: Path, model: ModelConfig, cfg: TrainConfig, data: DataConfig, classes, fold) -> dict:
    return {"model": to_dict(model), "train": to_dict(cfg), "data": to_dict(data), "classes": list(classes),
            "store": str(store), "fold": fold, "extraction": extraction_settings(store),
            "versions": {"femo": femo.__version__, "torch": str(torch.__version__)}}


def _start(run: Path, trainer: _Trainer, config: dict, classes, resume: bool) -> tuple[int, list, float]:
    """Fresh start, or the state of RUN/checkpoint.pt when resuming (checked against config/classes)."""
    path = RunFolder(run).resume_path
    if not resume or not path.is_file():
        if resume:
            _log(f"{path}: no checkpoint to resume from; starting from epoch 1")
        return 0, [], -1.0
    ckpt = load_checkpoint(path)
    check_classes(ckpt["classes"], classes, checkpoint=path, store=Path(config["store"]))
    for key in ("model", "train"):
        if ckpt["config"][key] != config[key]:
            raise CheckpointError(f"{path}: saved {key} options {ckpt['config'][key]} differ from the "
                                  f"requested {config[key]}; use a new --out folder to change them")
    return trainer.restore(ckpt)


def train(store: str | Path, *, out: str | Path, model: ModelConfig = ModelConfig(),
          train: TrainConfig = TrainConfig(), fold: int | None = None, data: DataConfig | None = None,
          resume: bool = False, progress: bool = True, frame_encoder: torch.nn.Module | None = None,
          exclude: Collection[str] = (), overwrite: bool = False) -> dict[str, Any]:
    """Train one model on ``store`` (test = ``fold`` or the ``split == test`` rows); see module docstring.

    out: the run folder; one holding a run's weights is refused (:class:`femo.training.runs.RunExistsError`)
    unless ``resume`` or ``overwrite`` (which removes the old run's files first).
    fold: None = the ``split == test`` rows, or the first fold when the store has only a ``fold`` column.
    data: input sizes (default: the store's frames per clip and face size).
    resume: continue from ``out/checkpoint.pt`` (same options required).
    frame_encoder: an already-built per-frame CNN to use instead of ``model.frame_encoder``.
    exclude: clip ids left out of the training split (``--drop-suspects``); recorded in
    config.json as ``dropped_from_training`` (those present in the training split).
    Returns the test metrics (also in ``out/metrics.json``), with n_train/n_val/n_test/n_excluded.
    """
    cfg, store, run = train, Path(store).resolve(), Path(out)
    _check_options(model, cfg)
    claim_run_folder(run, resume=resume, overwrite=overwrite)
    fold, note = default_fold(read_index(store), fold)
    if note:
        _log(f"{store}: {note}")
    if frame_encoder is None and untrained_frozen(model):
        _log(f"{store}: the face path is a frozen {model.frame_encoder} with random weights (no frame_weights, "
             "no embeddings): its features carry no expression information")
    data = data or data_config_for(store)
    train_ds, val_ds, test_ds, n_excluded, dropped = _datasets(store, fold=fold, data=data, model=model, cfg=cfg,
                                                               exclude=exclude)
    if n_excluded:
        _log(f"{store}: {n_excluded} clip(s) excluded (extraction failed); training on the rest")
    if cfg.loss == "kl" and not train_ds.has_votes:
        _log(f"{store}: no vote_<class> columns; the kl loss reduces to cross-entropy on the labels")
    if model.embeddings and not model.embedding_dim:
        model = replace(model, embedding_dim=train_ds.embedding_dim())
    if model.audio_input != "logmel" and not model.functionals_dim:
        model = replace(model, functionals_dim=train_ds.functionals_dim or None)
    classes = train_ds.classes
    config = _run_config(store, model, cfg, data, classes, fold)
    config["seen_modalities"] = seen_modalities(train_ds.index)
    unseen = [m for m in model.modalities if m not in config["seen_modalities"]]
    if unseen:
        _log(f"{store}: no training clip has {', '.join(unseen)}; the run masks it at inference")
    if exclude:
        _log(f"{store}: {len(dropped)} clip(s) left out of the training split of fold {fold} (--drop-suspects)")
        config["dropped_from_training"] = dropped
    device = _device(cfg)
    if "LOCAL_RANK" in os.environ and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(cfg.seed)
    net = FemoNet(model, len(classes), frame_encoder=frame_encoder).to(device)
    trainer = _Trainer(net, train_ds, val_ds, cfg, device)
    run.mkdir(parents=True, exist_ok=True)
    start, history, best = _start(run, trainer, config, classes, resume)
    if _is_main():
        write_json(run / "config.json", config)
    extra = {"config": config, "classes": list(classes)}
    bar = tqdm(range(start, cfg.epochs), desc="train", disable=not progress or not _is_main(), initial=start,
               total=cfg.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        row = {"epoch": epoch + 1, "train_loss": trainer.epoch(epoch, progress), **trainer.validate(classes),
               "lr": trainer.optimizer.param_groups[0]["lr"]}
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_uar=f"{row['val_uar']:.3f}")
        if row["val_uar"] > best:
            best = row["val_uar"]
            if _is_main():
                save_checkpoint(run / "best.pt", {"model": net.state_dict(), "epoch": epoch + 1, **extra})
        if _is_main():
            pd.DataFrame(history).to_csv(run / "history.csv", index=False)
            save_checkpoint(run / "checkpoint.pt", trainer.state(epoch + 1, history, best, extra))
    info = dict(n_train=len(train_ds), n_val=len(val_ds), n_excluded=n_excluded, history=history)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # rank 0 has written best.pt before any rank reads it
    return evaluate_best(run, test_ds, info=info, device=device, frame_encoder=frame_encoder, write=_is_main())


def train_folds(store: str | Path, *, out: str | Path, folds: list[int] | None = None, **kwargs) -> dict[str, Any]:
    """Run :func:`train` for every fold (default: all values of the index's ``fold`` column) into
    ``out/fold_<k>``; writes ``out/metrics.json`` (mean of per-fold scores + per-fold values) and
    ``out/predictions.csv`` (all folds' test predictions)."""
    out = Path(out)
    claim_run_folder(out, resume=kwargs.get("resume", False), overwrite=kwargs.pop("overwrite", False))
    index = read_index(store)
    if "fold" not in index.columns:
        raise ValueError(f"{store}: the index has no 'fold' column; k-fold training needs one")
    folds = folds or sorted(int(f) for f in index.loc[index["status"] == STATUS_OK, "fold"].dropna().unique())
    workers = min(kwargs.get("train", TrainConfig()).fold_workers, len(folds))
    if workers > 1 and not torch.distributed.is_initialized():
        from femo.training.fold_workers import train_folds_side_by_side

        per_fold = train_folds_side_by_side(train, store, out, folds, workers, kwargs, show_bar=_is_main())
    else:
        per_fold = {k: train(store, out=out / f"fold_{k}", fold=k, **kwargs) for k in folds}
    classes = next(iter(per_fold.values()))["classes"]
    summary = aggregate_folds(per_fold, classes)
    summary["n_excluded"] = max(int(m["n_excluded"]) for m in per_fold.values())
    if _is_main():
        pd.concat([pd.read_csv(out / f"fold_{k}" / "predictions.csv", dtype={"clip_id": str, "subject": str})
                   for k in folds]).to_csv(out / "predictions.csv", index=False)
        write_json(out / "metrics.json", summary)
    return summary

