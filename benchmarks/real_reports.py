"""Every stage and report on small subsets of real stores: audio-only speech and still faces.

Builds two subset manifests from the development data (read-only; the manifests point at the
original files) and runs every stage on each (``femo extract``, embeddings when some clip has a
face, ``femo train``, ``femo report`` with the quick report settings of :data:`QUICK`), or
``femo pipeline --data MANIFEST`` (= ``make report DATA=MANIFEST``) with ``--pipeline``:

* ``ravdess``: RAVDESS speech (audio only), ``--actors`` actors (the first ones by number, half of
  them female), ``--clips-per-actor`` utterances each, stratified by emotion; protocol:
  actor-independent k-fold (``--folds`` folds of whole actors, ``femo.data.manifest.subject_folds``).
* ``fer2013``: FER2013 (48x48 gray stills, no audio, no subjects): ``--images`` images sampled
  stratified by class from the official splits in the proportions 60 / 20 / 20; protocol: the
  official split (train = ``train``, validation = ``public_test``, test = ``private_test``), and
  each image is its own subject (FER2013 has no subject ids).
* ``frames``: frame folders of real faces: ``--images`` FER2013 images chosen as for ``fer2013``,
  each turned into a folder of ``--frames`` PNG frames (the face upscaled to 96x96 and moved along
  a smooth random path of shift <= 3 px, rotation <= 4 degrees, scale +-4%: a short head
  movement; the expression itself is the still's); protocol: the official split as above.

Usage: python benchmarks/real_reports.py [--which ravdess,fer2013,frames] [--epochs 8] [--work runs/real_reports] [--pipeline]
Skips (exit 0) when a data folder is absent. Prints the report lines and the index page.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FER_SPLITS = {"train": "train", "public_test": "val", "private_test": "test"}
FER_CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")


def ravdess_subset(source: Path, out: Path, *, actors: int, per_actor: int, folds: int, seed: int) -> Path:
    """Manifest of ``actors`` actors x ``per_actor`` utterances with actor-independent folds."""
    from femo.data.manifest import ManifestMeta, read_manifest, subject_folds, write_manifest

    df, _ = read_manifest(source / "manifest.csv")
    chosen = sorted(df["subject"].unique())[:actors]
    df = df[df["subject"].isin(chosen)]
    # per actor: shuffle, then deal the utterances class by class so every emotion is represented
    shuffled = df.sample(frac=1, random_state=seed)
    shuffled = shuffled.assign(rank=shuffled.groupby(["subject", "label"]).cumcount())
    df = (shuffled.sort_values(["subject", "rank"], kind="stable").groupby("subject").head(per_actor)
          .drop(columns="rank"))
    df = df.assign(fold=subject_folds(df["subject"], folds)).reset_index(drop=True)
    classes = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")
    return write_manifest(df, out / "manifest.csv", ManifestMeta(dataset="ravdess_speech", classes=classes))


def fer_images(source: Path) -> pd.DataFrame:
    """Every image of FER2013's manifest at ``source``: absolute path, split train / val
    (public_test) / test (private_test), subject = image (FER2013 has no subject ids)."""
    df = pd.read_csv(source / "manifest.csv", dtype=str)
    df["path"] = [str(source / p) for p in df["path"]]
    return df.assign(split=df["split"].map(FER_SPLITS), subject=df["clip_id"])


def fer_subset(source: Path, out: Path, *, images: int, seed: int) -> Path:
    """Manifest of ``images`` FER2013 images, official split (public_test = validation)."""
    from femo.data.manifest import ManifestMeta, write_manifest

    df = fer_images(source)
    shares = {"train": 0.6, "val": 0.2, "test": 0.2}
    parts = []
    for split, share in shares.items():
        rows = df[df["split"] == split]
        n = max(len(rows["label"].unique()), round(images * share))
        parts.append(rows.sample(n, random_state=seed))  # proportional to the split's class shares
    df = pd.concat(parts, ignore_index=True)
    return write_manifest(df, out / "manifest.csv", ManifestMeta(dataset="fer2013", classes=FER_CLASSES))


def frame_folder_subset(source: Path, out: Path, *, images: int, frames: int, seed: int) -> Path:
    """Manifest of frame-folder clips (``out/frames/<clip_id>/frame<k>.png``) made from the
    images of :func:`fer_subset`, one smooth random movement per clip (see the module docstring)."""
    import numpy as np
    from PIL import Image

    from femo.data.manifest import ManifestMeta, read_manifest, write_manifest

    df, meta = read_manifest(fer_subset(source, out / "stills", images=images, seed=seed))
    rng = np.random.default_rng(seed)
    paths = []
    for row in df.itertuples():
        folder = out / "frames" / str(row.clip_id)
        folder.mkdir(parents=True, exist_ok=True)
        face = Image.open(row.path).convert("L").resize((96, 96), Image.BICUBIC)
        end = rng.uniform(-1, 1, size=4) * (3, 3, 4, 0.04)  # dx, dy (px), angle (deg), scale - 1
        for k, t in enumerate(np.linspace(0, 1, frames)):
            dx, dy, angle, ds = end * np.sin(np.pi * t / 2)  # eases out from the still's position
            frame = face.rotate(angle, resample=Image.BILINEAR, translate=(dx, dy), fillcolor=128)
            if abs(ds) > 1e-6:
                side = round(96 * (1 + ds))
                frame = frame.resize((side, side), Image.BILINEAR)
                frame = frame.crop(((side - 96) // 2, (side - 96) // 2, (side - 96) // 2 + 96, (side - 96) // 2 + 96))
            frame.convert("RGB").save(folder / f"frame{k}.png")
        paths.append(str(folder))
    df = df.assign(path=paths)
    return write_manifest(df, out / "manifest.csv", ManifestMeta(dataset="fer2013_frames", classes=meta.classes))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--which", default="ravdess,fer2013")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "real_reports")
    p.add_argument("--actors", type=int, default=8)
    p.add_argument("--clips-per-actor", type=int, default=25)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--frames", type=int, default=8, help="frames per folder of the frame-folder store")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--manifests-only", action="store_true", help="write the subset manifests, run nothing")
    p.add_argument("--pipeline", action="store_true", help="run `femo pipeline` (all reports at full size)")
    p.add_argument("--reports-dir", default=str(ROOT / "reports"))
    args = p.parse_args(argv)
    from femo import cli

    status = 0
    for name in [w.strip() for w in args.which.split(",") if w.strip()]:
        source = DATA / {"ravdess": "ravdess_speech", "frames": "fer2013"}.get(name, name)
        if not (source / "manifest.csv").is_file():
            print(f"{source}: absent; skipped")
            continue
        work = args.work / name
        manifest = work / "data" / "manifest.csv"
        if not manifest.is_file():
            manifest = (ravdess_subset(source, work / "data", actors=args.actors, per_actor=args.clips_per_actor,
                                       folds=args.folds, seed=args.seed) if name == "ravdess"
                        else frame_folder_subset(source, work / "data", images=args.images, frames=args.frames,
                                                 seed=args.seed) if name == "frames"
                        else fer_subset(source, work / "data", images=args.images, seed=args.seed))
        print(f"{name}: {len(pd.read_csv(manifest))} clips in {manifest}", flush=True)
        if args.manifests_only:
            continue
        if args.pipeline:  # exactly `make report DATA=MANIFEST` (every report at its default size)
            status |= cli.main(["pipeline", "--data", str(manifest), "--tag", f"real-{name}", "--workdir", str(work),
                                "--epochs", str(args.epochs), "--workers", "1"])
        else:
            status |= stages(manifest, work, name=name, epochs=args.epochs, reports_dir=args.reports_dir)
    return status


#: Report settings of the quick run: fewer attribution clips and steps, no retraining in 06.
QUICK = ["per_emotion=1", "planted_clips=1", "ig_steps=8", "randomisation_clips=2", "randomisation_steps=3",
         "compare_drop=False", "n_boot=200"]


def stages(manifest: Path, work: Path, *, name: str, epochs: int, reports_dir: str) -> int:
    """extract -> embeddings (when some clip has a face) -> train (k-fold, or the official split) -> reports."""
    from femo import cli
    from femo.data.store import read_index
    from femo.reports import demo

    store, run = work / "store", work / "run"
    if cli.main(["extract", str(manifest), "--out", str(store), "--workers", "1", "--no-progress"]) not in (0, 1):
        return 1
    index = read_index(store)
    faces = bool((index["face_ratio"].fillna(0) > 0).any())
    emb = demo.cache_embeddings(store) if faces else None
    if not (run / "metrics.json").is_file():
        which = ["--folds", "all"] if "fold" in index.columns else []
        if cli.main(["train", str(store), "--out", str(run), *which, "--cache", "--quiet", "--epochs", str(epochs),
                     *(["--embeddings", emb] if emb else [])]) != 0:
            return 1
    params = [x for p in QUICK for x in ("-p", p)]
    return cli.main(["report", "--data", str(store), "--run", str(run), "--tag", f"real-{name}",
                     "--reports-dir", reports_dir, *params])


if __name__ == "__main__":
    sys.exit(main())
