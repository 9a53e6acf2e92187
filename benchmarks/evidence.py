"""Evidence that femo learns: single-modality and fused models on the synthetic set, end to end.

Pipeline (each stage timed; the first three resume when their output exists):

1. ``femo synth`` (``--clips``, seed 0) into WORKDIR/data;
2. ``femo extract`` with 2 workers into WORKDIR/store;
3. frozen face-api expression-network embeddings cached in the store (``femo.features.embed``);
4. ``femo.training.loop.train`` on ``--folds`` (subject-independent test fold; validation carved from the
   training subjects) for face-only, landmarks-only, audio-only and fused models (same seed, epochs);
5. test-fold scores: UAR/WAR, and accuracy on the clips whose planted ``informative`` modality is
   face / audio / both, and on the ``low_light`` / ``occluded`` clips.

What the synthetic set plants (femo.data.synth): on ``face`` clips the voice shows *another*
emotion, on ``audio`` clips the face does; so a single-modality model should be well above chance
(1/7) where its modality carries the label and at or below chance where it does not (its
modality then shows a wrong emotion). Landmarks derive from the face and behave like it. Nothing
in a clip says which modality is the informative one, so fusion gains on the full set come from
clips where one modality is degraded or missing (low light, occlusion, no audio track, noise).

    python benchmarks/evidence.py                          # 392 clips, fold 1
    python benchmarks/evidence.py --folds all --fusions gated,attention,late

Prints a markdown table and writes benchmarks/results/evidence.json (or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

CHANCE = 1 / 7
SINGLE = {"face": ("face",), "landmarks": ("landmarks",), "audio": ("audio",)}
FUSED = ("face", "landmarks", "audio")
#: Which ``informative`` values a model's modalities carry the label on (landmarks follow the face).
CARRIES = {"face": {"face", "both"}, "landmarks": {"face", "both"}, "audio": {"audio", "both"}}
EMBEDDINGS = "faceapi"
RESULTS = Path(__file__).resolve().parent / "results"


def _femo(*args: str) -> None:
    """Run ``python -m femo ARGS`` and raise with its stderr when it fails."""
    proc = subprocess.run([sys.executable, "-m", "femo", *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"femo {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def stage_synth(data: Path, *, clips: int, seed: int, workers: int) -> dict:
    """Generate the synthetic set unless ``data/manifest.csv`` exists; returns {seconds, skipped}."""
    if (data / "manifest.csv").is_file():
        return {"seconds": 0.0, "skipped": True}
    t0 = time.perf_counter()
    _femo("synth", str(data), "--clips", str(clips), "--seed", str(seed), "--workers", str(workers))
    return {"seconds": time.perf_counter() - t0, "skipped": False}


def stage_extract(data: Path, store: Path, *, workers: int) -> dict:
    """``femo extract`` (resumes: clips already ok are skipped); returns {seconds, ok, failed}."""
    t0 = time.perf_counter()
    _femo("extract", str(data / "manifest.csv"), "--out", str(store), "--workers", str(workers), "--no-progress")
    from femo.data.store import read_index

    status = read_index(store)["status"].astype(str)
    ok = int((status == "ok").sum())
    return {"seconds": time.perf_counter() - t0, "ok": ok, "failed": int(len(status) - ok)}


def stage_embed(store: Path) -> dict:
    """Cache frozen face-api embeddings (resumes); returns {seconds, out_dim}."""
    from femo.features.embed import cache_embeddings

    t0 = time.perf_counter()
    out = cache_embeddings(store, encoder=EMBEDDINGS, progress=False)
    return {"seconds": time.perf_counter() - t0, "out_dim": json.loads((out / "meta.json").read_text())["out_dim"]}


def model_configs(fusions: list[str], *, dim: int, temporal: str, modality_dropout: float = 0.5) -> dict:
    """name -> ModelConfig: the three single-modality models and one fused model per fusion name."""
    from femo.config import ModelConfig

    common = dict(embeddings=EMBEDDINGS, dim=dim, temporal=temporal, modality_dropout=modality_dropout)
    configs = {name: ModelConfig(modalities=mods, fusion="late", **common) for name, mods in SINGLE.items()}
    configs.update({f"fused_{f}": ModelConfig(modalities=FUSED, fusion=f, **common) for f in fusions})
    return configs


def train_model(store: Path, run: Path, *, model, train_cfg, folds: list[int]) -> tuple[pd.DataFrame, list, float]:
    """Train ``model`` on each fold into ``run/fold_<k>``; (pooled test predictions, per-fold metrics, seconds)."""
    from femo.training.loop import train

    t0 = time.perf_counter()
    preds, per_fold = [], []
    for k in folds:
        out = run / f"fold_{k}"
        per_fold.append(train(store, out=out, model=model, train=train_cfg, fold=k, progress=False,
                              overwrite=True))
        preds.append(pd.read_csv(out / "predictions.csv", dtype={"clip_id": str, "subject": str}))
    return pd.concat(preds, ignore_index=True), per_fold, time.perf_counter() - t0


def _flag(column: pd.Series) -> pd.Series:
    return column.astype(str).str.lower().isin({"true", "1"})


def slice_scores(pred: pd.DataFrame, per_fold: list[dict]) -> dict:
    """UAR/WAR (mean of per-fold scores) and accuracy with clip count on each planted slice."""
    correct = pred["label"].astype(str) == pred["predicted"].astype(str)
    slices = {f"informative={v}": pred["informative"].astype(str) == v for v in ("face", "audio", "both")}
    slices.update(low_light=_flag(pred["low_light"]), occluded=_flag(pred["occluded"]))
    slices["clean"] = ~slices["low_light"] & ~slices["occluded"] & _flag(pred["has_audio_track"])
    out = {"uar": float(np.mean([m["uar"] for m in per_fold])), "war": float(np.mean([m["war"] for m in per_fold])),
           "n": int(len(pred)), "best_epochs": [int(m["best_epoch"]) for m in per_fold]}
    for name, mask in slices.items():
        out[name] = {"acc": float(correct[mask].mean()) if mask.any() else None, "n": int(mask.sum())}
    return out


def paired_gap(a: pd.DataFrame, b: pd.DataFrame, *, resamples: int = 2000, seed: int = 0) -> dict:
    """Accuracy of ``a`` minus ``b`` on the same clips, with a 95% bootstrap interval over clips
    and the counts of clips only ``a`` / only ``b`` got right."""
    both = a.merge(b, on="clip_id", suffixes=("_a", "_b"))
    ca = (both["label_a"].astype(str) == both["predicted_a"].astype(str)).to_numpy(float)
    cb = (both["label_b"].astype(str) == both["predicted_b"].astype(str)).to_numpy(float)
    diff = ca - cb
    boots = np.random.default_rng(seed).choice(diff, size=(resamples, len(diff))).mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"gap": float(diff.mean()), "ci95": [float(lo), float(hi)], "only_a": int((diff > 0).sum()),
            "only_b": int((diff < 0).sum()), "n": int(len(diff))}


def check_claims(scores: dict, *, preds: dict | None = None, margin: float = 0.15) -> dict:
    """The qualitative claims, each as {holds, detail}; ``margin`` is the required gap over chance."""
    claims = {}
    for name, carries in CARRIES.items():
        if name not in scores:
            continue
        s = scores[name]
        own = [s[f"informative={v}"]["acc"] for v in carries]
        other = [s[f"informative={v}"]["acc"] for v in {"face", "audio", "both"} - carries]
        claims[f"{name}: above chance where it carries the label"] = {
            "holds": min(own) >= CHANCE + margin, "detail": f"min acc {min(own):.3f} vs chance {CHANCE:.3f} + {margin}"}
        claims[f"{name}: near/below chance where it does not"] = {
            "holds": max(other) <= CHANCE + margin / 2, "detail": f"acc {max(other):.3f} vs chance {CHANCE:.3f}"}
    singles = {n: scores[n]["war"] for n in SINGLE if n in scores}
    for name in (n for n in scores if n.startswith("fused_")):
        best = max(singles, key=singles.get)
        detail = f"{scores[name]['war']:.3f} vs {singles[best]:.3f}"
        claim = {"holds": scores[name]["war"] > singles[best], "detail": detail}
        if preds is not None:
            claim["paired"] = gap = paired_gap(preds[name], preds[best])
            claim["detail"] += (f"; paired accuracy gap {gap['gap']:+.3f} (95% CI {gap['ci95'][0]:+.3f}.."
                                f"{gap['ci95'][1]:+.3f}; {gap['only_a']} vs {gap['only_b']} clips right only by one)")
        claims[f"{name}: WAR above best single modality ({best})"] = claim
    return claims


def markdown(scores: dict, timings: dict) -> str:
    """The results table (accuracy per slice, clip counts in the header)."""
    first = next(iter(scores.values()))
    cols = ["informative=face", "informative=audio", "informative=both", "low_light", "occluded", "clean"]
    head = "| model | UAR | WAR | " + " | ".join(f"{c} (n={first[c]['n']})" for c in cols) + " | train s |"
    lines = [head, "|" + "---|" * (len(cols) + 4)]
    for name, s in scores.items():
        accs = " | ".join("-" if s[c]["acc"] is None else f"{s[c]['acc']:.3f}" for c in cols)
        lines.append(f"| {name} | {s['uar']:.3f} | {s['war']:.3f} | {accs} | {timings[name]:.0f} |")
    return "\n".join(lines)


def stage_synth_config(workdir: Path, config) -> dict:
    """Generate the synthetic set of ``config`` (a :class:`femo.data.synth.SynthConfig`) into
    WORKDIR/data unless its manifest exists; the timing is recorded in WORKDIR/stages.json so
    :func:`prepare` reports it as reused."""
    from femo.data.synth import generate

    data, record = workdir / "data", workdir / "stages.json"
    done = json.loads(record.read_text()) if record.is_file() else {}
    if (data / "manifest.csv").is_file() and "synth" in done:
        return done["synth"]
    t0 = time.perf_counter()
    generate(data, config, progress=False)
    done["synth"] = {"seconds": time.perf_counter() - t0, "skipped": False}
    workdir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(done, indent=2))
    return done["synth"]


def prepare(workdir: Path, *, clips: int = 392, seed: int = 0, workers: int = 2, log=print) -> dict:
    """Stages 1-3 (synth, extract, embed) under ``workdir``; returns their timings.

    A stage with nothing left to do is not rerun: its timing recorded in WORKDIR/stages.json by
    the run that did the work is reported instead, marked ``reused``.
    """
    data, store = workdir / "data", workdir / "store"
    record = workdir / "stages.json"
    done = json.loads(record.read_text()) if record.is_file() else {}
    stages = {}
    runners = {"synth": lambda: stage_synth(data, clips=clips, seed=seed, workers=workers),
               "extract": lambda: stage_extract(data, store, workers=workers), "embed": lambda: stage_embed(store)}
    for name, runner in runners.items():
        if name in done and _complete(name, data, store):
            stages[name] = {**done[name], "reused": True}
        else:
            stages[name] = done[name] = runner()
            workdir.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(done, indent=2))
        log(f"{name}: {stages[name]}")
    return stages


def _complete(stage: str, data: Path, store: Path) -> bool:
    """Whether ``stage``'s output is already complete (so rerunning it would only skip work)."""
    from femo.data.store import read_index

    if stage == "synth":
        return (data / "manifest.csv").is_file()
    if not (store / "index.csv").is_file():
        return False
    index = read_index(store)
    n_manifest = len(pd.read_csv(data / "manifest.csv", usecols=["clip_id"]))
    if stage == "extract":
        return len(index) == n_manifest
    ok = index.loc[index["status"].astype(str) == "ok", "clip_id"].astype(str)
    folder = store / "embeddings" / EMBEDDINGS
    return all((folder / f"{c}.npy").is_file() for c in ok)


def run_evidence(workdir: Path, *, clips: int = 392, seed: int = 0, epochs: int = 30, folds: str = "1",
                 fusions: tuple[str, ...] = ("gated",), lr: float = 1e-3, dim: int = 64, temporal: str = "gru",
                 batch_size: int = 16, modality_dropout: float = 0.5, aux_weight: float = 1.0, workers: int = 2,
                 threads: int = 1, log=print) -> dict:
    """Run every stage under ``workdir``; returns {stages, scores, claims, config} (also the JSON written)."""
    import torch

    from femo.config import TrainConfig

    torch.set_num_threads(threads)
    workdir = Path(workdir)
    stages = prepare(workdir, clips=clips, seed=seed, workers=workers, log=log)
    store = workdir / "store"
    fold_ids = [1, 2, 3, 4, 5] if folds == "all" else [int(folds)]
    train_cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, cache=True, augment=False,
                            aux_weight=aux_weight)
    scores, timings, preds = {}, {}, {}
    configs = model_configs(list(fusions), dim=dim, temporal=temporal, modality_dropout=modality_dropout)
    for name, model in configs.items():
        pred, per_fold, seconds = train_model(store, workdir / "runs" / name, model=model, train_cfg=train_cfg,
                                              folds=fold_ids)
        scores[name], timings[name], preds[name] = slice_scores(pred, per_fold), seconds, pred
        log(f"{name}: war {scores[name]['war']:.3f} uar {scores[name]['uar']:.3f} ({seconds:.0f} s)")
    stages["train"] = timings
    return {"config": {"clips": clips, "seed": seed, "epochs": epochs, "folds": fold_ids, "lr": lr, "dim": dim,
                       "temporal": temporal, "batch_size": batch_size, "embeddings": EMBEDDINGS,
                       "modality_dropout": modality_dropout, "aux_weight": aux_weight,
                       "fusions": list(fusions), "threads": threads},
            "chance": CHANCE, "stages": stages, "scores": scores, "claims": check_claims(scores, preds=preds)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=RESULTS / "evidence_work", help="data, store and runs go here")
    p.add_argument("--clips", type=int, default=392)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--folds", default="1", help="a fold number 1..5, or 'all'")
    p.add_argument("--fusions", default="gated", help="comma-separated fusion names for fused models")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64, help="model width D")
    p.add_argument("--temporal", default="gru", help="per-modality temporal block (mean | gru | transformer)")
    p.add_argument("--modality-dropout", type=float, default=0.5, help="fused models' modality dropout")
    p.add_argument("--aux-weight", type=float, default=1.0, help="weight of the per-modality heads' loss")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=RESULTS / "evidence.json")
    p.add_argument("--prepare-only", action="store_true", help="stop after synth, extract and embed")
    args = p.parse_args(argv)
    if args.folds != "all" and args.folds not in {"1", "2", "3", "4", "5"}:
        p.error(f"--folds must be 1..5 or 'all', got {args.folds!r}")
    if args.prepare_only:
        prepare(args.workdir, clips=args.clips)
        return 0
    result = run_evidence(args.workdir, clips=args.clips, epochs=args.epochs, folds=args.folds,
                          fusions=tuple(f for f in args.fusions.split(",") if f), lr=args.lr, dim=args.dim,
                          temporal=args.temporal, modality_dropout=args.modality_dropout,
                          aux_weight=args.aux_weight, threads=args.threads)
    result["machine"] = {"node": platform.node(), "python": platform.python_version(), "note": "shared, loaded CPU"}
    print(markdown(result["scores"], result["stages"]["train"]))
    print(f"\nchance = {CHANCE:.3f}; stage seconds: synth {result['stages']['synth']['seconds']:.0f}, "
          f"extract {result['stages']['extract']['seconds']:.0f}, embed {result['stages']['embed']['seconds']:.0f}")
    for claim, verdict in result["claims"].items():
        print(f"- [{'x' if verdict['holds'] else ' '}] {claim}: {verdict['detail']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from femo.training.metrics import write_json

    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
