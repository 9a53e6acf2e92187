"""Real audio-visual benchmark: FER2013 faces paired with RAVDESS voices of the same emotion.

No public corpus at hand holds both real faces and real voices with emotion labels, so the pairs
are built: each RAVDESS speech utterance (``audio_path``) is paired with one FER2013 face image
(``path``) of the same class. The two halves are independent recordings of different people;
what the benchmark measures is whether femo's fusion combines two real, independently noisy
cues better than either alone, and whether the modality-ablation analysis credits both.

Protocol.

* Classes: the 7 both corpora have (RAVDESS ``calm`` dropped): 1,248 utterances.
* Faces: only FER2013 ``public_test`` + ``private_test`` images (femo's FER2013 face encoder is
  trained on ``train``: train images in the pairs would leak). Disgust has only 111 such images
  for 192 utterances, so 111 disgust utterances are drawn at random (seeded) and the other 81
  are left out: 1,167 pairs. No image is used twice.
* Folds: 6 actor-independent folds of 4 RAVDESS actors (the rule of ``benchmarks/ravdess.py``:
  fold k = actors 2k-1, 2k, 2k+11, 2k+12). Images are dealt into the pairs at random (seeded),
  hence into the folds at random. ``subject`` = the RAVDESS actor, so femo's validation split is
  carved from training actors and intervals are clustered by actor.
* Extraction: femo's extraction job (resumable) with eGeMAPS functionals, 4 frames per clip (a
  still image is repeated; more frames add nothing), face embeddings cached with ``--encoder``
  (``faceapi_fer`` when its weights are present, else ``faceapi``; ``faceapi@frame`` embeds the
  whole 48x48 image instead of the mediapipe-aligned crop, :mod:`femo.features.embed`).
* Models: femo's own k-fold training (``femo.training.loop.train_folds``) on the same folds,
  three ``ModelConfig.modalities``: ``("face",)`` on the cached embeddings, ``("audio",)`` on the
  eGeMAPS functionals, and ``("face", "audio")`` with gated fusion. Pooled out-of-fold
  predictions; UAR / WAR with actor-clustered bootstrap 95% intervals (2,000 draws) and the paired
  bootstrap interval of fused minus the best single modality (on the same draws).
* Ablation: :func:`femo.audit.ablation.run_ablation` on the fused run (every fold), Shapley shares
  of UAR per modality.

Stages (``--stage manifest|extract|train|all``), each resumable: the store resumes clip by clip,
embeddings are cached per clip, each k-fold run is reused when its metrics.json exists.
Log: ``runs/real_pairs/`` (git-ignored). Writes ``benchmarks/results/real_pairs.json`` (one entry per face encoder).

Usage: python benchmarks/real_pairs.py [--fer ../shared/data/fer2013] [--ravdess ../shared/data/ravdess_speech]
Skips (exit 0) when either data folder is absent.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = ROOT / "benchmarks" / "results"
CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
FACE_SPLITS = ("public_test", "private_test")
FACE_ENCODERS = ("faceapi", "faceapi_fer")
SEED = 0
NUM_FRAMES = 4


def actor_fold(actor: int) -> int:
    """Fold 1..6 of RAVDESS actor 1..24: fold k holds actors 2k-1, 2k (M, F), 2k+11, 2k+12 (M, F)."""
    return (actor - 1) % 12 // 2 + 1


def pair_table(fer: Path, ravdess: Path, *, seed: int = SEED) -> tuple[pd.DataFrame, dict]:
    """The pair manifest (one row per pair) and a summary of what was kept and dropped.

    Columns: clip_id (``pair_<ravdess id>``), path (FER2013 image, absolute), audio_path (RAVDESS
    FLAC, absolute), label, subject (RAVDESS actor), fold (1..6), sex, face_id, face_split.
    """
    faces = pd.read_csv(fer / "manifest.csv", dtype=str)
    faces = faces[faces["split"].isin(FACE_SPLITS) & faces["label"].isin(CLASSES)]
    voices = pd.read_csv(ravdess / "manifest.csv", dtype=str)
    voices = voices[voices["label"].isin(CLASSES)]
    rng = np.random.default_rng(seed)
    rows, dropped = [], {}
    for label in CLASSES:
        v = voices[voices["label"] == label].sort_values("clip_id")
        f = faces[faces["label"] == label].sort_values("clip_id")
        if len(f) < len(v):  # fewer face images than utterances: keep a random subset of utterances
            dropped[label] = len(v) - len(f)
            v = v.iloc[np.sort(rng.choice(len(v), len(f), replace=False))]
        f = f.iloc[rng.choice(len(f), len(v), replace=False)]  # distinct images, random order
        rows.append(pd.DataFrame({
            "clip_id": "pair_" + v["clip_id"].to_numpy(), "path": [str(fer / p) for p in f["path"]],
            "audio_path": [str(ravdess / p) for p in v["path"]], "label": label,
            "subject": v["subject"].to_numpy(), "sex": v["sex"].to_numpy(),
            "face_id": f["clip_id"].to_numpy(), "face_split": f["split"].to_numpy()}))
    df = pd.concat(rows, ignore_index=True)
    df["fold"] = df["subject"].str.extract(r"(\d+)$")[0].astype(int).map(actor_fold).astype(int)
    assert df["face_id"].is_unique and df["audio_path"].is_unique
    summary = {"n_pairs": len(df), "per_class": df["label"].value_counts().reindex(CLASSES).astype(int).to_dict(),
               "utterances_left_out": dropped, "face_splits": list(FACE_SPLITS),
               "folds": {int(k): sorted(g.unique().tolist()) for k, g in df.groupby("fold")["subject"]}}
    return df.sort_values("clip_id").reset_index(drop=True), summary


def write_pairs(fer: Path, ravdess: Path, work: Path) -> tuple[Path, dict]:
    """Write ``work/manifest.csv`` (+ sidecar) and ``work/pairs.json``; returns the manifest path."""
    from femo.data.manifest import ManifestMeta, write_manifest

    df, summary = pair_table(fer, ravdess)
    path = work / "manifest.csv"
    if path.is_file() and pd.read_csv(path, dtype=str)[list(df.columns)].equals(df.astype(str)):
        return path, summary  # unchanged: parallel stages read it as it is
    path = write_manifest(df, work / "manifest.csv", ManifestMeta(dataset="fer2013+ravdess_pairs", classes=CLASSES))
    (work / "pairs.json").write_text(json.dumps(summary, indent=2) + "\n")
    return path, summary


def finished_index(store: Path, clip_ids: pd.Series) -> pd.DataFrame | None:
    """The store's index when it holds a row for every clip (ok or failed), else None."""
    from femo.data.store import StoreError, read_index

    try:
        index = read_index(store)
    except (StoreError, FileNotFoundError):
        return None
    return index if set(clip_ids.astype(str)) <= set(index["clip_id"].astype(str)) else None


def extract(manifest: Path, work: Path, workers: int) -> dict:
    """Extract the pair store (resumable) with eGeMAPS functionals; returns counts and seconds."""
    from femo.data.manifest import read_manifest
    from femo.features.clip import ExtractConfig
    from femo.features.extract import run_extraction

    df, meta = read_manifest(manifest)
    record = work / "extract_seconds.json"
    seconds = json.loads(record.read_text()) if record.is_file() else {"seconds": 0.0, "clips": 0}
    t0 = time.perf_counter()
    index = finished_index(work / "store", df["clip_id"])
    if index is None:  # the job resumes clip by clip; a finished store is read as it is (parallel stages)
        index = run_extraction(df, work / "store", classes=meta.classes, dataset=meta.dataset,
                               manifest_path=str(manifest), workers=workers,
                               config=ExtractConfig(audio_functionals="egemaps", num_frames=NUM_FRAMES,
                                                    pose_stride=NUM_FRAMES))
    if index.attrs.get("processed"):
        seconds = {"seconds": seconds["seconds"] + time.perf_counter() - t0,
                   "clips": seconds["clips"] + int(index.attrs["processed"])}
        record.write_text(json.dumps(seconds))
    ok = index["status"] == "ok"
    face = index.loc[ok, "face_ratio"].astype(float) if "face_ratio" in index.columns else pd.Series(dtype=float)
    out = {**seconds, "n_ok": int(ok.sum()), "n_failed": int((~ok).sum()),
           "errors": index.loc[~ok, ["clip_id", "error"]].to_dict("records") if "error" in index.columns else [],
           "face_found_clips": int((face > 0).sum()) if len(face) else None}
    print(f"store: {out['n_ok']}/{len(index)} ok, faces found in {out['face_found_clips']}", flush=True)
    return out


#: The three models: name -> (ModelConfig.modalities, fusion). All share MODEL_KW and TRAIN_KW.
MODELS: dict[str, tuple[tuple[str, ...], str]] = {
    "face": (("face",), "late"), "audio": (("audio",), "late"), "fused": (("face", "audio"), "gated")}
MODEL_KW = {"temporal": "mean", "dim": 128, "dropout": 0.3, "audio_input": "functionals"}
TRAIN_KW = {"epochs": 20, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.05, "label_smoothing": 0.1,
            "augment": False, "cache": True, "seed": SEED}


def face_encoder(choice: str) -> str:
    """``choice``, or for ``auto`` femo's FER2013 encoder when its weights are installed, else faceapi."""
    if choice != "auto":
        return choice
    from femo.models.fer_encoder import WEIGHTS_FILE

    return "faceapi_fer" if WEIGHTS_FILE.is_file() else "faceapi"


def embed(store: Path, encoder: str) -> dict:
    """Cache the face embeddings (resumable, per clip); returns the encoder and the seconds spent
    embedding, summed over the (resumed) calls that did work (``store/embeddings/<name>/seconds.json``)."""
    from femo.features.embed import cache_embeddings, embeddings_dir

    record = embeddings_dir(store, encoder) / "seconds.json"
    done = json.loads(record.read_text())["seconds"] if record.is_file() else 0.0
    todo = not (embeddings_dir(store, encoder) / "meta.json").is_file()
    t0 = time.perf_counter()
    cache_embeddings(store, encoder=encoder, progress=True)
    if todo:
        done += time.perf_counter() - t0
        record.write_text(json.dumps({"seconds": done}))
    return {"encoder": encoder, "seconds": done if record.is_file() else None}


def train_model(name: str, work: Path, encoder: str) -> Path:
    """k-fold training of model ``name`` through femo's loop (reused once its metrics.json exists)."""
    from dataclasses import replace

    from femo.config import ModelConfig, TrainConfig
    from femo.training.loop import data_config_for, train_folds

    modalities, fusion = MODELS[name]
    out = work / "runs" / (f"{name}_{encoder}" if "face" in modalities else name)  # audio: one run for all encoders
    if (out / "metrics.json").is_file():
        return out
    model = ModelConfig(modalities=modalities, fusion=fusion, embeddings=encoder if "face" in modalities else None,
                        **MODEL_KW)
    t0 = time.perf_counter()
    train_folds(work / "store", out=out, model=model, train=TrainConfig(**TRAIN_KW),
                data=replace(data_config_for(work / "store"), num_frames=NUM_FRAMES), resume=True, progress=False)
    print(f"{name}: trained the folds in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def ablation(run: Path) -> dict:
    """Shapley shares of UAR per modality of the fused k-fold run, pooled out of fold."""
    from femo.audit import pooled
    from femo.audit.ablation import wide_predictions
    from femo.audit.ablation_result import ablate

    runs = pooled.load_runs(run)
    long, meta = pooled.pooled_subsets(runs, batch_size=64)
    result = ablate(wide_predictions(long, meta), len(runs[0].classes), n_boot=200)
    table = result.subsets.set_index("subset")
    return {"shapley": {r.modality: {"shapley_uar": float(r.shapley), "share": float(r.share)}
                        for r in result.shapley.itertuples()},
            "subset_uar": {str(k): {"uar": float(v["uar"]), "ci": [float(v["uar_low"]), float(v["uar_high"])]}
                           for k, v in table.iterrows()},
            "chance_uar": float(result.chance), "n_clips": int(result.n_clips)}


def score(runs: dict[str, Path]) -> dict:
    """Pooled out-of-fold UAR / WAR with actor-clustered intervals and fused minus best single."""
    from ravdess_lib import clustered_bootstrap

    preds = {m: pd.read_csv(r / "predictions.csv", dtype={"clip_id": str, "subject": str}).set_index("clip_id")
             for m, r in runs.items()}
    ids = sorted(set.intersection(*(set(p.index) for p in preds.values())))
    first = next(iter(preds.values())).loc[ids]
    y = first["label"].map(CLASSES.index).to_numpy()
    hat = {m: p.loc[ids, "predicted"].map(CLASSES.index).to_numpy() for m, p in preds.items()}
    boot = clustered_bootstrap(y, hat, first["subject"].to_numpy(), num_classes=len(CLASSES))
    rows = {}
    for m, h in hat.items():
        recall = [float(np.mean(h[y == k] == k)) for k in range(len(CLASSES))]
        rows[m] = {"uar": float(np.mean(recall)), "war": float(np.mean(h == y)),
                   "uar_ci": np.percentile(boot[f"{m}/uar"], [2.5, 97.5]).tolist(),
                   "war_ci": np.percentile(boot[f"{m}/war"], [2.5, 97.5]).tolist(),
                   "per_class_recall": dict(zip(CLASSES, recall)), "run": str(runs[m])}
    best = max((m for m in rows if m != "fused"), key=lambda m: rows[m]["uar"])
    diff = {k: {"point": rows["fused"][k] - rows[best][k],
                "ci": np.percentile(boot[f"fused/{k}"] - boot[f"{best}/{k}"], [2.5, 97.5]).tolist()}
            for k in ("uar", "war")}
    return {"models": rows, "best_single": best, "fused_minus_best_single": diff, "n_scored": len(ids)}


def against_reference(runs: dict[str, Path], reference: dict[str, Path]) -> dict:
    """Paired differences (same actor-clustered draws) of the face and fused runs minus the same
    models on ``faceapi`` crop embeddings (the audio run is shared)."""
    from ravdess_lib import clustered_bootstrap

    read = lambda r: pd.read_csv(r / "predictions.csv", dtype={"clip_id": str, "subject": str}).set_index("clip_id")
    preds = {**{f"{m}": read(runs[m]) for m in ("face", "fused")}, **{f"{m}_ref": read(reference[m]) for m in ("face", "fused")}}
    ids = sorted(set.intersection(*(set(p.index) for p in preds.values())))
    first = preds["face"].loc[ids]
    y = first["label"].map(CLASSES.index).to_numpy()
    hat = {m: p.loc[ids, "predicted"].map(CLASSES.index).to_numpy() for m, p in preds.items()}
    boot = clustered_bootstrap(y, hat, first["subject"].to_numpy(), num_classes=len(CLASSES))
    point = {m: {"uar": float(np.mean([np.mean(h[y == k] == k) for k in range(len(CLASSES))])),
                 "war": float(np.mean(h == y))} for m, h in hat.items()}
    return {m: {k: {"point": point[m][k] - point[f"{m}_ref"][k],
                    "ci": np.percentile(boot[f"{m}/{k}"] - boot[f"{m}_ref/{k}"], [2.5, 97.5]).tolist()}
                for k in ("uar", "war")} for m in ("face", "fused")}


def run_models(args, summary: dict, extraction: dict) -> int:
    """Embeddings, the three k-fold models, scores, ablation; writes the results JSON."""
    encoder = face_encoder(args.encoder)
    names = [m for m in (args.models.split(",") if args.models else MODELS)]
    embedding = embed(args.work / "store", encoder) if any("face" in MODELS[m][0] for m in names) else {}
    runs = {m: train_model(m, args.work, encoder) for m in names}
    if args.stage == "train" or len(runs) < len(MODELS):
        return 0
    out = {"protocol": PROTOCOL, "pairs": summary, "extraction": extraction, "embedding": embedding,
           "model_kw": MODEL_KW, "train_kw": TRAIN_KW, "models_spec": {k: list(map(list, v[:1])) + [v[1]]
                                                                       for k, v in MODELS.items()},
           **score(runs), "ablation": ablation(runs["fused"])}
    if encoder != "faceapi":  # the reference runs on face-api.js embeddings of the crops, cached first
        out["embedding_reference"] = embed(args.work / "store", "faceapi")
        out["minus_faceapi"] = against_reference(runs, {m: train_model(m, args.work, "faceapi") for m in names})
    from femo.training.metrics import write_json

    path = RESULTS / "real_pairs.json"  # one entry per face encoder, each rerun replaces its own
    saved = json.loads(path.read_text()) if path.is_file() else {}
    known = lambda k: k.partition("@")[0] in FACE_ENCODERS  # an encoder, or its embedding of another source
    write_json(path, {**{k: v for k, v in saved.items() if known(k)}, encoder: out})
    print_table(out)
    return 0


PROTOCOL = ("FER2013 public+private test faces paired at random with RAVDESS speech utterances of the same class "
            "(7 classes, calm dropped; disgust limited to the 111 images); 6 actor-independent folds of 4 RAVDESS "
            "actors; femo k-fold training, pooled out-of-fold predictions; 95% intervals: actor-clustered bootstrap "
            "(2,000 draws); fused minus best single modality: paired bootstrap on the same draws")


def print_table(out: dict) -> None:
    """The results as a text table."""
    print(f"{'model':8s} {'UAR':>6s} {'95% CI':>13s} {'WAR':>6s} {'95% CI':>13s}")
    for m, r in out["models"].items():
        print(f"{m:8s} {r['uar']:6.3f} {r['uar_ci'][0]:.3f}-{r['uar_ci'][1]:.3f} {r['war']:6.3f} "
              f"{r['war_ci'][0]:.3f}-{r['war_ci'][1]:.3f}")
    d = out["fused_minus_best_single"]
    print(f"fused - {out['best_single']}: UAR {d['uar']['point']:+.3f} ({d['uar']['ci'][0]:+.3f} to "
          f"{d['uar']['ci'][1]:+.3f}), WAR {d['war']['point']:+.3f} ({d['war']['ci'][0]:+.3f} to {d['war']['ci'][1]:+.3f})")
    shares = ", ".join(f"{m} {v['share']:.2f}" for m, v in out["ablation"]["shapley"].items())
    print(f"Shapley shares of fused UAR over chance: {shares}")
    for m, d in out.get("minus_faceapi", {}).items():
        print(f"{m} minus {m} on faceapi crops, paired: UAR {d['uar']['point']:+.3f} ({d['uar']['ci'][0]:+.3f} to "
              f"{d['uar']['ci'][1]:+.3f}), WAR {d['war']['point']:+.3f} ({d['war']['ci'][0]:+.3f} to {d['war']['ci'][1]:+.3f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fer", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013")
    p.add_argument("--ravdess", type=Path, default=ROOT.parent / "shared" / "data" / "ravdess_speech")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "real_pairs")
    p.add_argument("--stage", choices=("manifest", "extract", "train", "all"), default="all")
    p.add_argument("--workers", type=int, default=1, help="extraction worker processes")
    p.add_argument("--encoder", default="auto", help="frame encoder of the face embeddings (auto: faceapi_fer "
                                                     "when its weights are present, else faceapi)")
    p.add_argument("--models", default="", help=f"comma-separated subset of {', '.join(MODELS)} (train stage)")
    args = p.parse_args(argv)
    if not ((args.fer / "manifest.csv").is_file() and (args.ravdess / "manifest.csv").is_file()):
        print(f"skip: FER2013 ({args.fer}) or RAVDESS ({args.ravdess}) data absent")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    manifest, summary = write_pairs(args.fer, args.ravdess, args.work)
    print(f"{summary['n_pairs']} pairs {summary['per_class']}; utterances left out: {summary['utterances_left_out']}",
          flush=True)
    if args.stage == "manifest":
        return 0
    extraction = extract(manifest, args.work, args.workers)
    if args.stage == "extract":
        return 0
    return run_models(args, summary, extraction)


if __name__ == "__main__":
    sys.exit(main())
