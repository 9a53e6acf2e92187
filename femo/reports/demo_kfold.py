"""The k-fold smoke set of the label-quality report, cached like :mod:`femo.reports.demo`.

Out-of-fold probabilities need every fold trained, and a check against planted truth needs
planted label errors, so :func:`build_kfold_demo` builds the demo's synthetic settings
(:data:`femo.reports.demo.SMOKE`) with ``label_noise`` of the labels flipped (``femo synth
--label-noise``), extracts and embeds them, and trains the demo's small model on all five folds.
Layout: ``<cache>/demo/<data_key>-noise<P>/{data,store}`` and ``runs/epochs<E>-lr<LR>-folds-<fingerprint>/`` with
its ``.done.json`` written last; with ``label_noise=0`` the k-fold run sits in the
ordinary demo folder beside its single-fold run.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from femo.assets import cache_dir
from femo.reports import demo
from femo.reports.demo import SMOKE, DemoPaths, SmokeSettings

#: Fraction of the smoke set's labels flipped by default (7 of 70 clips).
LABEL_NOISE = 0.1


def kfold_keys(settings: SmokeSettings, label_noise: float) -> tuple[str, str]:
    """(data folder name, run folder name) of the k-fold demo."""
    data_key = settings.data_key if not label_noise else f"{settings.data_key}-noise{label_noise:g}"
    return data_key, f"epochs{settings.epochs}-lr{settings.lr}-folds-{demo.source_fingerprint(demo.RUN_SOURCES)}"


def build_kfold_demo(*, label_noise: float = LABEL_NOISE, settings: SmokeSettings = SMOKE,
                     cache: str | Path | None = None, log: Callable[[str], None] = print) -> DemoPaths:
    """Build (once) and return the noisy synthetic smoke set with a run trained on every fold."""
    root = cache_dir(cache) / "demo"
    data_key, run_key = kfold_keys(settings, label_noise)
    folder = root / data_key
    run = folder / "runs" / run_key
    done = run.with_name(run.name + ".done.json")
    if not done.is_file():
        with demo._locked(root / f"{data_key}.lock"):
            if not done.is_file():
                _build(folder, run, settings, label_noise, log)
                done.write_text(json.dumps({**asdict(settings), "label_noise": label_noise, "folds": "all"}) + "\n")
    return DemoPaths(folder / "data" / "manifest.csv", folder / "store", run)


def _build(folder: Path, run: Path, settings: SmokeSettings, label_noise: float, log: Callable[[str], None]) -> None:
    """Each step resumes what an interrupted build left (as the ordinary demo's build does)."""
    from femo.config import ModelConfig, TrainConfig
    from femo.data.synth import SynthConfig, generate
    from femo.training.loop import train_folds

    started = time.monotonic()
    log(f"building the k-fold demo set (label noise {label_noise:g}) in {folder} (once; later runs reuse it)")
    manifest = folder / "data" / "manifest.csv"
    if not manifest.is_file():
        generate(folder / "data", SynthConfig(clips=settings.clips, subjects=settings.subjects, seconds=settings.seconds,
                                              size=settings.size, seed=settings.seed, label_noise=label_noise),
                 log=log, progress=False)
    store = folder / "store"
    demo._extract(manifest, store)
    # a new run key may mean a changed encoder: recompute the embeddings it trains on
    demo.cache_embeddings(store, force=True, log=log)
    shutil.rmtree(run, ignore_errors=True)
    model = ModelConfig(dim=64, temporal="mean", fusion="gated", embeddings=demo.pick_embeddings(store))
    train_folds(store, out=run, model=model, progress=False,
                train=TrainConfig(epochs=settings.epochs, lr=settings.lr, seed=settings.seed, cache=True))
    log(f"k-fold demo set ready in {time.monotonic() - started:.0f} s")
