"""Label-error detection on planted truth: how many flipped labels do the suspects find?

Pipeline (stages 1-4 resume when their output exists; each stage timed):

1. ``femo synth WORKDIR/data --label-noise 0.1`` (``--clips`` clips, 40 subjects, seed 0): exactly
   10% of the labels flipped to another class, recorded in ``label_flipped``;
2. ``femo extract`` with 2 workers into WORKDIR/store; 3. face-api embeddings cached in the store
   (both through benchmarks/evidence.py's stages);
4. the fused model (face + landmarks + audio, ``--fusion``; the settings of benchmarks/evidence.py:
   face-api embeddings, GRU temporal blocks, width 64, lr 1e-3, modality dropout 0.5, auxiliary
   weight 1.0, one torch thread) trained on all five subject-independent folds, so every clip is
   scored out-of-fold once;
5. ``femo.audit.labels.audit_labels`` (cleanlab ``find_label_issues``, prune_by_noise_rate,
   ranked by self-confidence) on the pooled predictions, and precision / recall of the suspects
   for the flipped clips with 95% intervals from resampling subjects (``--n-boot``), and the
   precision of the k lowest-quality clips (k = number flipped). Baseline,
   measured in the same run: random flagging of as many clips (expected precision = flip rate,
   expected recall = flag rate, and the 97.5th percentile of 2,000 random draws);
6. the same five folds retrained without the suspects in their training splits
   (``femo train --drop-suspects``): UAR against the recorded labels and against the true labels,
   with and without, and the pooled UAR difference with a subject-resampled 95% interval.

    python benchmarks/label_noise.py                      # 392 clips, 30 epochs

Prints the tables; writes benchmarks/results/label_noise.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NOISE = 0.1


def _evidence():
    """benchmarks/evidence.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("femo_bench_evidence", HERE / "evidence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_synth_noisy(workdir: Path, *, clips: int, seed: int, noise: float, workers: int) -> dict:
    """Generate the noisy synthetic set once (benchmarks/evidence.py's ``stage_synth_config``)."""
    from femo.data.synth import SynthConfig

    config = SynthConfig(clips=clips, seed=seed, label_noise=noise, workers=workers)
    return _evidence().stage_synth_config(workdir, config)


def configs(*, fusion: str, epochs: int, seed: int):
    """(ModelConfig, TrainConfig) of the fused model (benchmarks/evidence.py's settings)."""
    from femo.config import ModelConfig, TrainConfig

    model = ModelConfig(modalities=("face", "landmarks", "audio"), fusion=fusion, embeddings="faceapi", dim=64,
                        temporal="gru", modality_dropout=0.5)
    return model, TrainConfig(epochs=epochs, lr=1e-3, batch_size=16, seed=seed, cache=True, augment=False, aux_weight=1.0)


def uar_difference(base: pd.DataFrame, dropped: pd.DataFrame, classes, *, truth: str, n_boot: int) -> dict:
    """Pooled UAR (dropped - base) against the ``truth`` column, with a subject-resampled interval."""
    from femo.audit.stats import cluster_bootstrap
    from femo.training.metrics import uar

    both = base.merge(dropped[["clip_id", "predicted"]], on="clip_id", suffixes=("", "_dropped"))
    stat = lambda f: (uar(f[truth].astype(str), f["predicted_dropped"].astype(str), classes)
                      - uar(f[truth].astype(str), f["predicted"].astype(str), classes))
    interval = cluster_bootstrap(both, stat, cluster="subject", n_boot=n_boot)
    return {"difference": interval.estimate, "low": interval.low, "high": interval.high, "against": truth}


def truth_table(t: dict) -> str:
    """Markdown: precision and recall with intervals next to random flagging."""
    return "\n".join([
        "| | suspects (cleanlab) | 95% CI | random flagging: expected | random: 97.5th pct |", "|---|---|---|---|---|",
        f"| precision | {t['precision']:.3f} | {t['precision_low']:.3f}..{t['precision_high']:.3f} | "
        f"{t['random_precision']:.3f} | {t['random_precision_high']:.3f} |",
        f"| recall | {t['recall']:.3f} | {t['recall_low']:.3f}..{t['recall_high']:.3f} | "
        f"{t['random_recall']:.3f} | {t['random_recall_high']:.3f} |",
        f"| precision of the {t['k']} lowest-quality clips | {t['precision_at_k']:.3f} | | {t['random_precision']:.3f} | |"])


def run_label_noise(workdir: Path, *, clips: int = 392, noise: float = NOISE, epochs: int = 30, seed: int = 0,
                    fusion: str = "attention", n_boot: int = 1000, workers: int = 2, threads: int = 1, log=print) -> dict:
    """Every stage under ``workdir``; returns the JSON written (config, stages, truth, comparison)."""
    import torch

    from femo.audit.labels import audit_labels, read_oof
    from femo.audit.labels_drop import compare_uar, retrain_folds
    from femo.audit.labels_truth import planted_truth
    from femo.training.loop import train_folds

    torch.set_num_threads(threads)
    workdir = Path(workdir)
    log(f"synth: {stage_synth_noisy(workdir, clips=clips, seed=seed, noise=noise, workers=workers)}")
    stages = _evidence().prepare(workdir, clips=clips, seed=seed, workers=workers, log=log)
    model, cfg = configs(fusion=fusion, epochs=epochs, seed=seed)
    run, dropped_run = workdir / "runs" / f"fused_{fusion}", workdir / "runs" / f"fused_{fusion}_without_suspects"
    t0 = time.perf_counter()
    train_folds(workdir / "store", out=run, folds=[1, 2, 3, 4, 5], model=model, train=cfg, resume=True, progress=False)
    stages["train"] = {"seconds": time.perf_counter() - t0}
    oof = read_oof(run)
    t0 = time.perf_counter()
    result = audit_labels(oof.pred, classes=oof.classes)
    truth = planted_truth(result.clips, n_boot=n_boot, seed=seed)
    stages["audit"] = {"seconds": time.perf_counter() - t0}
    log(result.summary())
    t0 = time.perf_counter()
    retrain_folds(run, out=dropped_run, exclude=result.suspects["clip_id"].tolist())
    stages["retrain"] = {"seconds": time.perf_counter() - t0}
    dropped = read_oof(dropped_run).pred
    table = compare_uar(oof.pred, dropped, oof.classes, truth="true_emotion")
    diffs = {t: uar_difference(oof.pred, dropped, oof.classes, truth=t, n_boot=n_boot) for t in ("label", "true_emotion")}
    return {"config": {"clips": clips, "label_noise": noise, "seed": seed, "epochs": epochs, "fusion": fusion,
                       "n_boot": n_boot, "embeddings": "faceapi", "temporal": "gru", "dim": 64, "lr": 1e-3,
                       "modality_dropout": 0.5, "aux_weight": 1.0, "threads": threads,
                       "filter_by": result.filter_by, "rank_by": result.rank_by},
            "stages": stages, "metrics": result.to_metrics(), "planted_truth": truth,
            "uar_by_fold": table.to_dict("records"), "uar_difference": diffs, "summary": result.summary(),
            "_tables": (truth_table(truth), table)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=RESULTS / "label_noise_work", help="data, store and runs go here")
    p.add_argument("--clips", type=int, default=392)
    p.add_argument("--noise", type=float, default=NOISE, help="fraction of labels flipped (femo synth --label-noise)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--fusion", default="attention", help="fusion of the fused model (attention | late | gated)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--out", type=Path, default=RESULTS / "label_noise.json")
    args = p.parse_args(argv)
    result = run_label_noise(args.workdir, clips=args.clips, noise=args.noise, epochs=args.epochs, fusion=args.fusion,
                             n_boot=args.n_boot)
    truth, table = result.pop("_tables")
    result["machine"] = {"node": platform.node(), "python": platform.python_version(), "note": "shared, loaded CPU"}
    t = result["planted_truth"]
    print(f"{t['n_flipped']} flipped of {t['n_clips']} clips; {t['n_suspect']} suspects, {t['n_hits']} of them flipped\n")
    print(truth, "", table.round(3).to_string(index=False), "", sep="\n")
    for name, d in result["uar_difference"].items():
        print(f"UAR without - with suspects, against {name}: {d['difference']:+.3f} (95% CI {d['low']:+.3f}..{d['high']:+.3f})")
    print("stage seconds: " + ", ".join(f"{k} {s['seconds']:.0f}" for k, s in result["stages"].items()))
    from femo.training.metrics import write_json

    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
