"""The bias audit on known truth: a planted subgroup bias recovered end to end.

Pipeline (stages 1-3 resume when their output exists; each stage timed):

1. ``femo synth WORKDIR/data --plant-bias skin_tone=dark --seed 1`` (``--clips`` clips, 40 subjects);
2. ``femo extract`` with 2 workers into WORKDIR/store; 3. face-api embeddings cached in the store
   (both through benchmarks/evidence.py's stages);
4. the fused model (face + landmarks + audio, ``--fusion``; the settings of benchmarks/evidence.py:
   face-api embeddings, GRU temporal blocks, width 64, lr 1e-3, modality dropout 0.5, auxiliary
   weight 1.0, one torch thread) trained on all five subject-independent folds, so every clip is
   tested once;
5. ``femo.audit.fairness.audit`` on the pooled predictions over skin_tone, sex, age_group and
   culture (subject-clustered bootstrap, ``--n-boot`` resamples, Holm-corrected permutation tests).

What is planted (femo.data.synth): the ``skin_tone=dark`` subgroup's expressions are subtler and
some of its labels are flipped, so its UAR should be lowest. The claim checked: skin_tone is
flagged with ``dark`` as its worst group, and no other attribute is flagged.

    python benchmarks/audit_truth.py                      # 392 clips, 30 epochs

Prints the per-group tables and the flagged list; writes benchmarks/results/audit_truth.json.
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
PLANTED = ("skin_tone", "dark")
ATTRIBUTES = ("skin_tone", "sex", "age_group", "culture")


def _evidence():
    """benchmarks/evidence.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("femo_bench_evidence", HERE / "evidence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_synth_biased(workdir: Path, *, clips: int, seed: int, workers: int) -> dict:
    """Generate the biased synthetic set once (benchmarks/evidence.py's ``stage_synth_config``)."""
    from femo.data.synth import SynthConfig

    config = SynthConfig(clips=clips, seed=seed, plant_bias=PLANTED, workers=workers)
    return _evidence().stage_synth_config(workdir, config)


def train_fused(store: Path, run: Path, *, fusion: str, epochs: int, seed: int) -> tuple[pd.DataFrame, list, float]:
    """Train the fused model on folds 1-5 with evidence.py's best settings; (pooled predictions, classes, seconds)."""
    from femo.config import ModelConfig, TrainConfig
    from femo.training.loop import train_folds

    model = ModelConfig(modalities=("face", "landmarks", "audio"), fusion=fusion, embeddings="faceapi", dim=64,
                        temporal="gru", modality_dropout=0.5)
    cfg = TrainConfig(epochs=epochs, lr=1e-3, batch_size=16, seed=seed, cache=True, augment=False, aux_weight=1.0)
    t0 = time.perf_counter()
    train_folds(store, out=run, folds=[1, 2, 3, 4, 5], model=model, train=cfg, progress=False, overwrite=True)
    seconds = time.perf_counter() - t0
    classes = json.loads((run / "fold_1" / "metrics.json").read_text())["classes"]
    pred = pd.read_csv(run / "predictions.csv", dtype={"clip_id": str, "subject": str})
    return pred, classes, seconds


def verdict(result, *, planted: tuple[str, str] = PLANTED) -> dict:
    """Whether the planted attribute is flagged with the planted group as worst, and nothing else is."""
    column, value = planted
    flagged = {f["attribute"]: f for f in result.flagged}
    hit = column in flagged and str(flagged[column]["group"]) == value
    others = sorted(a for a in flagged if a != column)
    return {"planted_flagged_as_worst": hit, "other_attributes_flagged": others, "holds": hit and not others}


def group_table(groups: pd.DataFrame) -> str:
    """Markdown: per attribute and group, clips, subjects, UAR with its subject-clustered interval."""
    lines = ["| attribute | group | n_clips | n_subjects | UAR | 95% CI | assessable |", "|---|---|---|---|---|---|---|"]
    for r in groups.to_dict("records"):
        lines.append(f"| {r['attribute']} | {r['group']} | {int(r['n_clips'])} | {r['n_subjects']:.0f} | "
                     f"{r['uar']:.3f} | {r['uar_low']:.3f}..{r['uar_high']:.3f} | {r['assessable']} |")
    return "\n".join(lines)


def disparity_table(disparities: pd.DataFrame) -> str:
    """Markdown: per attribute, worst and best group, UAR gap with interval, raw and Holm p-values."""
    lines = ["| attribute | worst | best | gap | 95% CI | p | p (Holm) |", "|---|---|---|---|---|---|---|"]
    for r in disparities.to_dict("records"):
        lines.append(f"| {r['attribute']} | {r['worst']} | {r['best']} | {r['gap']:.3f} | "
                     f"{r['gap_low']:.3f}..{r['gap_high']:.3f} | {r['p_value']:.4f} | {r['p_adjusted']:.4f} |")
    return "\n".join(lines)


def run_audit_truth(workdir: Path, *, clips: int = 392, epochs: int = 30, seed: int = 1, fusion: str = "attention",
                    n_boot: int = 1000, workers: int = 2, threads: int = 1, log=print) -> dict:
    """Every stage under ``workdir``; returns {config, stages, groups, disparities, flagged, verdict, summary}."""
    import torch

    from femo.audit.fairness import audit

    torch.set_num_threads(threads)
    workdir = Path(workdir)
    log(f"synth: {stage_synth_biased(workdir, clips=clips, seed=seed, workers=workers)}")
    stages = _evidence().prepare(workdir, clips=clips, seed=seed, workers=workers, log=log)
    pred, classes, seconds = train_fused(workdir / "store", workdir / "runs" / f"fused_{fusion}", fusion=fusion,
                                         epochs=epochs, seed=seed)
    stages["train"] = {"seconds": seconds}
    log(f"train: {seconds:.0f} s, {len(pred)} test predictions, {pred['subject'].nunique()} subjects")
    t0 = time.perf_counter()
    result = audit(pred, attributes=list(ATTRIBUTES), classes=classes, manifest=workdir / "data" / "manifest.csv",
                   n_boot=n_boot)
    stages["audit"] = {"seconds": time.perf_counter() - t0}
    return {"config": {"clips": clips, "seed": seed, "epochs": epochs, "fusion": fusion, "n_boot": n_boot,
                       "planted": list(PLANTED), "embeddings": "faceapi", "temporal": "gru", "dim": 64, "lr": 1e-3,
                       "modality_dropout": 0.5, "aux_weight": 1.0, "threads": threads},
            "n_clips": int(len(pred)), "n_subjects": int(pred["subject"].nunique()), "stages": stages,
            "groups": result.groups.to_dict("records"), "disparities": result.disparities.to_dict("records"),
            "flagged": result.flagged, "verdict": verdict(result), "summary": result.summary,
            "_tables": (group_table(result.groups), disparity_table(result.disparities))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=RESULTS / "audit_truth_work", help="data, store and runs go here")
    p.add_argument("--clips", type=int, default=392)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--fusion", default="attention", help="fusion of the fused model (attention | late | gated)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples and permutations per test")
    p.add_argument("--out", type=Path, default=RESULTS / "audit_truth.json")
    args = p.parse_args(argv)
    result = run_audit_truth(args.workdir, clips=args.clips, epochs=args.epochs, fusion=args.fusion,
                             n_boot=args.n_boot)
    groups, disparities = result.pop("_tables")
    result["machine"] = {"node": platform.node(), "python": platform.python_version(), "note": "shared, loaded CPU"}
    print(groups, "\n", disparities, sep="\n")
    print(f"\nflagged: {json.dumps(result['flagged'], indent=1)}")
    v = result["verdict"]
    print(f"\n- [{'x' if v['holds'] else ' '}] {PLANTED[0]}={PLANTED[1]} flagged as worst group: "
          f"{v['planted_flagged_as_worst']}; other attributes flagged: {v['other_attributes_flagged'] or 'none'}")
    print("stage seconds: " + ", ".join(f"{k} {s['seconds']:.0f}" for k, s in result["stages"].items()))
    print(f"\n{result['summary']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from femo.training.metrics import write_json

    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
