"""FER2013 through mediapipe's aligned face crops: which face encoder reads femo's crops best.

femo's default face path embeds the 112 px face crop that extraction aligns on mediapipe's face
mesh, not the image as a dataset ships it. An encoder trained on FER2013's own 48x48 framing may
read those crops worse than the image. This benchmark measures that on real faces:

1. ``crops``: every image of ``--n-train`` random ``train`` images and all of ``private_test`` goes
   through :class:`femo.features.face.FaceTracker` (the extraction's tracker, small-face rescue
   included) -> aligned 112 px crop and a found flag. Cached in ``WORK/crops.npz`` (resumable by
   chunk: ``WORK/crops_<k>.npz``).
2. ``score``: for each encoder (``faceapi``, ``faceapi_fer``, ``fer_vgg``), on the private_test images
   where a face was found: (a) its own classifier on the crop and on the whole image; (b) a linear
   probe (standardised logistic regression) on frozen crop features, trained on the train crops.
   95% intervals: bootstrap over test images; differences between encoders are paired (same draws).

Usage: python benchmarks/fer2013_crops.py [--work runs/fer2013_crops] [--n-train 3000]
Skips (exit 0) when FER2013 is absent. Writes benchmarks/results/fer2013_crops.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fer2013 import LABELS, batched, flip_logits, paired_diff, scores  # noqa: E402

from femo.models.face_pretrained import to_femo_classes  # noqa: E402
from femo.models.frames import build_frame_encoder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 500


def image_rows(data: Path, n_train: int, seed: int) -> pd.DataFrame:
    """``n_train`` random train rows, then every private_test row (columns of the manifest)."""
    m = pd.read_csv(data / "manifest.csv")
    train = m[m["split"] == "train"].sample(n=n_train, random_state=seed)
    return pd.concat([train, m[m["split"] == "private_test"]], ignore_index=True)


def crop_chunks(data: Path, rows: pd.DataFrame, work: Path) -> dict[str, np.ndarray]:
    """Aligned crops (N, 112, 112, 3) uint8, found (N,) bool, images (N, 48, 48) uint8; resumable."""
    from femo.features.face import FaceTracker

    work.mkdir(parents=True, exist_ok=True)
    parts = []
    with FaceTracker(face_size=112) as tracker:
        for k in tqdm(range(0, len(rows), CHUNK), desc="crops", unit="chunk"):
            path = work / f"crops_{k // CHUNK}.npz"
            if not path.is_file():
                imgs = np.stack([np.asarray(Image.open(data / p).convert("L")) for p in rows["path"][k:k + CHUNK]])
                faces, found = [], []
                for img in imgs:
                    track = tracker.track(np.repeat(img[None, :, :, None], 3, axis=-1))
                    faces.append(track.faces[0])
                    found.append(bool(track.face_found[0]))
                np.savez(path, faces=np.stack(faces), found=np.array(found), images=imgs)
            parts.append(dict(np.load(path)))
    return {key: np.concatenate([p[key] for p in parts]) for key in ("faces", "found", "images")}


def to_float(x: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (N, H, W) -> float (N, 3, H, W) in [0, 1]."""
    t = torch.from_numpy(x).float().div_(255.0)
    return t.permute(0, 3, 1, 2).contiguous() if t.ndim == 4 else t[:, None].expand(-1, 3, -1, -1).contiguous()


def own_classifier(name: str, x: torch.Tensor) -> np.ndarray:
    """Predicted class indices into LABELS from the encoder's own classifier (flip TTA)."""
    from femo.models.face_pretrained import load_faceapi
    from femo.models.fer_encoder import load_fer_encoder

    net = {"faceapi": load_faceapi, "faceapi_fer": load_fer_encoder,
           "fer_vgg": lambda: load_fer_encoder(arch="vgg")}[name]()
    logp, _ = flip_logits(net, x, 128)
    if name == "faceapi":
        logp = to_femo_classes(torch.from_numpy(logp), net.classes, classes=LABELS).numpy()
    return logp.argmax(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "fer2013_crops")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--encoders", default="faceapi,faceapi_fer,fer_vgg")
    ap.add_argument("--stage", choices=("crops", "all"), default="all")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fer2013_crops.json")
    args = ap.parse_args()
    if not (args.data / "manifest.csv").is_file():
        print(f"skipped: FER2013 not found at {args.data}")
        return 0
    torch.set_num_threads(args.threads)
    rows = image_rows(args.data, args.n_train, args.seed)
    t0 = time.perf_counter()
    c = crop_chunks(args.data, rows, args.work)
    crop_s = time.perf_counter() - t0
    if args.stage == "crops":
        return 0
    y = rows["label"].map({k: i for i, k in enumerate(LABELS)}).to_numpy()
    is_test = (rows["split"] == "private_test").to_numpy()
    tr, te = ~is_test & c["found"], is_test & c["found"]
    result = {"n_train_images": int((~is_test).sum()), "n_test_images": int(is_test.sum()),
              "found_train": int(tr.sum()), "found_test": int(te.sum()), "crop_s": round(crop_s, 1),
              "note": "scores on the private_test images where mediapipe found a face", "own": {}, "probe": {}}
    preds = {}
    for name in args.encoders.split(","):
        crop_pred = own_classifier(name, to_float(c["faces"][te]))
        image_pred = own_classifier(name, to_float(c["images"][te]))
        preds[f"{name} crop"], preds[f"{name} image"] = crop_pred, image_pred
        result["own"][f"{name} crop"] = scores(y[te], crop_pred, args.n_boot)
        result["own"][f"{name} image"] = scores(y[te], image_pred, args.n_boot)
        enc = build_frame_encoder(name, freeze="frozen")
        f_tr, _ = batched(enc, to_float(c["faces"][tr]), 128)
        f_te, _ = batched(enc, to_float(c["faces"][te]), 128)
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(f_tr, y[tr])
        preds[f"{name} probe"] = clf.predict(f_te)
        result["probe"][name] = scores(y[te], preds[f"{name} probe"], args.n_boot)
    names = args.encoders.split(",")
    result["paired"] = {f"{a} {kind} - {b} {kind}": paired_diff(y[te], preds[f"{a} {kind}"], preds[f"{b} {kind}"],
                                                                args.n_boot)
                        for kind in ("crop", "probe") for a in names for b in names if a < b}
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


def print_table(result: dict) -> None:
    print(f"private_test images with a face found: {result['found_test']} of {result['n_test_images']}; "
          f"probe trained on {result['found_train']} train crops")
    for mode in ("own", "probe"):
        for name, r in result[mode].items():
            print(f"{mode:5s} {name:18s} WAR {r['war']:.3f} [{r['war_ci95'][0]:.3f}, {r['war_ci95'][1]:.3f}]  "
                  f"UAR {r['uar']:.3f} [{r['uar_ci95'][0]:.3f}, {r['uar_ci95'][1]:.3f}]")
    for name, d in result["paired"].items():
        print(f"paired {name}: WAR {d['war']:+.3f} [{d['war_ci95'][0]:+.3f}, {d['war_ci95'][1]:+.3f}], "
              f"UAR {d['uar']:+.3f} [{d['uar_ci95'][0]:+.3f}, {d['uar_ci95'][1]:+.3f}]")


if __name__ == "__main__":
    sys.exit(main())
