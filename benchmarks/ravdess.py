"""RAVDESS speech benchmark of femo's audio branch against logistic regressions, on the same folds.

Protocol. The 1,440 utterances of 24 actors (8 classes, calm kept) are dealt into 6 fixed
actor-independent folds of 4 actors, 2 male and 2 female each (fold k: actors 2k-1, 2k, 2k+11,
2k+12), written to ``benchmarks/results/ravdess_folds.json``. Every model below is scored on each
fold's test actors after training on the other 20 only; femo's epoch is chosen on validation
actors carved from those 20 (3 actors, drawn per seed), and femo's headline configuration by
its mean validation UAR over its seeds (:func:`headline`), never by the test folds. UAR / WAR are pooled over the 1,440 test predictions, with 95%
intervals from an actor-clustered bootstrap (actors resampled with replacement, 2,000 draws), and
the paired difference femo - best baseline is bootstrapped on the same draws.

Models, all in one run on the same folds:

* ``lr_librosa`` / ``lr_librosa_spk``: multinomial logistic regression (standardised, balanced
  class weights, C from {0.01, 0.1, 1} by 3-fold actor-grouped cross-validation inside the
  training actors) on utterance statistics of femo's own stored librosa features (mean and std
  of the 64 log-mel bands, the 20 MFCC and their deltas; f0 in semitones over voiced frames:
  mean, std, 10/50/90th percentiles, range; voiced fraction; log-RMS mean, std, 90th percentile:
  218 values), without / with per-speaker z-scoring.
* ``lr_egemaps[_spk]``, ``lr_compare[_spk]``, ``lr_librosa+egemaps[_spk]``: the same on
  openSMILE eGeMAPSv02 (88) and ComParE_2016 (6,373) functionals from the stores, and on the
  librosa statistics and eGeMAPS together (the inputs of ``femo_*_egemaps_librosa*``).
* ``femo_*`` (:data:`VARIANTS`): femo's audio-only model trained by ``femo.training.loop.train``
  on the store (``ModelConfig.audio_input`` functionals | both, ``DataConfig.speaker_norm``,
  ``ModelConfig.audio_members``); ``_x3`` / ``_x5``: three / five seeds' test probabilities averaged.

Per-speaker normalisation uses each test actor's own unlabelled utterances: it is transductive
(a deployment must have several utterances of a speaker before scoring them), marked ``_spk``.

Stages (each resumable: the stores resume clip by clip, each femo fold is a run folder whose
metrics are reused): ``--stage extract`` builds the two stores under ``--work`` (default
``runs/ravdess``, log ``runs/ravdess/extract.log``) and derives ``store_egemaps_librosa`` from the
eGeMAPS one; ``--stage all`` also trains and scores.

Usage: python benchmarks/ravdess.py [--data ../shared/data/ravdess_speech] [--stage all]
Skips (exit 0) when the data folder is absent. Writes benchmarks/results/ravdess.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")
SETS = ("egemaps", "compare")
RESULTS = ROOT / "benchmarks" / "results"


def actor_fold(actor: int) -> int:
    """Fold 1..6 of RAVDESS actor 1..24: fold k holds actors 2k-1, 2k (M, F), 2k+11, 2k+12 (M, F)."""
    return (actor - 1) % 12 // 2 + 1


def fold_manifest(data: Path, work: Path) -> Path:
    """Write ``work/manifest.csv`` (+ sidecar): the data's manifest with absolute paths and a fold
    column; also writes the fold table to ``benchmarks/results/ravdess_folds.json``."""
    from femo.data.manifest import ManifestMeta, read_manifest, write_manifest

    df, _ = read_manifest(data / "manifest.csv")
    actors = df["subject"].str.extract(r"(\d+)$")[0].astype(int)
    df["fold"] = actors.map(actor_fold).astype(int)
    folds = {int(k): sorted(g.unique().tolist()) for k, g in df.groupby("fold")["subject"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ravdess_folds.json").write_text(json.dumps(
        {"rule": "fold k = actors 2k-1, 2k, 2k+11, 2k+12", "folds": folds}, indent=2) + "\n")
    return write_manifest(df, work / "manifest.csv", ManifestMeta(dataset="ravdess_speech", classes=CLASSES))


def complete(store: Path, clip_ids: pd.Series, functionals: str) -> bool:
    """True when ``store`` holds every clip ok, extracted with openSMILE set ``functionals``. Such a
    store is reused as it is: the extraction job's own resume check also compares every setting
    of its current version, so a later femo adding an (image-only) setting would redo them all."""
    from femo.data.store import StoreError, read_index, read_meta

    try:
        meta, index = read_meta(store), read_index(store)
    except StoreError:
        return False
    ok = set(index.loc[index["status"] == "ok", "clip_id"].astype(str))
    return (meta.extra.get("extraction", {}).get("audio_functionals") == functionals
            and set(clip_ids.astype(str)) <= ok and all((store / "clips" / f"{c}.npz").is_file() for c in ok))


def extract(data: Path, work: Path, sets: tuple[str, ...] = SETS) -> dict[str, float]:
    """Extract the stores of ``sets`` (resumable); returns the wall seconds and clips extracted per
    store, summed over the (resumed) runs that did the work."""
    from femo.data.manifest import read_manifest
    from femo.features.clip import ExtractConfig
    from femo.features.extract import run_extraction

    df, meta = read_manifest(fold_manifest(data, work))
    record = work / "extract_seconds.json"
    read = lambda: json.loads(record.read_text()) if record.is_file() else {}  # noqa: E731
    for name in sets:
        if complete(work / f"store_{name}", df["clip_id"], name):
            print(f"store_{name}: complete, reused", flush=True)
            continue
        t0 = time.perf_counter()
        index = run_extraction(df, work / f"store_{name}", classes=meta.classes, dataset=meta.dataset,
                               manifest_path=str(work / "manifest.csv"), config=ExtractConfig(audio_functionals=name))
        took, done = time.perf_counter() - t0, index.attrs["processed"]
        if done:  # a resumed run adds its share; a run with nothing left to do keeps the record
            seconds = read()
            seconds[name] = seconds.get(name, 0.0) + took
            seconds[f"{name}_clips"] = seconds.get(f"{name}_clips", 0) + done
            record.write_text(json.dumps(seconds))
        ok = int((index["status"] == "ok").sum())
        print(f"store_{name}: {ok}/{len(index)} ok, {done} extracted now in {took:.0f} s", flush=True)
    if "egemaps" in sets:
        derived(work)
    return read()


def derived(work: Path) -> Path:
    """``work/store_egemaps_librosa``: the eGeMAPS store with the ``egemaps+librosa`` functionals
    (``ravdess_lib.derive_store``: what extraction with that set writes, without decoding again)."""
    from femo.data.store import read_index
    from ravdess_lib import derive_store

    dst = work / "store_egemaps_librosa"
    src_index = read_index(work / "store_egemaps")
    if not (dst / "index.csv").is_file() or len(read_index(dst)) != len(src_index):
        t0 = time.perf_counter()
        derive_store(work / "store_egemaps", dst, src_index)
        print(f"store_egemaps_librosa: derived in {time.perf_counter() - t0:.0f} s", flush=True)
    return dst


class Variant(NamedTuple):
    """One femo configuration: store (``work/store_<store>``), ``ModelConfig.audio_input``,
    ``DataConfig.speaker_norm``, temporal block, epochs, peak lr, log-mel frames A, ensemble members
    K (``ModelConfig.audio_members``), seeds (runs whose test probabilities are averaged) and the
    run folder name under ``work/femo`` (variants differing only in seeds share their runs)."""

    store: str
    audio_input: str
    speaker_norm: bool
    temporal: str
    epochs: int
    lr: float
    frames: int
    members: int = 1
    seeds: int = 1
    runs: str = ""


#: femo variants, all trained and reported; the headline femo model is the one with the best mean
#: *validation* UAR (validation actors carved from each fold's training actors only). Store
#: ``egemaps_librosa`` holds the ``egemaps+librosa`` functionals (306 values: eGeMAPS and the
#: librosa statistics that the logistic regressions read).
VARIANTS: dict[str, Variant] = {
    "femo_func_egemaps": Variant("egemaps", "functionals", False, "mean", 50, 1e-3, 128),
    "femo_func_egemaps_spk": Variant("egemaps", "functionals", True, "mean", 50, 1e-3, 128),
    "femo_both_egemaps_spk": Variant("egemaps", "both", True, "mean", 10, 1e-3, 64),
    "femo_func_egemaps_spk_x5": Variant("egemaps", "functionals", True, "mean", 50, 1e-3, 128, seeds=5,
                                        runs="femo_func_egemaps_spk"),
    "femo_func_egemaps_librosa_spk": Variant("egemaps_librosa", "functionals", True, "mean", 50, 1e-3, 128),
    "femo_func_egemaps_librosa_spk_x3": Variant("egemaps_librosa", "functionals", True, "mean", 50, 1e-3, 128,
                                                seeds=3, runs="femo_func_egemaps_librosa_spk"),
    "femo_func_egemaps_librosa_spk_x5": Variant("egemaps_librosa", "functionals", True, "mean", 50, 1e-3, 128,
                                                seeds=5, runs="femo_func_egemaps_librosa_spk"),
    "femo_both_egemaps_librosa_spk": Variant("egemaps_librosa", "both", True, "mean", 10, 1e-3, 64),
    "femo_both_egemaps_librosa_spk_x3": Variant("egemaps_librosa", "both", True, "mean", 10, 1e-3, 64, seeds=3,
                                                runs="femo_both_egemaps_librosa_spk"),
    "femo_both_egemaps_librosa_spk_x5": Variant("egemaps_librosa", "both", True, "mean", 10, 1e-3, 64, seeds=5,
                                                runs="femo_both_egemaps_librosa_spk"),
}


def train_run(name: str, work: Path, seed: int, fold: int) -> Path:
    """The run folder of variant ``name``, ``seed``, ``fold``, trained by femo's loop unless its
    metrics.json exists (an interrupted run resumes from its checkpoint)."""
    from dataclasses import replace

    from femo.config import ModelConfig, TrainConfig
    from femo.training.loop import data_config_for, train

    v = VARIANTS[name]
    run = work / "femo" / (v.runs or name) / f"seed{seed}" / f"fold_{fold}"
    if (run / "metrics.json").is_file():
        return run
    store = work / f"store_{v.store}"
    model = ModelConfig(modalities=("audio",), audio_input=v.audio_input, temporal=v.temporal, fusion="late",
                        dim=128, dropout=0.3, audio_members=v.members)
    data = replace(data_config_for(store), speaker_norm=v.speaker_norm, audio_frames=v.frames)
    cfg = TrainConfig(epochs=v.epochs, batch_size=32, lr=v.lr, weight_decay=0.05, label_smoothing=0.1,
                      aux_weight=0.0, augment=False, cache=True, seed=seed)
    t0 = time.perf_counter()
    train(store, out=run, model=model, train=cfg, fold=fold, data=data, resume=True, progress=False)
    print(f"{name} seed {seed} fold {fold}: {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def train_variant(name: str, work: Path, folds: list[int]) -> pd.DataFrame:
    """Train ``name`` on every fold and seed (:func:`train_run`); returns the seed-averaged test
    probabilities, one row per clip, with the mean validation UAR in ``attrs["val_uar"]``."""
    probs, val, seconds = [], [], 0.0
    for seed in range(VARIANTS[name].seeds):
        for k in folds:
            run = train_run(name, work, seed, k)
            val.append(json.loads((run / "metrics.json").read_text())["val_uar"])
            seconds += float(pd.read_csv(run / "history.csv")["seconds"].sum())
            probs.append(pd.read_csv(run / "predictions.csv", dtype={"clip_id": str}).assign(seed=seed))
    table = pd.concat(probs)
    cols = [c for c in table.columns if c.startswith("p_")]
    mean = table.groupby("clip_id")[cols].mean()
    mean.attrs.update(val_uar=float(np.mean(val)), epoch_seconds=seconds)
    return mean


def baselines(work: Path, index: pd.DataFrame, *, compare: bool = True) -> dict[str, np.ndarray]:
    """Out-of-fold predictions of the logistic regressions, keyed by model name; each model is
    cached in ``work/baselines.json`` as soon as it is fitted (for the same clips), so a rerun or a
    parallel stage reuses it. ``compare=False`` leaves out the (slow) ComParE regressions."""
    from ravdess_lib import lr_predictions, speaker_zscore

    cache = work / "baselines.json"
    clip_ids = index["clip_id"].astype(str).tolist()
    saved = json.loads(cache.read_text()) if cache.is_file() else {}
    if saved.get("clip_id") != clip_ids:
        saved = {"clip_id": clip_ids, "chosen_c": {}, "seconds": {}, "preds": {}}
    if not isinstance(saved["seconds"], dict):
        saved["seconds"] = {"all": saved["seconds"]}
    y = index["label"].map(CLASSES.index).to_numpy()
    folds, spk = index["fold"].to_numpy(int), index["subject"].astype(str).to_numpy()
    names = ["librosa", "egemaps", "librosa+egemaps", *(["compare"] if compare else [])]
    feats: dict[str, np.ndarray] = {}
    for name in names:
        for suffix in ("", "_spk"):
            key = f"lr_{name}{suffix}"
            if key in saved["preds"]:
                continue
            feats = feats or _features(work, index, compare)
            t0 = time.perf_counter()
            x = feats[name] if not suffix else speaker_zscore(feats[name], spk)
            pred, saved["chosen_c"][key] = lr_predictions(x, y, folds, spk)
            saved["preds"][key], saved["seconds"][key] = pred.tolist(), time.perf_counter() - t0
            cache.write_text(json.dumps(saved))
            print(f"{key}: {saved['seconds'][key]:.0f} s, C per fold {saved['chosen_c'][key]}", flush=True)
    keys = [f"lr_{n}{s}" for n in names for s in ("", "_spk")]
    return {**{k: np.asarray(saved["preds"][k]) for k in keys}, "_chosen_c": {k: saved["chosen_c"][k] for k in keys},
            "_seconds": {k: saved["seconds"].get(k) for k in keys}}


def _features(work: Path, index: pd.DataFrame, compare: bool) -> dict[str, np.ndarray]:
    """Utterance statistics and functionals of every clip of ``index`` (rows in order)."""
    from ravdess_lib import load_features

    egemaps = load_features(work / "store_egemaps", index)
    feats = {"librosa": egemaps["librosa"], "egemaps": egemaps["functionals"]}
    feats["librosa+egemaps"] = np.concatenate([feats["librosa"], feats["egemaps"]], axis=1)
    if compare:
        feats["compare"] = load_features(work / "store_compare", index)["functionals"]
    return feats


def headline(val_uar: dict[str, float]) -> str:
    """femo's headline variant, by validation only: each configuration (variants sharing a run
    folder) is represented by its variant with the most seeds, scored by that variant's mean
    validation UAR over its seeds and folds (each seed carves its own 3 validation actors from the
    training actors, the same for every configuration); the best one is the headline."""
    groups: dict[str, list[str]] = {}
    for m in val_uar:
        groups.setdefault(VARIANTS[m].runs or m, []).append(m)
    chosen = [max(ms, key=lambda m: VARIANTS[m].seeds) for ms in groups.values()]
    return max(chosen, key=lambda m: val_uar[m])


def report(index: pd.DataFrame, preds: dict[str, np.ndarray], val_uar: dict[str, float], extra: dict) -> dict:
    """Scores with actor-clustered intervals, the headline femo model (best validation UAR) and its
    paired difference to the best baseline; writes benchmarks/results/ravdess.json."""
    from ravdess_lib import clustered_bootstrap, score

    y = index["label"].map(CLASSES.index).to_numpy()
    boot = clustered_bootstrap(y, preds, index["subject"].astype(str).to_numpy(), num_classes=len(CLASSES))
    rows = {m: score(y, p, boot[f"{m}/uar"], boot[f"{m}/war"]) for m, p in preds.items()}
    for m, v in val_uar.items():
        rows[m]["val_uar"] = v
    femo = headline(val_uar)
    base = max((m for m in rows if m.startswith("lr_")), key=lambda m: rows[m]["uar"])
    def paired(m: str) -> dict:  # femo variant m - best baseline, on the same bootstrap draws
        return {metric: {"point": rows[m][metric] - rows[base][metric],
                         "ci": [float(x) for x in np.percentile(boot[f"{m}/{metric}"] - boot[f"{base}/{metric}"],
                                                                [2.5, 97.5])],
                         "p_not_better": float(np.mean(boot[f"{m}/{metric}"] <= boot[f"{base}/{metric}"]))}
                for metric in ("uar", "war")}

    diff = paired(femo)
    extra["each_femo_minus_best_baseline"] = {m: paired(m) for m in val_uar}
    out = {"protocol": "RAVDESS speech, 1,440 utterances, 8 classes (calm kept), 6 actor-independent folds of 4 "
                       "actors (benchmarks/results/ravdess_folds.json), pooled test predictions; 95% intervals: "
                       "actor-clustered bootstrap (2,000 draws); femo headline = the configuration with the best mean "
                       "validation UAR over its seeds (validation actors carved from the training actors, per seed), "
                       "reported as the average of those seeds; best baseline = best test UAR (favours the baseline); differences: "
                       "paired on the same draws, p_not_better = share of draws where femo <= baseline; models "
                       "ending in _spk are TRANSDUCTIVE "
                       "(per-speaker z-scoring with each test actor's own unlabelled audio)",
           "models": rows, "femo_headline": femo, "best_baseline": base, "femo_minus_best_baseline": diff, **extra}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ravdess.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def print_table(out: dict) -> None:
    """The results as a text table."""
    print(f"{'model':34s} {'UAR':>6s} {'95% CI':>13s} {'WAR':>6s} {'95% CI':>13s} {'val UAR':>7s}")
    for m, r in out["models"].items():
        ci = lambda k: f"{r[k][0]:.3f}-{r[k][1]:.3f}"
        print(f"{m:34s} {r['uar']:6.3f} {ci('uar_ci'):>13s} {r['war']:6.3f} {ci('war_ci'):>13s} "
              f"{r.get('val_uar', float('nan')):7.3f}")
    d = out["femo_minus_best_baseline"]
    print(f"{out['femo_headline']} - {out['best_baseline']}: UAR {d['uar']['point']:+.3f} "
          f"({d['uar']['ci'][0]:+.3f} to {d['uar']['ci'][1]:+.3f}), WAR {d['war']['point']:+.3f} "
          f"({d['war']['ci'][0]:+.3f} to {d['war']['ci'][1]:+.3f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ravdess_speech")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "ravdess")
    p.add_argument("--stage", choices=("extract", "train", "baselines", "all"), default="all",
                   help="extract: the stores only; train: also train the femo variants; baselines: the stores and "
                        "the logistic regressions; all: everything and the report")
    p.add_argument("--sets", default=",".join(SETS), help="functional sets to extract stores for")
    p.add_argument("--no-compare", action="store_true", help="leave out the ComParE logistic regressions")
    p.add_argument("--variants", default="", help=f"comma-separated subset of {', '.join(VARIANTS)}")
    args = p.parse_args(argv)
    if not (args.data / "manifest.csv").is_file():
        print(f"skip: no RAVDESS data at {args.data}")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    seconds = extract(args.data, args.work, tuple(s for s in args.sets.split(",") if s))
    if args.stage == "extract":
        return 0
    from femo.data.store import ok_clips, read_index

    index = ok_clips(read_index(args.work / "store_egemaps")).sort_values("clip_id").reset_index(drop=True)
    variants = [v for v in args.variants.split(",") if v] if args.variants else list(VARIANTS)
    folds = [int(f) for f in sorted(index["fold"].astype(int).unique())]
    if args.stage == "train":
        for v in variants:
            train_variant(v, args.work, folds)
        return 0
    preds = baselines(args.work, index, compare=not args.no_compare)
    if args.stage == "baselines":
        return 0
    extra = {"chosen_c": preds.pop("_chosen_c"), "seconds_baselines": preds.pop("_seconds"),
             "extract_seconds": seconds,
             "variants": {v: VARIANTS[v]._asdict() for v in variants}}
    val_uar = {}
    for v in variants:
        probs = train_variant(v, args.work, folds)
        val_uar[v] = probs.attrs["val_uar"]
        preds[v] = probs.reindex(index["clip_id"])[[f"p_{c}" for c in CLASSES]].to_numpy().argmax(1)
        extra[f"epoch_seconds_{v}"] = probs.attrs["epoch_seconds"]  # summed over folds and seeds
    print_table(report(index, preds, val_uar, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
