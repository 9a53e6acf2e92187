"""Training loop and k-fold protocol for :class:`femo.models.net.FemoNet` on a feature store.

``train(store, out=RUN, model=ModelConfig(...), train=TrainConfig(...), fold=K)`` trains on the
store's clips outside the test split, selects the best epoch by UAR on a validation split carved
from the *training subjects* (never the test fold), and writes the run folder of
docs/ARCHITECTURE.md (config.json, checkpoint.pt, best.pt, history.csv, metrics.json,
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
writes files.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm.auto import tqdm

import femo
from femo.config import DataConfig, ModelConfig, TrainConfig, from_dict, to_dict
from femo.data.dataset import FeatureDataset, subject_split
from femo.data.store import STATUS_OK, read_index, read_meta
from femo.evaluate import collect_logits, evaluate_model, metrics, write_json
from femo.models.net import FemoNet

LOSSES = ("ce", "kl")
BALANCES = ("weights", "sampler", "none")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the store/config; the message says which."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a femo checkpoint with ``weights_only=True``; a damaged file raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling / zip errors of a truncated or foreign file
        raise CheckpointError(f"{path}: corrupt or not a femo checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or not {"model", "config", "classes"} <= set(ckpt):
        raise CheckpointError(f"{path}: not a femo checkpoint (expected keys model, config, classes)")
    return ckpt


def check_classes(ckpt_classes, store_classes, *, checkpoint: Path, store: Path) -> None:
    """Raise :class:`CheckpointError` naming both class lists when they differ."""
    if list(ckpt_classes) != list(store_classes):
        raise CheckpointError(f"classes of checkpoint {checkpoint} {list(ckpt_classes)} do not match "
                              f"classes of store {store} {list(store_classes)}")


def model_config_from(ckpt: dict) -> ModelConfig:
    """The :class:`ModelConfig` stored in a checkpoint."""
    cfg = dict(ckpt["config"]["model"])
    cfg["modalities"] = tuple(cfg["modalities"])
    return from_dict(ModelConfig, cfg)


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


def _schedule(optimizer, *, total: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total`` steps."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _device(cfg: TrainConfig) -> torch.device:
    if "LOCAL_RANK" in os.environ and cfg.device != "cpu":
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={cfg.device!r} requested but CUDA is not available")
    return torch.device(cfg.device)


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _save(path: Path, state: dict) -> None:
    """Atomic torch.save (temporary file then rename) so a kill never leaves half a checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _train_loader(ds: FeatureDataset, cfg: TrainConfig, gen: torch.Generator, distributed: bool):
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        return DataLoader(ds, batch_size=cfg.batch_size, sampler=DistributedSampler(ds, seed=cfg.seed),
                          num_workers=cfg.num_workers, drop_last=True)
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
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = len(self.loader)
        self.scheduler = _schedule(self.optimizer, total=max(1, steps * cfg.epochs),
                                   warmup=max(1, round(steps * cfg.warmup_epochs)))
        self.amp = device.type == "cuda" and cfg.amp
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)

    def epoch(self, epoch: int, progress: bool) -> float:
        """One pass over the training set; returns the mean training loss."""
        self.gen.manual_seed(self.cfg.seed * 100_003 + epoch)
        if self.distributed:
            self.loader.sampler.set_epoch(epoch)
        self.model.train()
        total, n = 0.0, 0
        for batch in tqdm(self.loader, desc=f"epoch {epoch + 1}", leave=False, disable=not progress):
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


def _datasets(store: Path, *, fold, data: DataConfig, model: ModelConfig, cfg: TrainConfig):
    full = read_index(store)
    ok = full[full["status"].astype(str) == STATUS_OK].reset_index(drop=True)
    train_idx, val_idx, test_idx = subject_split(ok, fold=fold, val_fraction=cfg.val_fraction, seed=cfg.seed)
    make = lambda idx, aug: FeatureDataset(store, index=idx, config=data, embeddings=model.embeddings,
                                           augment=aug, cache=cfg.cache)
    return make(train_idx, cfg.augment), make(val_idx, False), make(test_idx, False), int(len(full) - len(ok))


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


def _log(msg: str) -> None:
    if _is_main():
        print(msg, file=sys.stderr)


def _run_config(store: Path, model: ModelConfig, cfg: TrainConfig, data: DataConfig, classes, fold) -> dict:
    return {"model": to_dict(model), "train": to_dict(cfg), "data": to_dict(data), "classes": list(classes),
            "store": str(store), "fold": fold,
            "versions": {"femo": femo.__version__, "torch": str(torch.__version__)}}


def _start(run: Path, trainer: _Trainer, config: dict, classes, resume: bool) -> tuple[int, list, float]:
    """Fresh start, or the state of RUN/checkpoint.pt when resuming (checked against config/classes)."""
    path = run / "checkpoint.pt"
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
          resume: bool = False, progress: bool = True, frame_encoder: torch.nn.Module | None = None
          ) -> dict[str, Any]:
    """Train one model on ``store`` (test = ``fold`` or the ``split == test`` rows); see module docstring.

    out: the run folder. data: input sizes (default: the store's frames per clip and face size).
    resume: continue from ``out/checkpoint.pt`` (same options required).
    frame_encoder: an already-built per-frame CNN to use instead of ``model.frame_encoder``.
    Returns the test metrics (also in ``out/metrics.json``), with n_train/n_val/n_test/n_excluded.
    """
    cfg, store, run = train, Path(store).resolve(), Path(out)
    _check_options(model, cfg)
    data = data or data_config_for(store)
    train_ds, val_ds, test_ds, n_excluded = _datasets(store, fold=fold, data=data, model=model, cfg=cfg)
    if n_excluded:
        _log(f"{store}: {n_excluded} clip(s) excluded (extraction failed); training on the rest")
    if cfg.loss == "kl" and not train_ds.has_votes:
        _log(f"{store}: no vote_<class> columns; the kl loss reduces to cross-entropy on the labels")
    if model.embeddings and not model.embedding_dim:
        model = replace(model, embedding_dim=train_ds.embedding_dim())
    classes = train_ds.classes
    config = _run_config(store, model, cfg, data, classes, fold)
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
    bar = tqdm(range(start, cfg.epochs), desc="train", disable=not progress, initial=start, total=cfg.epochs)
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
                _save(run / "best.pt", {"model": net.state_dict(), "epoch": epoch + 1, **extra})
        if _is_main():
            pd.DataFrame(history).to_csv(run / "history.csv", index=False)
            _save(run / "checkpoint.pt", trainer.state(epoch + 1, history, best, extra))
    return _final(run, test_ds, device, config, dict(n_train=len(train_ds), n_val=len(val_ds),
                                                     n_excluded=n_excluded, history=history),
                  frame_encoder=frame_encoder)


def _final(run: Path, test_ds: FeatureDataset, device, config: dict, info: dict, *, frame_encoder=None) -> dict:
    """Evaluate best.pt on the test split and write metrics.json / predictions.csv."""
    ckpt = load_checkpoint(run / "best.pt")
    net = FemoNet(model_config_from(ckpt), len(ckpt["classes"]), frame_encoder=frame_encoder).to(device)
    net.load_state_dict(ckpt["model"])
    best_row = next(r for r in info["history"] if r["epoch"] == ckpt["epoch"])
    extra = {"classes": list(ckpt["classes"]), "protocol": _protocol(config), "fold": config["fold"], "best_epoch": int(ckpt["epoch"]),
             "val_uar": best_row["val_uar"], "n_train": info["n_train"], "n_val": info["n_val"],
             "n_test": len(test_ds), "n_excluded": info["n_excluded"]}
    if not _is_main():
        return extra
    return evaluate_model(net, test_ds, out=run, extra=extra, device=device)


def _protocol(config: dict) -> str:
    split = "the split == test rows" if config["fold"] is None else f"fold {config['fold']}"
    return (f"test = {split}; best epoch by validation UAR on {config['train']['val_fraction']:.0%} of the "
            "training subjects (subject-disjoint)")


def evaluate_single(run: str | Path, *, store: str | Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """Re-evaluate RUN/best.pt on its test split of ``store`` (default: the store in RUN/config.json)."""
    import json

    run = Path(run)
    config = json.loads((run / "config.json").read_text())
    store = Path(store or config["store"])
    ckpt = load_checkpoint(run / "best.pt")
    data = from_dict(DataConfig, {**config["data"], "classes": tuple(config["data"]["classes"])})
    cfg = from_dict(TrainConfig, config["train"])
    model = model_config_from(ckpt)
    train_ds, val_ds, test_ds, n_excluded = _datasets(store, fold=config["fold"], data=data, model=model, cfg=cfg)
    check_classes(ckpt["classes"], test_ds.classes, checkpoint=run / "best.pt", store=store)
    history = pd.read_csv(run / "history.csv").to_dict("records")
    info = dict(n_train=len(train_ds), n_val=len(val_ds), n_excluded=n_excluded, history=history)
    return _final(run, test_ds, torch.device(device), config, info)


def train_folds(store: str | Path, *, out: str | Path, folds: list[int] | None = None, **kwargs) -> dict[str, Any]:
    """Run :func:`train` for every fold (default: all values of the index's ``fold`` column) into
    ``out/fold_<k>``; writes ``out/metrics.json`` (mean of per-fold scores + per-fold values) and
    ``out/predictions.csv`` (all folds' test predictions)."""
    from femo.evaluate import aggregate_folds

    out = Path(out)
    index = read_index(store)
    if "fold" not in index.columns:
        raise ValueError(f"{store}: the index has no 'fold' column; k-fold training needs one")
    folds = folds or sorted(int(f) for f in index.loc[index["status"] == STATUS_OK, "fold"].dropna().unique())
    per_fold = {k: train(store, out=out / f"fold_{k}", fold=k, **kwargs) for k in folds}
    classes = next(iter(per_fold.values()))["classes"]
    summary = aggregate_folds(per_fold, classes)
    summary["n_excluded"] = max(int(m["n_excluded"]) for m in per_fold.values())
    if _is_main():
        pd.concat([pd.read_csv(out / f"fold_{k}" / "predictions.csv", dtype={"clip_id": str, "subject": str})
                   for k in folds]).to_csv(out / "predictions.csv", index=False)
        write_json(out / "metrics.json", summary)
    return summary
