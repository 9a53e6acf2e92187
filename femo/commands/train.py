"""``femo train STORE --out RUN``: train a model on a feature store (one fold, a split, or all folds).

``--fold K`` tests on fold K; ``--folds all`` runs every fold into RUN/fold_<k> and writes the mean
of per-fold UAR/WAR to RUN/metrics.json; neither uses the store's ``split == test`` rows. The best
epoch is chosen on a validation split carved from the training subjects. ``--resume`` continues
an interrupted run from RUN/checkpoint.pt; a RUN holding a trained model is refused unless
``--resume`` or ``--overwrite``. Without ``--fold``/``--folds`` the test rows are the store's
``split == test`` rows, or its first fold when it has no ``split`` column. Several GPUs: ``torchrun --nproc_per_node=N -m femo
train ... --device cuda`` (see femo.training.loop).
``--drop-suspects RUN_OR_CSV`` leaves suspected label errors (femo.audit.labels) out of every
training split; validation and test folds keep them.

The face path by default is the best installed pretrained face encoder, as embeddings cached in
STORE/embeddings/<name> (computed on first use), else ImageNet weights found in the torch hub
cache; a frozen CNN with no pretrained weights is refused. ``--embeddings none`` runs the frame CNN.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``train`` sub-command to ``subparsers``."""
    from femo.config import FUSIONS, TEMPORAL_BLOCKS, ModelConfig, TrainConfig

    m, t = ModelConfig(), TrainConfig()
    p = subparsers.add_parser("train", help="train a model on a feature store", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", type=Path, help="feature store folder (from `femo extract`)")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--fold", type=int, default=None, help="test fold K (default: the split == test rows)")
    which.add_argument("--folds", choices=["all"], default=None, help="run every fold (k-fold protocol)")
    p.add_argument("--modalities", default=",".join(m.modalities), help="comma-separated subset of face,landmarks,audio")
    p.add_argument("--fusion", choices=FUSIONS, default=m.fusion, help=f"fusion layer (default {m.fusion})")
    p.add_argument("--temporal", choices=TEMPORAL_BLOCKS, default=m.temporal,
                   help=f"per-modality temporal block (default {m.temporal})")
    p.add_argument("--dim", type=int, default=m.dim, help="embedding width per modality")
    p.add_argument("--frame-encoder", default=None,
                   help=f"per-frame CNN (resnet18|resnet34|resnet50|...; default {m.frame_encoder} when no "
                        "pretrained face encoder is installed)")
    p.add_argument("--frame-weights", default=None, help="weights for the frame encoder (enum name or checkpoint path)")
    p.add_argument("--freeze", default=m.freeze, help="frozen | last-block | full")
    p.add_argument("--embeddings", default=None,
                   help="use cached embeddings STORE/embeddings/NAME instead of a CNN (default: the best installed "
                        "face encoder's, computed on first use; NAME@frame / NAME@fallback: of the whole frame, "
                        "always / where no face was found (femo extract --embed); 'none': run the frame CNN)")
    p.add_argument("--modality-dropout", type=float, default=m.modality_dropout)
    p.add_argument("--audio-input", choices=["logmel", "functionals", "both"], default=m.audio_input,
                   help="audio encoder input: log-mel CNN, MLP on the store's openSMILE functionals, or both")
    p.add_argument("--speaker-norm", action="store_true",
                   help="z-score audio features per speaker with its own statistics (TRANSDUCTIVE: test "
                        "speakers use their own unlabelled audio; the protocol text says so)")
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
    p.add_argument("--fold-workers", type=int, default=t.fold_workers,
                   help="with --folds all: train this many folds side by side in separate processes "
                        "(each gets cores / N torch threads; default 1, one after another)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    again.add_argument("--overwrite", action="store_true", help="replace the run already in RUN (its files only)")
    p.add_argument("--drop-suspects", default=None, metavar="RUN_OR_CSV",
                   help="leave suspected label errors out of every training split (validation and test "
                        "keep them): a k-fold run folder (its cleanlab suspects) or a CSV with a clip_id column")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="set any ModelConfig / TrainConfig field, e.g. -o layers=2 -o weight_decay=0.01 "
                        "(repeatable; applied after the flags above; an unknown key lists the valid ones)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def configs(args) -> tuple:
    """(ModelConfig, TrainConfig) from parsed arguments."""
    from femo.config import MODALITIES, ModelConfig, TrainConfig, from_dict, parse_options, to_dict

    mods = tuple(x.strip() for x in args.modalities.split(",") if x.strip())
    unknown = [x for x in mods if x not in MODALITIES]
    if unknown:
        raise ValueError(f"--modalities: unknown {unknown}; choose from {list(MODALITIES)}")
    model = ModelConfig(modalities=mods, dim=args.dim, temporal=args.temporal, fusion=args.fusion,
                        frame_encoder=args.frame_encoder or ModelConfig.frame_encoder,
                        frame_weights=args.frame_weights, freeze=args.freeze,
                        embeddings=None if args.embeddings in (None, "none") else args.embeddings,
                        modality_dropout=args.modality_dropout,
                        audio_input=args.audio_input)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss,
                        label_smoothing=args.label_smoothing, balance=args.balance, seed=args.seed,
                        device=args.device, num_workers=args.num_workers, cache=args.cache,
                        fold_workers=args.fold_workers)
    model_opts, train_opts = parse_options(getattr(args, "option", []), ModelConfig, TrainConfig)
    return (from_dict(ModelConfig, {**to_dict(model), **model_opts}),
            from_dict(TrainConfig, {**to_dict(train), **train_opts}))


def check_protocol(store: Path, fold: int | None, folds: str | None) -> None:
    """ValueError naming the CLI flag when ``--fold`` / ``--folds`` do not fit the store's index."""
    from femo.data.store import ok_clips, read_index

    index = ok_clips(read_index(store))
    columns = [c for c in ("split", "fold") if c in index.columns]
    if not columns:
        raise ValueError(f"{store}: the index has neither a 'split' nor a 'fold' column, so there is no test "
                         "set; rebuild the manifest with one (`femo manifest`)")
    if (fold is not None or folds) and "fold" not in columns:
        flag = f"--fold {fold}" if fold is not None else "--folds all"
        raise ValueError(f"{flag}: {store} has no 'fold' column (it has a 'split' column: leave out {flag} "
                         "to test on its split == test rows)")
    known = sorted(int(f) for f in index["fold"].dropna().unique()) if "fold" in columns else []
    if fold is not None and fold not in known:
        raise ValueError(f"--fold {fold}: {store} has folds {known}")


def _model_for(args, model):
    """The model with the default face path resolved (femo.training.defaults)."""
    from femo.training.defaults import resolve_face_path

    auto = args.frame_encoder is None and args.embeddings is None and args.frame_weights is None
    log = lambda msg: print(f"femo train: {msg}", file=sys.stderr, flush=True)
    if args.embeddings not in (None, "none") and "face" in model.modalities:
        _ensure_named_embeddings(args.store, args.embeddings, progress=not args.quiet, log=log)
    return resolve_face_path(args.store, model, auto=auto, progress=not args.quiet, log=log)


def _ensure_named_embeddings(store, name: str, *, progress: bool, log) -> None:
    """Compute ``--embeddings NAME`` on first use when NAME is a frame encoder (optionally with a
    source, ``faceapi@frame``); other names must already be in the store."""
    from femo.features.embed import split_name
    from femo.models.frames import FRAME_ENCODERS
    from femo.training.defaults import ensure_embeddings

    try:
        encoder, _ = split_name(name)
    except ValueError as exc:
        raise ValueError(f"--embeddings: {exc}") from None
    if encoder in FRAME_ENCODERS:
        folder = ensure_embeddings(store, name, progress=progress)
        log(f"face path: cached {name} embeddings ({folder})")


def _exists_message(exc) -> str:
    state = "a finished run" if exc.finished else "an interrupted run"
    return (f"{exc.path} holds {state}; pass --overwrite to replace it, --resume to continue it, "
            "or choose another --out folder")


def run(args) -> int:
    """Train and print the test metrics summary; returns the exit status."""
    from femo.training.loop import train, train_folds
    from femo.training.runs import RunExistsError, claim_run_folder

    try:
        model, cfg = configs(args)
        check_protocol(args.store, args.fold, args.folds)
        if not args.overwrite:  # refuse early, before any embedding is computed; train() replaces the old run
            claim_run_folder(args.out, resume=args.resume, overwrite=False)
        model = _model_for(args, model)
        kwargs = dict(model=model, train=cfg, resume=args.resume, progress=not args.quiet,
                      overwrite=args.overwrite)
        if args.drop_suspects:
            from femo.audit.labels_drop import suspect_ids

            kwargs["exclude"] = suspect_ids(args.drop_suspects)
            print(f"femo train: {len(kwargs['exclude'])} suspect clip(s) from {args.drop_suspects} "
                  "left out of training", file=sys.stderr)
        if args.speaker_norm:
            from dataclasses import replace

            from femo.training.loop import data_config_for

            kwargs["data"] = replace(data_config_for(args.store), speaker_norm=True)
        if args.folds == "all":
            result = train_folds(args.store, out=args.out, **kwargs)
        else:
            result = train(args.store, out=args.out, fold=args.fold, **kwargs)
    except RunExistsError as exc:
        print(f"femo train: {_exists_message(exc)}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"femo train: {exc}", file=sys.stderr)
        return 1
    keys = ("uar", "war", "macro_f1", "ece", "uar_std", "war_std", "n_test", "n_excluded", "protocol")
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=2))
    return 0
