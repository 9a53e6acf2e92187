"""Modality ablation checked against the synthetic set's planted truth, on trained fusion models.

For each fold of a fused run made by ``benchmarks/evidence.py`` (``RUNS/fused_<fusion>/fold_k``),
every non-empty modality subset is evaluated on that fold's test clips by masking the others
through the model's own missing-modality path (``femo.audit.ablation.evaluate_subsets``). The five
folds' test predictions are pooled (every clip is tested exactly once), then exact Shapley
contributions of face / landmarks / audio to accuracy and to UAR are computed within slices:

* ``informative=face|audio|both`` (which modality carries the label; on ``face`` clips the voice
  shows another emotion and vice versa);
* ``low_light``, ``occluded`` (planted face degradations) and ``clean`` (neither, audio present).

The empty coalition's value is chance: ``1 / n_classes`` for accuracy and ``1 / K`` (classes
present in the slice) for UAR. UAR Shapley values carry subject-clustered bootstrap intervals.

Claims checked (the planted truth):

1. on ``informative=face`` clips face or landmarks get the largest share;
2. on ``informative=audio`` clips audio gets the largest share;
3. audio's share is larger on ``low_light`` and on ``occluded`` clips than on ``clean`` clips
   (also checked on the absolute Shapley value, which a collapsing face contribution cannot
   inflate). Shares are unstable where the fused score is near chance (their sum is then small).

    python benchmarks/ablation_truth.py                       # fused_attention
    python benchmarks/ablation_truth.py --fusion gated,late,attention

Prints a markdown table per fusion and writes benchmarks/results/ablation_truth.json (or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from femo.audit import stats
from femo.audit.ablation import evaluate_subsets, shapley_values, wide_predictions
from femo.audit.ablation_slices import bootstrap_subset_uar
from femo.audit.trained import load_run
from femo.config import MODALITIES

RESULTS = Path(__file__).resolve().parent / "results"
WORK = RESULTS / "evidence_work"
SLICES = ("informative=face", "informative=audio", "informative=both", "low_light", "occluded", "clean")


def pooled_predictions(run_dir: Path, *, store: Path | None, batch_size: int = 32) -> tuple[pd.DataFrame, int]:
    """Wide predictions (one row per clip, ``pred_<subset>``, index metadata) over every fold's test
    split of ``run_dir/fold_*``; returns (frame, n_classes)."""
    folds = sorted(p for p in run_dir.glob("fold_*") if (p / "best.pt").is_file())
    if not folds:
        raise FileNotFoundError(f"{run_dir}: no fold_*/best.pt; train them with benchmarks/evidence.py --folds all")
    parts, n_classes = [], None
    for fold in folds:
        run = load_run(fold, store=store, split="test")
        long = evaluate_subsets(run.model, run.batches(batch_size=batch_size), classes=run.classes)
        wide = wide_predictions(long, run.index)
        wide["run_fold"] = fold.name
        parts.append(wide)
        n_classes = len(run.classes)
    pooled = pd.concat(parts, ignore_index=True)
    dup = pooled["clip_id"].duplicated()
    if dup.any():
        raise ValueError(f"{run_dir}: clips tested in more than one fold, e.g. {pooled['clip_id'][dup].iloc[0]}")
    return pooled, n_classes


def _flag(column: pd.Series) -> np.ndarray:
    return column.astype(str).str.strip().str.lower().isin({"true", "1", "1.0"}).to_numpy()


def slice_masks(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The planted slices of :data:`SLICES` plus ``all``: name -> (N,) bool."""
    info = frame["informative"].astype(str)
    out = {"all": np.ones(len(frame), bool)}
    out.update({f"informative={v}": (info == v).to_numpy() for v in ("face", "audio", "both")})
    low, occ = _flag(frame["low_light"]), _flag(frame["occluded"])
    out.update(low_light=low, occluded=occ, clean=~low & ~occ & _flag(frame["has_audio_track"]))
    return out


def _pred_col(subset: frozenset) -> str:
    return "pred_fused" if len(subset) == len(MODALITIES) else "pred_" + "+".join(m for m in MODALITIES if m in subset)


def accuracy_shapley(part: pd.DataFrame, n_classes: int) -> dict[str, float]:
    """Exact Shapley contribution of each modality to accuracy; empty coalition = 1 / n_classes."""
    y = part["label"].to_numpy(int)

    def value(s: frozenset) -> float:
        return 1.0 / n_classes if not s else float((part[_pred_col(s)].to_numpy(int) == y).mean())
    return shapley_values(value, MODALITIES)


def uar_shapley(part: pd.DataFrame, n_classes: int, *, n_boot: int, ci: float = 0.95) -> dict[str, dict]:
    """Shapley contribution to UAR per modality with a subject-clustered bootstrap interval."""
    boot = bootstrap_subset_uar(part, n_classes, n_boot=n_boot)  # subset label -> (n_boot + 1,)
    chance = 1.0 / len(set(part["label"]))
    names = {frozenset(k.split("+")) if k != "fused" else frozenset(MODALITIES): v for k, v in boot.items()}
    phis = np.array([[shapley_values(lambda s, b=b: chance if not s else names[s][b], MODALITIES)[m]
                      for m in MODALITIES] for b in range(n_boot + 1)])  # (n_boot + 1, M)
    out = {}
    for j, m in enumerate(MODALITIES):
        low, high = stats.percentile_interval(phis[1:, j], ci)
        out[m] = {"shapley": float(phis[0, j]), "low": low, "high": high}
    return out


def _shares(phi: dict[str, float]) -> dict[str, float]:
    total = sum(phi.values())
    return {m: (p / total if total else float("nan")) for m, p in phi.items()}


def slice_report(frame: pd.DataFrame, n_classes: int, *, n_boot: int) -> dict:
    """Per slice: n, accuracy and UAR of every subset, Shapley values and shares for both metrics."""
    out = {}
    for name, mask in slice_masks(frame).items():
        part = frame[mask]
        acc = accuracy_shapley(part, n_classes)
        uarv = uar_shapley(part, n_classes, n_boot=n_boot)
        y = part["label"].to_numpy(int)
        subsets = {c[5:]: {"acc": float((part[c].to_numpy(int) == y).mean()),
                           "uar": stats.uar(y, part[c].to_numpy(int), list(range(n_classes)))}
                   for c in part.columns if c.startswith("pred_")}
        out[name] = {"n": int(mask.sum()), "n_subjects": int(part["subject"].nunique()), "subsets": subsets,
                     "acc_shapley": acc, "acc_share": _shares(acc),
                     "uar_shapley": uarv, "uar_share": _shares({m: v["shapley"] for m, v in uarv.items()})}
    return out


def claims(report: dict, metric: str) -> dict[str, bool]:
    """The planted-truth claims on the ``<metric>_share`` of each slice (metric: acc | uar)."""
    share = {k: v[f"{metric}_share"] for k, v in report.items()}
    phi = {k: {m: (x["shapley"] if isinstance(x, dict) else x) for m, x in v[f"{metric}_shapley"].items()}
           for k, v in report.items()}
    face_top = max(share["informative=face"], key=share["informative=face"].get)
    audio_top = max(share["informative=audio"], key=share["informative=audio"].get)
    return {"face_slice_top_is_face_or_landmarks": face_top in ("face", "landmarks"),
            "audio_slice_top_is_audio": audio_top == "audio",
            "audio_share_low_light_gt_clean": share["low_light"]["audio"] > share["clean"]["audio"],
            "audio_share_occluded_gt_clean": share["occluded"]["audio"] > share["clean"]["audio"],
            "audio_shapley_low_light_gt_clean": phi["low_light"]["audio"] > phi["clean"]["audio"],
            "audio_shapley_occluded_gt_clean": phi["occluded"]["audio"] > phi["clean"]["audio"]}


def markdown(fusion: str, report: dict) -> str:
    """One row per slice: n, fused acc/UAR, accuracy shares and UAR Shapley values with intervals."""
    head = ("| fused_" + fusion + " slice | n | acc fused | UAR fused | acc share F / L / A "
            "| UAR Shapley F [95% CI] | UAR Shapley L | UAR Shapley A |")
    lines = [head, "|" + "---|" * 8]
    for name, r in report.items():
        sh = r["acc_share"]
        cells = [f"{r['uar_shapley'][m]['shapley']:+.3f} [{r['uar_shapley'][m]['low']:+.2f}, "
                 f"{r['uar_shapley'][m]['high']:+.2f}]" for m in MODALITIES]
        lines.append(f"| {name} | {r['n']} | {r['subsets']['fused']['acc']:.3f} | {r['subsets']['fused']['uar']:.3f} "
                     f"| {sh['face']:.2f} / {sh['landmarks']:.2f} / {sh['audio']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=WORK / "runs", help="folder holding fused_<fusion>/fold_k")
    parser.add_argument("--store", type=Path, default=None, help="feature store (default: each run's config)")
    parser.add_argument("--fusion", default="attention", help="comma-separated: gated,late,attention")
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS / "ablation_truth.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {"machine": f"{platform.machine()} {platform.processor()}, CPU, shared/loaded", "fusions": {}}
    for fusion in [f.strip() for f in args.fusion.split(",") if f.strip()]:
        t0 = time.perf_counter()
        frame, n_classes = pooled_predictions(args.runs / f"fused_{fusion}", store=args.store)
        report = slice_report(frame, n_classes, n_boot=args.n_boot)
        result["fusions"][fusion] = {"seconds": time.perf_counter() - t0, "n_clips": int(len(frame)),
                                     "claims_acc": claims(report, "acc"), "claims_uar": claims(report, "uar"),
                                     "slices": report}
        print(markdown(fusion, report), "\n")
        print(f"claims (accuracy shares): {result['fusions'][fusion]['claims_acc']}")
        print(f"claims (UAR shares):      {result['fusions'][fusion]['claims_uar']}")
        print(f"{fusion}: {len(frame)} clips, {time.perf_counter() - t0:.1f} s\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
