"""All of FER2013 through femo's own pipeline: extract, embed, ``femo train``'s default path, and a
logistic regression on the same inputs in the same run.

    python benchmarks/fer2013_pipeline.py [--data ../shared/data/fer2013] [--work runs/fer2013_pipeline]
                                          [--workers 2] [--epochs 20] [--stage manifest|extract|embed|train|all]

Reads ``DATA/manifest.csv`` (35,885 images, official splits) when present and skips otherwise.
Stages, each resumable (a rerun keeps what is done):

1. ``manifest``: every image, ``split`` train / val (public_test) / test (private_test), subject =
   image (FER2013 has no subject ids).
2. ``extract``: ``femo extract --workers N`` (face landmarker on the 48x48 images, upscaled; the
   small-face rescue for misses; an image with no face found stays in the store, face masked).
   Records the wall time and the face-found rate.
3. ``embed``: face-api.js embeddings of the aligned crops (``femo.features.embed``), timed.
4. ``train``: ``femo train STORE --out RUN --embeddings faceapi --cache --epochs N``: the default
   model (face embeddings + landmarks; the audio branch is masked, no clip has audio), epoch chosen
   by validation UAR on public_test, private_test scored once. Seconds per epoch from the run's
   history.
5. Baseline, same split: a logistic regression (standardised, class-balanced, C chosen by UAR on
   public_test) on what the model reads of each image: its faceapi embedding and its geometry
   vector (landmarks, blendshapes, head pose; ``femo.features.geometry``), zeros plus a no-face
   indicator where no face was found.

Scores on private_test: UAR and WAR with 95% bootstrap intervals over images (2,000 draws) and
the paired difference femo minus baseline on the same draws. Writes
``benchmarks/results/fer2013_pipeline.json`` and prints the table.
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


def inputs(store: Path, index: pd.DataFrame, emb_dir: Path) -> np.ndarray:
    """(N, D + G + 1) per image: mean embedding and geometry over its found frames, no-face flag."""
    from femo.data.store import read_clip
    from femo.features.geometry import geometry_vector

    rows = []
    for clip_id in index["clip_id"].astype(str):
        z = read_clip(store, clip_id)
        found = z["face_found"].astype(bool)
        emb = np.load(emb_dir / f"{clip_id}.npy").astype(np.float32)
        geo = geometry_vector(z["landmarks"], z["blendshapes"], z["head_pose"], z["pose"], z["pose_found"], found)
        e = emb[found].mean(0) if found.any() else np.zeros(emb.shape[1], np.float32)
        g = geo[found].mean(0) if found.any() else np.zeros(geo.shape[1], np.float32)
        rows.append(np.concatenate([e, np.nan_to_num(g), [float(not found.any())]]))
    return np.stack(rows).astype(np.float32)


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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/fer2013"))
    p.add_argument("--work", type=Path, default=Path("runs/fer2013_pipeline"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--stage", choices=("manifest", "extract", "embed", "train", "all"), default="all")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    if not (args.data / "manifest.csv").is_file():
        print(f"skipped: {args.data / 'manifest.csv'} not found (FER2013 is not part of femo)")
        return 0
    from femo import cli
    from femo.data.store import ok_clips, read_index
    from femo.features.embed import cache_embeddings, embeddings_dir

    args.work.mkdir(parents=True, exist_ok=True)
    log_path = args.work / "timing.json"
    record = json.loads(log_path.read_text()) if log_path.is_file() else {}
    manifest = write_full_manifest(args.data, args.work)
    store, run = args.work / "store", args.work / "run"
    order = ("manifest", "extract", "embed", "train")
    last = order.index(args.stage) if args.stage != "all" else len(order) - 1
    if last >= 1:
        before = len(ok_clips(read_index(store))) if (store / "index.csv").is_file() else 0
        status = timed(record, "extract_seconds", cli.main,
                       ["extract", str(manifest), "--out", str(store), "--workers", str(args.workers)])
        record.setdefault("extract_runs", []).append({"clips_before": before, "status": status})
        log_path.write_text(json.dumps(record, indent=2))
    if last >= 2:
        timed(record, "embed_seconds", cache_embeddings, store, encoder="faceapi")
        log_path.write_text(json.dumps(record, indent=2))
    if last < 3:
        return 0
    if not (run / "metrics.json").is_file():
        status = cli.main(["train", str(store), "--out", str(run), "--embeddings", "faceapi", "--cache",
                           "--epochs", str(args.epochs), "--quiet"])
        if status != 0:
            return status
    index = ok_clips(read_index(store))
    found = (index["face_ratio"].fillna(0) > 0).to_numpy()
    label_index = {c: i for i, c in enumerate(CLASSES)}
    history = pd.read_csv(run / "history.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    pred = pd.read_csv(run / "predictions.csv", dtype={"clip_id": str})
    emb_dir = embeddings_dir(store, "faceapi")
    x, y = {}, {}
    for split in ("train", "val", "test"):
        part = index[index["split"] == split]
        x[split] = inputs(store, part, emb_dir)
        y[split] = part["label"].map(label_index).to_numpy()
    lr_pred, c, val = baseline(x, y)
    test = index[index["split"] == "test"].reset_index(drop=True)
    femo_pred = test[["clip_id"]].merge(pred[["clip_id", "predicted"]], on="clip_id", how="left")["predicted"]
    femo_pred = femo_pred.map(label_index).to_numpy()
    boot = clustered_bootstrap(y["test"], {"femo": femo_pred, "lr": lr_pred}, test["clip_id"].to_numpy(),
                               num_classes=len(CLASSES))
    result = {
        "images": int(len(read_index(store))), "ok": int(len(index)), "face_found": float(found.mean()),
        "face_found_by_split": {s: float(found[(index["split"] == s).to_numpy()].mean()) for s in SPLITS.values()},
        "timing": record, "epoch_seconds": history["seconds"].tolist(), "best_epoch": int(metrics["best_epoch"]),
        "val_uar": float(metrics["val_uar"]), "n_train": int(metrics["n_train"]), "n_test": int(metrics["n_test"]),
        "femo": score(y["test"], femo_pred, boot["femo/uar"], boot["femo/war"]),
        "baseline": {**score(y["test"], lr_pred, boot["lr/uar"], boot["lr/war"]), "C": c, "val_uar": val},
        "difference": {m: [float(np.mean(boot[f"femo/{m}"] - boot[f"lr/{m}"]))] +
                       np.percentile(boot[f"femo/{m}"] - boot[f"lr/{m}"], [2.5, 97.5]).tolist() for m in ("uar", "war")},
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2))
    f, b, d = result["femo"], result["baseline"], result["difference"]
    print(f"FER2013, {result['images']} images ({result['ok']} ok), face found in {result['face_found']:.1%}")
    print(f"extract {record.get('extract_seconds', 0):.0f} s, embed {record.get('embed_seconds', 0):.0f} s, "
          f"epochs {np.median(result['epoch_seconds']):.0f} s median over {len(history)} "
          f"(best {result['best_epoch']}, val UAR {result['val_uar']:.3f})")
    print(f"private_test, {len(test)} images:")
    print(f"  femo train (default path)  UAR {f['uar']:.3f} [{f['uar_ci'][0]:.3f}, {f['uar_ci'][1]:.3f}]  "
          f"WAR {f['war']:.3f} [{f['war_ci'][0]:.3f}, {f['war_ci'][1]:.3f}]")
    print(f"  logistic regression (C={c})  UAR {b['uar']:.3f} [{b['uar_ci'][0]:.3f}, {b['uar_ci'][1]:.3f}]  "
          f"WAR {b['war']:.3f} [{b['war_ci'][0]:.3f}, {b['war_ci'][1]:.3f}]")
    print(f"  femo - LR, paired: UAR {d['uar'][0]:+.3f} [{d['uar'][1]:+.3f}, {d['uar'][2]:+.3f}]  "
          f"WAR {d['war'][0]:+.3f} [{d['war'][1]:+.3f}, {d['war'][2]:+.3f}]")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
