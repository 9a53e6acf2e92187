"""Attribution and ablation speed on CPU with the real FemoNet (ResNet-18 frame encoder, 112 px).

One 16-frame clip (and a batch of 4) with face crops, geometry, log-mel and prosody inputs:

* Integrated Gradients with ``--steps`` steps (target: under 10 s per clip on CPU),
* GradientShap with 8 samples (the faster method),
* the 7-subset modality ablation forward passes and per-clip captum Shapley values.

Weights are random (``weights=None``): speed does not depend on their values. Each timing is
reported as wall seconds and as process CPU seconds / threads, which is what the wall time would
be on an otherwise idle machine (the two agree when nothing else runs).
Usage: python benchmarks/attribution.py [--steps 16] [--threads 2] [--clips 1 4]
Writes benchmarks/results/attribution.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from femo.audit import ablation, attribution
from femo.config import ModelConfig
from femo.features.geometry import GEOMETRY_DIM
from femo.models.net import FemoNet

ROOT = Path(__file__).resolve().parent.parent


def clip_batch(b: int, *, t: int = 16, s: int = 112, a: int = 128, c: int = 7) -> dict:
    """A random batch of ``b`` clips with every modality present."""
    g = torch.Generator().manual_seed(0)
    return {"face": torch.rand(b, t, 3, s, s, generator=g), "face_mask": torch.ones(b, t, dtype=torch.bool),
            "landmarks": torch.randn(b, t, GEOMETRY_DIM, generator=g), "landmarks_mask": torch.ones(b, t, dtype=torch.bool),
            "audio": torch.randn(b, 1, 64, a, generator=g), "prosody": torch.randn(b, a, 4, generator=g),
            "audio_mask": torch.ones(b, dtype=torch.bool), "label": torch.randint(0, c, (b,), generator=g),
            "index": torch.arange(b)}


def timed(fn, threads: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds / threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, (time.process_time() - cpu) / threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clips", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = FemoNet(ModelConfig(dim=64, temporal="transformer", fusion="gated", frame_encoder="resnet18"), 7).eval()
    rows = []
    attribution.attribute(model, clip_batch(1), n_steps=2)  # warm-up
    for b in args.clips:
        batch = clip_batch(b)
        jobs = {"ig": lambda: attribution.attribute(model, batch, n_steps=args.steps),
                "gradient_shap": lambda: attribution.attribute(model, batch, method="gradient_shap", n_samples=8),
                "ablation_7_subsets": lambda: ablation.evaluate_subsets(model, [batch]),
                "clip_shapley": lambda: ablation.clip_shapley(model, [batch])}
        row = {"clips": b}
        for name, job in jobs.items():
            wall, cpu = timed(job, args.threads)
            row[f"{name}_wall_s_per_clip"], row[f"{name}_cpu_s_per_clip"] = wall / b, cpu / b
        rows.append(row)
    print(f"IG steps={args.steps}, threads={args.threads}, ResNet-18 112 px, 16 frames; seconds per clip, "
          "wall (CPU/threads)")
    print(f"{'clips':>5} {'IG':>15} {'GradShap':>15} {'7 subsets':>15} {'Shapley':>15}")
    for r in rows:
        cells = [f"{r[f'{k}_wall_s_per_clip']:6.2f} ({r[f'{k}_cpu_s_per_clip']:5.2f})"
                 for k in ("ig", "gradient_shap", "ablation_7_subsets", "clip_shapley")]
        print(f"{r['clips']:>5} " + " ".join(f"{c:>15}" for c in cells))
    out = ROOT / "benchmarks" / "results" / "attribution.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": args.steps, "threads": args.threads, "rows": rows,
                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
