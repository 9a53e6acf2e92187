"""``femo train STORE --out RUN``: train a model on a feature store (one fold, a split, or all folds).

``--fold K`` tests on fold K; ``--folds all`` runs every fold into RUN/fold_<k> and writes the mean
of per-fold UAR/WAR to RUN/metrics.json; neither uses the store's ``split == test`` rows. The best
epoch is chosen on a validation split carved from the training subjects. ``--resume`` continues
an interrupted run from RUN/checkpoint.pt. Several GPUs: ``torchrun --nproc_per_node=N -m femo
train ... --device cuda`` (see femo.train).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``train`` sub-command to ``subparsers``."""
    from femo.config import ModelConfig, TrainConfig

    m, t = ModelConfig(), TrainConfig()
    p = subparsers.add_parser("train", help="train a model on a feature store", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", type=Path, help="feature store folder (from `femo extract`)")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--fold", type=int, default=None, help="test fold K (default: the split == test rows)")
    which.add_argument("--folds", choices=["all"], default=None, help="run every fold (k-fold protocol)")
    p.add_argument("--modalities", default=",".join(m.modalities), help="comma-separated subset of face,landmarks,audio")
    p.add_argument("--fusion", default=m.fusion, help="late | concat | gated | attention")
    p.add_argument("--temporal", default=m.temporal, help="mean | gru | transformer")
    p.add_argument("--dim", type=int, default=m.dim, help="embedding width per modality")
    p.add_argument("--frame-encoder", default=m.frame_encoder, help="per-frame CNN (resnet18|resnet34|resnet50|...)")
    p.add_argument("--frame-weights", default=None, help="weights for the frame encoder (enum name or checkpoint path)")
    p.add_argument("--freeze", default=m.freeze, help="frozen | last-block | full")
    p.add_argument("--embeddings", default=None, help="use cached embeddings STORE/embeddings/NAME instead of a CNN")
    p.add_argument("--modality-dropout", type=float, default=m.modality_dropout)
    p.add_argument("--epochs", type=int, default=t.epochs)
    p.add_argument("--batch-size", type=int, default=t.batch_size)
    p.add_argument("--lr", type=float, default=t.lr)
    p.add_argument("--loss", choices=["ce", "kl"], default=t.loss, help="kl: to the vote distribution")
    p.add_argument("--label-smoothing", type=float, default=t.label_smoothing)
    p.add_argument("--balance", choices=["weights", "sampler", "none"], default=t.balance)
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument("--device", default=t.device, help="cpu | cuda | auto")
    p.add_argument("--num-workers", type=int, default=t.num_workers)
    p.add_argument("--cache", action="store_true", help="keep decoded samples in memory across epochs")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def configs(args) -> tuple:
    """(ModelConfig, TrainConfig) from parsed arguments."""
    from femo.config import MODALITIES, ModelConfig, TrainConfig

    mods = tuple(x.strip() for x in args.modalities.split(",") if x.strip())
    unknown = [x for x in mods if x not in MODALITIES]
    if unknown:
        raise ValueError(f"--modalities: unknown {unknown}; choose from {list(MODALITIES)}")
    model = ModelConfig(modalities=mods, dim=args.dim, temporal=args.temporal, fusion=args.fusion,
                        frame_encoder=args.frame_encoder, frame_weights=args.frame_weights, freeze=args.freeze,
                        embeddings=args.embeddings, modality_dropout=args.modality_dropout)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss,
                        label_smoothing=args.label_smoothing, balance=args.balance, seed=args.seed,
                        device=args.device, num_workers=args.num_workers, cache=args.cache)
    return model, train


def run(args) -> int:
    """Train and print the test metrics summary; returns the exit status."""
    from femo.train import train, train_folds

    try:
        model, cfg = configs(args)
        kwargs = dict(model=model, train=cfg, resume=args.resume, progress=not args.quiet)
        if args.folds == "all":
            result = train_folds(args.store, out=args.out, **kwargs)
        else:
            result = train(args.store, out=args.out, fold=args.fold, **kwargs)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"femo train: {exc}", file=sys.stderr)
        return 1
    keys = ("uar", "war", "macro_f1", "ece", "uar_std", "war_std", "n_test", "n_excluded", "protocol")
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=2))
    return 0
