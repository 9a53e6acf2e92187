"""All of FER2013 through femo's own pipeline: extract, embed, ``femo train``'s default path, and a
logistic regression on the same inputs in the same run.

    python benchmarks/fer2013_pipeline.py [--data ../shared/data/fer2013] [--work runs/fer2013_pipeline]
                                          [--workers 2] [--epochs 20] [--stage manifest|extract|embed|train|all]
                                          [--embeddings faceapi,faceapi@frame,faceapi@fallback]

Reads ``DATA/manifest.csv`` (35,885 images, official splits) when present and skips otherwise.
Stages, each resumable (a rerun keeps what is done):

1. ``manifest``: every image, ``split`` train / val (public_test) / test (private_test), subject =
   image (FER2013 has no subject ids).
2. ``extract``: ``femo extract --workers N`` (face landmarker on the 48x48 images, upscaled; the
   small-face rescue for misses; an image with no face found stays in the store, face masked).
   Records the wall time and the face-found rate.
3. ``embed``: face-api.js embeddings (``femo.features.embed``), timed, for each ``--embeddings``
   name: ``faceapi`` of the mediapipe-aligned crops (the default path), ``faceapi@frame`` of the
   whole 48x48 image (FER2013's images are face crops already), ``faceapi@fallback`` the crop where
   a face was found and the whole image where not.
4. ``train``: ``femo train STORE --out RUN --embeddings NAME --cache --epochs N`` for each name:
   the default model (face embeddings + landmarks; the audio branch is masked, no clip has audio),
   epoch chosen by validation UAR on public_test, private_test scored once. ``faceapi`` is exactly
   ``femo train``'s default path. Seconds per epoch from the run's history.
5. Baseline, same split, per name: a logistic regression (standardised, class-balanced, C chosen by
   UAR on public_test) on what the model reads of each image: its mean embedding over the rows
   that hold a face input and its geometry vector (landmarks, blendshapes, head pose;
   ``femo.features.geometry``), zeros plus a no-face indicator where no face was found.

Which embedding source is best is read on public_test (each run's validation UAR), never on
private_test. Scores on private_test: UAR and WAR with 95% bootstrap intervals over images (2,000
draws) and the paired differences femo minus baseline and each source minus ``faceapi`` on the
same draws. Writes ``benchmarks/results/fer2013_pipeline.json`` (top level: the default path;
``by_embeddings``: every name) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ravdess_lib import clustered_bootstrap, score  # noqa: E402
from real_reports import FER_CLASSES as CLASSES, FER_SPLITS as SPLITS, fer_images  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fer2013_pipeline.json"
C_GRID = (0.01, 0.1, 1.0)


def write_full_manifest(data: Path, work: Path) -> Path:
    """The manifest of every image (module docstring, stage 1)."""
    from femo.data.manifest import ManifestMeta, write_manifest

    out = work / "manifest.csv"
    if out.is_file():
        return out
    return write_manifest(fer_images(data.resolve()), out, ManifestMeta(dataset="fer2013", classes=CLASSES))


def timed(record: dict, key: str, fn, *args, **kwargs):
    """Call ``fn`` and add its wall seconds to ``record[key]``."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    record[key] = record.get(key, 0.0) + time.perf_counter() - t0
    return out


def geometry_inputs(store: Path, index: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """((N, G + 1) mean geometry over the found frames with a no-face flag, (N, T) face_found)."""
    from femo.data.store import read_clip
    from femo.features.geometry import geometry_vector

    rows, masks = [], []
    for clip_id in index["clip_id"].astype(str):
        z = read_clip(store, clip_id)
        found = z["face_found"].astype(bool)
        geo = geometry_vector(z["landmarks"], z["blendshapes"], z["head_pose"], z["pose"], z["pose_found"], found)
        g = geo[found].mean(0) if found.any() else np.zeros(geo.shape[1], np.float32)
        rows.append(np.concatenate([np.nan_to_num(g), [float(not found.any())]]))
        masks.append(found)
    return np.stack(rows).astype(np.float32), np.stack(masks)


def embedding_inputs(emb_dir: Path, index: pd.DataFrame, found: np.ndarray) -> np.ndarray:
    """(N, D) mean embedding over the rows that hold a face input (the embedding's mask file, else
    the clip's face_found); zeros where none."""
    from femo.features.embed import mask_file

    rows = []
    for clip_id, f in zip(index["clip_id"].astype(str), found):
        emb = np.load(emb_dir / f"{clip_id}.npy").astype(np.float32)
        m = mask_file(emb_dir, clip_id)
        mask = np.load(m).astype(bool) if m.is_file() else f
        rows.append(emb[mask].mean(0) if mask.any() else np.zeros(emb.shape[1], np.float32))
    return np.stack(rows)


def baseline(x: dict, y: dict) -> tuple[np.ndarray, float, dict]:
    """Test predictions of the logistic regression whose C scores the best val UAR; (pred, C, val UARs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import recall_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fits, val = {}, {}
    for c in C_GRID:
        fits[c] = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, class_weight="balanced"))
        fits[c].fit(x["train"], y["train"])
        val[c] = float(recall_score(y["val"], fits[c].predict(x["val"]), average="macro"))
    best = max(C_GRID, key=lambda c: (val[c], -c))
    return fits[best].predict(x["test"]), best, val


def run_folder(work: Path, name: str) -> Path:
    """RUN of embedding ``name``: ``run`` for the default path's ``faceapi``, else ``run_<name>``."""
    return work / ("run" if name == "faceapi" else f"run_{name.replace('@', '_')}")


def paired(boot: dict, a: str, b: str) -> dict:
    """Mean and 95% interval of a - b over the same bootstrap draws, per metric."""
    return {m: [float(np.mean(boot[f"{a}/{m}"] - boot[f"{b}/{m}"]))] +
            np.percentile(boot[f"{a}/{m}"] - boot[f"{b}/{m}"], [2.5, 97.5]).tolist() for m in ("uar", "war")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/fer2013"))
    p.add_argument("--work", type=Path, default=Path("runs/fer2013_pipeline"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--stage", choices=("manifest", "extract", "embed", "train", "all"), default="all")
    p.add_argument("--embeddings", default="faceapi,faceapi@frame,faceapi@fallback",
                   help="comma-separated embedding names (femo.features.embed); the first is the reference")
    p.add_argument("--reextract", action="store_true",
                   help="run the extraction pass even when every image is in the store (it re-extracts rows "
                        "whose file size or modification time changed, e.g. a fresh copy of the data)")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    if not (args.data / "manifest.csv").is_file():
        print(f"skipped: {args.data / 'manifest.csv'} not found (FER2013 is not part of femo)")
        return 0
    from femo import cli
    from femo.data.store import ok_clips, read_index
    from femo.features.embed import cache_embeddings, embeddings_dir

    names = [n.strip() for n in args.embeddings.split(",") if n.strip()]
    args.work.mkdir(parents=True, exist_ok=True)
    log_path = args.work / "timing.json"
    record = json.loads(log_path.read_text()) if log_path.is_file() else {}
    manifest = write_full_manifest(args.data, args.work)
    store = args.work / "store"
    order = ("manifest", "extract", "embed", "train")
    last = order.index(args.stage) if args.stage != "all" else len(order) - 1
    complete = (store / "index.csv").is_file() and len(ok_clips(read_index(store))) == len(pd.read_csv(manifest))
    if last >= 1 and complete and not args.reextract:
        print(f"{store}: every image extracted; extraction skipped (--reextract checks each row's media again)")
    elif last >= 1:
        before = len(ok_clips(read_index(store))) if (store / "index.csv").is_file() else 0
        t0 = time.perf_counter()
        status = cli.main(["extract", str(manifest), "--out", str(store), "--workers", str(args.workers)])
        record.setdefault("extract_runs", []).append({"clips_before": before, "status": status,
                                                      "seconds": time.perf_counter() - t0})
        log_path.write_text(json.dumps(record, indent=2))
    if last >= 2:
        for name in names:
            key = "embed_seconds" if name == "faceapi" else f"embed_seconds/{name}"
            timed(record, key, cache_embeddings, store, encoder=name)
            log_path.write_text(json.dumps(record, indent=2))
    if last < 3:
        return 0
    for name in names:
        run = run_folder(args.work, name)
        if not (run / "metrics.json").is_file():
            status = cli.main(["train", str(store), "--out", str(run), "--embeddings", name, "--cache",
                               "--epochs", str(args.epochs), "--quiet"] + (["--resume"] if run.exists() else []))
            if status != 0:
                return status
    index = ok_clips(read_index(store))
    found = (index["face_ratio"].fillna(0) > 0).to_numpy()
    label_index = {c: i for i, c in enumerate(CLASSES)}
    parts = {split: index[index["split"] == split] for split in ("train", "val", "test")}
    geo = {split: geometry_inputs(store, part) for split, part in parts.items()}
    y = {split: part["label"].map(label_index).to_numpy() for split, part in parts.items()}
    test = parts["test"].reset_index(drop=True)
    preds, fits = {}, {}
    for name in names:
        run = run_folder(args.work, name)
        x = {split: np.concatenate([embedding_inputs(embeddings_dir(store, name), part, geo[split][1]),
                                    geo[split][0]], axis=1) for split, part in parts.items()}
        lr_pred, c, val = baseline(x, y)
        pred = pd.read_csv(run / "predictions.csv", dtype={"clip_id": str})
        femo_pred = test[["clip_id"]].merge(pred[["clip_id", "predicted"]], on="clip_id", how="left")["predicted"]
        preds[f"femo:{name}"], preds[f"lr:{name}"] = femo_pred.map(label_index).to_numpy(), lr_pred
        fits[name] = (run, c, val)
    boot = clustered_bootstrap(y["test"], preds, test["clip_id"].to_numpy(), num_classes=len(CLASSES))
    by_name = {}
    for name in names:
        run, c, val = fits[name]
        history = pd.read_csv(run / "history.csv")
        metrics = json.loads((run / "metrics.json").read_text())
        fm, lm = f"femo:{name}", f"lr:{name}"
        by_name[name] = {
            "run": str(run), "epoch_seconds": history["seconds"].tolist(), "best_epoch": int(metrics["best_epoch"]),
            "val_uar": float(metrics["val_uar"]), "n_train": int(metrics["n_train"]), "n_test": int(metrics["n_test"]),
            "femo": score(y["test"], preds[fm], boot[f"{fm}/uar"], boot[f"{fm}/war"]),
            "baseline": {**score(y["test"], preds[lm], boot[f"{lm}/uar"], boot[f"{lm}/war"]), "C": c, "val_uar": val},
            "difference": paired(boot, fm, lm),
            "minus_reference": paired(boot, fm, f"femo:{names[0]}"),
        }
    chosen = max(names, key=lambda n: by_name[n]["val_uar"])
    ref = by_name[names[0]]
    result = {
        "images": int(len(read_index(store))), "ok": int(len(index)), "face_found": float(found.mean()),
        "face_found_by_split": {s: float(found[(index["split"] == s).to_numpy()].mean()) for s in SPLITS.values()},
        "timing": record, **{k: ref[k] for k in ("epoch_seconds", "best_epoch", "val_uar", "n_train", "n_test",
                                                  "femo", "baseline", "difference")},
        "reference": names[0], "chosen_by_val_uar": chosen, "by_embeddings": by_name,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2))
    print(f"FER2013, {result['images']} images ({result['ok']} ok), face found in {result['face_found']:.1%}")
    runs = ", ".join(f"{r.get('seconds', float('nan')):.0f} s ({r['clips_before']} clips before)"
                     for r in record.get("extract_runs", []))
    print(f"extraction runs: {runs or 'none'}; embed {record.get('embed_seconds', 0):.0f} s ({names[0]})")
    ci = lambda v, k: f"{v[k]:.3f} [{v[k + '_ci'][0]:.3f}, {v[k + '_ci'][1]:.3f}]"
    dd = lambda d, k: f"{d[k][0]:+.3f} [{d[k][1]:+.3f}, {d[k][2]:+.3f}]"
    print(f"private_test, {len(test)} images; the source is chosen by val UAR (public_test): {chosen}")
    for name in names:
        r = by_name[name]
        print(f"{name}: best epoch {r['best_epoch']} of {len(r['epoch_seconds'])}, val UAR {r['val_uar']:.3f}, "
              f"epochs {np.median(r['epoch_seconds']):.0f} s median")
        print(f"  femo train        UAR {ci(r['femo'], 'uar')}  WAR {ci(r['femo'], 'war')}")
        print(f"  LR (C={r['baseline']['C']})      UAR {ci(r['baseline'], 'uar')}  WAR {ci(r['baseline'], 'war')}")
        print(f"  femo - LR, paired  UAR {dd(r['difference'], 'uar')}  WAR {dd(r['difference'], 'war')}")
        if name != names[0]:
            print(f"  femo - femo:{names[0]}, paired  UAR {dd(r['minus_reference'], 'uar')}  "
                  f"WAR {dd(r['minus_reference'], 'war')}")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
