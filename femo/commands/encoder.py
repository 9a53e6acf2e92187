"""``femo encoder train|eval``: train femo's face-expression encoder on an image manifest, score it.

``femo encoder train --manifest M --out DIR [--epochs N] [--resume]`` fits on the ``train`` split,
selects the epoch on ``public_test`` and scores ``private_test`` once (FER2013's official splits;
manifest columns clip_id, path, label, split). It checkpoints as it goes: rerun with ``--resume``
after an interruption. ``DIR/fer_encoder.pt`` is the result (use it with ``--weights``).
``--arch vgg`` trains the VGG-style CNN of :mod:`femo.models.fer_vgg` from scratch instead of
fine-tuning face-api.js's blocks; ``--bf16`` runs it under bfloat16 autocast (about 3x faster on
CPUs with AMX or AVX-512 BF16). The shipped ``fer_vgg`` weights came from::

    femo encoder train --manifest ../shared/data/fer2013/manifest.csv --out runs/fer_vgg --arch vgg \
        --optimizer adamw --lr 2e-3 --weight-decay 0.05 --erase 0.5 --bf16 --epochs 30 \
        --batch-size 128 --seed 0 --threads 2

``femo encoder finish --manifest M --out DIR`` closes an interrupted run early: it scores and
exports the best epoch so far.

``femo encoder eval --manifest M [--split private_test] [--weights FILE]`` scores saved weights
(default: the weights shipped with femo) with flip test-time augmentation.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``encoder`` sub-command (with ``train`` and ``eval``) to ``subparsers``."""
    p = subparsers.add_parser("encoder", help="train / evaluate femo's face-expression encoder",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="encoder_command", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="train on a manifest's train split (resumable)")
    t.add_argument("--manifest", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, logs, weights)")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None, help="peak learning rate")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--arch", choices=("faceapi", "vgg"), default=None,
                   help="faceapi: face-api.js's blocks from its weights (default); vgg: a VGG-style CNN from scratch")
    t.add_argument("--optimizer", choices=("adamw", "sgd"), default=None)
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--erase", type=float, default=None, help="random-erasing probability per image")
    t.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast on the CPU (about 3x faster where the CPU has AMX / AVX-512 BF16)")
    t.add_argument("--limit", type=int, default=None, help="at most N images per split (smoke runs)")
    t.add_argument("--no-pretrained", action="store_true", help="random init instead of face-api.js weights")
    t.add_argument("--init", type=Path, default=None,
                   help="start from this fer_encoder state dict (a previous run's fer_encoder.pt)")
    t.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=run_train)
    f = sub.add_parser("finish", help="close an interrupted run: score and export its best epoch so far")
    f.add_argument("--manifest", type=Path, required=True)
    f.add_argument("--out", type=Path, required=True, help="the run folder")
    f.set_defaults(func=run_finish)
    e = sub.add_parser("eval", help="score saved weights on a manifest split")
    e.add_argument("--manifest", type=Path, required=True)
    e.add_argument("--split", default="private_test")
    e.add_argument("--weights", type=Path, default=None, help="state dict file (default: shipped weights)")
    e.add_argument("--arch", choices=("faceapi", "vgg"), default="faceapi",
                   help="whose shipped weights to score when --weights is not given")
    e.add_argument("--no-tta", action="store_true", help="no horizontal-flip test-time augmentation")
    e.set_defaults(func=run_eval)


def run_train(args) -> int:
    """Train and print the selection and test scores; returns the exit status."""
    from femo.training.face_encoder import EncoderTrainConfig, train_face_encoder

    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                 "threads": args.threads, "limit": args.limit, "arch": args.arch, "optimizer": args.optimizer,
                 "weight_decay": args.weight_decay, "erase": args.erase, "bf16": args.bf16 or None}
    cfg = EncoderTrainConfig(**{k: v for k, v in overrides.items() if v is not None},
                             pretrained=not args.no_pretrained,
                             init=None if args.init is None else str(args.init.resolve()))
    try:
        result = train_face_encoder(args.manifest, args.out, cfg, resume=args.resume, progress=not args.quiet,
                                    command=" ".join(["femo", *sys.argv[1:]]))
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"femo encoder train: {exc}", file=sys.stderr)
        return 1
    keys = (cfg.select_split, cfg.test_split)
    print(json.dumps({"selected_epoch": result["selected_epoch"], "train_s": result["train_s"],
                      **{k: {m: result[k][m] for m in ("war", "uar")} for k in keys}}, indent=2))
    print(f"weights: {args.out / 'fer_encoder.pt'}")
    return 0


def run_finish(args) -> int:
    """Finish an interrupted run from its best epoch; returns the exit status."""
    from femo.training.face_encoder import finish_face_encoder

    try:
        result = finish_face_encoder(args.manifest, args.out, command=" ".join(["femo", *sys.argv[1:]]))
    except (ValueError, FileNotFoundError) as exc:
        print(f"femo encoder finish: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: result[k] for k in ("epochs_run", "selected_epoch", "train_s")}, indent=2))
    return 0


def run_eval(args) -> int:
    """Score weights on one split and print WAR/UAR; returns the exit status."""
    from femo.models.fer_encoder import load_fer_encoder
    from femo.training.face_encoder import load_image_split, score_split

    try:
        net = load_fer_encoder(args.weights, arch=args.arch)
        split = load_image_split(args.manifest, args.split)
    except (ValueError, FileNotFoundError) as exc:
        print(f"femo encoder eval: {exc}", file=sys.stderr)
        return 1
    result = score_split(net, split, tta=not args.no_tta)
    print(json.dumps({k: result[k] for k in ("war", "uar", "macro_f1", "ece", "n", "per_class_recall")}, indent=2))
    return 0
