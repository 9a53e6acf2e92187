"""Train femo's face-expression encoder (:mod:`femo.models.fer_encoder`) on an image manifest.

Protocol (FER2013's official splits): fit on ``train``, pick the epoch whose weights score the
best WAR on ``public_test``, and score ``private_test`` once, with those weights only.

* Data: every image of a split is decoded once into one ``uint8 (N, 48, 48)`` tensor; augmentation
  runs on whole batches (:mod:`femo.training.face_augment`), so data loading costs nothing per step.
* Architectures (``arch``): ``faceapi`` (face-api.js's blocks, started from its weights) or ``vgg``
  (:class:`femo.models.fer_vgg.FerVggNet`, from scratch); see :data:`femo.models.fer_encoder.FER_ARCHS`.
* Optimisation: AdamW or SGD with Nesterov momentum, a one-cycle schedule (cosine), label
  smoothing, optional random erasing; the weights evaluated and exported are an exponential
  moving average (EMA) of the trained ones (batch-norm statistics averaged the same way).
* Speed: ``bf16=True`` runs forward and backward under CPU autocast to bfloat16 with channels-last
  tensors, which on CPUs with AMX or AVX-512 BF16 units is about 3x faster than float32 (the
  parameters, optimiser and EMA stay float32; the epoch is selected in bfloat16 and the reported
  scores come from the exported weights in float32).
* Evaluation: softmax averaged over the image and its horizontal mirror (flip test-time
  augmentation).
* Resumable: ``OUT/checkpoint.pt`` is written after every epoch and every ``checkpoint_minutes``
  inside one; ``resume=True`` continues from it and reproduces an uninterrupted run exactly (the
  same seed, thread count and data). Progress: tqdm on stderr and ``OUT/train.log``.

Outputs in ``OUT``: ``checkpoint.pt``, ``best.pt`` (EMA weights of the selected epoch),
``history.json`` (one record per epoch), ``metrics.json`` (selection and test scores),
``fer_encoder.pt`` + ``fer_encoder.json`` (the exported weights and their record).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from femo.models.face_pretrained import load_faceapi
from femo.models.fer_encoder import (FER_ARCHS, FER_LABELS, build_fer_net, fer_encoder_from_faceapi,
                                     load_fer_encoder, sha256_file)
from femo.training.face_augment import augment
from femo.training.metrics import metrics


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Settings of one encoder training run (angles in degrees, fractions of the image size)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3  # peak of the one-cycle schedule
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    ema_decay: float = 0.999
    seed: int = 0
    threads: int = 1
    checkpoint_minutes: float = 5.0
    rotation: float = 10.0
    scale: float = 0.1
    shift: float = 0.1
    brightness: float = 0.2
    contrast: float = 0.2
    erase: float = 0.0  # probability of erasing one random rectangle (2-20% of the image) per image
    arch: str = "faceapi"  # one of FER_ARCHS
    optimizer: str = "adamw"  # adamw | sgd (Nesterov, momentum 0.9)
    bf16: bool = False  # autocast to bfloat16 on the CPU, channels-last
    pretrained: bool = True  # faceapi: start from face-api.js weights (False: random init)
    init: str | None = None  # start from this FerEncoderNet state dict (a previous run's fer_encoder.pt)
    limit: int | None = None  # at most this many images per split (smoke runs)
    train_split: str = "train"
    select_split: str = "public_test"
    test_split: str = "private_test"


@dataclass(frozen=True)
class ImageSplit:
    """One split in memory: ``x`` uint8 (N, 48, 48) gray, ``y`` int64 (N,) into FER_LABELS."""

    x: torch.Tensor
    y: torch.Tensor
    clip_ids: tuple[str, ...]


def load_image_split(manifest: str | Path, split: str, *, limit: int | None = None) -> ImageSplit:
    """Decode the images of ``split`` (manifest columns clip_id, path, label, split; paths relative
    to the manifest's folder) to gray 48x48. Errors name the manifest row and the problem."""
    manifest = Path(manifest)
    table = pd.read_csv(manifest)
    missing = {"clip_id", "path", "label", "split"} - set(table.columns)
    if missing:
        raise ValueError(f"{manifest}: missing column(s) {sorted(missing)}")
    rows = table[table["split"] == split]
    if rows.empty:
        raise ValueError(f"{manifest}: no rows with split == {split!r} (splits: {sorted(table['split'].unique())})")
    if limit is not None:
        rows = rows.iloc[:limit]
    size = 48  # every architecture reads 48x48 gray
    imgs, labels = np.empty((len(rows), size, size), np.uint8), []
    for i, (row_no, row) in enumerate(rows.iterrows()):
        if row["label"] not in FER_LABELS:
            raise ValueError(f"{manifest} row {row_no + 2}: label {row['label']!r} not in {FER_LABELS}")
        try:
            img = Image.open(manifest.parent / row["path"]).convert("L")
        except OSError as exc:
            raise ValueError(f"{manifest} row {row_no + 2}: cannot read image {row['path']} ({exc})") from exc
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        imgs[i] = np.asarray(img)
        labels.append(FER_LABELS.index(row["label"]))
    return ImageSplit(torch.from_numpy(imgs), torch.tensor(labels, dtype=torch.int64),
                      tuple(rows["clip_id"].astype(str)))


@torch.inference_mode()
def predict_probs(net: nn.Module, x: torch.Tensor, *, batch: int = 256, tta: bool = True,
                  bf16: bool = False) -> np.ndarray:
    """uint8 (N, H, W) gray -> softmax (N, 7), averaged with the mirrored image when ``tta``
    (``bf16``: under bfloat16 autocast, for fast epoch selection)."""
    net.eval()
    out = []
    for i in range(0, len(x), batch):
        img = x[i:i + batch].float().div(255.0).unsqueeze(1).expand(-1, 3, -1, -1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            probs = net(net.preprocess(img)).float().softmax(1)
            if tta:
                probs = (probs + net(net.preprocess(img.flip(-1))).float().softmax(1)) / 2
        out.append(probs.numpy())
    return np.concatenate(out)


def score_split(net: nn.Module, split: ImageSplit, *, tta: bool = True, bf16: bool = False) -> dict:
    """WAR, UAR, per-class recall, confusion, ECE of ``net`` on ``split`` (flip TTA when ``tta``)."""
    probs = predict_probs(net, split.x, tta=tta, bf16=bf16)
    return metrics(split.y.numpy(), probs.argmax(1), probs, FER_LABELS)


def _logger(out: Path) -> logging.Logger:
    log = logging.getLogger(f"femo.encoder.{out.resolve()}")
    if not log.handlers:
        handler = logging.FileHandler(out / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def _new_state(cfg: EncoderTrainConfig, steps_per_epoch: int) -> dict:
    if cfg.arch not in FER_ARCHS:
        raise ValueError(f"unknown arch {cfg.arch!r}; choose one of {sorted(FER_ARCHS)}")
    if cfg.optimizer not in ("adamw", "sgd"):
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adamw or sgd")
    torch.manual_seed(cfg.seed)
    if cfg.init is not None:
        net = load_fer_encoder(cfg.init, arch=cfg.arch).train()
    elif cfg.arch == "faceapi" and cfg.pretrained:
        net = fer_encoder_from_faceapi(load_faceapi())
    else:
        net = build_fer_net(cfg.arch)
    ema = build_fer_net(cfg.arch)
    ema.load_state_dict(net.state_dict())
    if cfg.bf16:  # oneDNN's bfloat16 convolutions are fastest on channels-last tensors
        net, ema = net.to(memory_format=torch.channels_last), ema.to(memory_format=torch.channels_last)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True,
                              weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.15, div_factor=10.0, final_div_factor=100.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    return {"net": net, "ema": ema, "opt": opt, "sched": sched, "gen": gen, "step": 0,
            "history": [], "best": None, "train_s": 0.0}


def _save_checkpoint(state: dict, cfg: EncoderTrainConfig, path: Path) -> None:
    payload = {"config": asdict(cfg), "step": state["step"], "history": state["history"],
               "best": state["best"], "train_s": state["train_s"],
               "net": state["net"].state_dict(), "ema": state["ema"].state_dict(),
               "opt": state["opt"].state_dict(), "sched": state["sched"].state_dict(),
               "gen": state["gen"].get_state(), "torch_rng": torch.get_rng_state()}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a kill never leaves a half-written checkpoint


def _load_checkpoint(state: dict, cfg: EncoderTrainConfig, path: Path) -> None:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["config"] != asdict(cfg):
        diff = {k: (v, asdict(cfg)[k]) for k, v in payload["config"].items() if asdict(cfg).get(k) != v}
        raise ValueError(f"{path}: written with other settings (checkpoint, now): {diff}")
    for key in ("net", "ema", "opt", "sched"):
        state[key].load_state_dict(payload[key])
    state["gen"].set_state(payload["gen"])
    torch.set_rng_state(payload["torch_rng"])
    for key in ("step", "history", "best", "train_s"):
        state[key] = payload[key]


def _train_step(state: dict, cfg: EncoderTrainConfig, x: torch.Tensor, y: torch.Tensor) -> float:
    net, opt = state["net"], state["opt"]
    net.train()
    img = net.preprocess(augment(x, state["gen"], cfg))
    if cfg.bf16:
        img = img.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        logits = net(img)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    state["sched"].step()
    with torch.no_grad():  # EMA of the weights and of the batch-norm statistics
        for e, p in zip(state["ema"].parameters(), net.parameters()):
            e.lerp_(p, 1 - cfg.ema_decay)
        for e, b in zip(state["ema"].buffers(), net.buffers()):
            if e.is_floating_point():
                e.lerp_(b, 1 - cfg.ema_decay)
            else:
                e.copy_(b)
    state["step"] += 1
    return float(loss.detach())


def _end_epoch(state: dict, cfg: EncoderTrainConfig, out: Path, select: ImageSplit, epoch: int,
               losses: list[float], log: logging.Logger) -> None:
    scores = score_split(state["ema"], select, bf16=cfg.bf16)
    record = {"epoch": epoch + 1, "step": state["step"], "train_loss": float(np.mean(losses)) if losses else None,
              "lr": state["sched"].get_last_lr()[0], f"{cfg.select_split}_war": scores["war"],
              f"{cfg.select_split}_uar": scores["uar"], "train_s": round(state["train_s"], 1)}
    state["history"].append(record)
    if state["best"] is None or scores["war"] > state["best"]["war"]:
        state["best"] = {"epoch": epoch + 1, "war": scores["war"], "uar": scores["uar"]}
        torch.save(state["ema"].state_dict(), out / "best.pt")
    log.info(json.dumps(record))
    (out / "history.json").write_text(json.dumps(state["history"], indent=2))


def train_face_encoder(manifest: str | Path, out: str | Path, cfg: EncoderTrainConfig = EncoderTrainConfig(), *,
                       resume: bool = False, stop_after_steps: int | None = None, progress: bool = True,
                       command: str | None = None) -> dict:
    """Train, select and test the encoder; returns the ``metrics.json`` content (see module doc).

    ``command``: the command line that started the run, recorded with the exported weights.

    ``stop_after_steps``: write a checkpoint and return ``{"stopped_at_step": n}`` once the global
    step count reaches it (a time-boxed run; continue with ``resume=True``). Refuses to overwrite
    an existing checkpoint unless ``resume``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not resume:
        raise FileExistsError(f"{ckpt} exists: pass resume=True (--resume) or choose another folder")
    torch.set_num_threads(cfg.threads)
    log = _logger(out)
    train = load_image_split(manifest, cfg.train_split, limit=cfg.limit)
    select = load_image_split(manifest, cfg.select_split, limit=cfg.limit)
    steps_per_epoch = len(train.y) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{manifest}: {len(train.y)} training images, fewer than one batch of {cfg.batch_size}")
    state = _new_state(cfg, steps_per_epoch)
    if resume and ckpt.exists():
        _load_checkpoint(state, cfg, ckpt)
        log.info(f"resumed at step {state['step']}")
    else:
        log.info(f"start: {len(train.y)} {cfg.train_split} / {len(select.y)} {cfg.select_split} images, "
                 f"config {json.dumps(asdict(cfg))}")
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=state["step"], disable=not progress,
               desc="encoder", unit="step")
    last_save = time.monotonic()
    while state["step"] < cfg.epochs * steps_per_epoch:
        epoch, pos = divmod(state["step"], steps_per_epoch)
        perm = torch.randperm(len(train.y), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        losses = []
        for i in range(pos, steps_per_epoch):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            t0 = time.perf_counter()
            losses.append(_train_step(state, cfg, train.x[idx], train.y[idx]))
            state["train_s"] += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
            if stop_after_steps is not None and state["step"] >= stop_after_steps:
                _save_checkpoint(state, cfg, ckpt)
                bar.close()
                return {"stopped_at_step": state["step"]}
            if time.monotonic() - last_save > 60 * cfg.checkpoint_minutes and i + 1 < steps_per_epoch:
                _save_checkpoint(state, cfg, ckpt)
                last_save = time.monotonic()
        _end_epoch(state, cfg, out, select, epoch, losses, log)
        _save_checkpoint(state, cfg, ckpt)
        last_save = time.monotonic()
    bar.close()
    return _finish(state, cfg, manifest, out, train, select, log, command)


def _finish(state: dict, cfg: EncoderTrainConfig, manifest: str | Path, out: Path, train: ImageSplit,
            select: ImageSplit, log: logging.Logger, command: str | None = None,
            epochs_run: int | None = None) -> dict:
    best = build_fer_net(cfg.arch)
    best.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True))
    weights = out / "fer_encoder.pt"
    weights.with_suffix(".json").unlink(missing_ok=True)  # a record of earlier weights would not match
    save_weights(best, weights, half=cfg.arch == "vgg")
    best = load_fer_encoder(weights)  # the scores below are those of the file that ships
    test = load_image_split(manifest, cfg.test_split, limit=cfg.limit)
    result = {"command": command, "seed": cfg.seed, "epochs_run": epochs_run or cfg.epochs,
              "selected_epoch": state["best"]["epoch"], "selection_split": cfg.select_split,
              "tta": "mean softmax of the image and its horizontal mirror",
              cfg.select_split: score_split(best, select), cfg.test_split: score_split(best, test),
              "n": {cfg.train_split: len(train.y), cfg.select_split: len(select.y), cfg.test_split: len(test.y)},
              "train_s": round(state["train_s"], 1), "threads": cfg.threads, "config": asdict(cfg)}
    if cfg.init is not None and Path(cfg.init).is_file():
        result["init_sha256"] = sha256_file(cfg.init)  # the weights this run started from
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    weights.with_suffix(".json").write_text(json.dumps({**result, "sha256": sha256_file(weights)}, indent=2))
    log.info(f"done: selected epoch {result['selected_epoch']}, {cfg.test_split} WAR "
             f"{result[cfg.test_split]['war']:.4f} UAR {result[cfg.test_split]['uar']:.4f}")
    return result


def finish_face_encoder(manifest: str | Path, out: str | Path, *, command: str | None = None) -> dict:
    """Close an interrupted run early: score its best epoch so far (as :func:`train_face_encoder`
    does at the end) and export it; the record says how many of the planned epochs ran."""
    out = Path(out)
    ckpt = out / "checkpoint.pt"
    if not ckpt.is_file() or not (out / "best.pt").is_file():
        raise FileNotFoundError(f"{out}: no checkpoint.pt / best.pt (no epoch has finished)")
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = EncoderTrainConfig(**payload["config"])
    torch.set_num_threads(cfg.threads)
    state = {"best": payload["best"], "train_s": payload["train_s"]}
    train = load_image_split(manifest, cfg.train_split, limit=cfg.limit)
    select = load_image_split(manifest, cfg.select_split, limit=cfg.limit)
    log = _logger(out)
    log.info(f"finishing early after {len(payload['history'])} of {cfg.epochs} epochs")
    result = _finish(state, cfg, manifest, out, train, select, log, command,
                     epochs_run=len(payload["history"]))
    return result


def save_weights(net: nn.Module, path: str | Path, *, half: bool = False) -> str:
    """Write ``net``'s state dict to ``path`` (float32, or float16 when ``half``: the vgg net's
    4.7 M parameters then take 9.4 MB); returns the file's sha256."""
    dtype = torch.float16 if half else torch.float32
    torch.save({k: v.detach().to(dtype).contiguous() if v.is_floating_point() else v.detach().clone()
                for k, v in net.state_dict().items()}, path)
    return sha256_file(path)
