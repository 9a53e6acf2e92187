"""Attribution and ablation speed on CPU with the real FemoNet (ResNet-18 frame encoder, 112 px).

One 16-frame clip (and a batch of 4) with face crops, geometry, log-mel and prosody inputs:

* Integrated Gradients with ``--steps`` steps (target: under 10 s per clip on CPU),
* GradientShap with 8 samples (the faster method),
* the 7-subset modality ablation forward passes and per-clip captum Shapley values.

Weights are random (``weights=None``): speed does not depend on their values.
Usage: python benchmarks/attribution.py [--steps 16] [--threads 2]
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


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = FemoNet(ModelConfig(dim=64, temporal="transformer", fusion="gated", frame_encoder="resnet18"), 7).eval()
    rows = []
    for b in (1, 4):
        batch = clip_batch(b)
        attribution.attribute(model, clip_batch(1), n_steps=2)  # warm-up
        ig = timed(lambda: attribution.attribute(model, batch, n_steps=args.steps, internal_batch_size=8 * b))
        gs = timed(lambda: attribution.attribute(model, batch, method="gradient_shap", n_samples=8))
        subsets = timed(lambda: ablation.evaluate_subsets(model, [batch]))
        shap = timed(lambda: ablation.clip_shapley(model, [batch]))
        rows.append({"clips": b, "ig_s_per_clip": ig / b, "gradient_shap_s_per_clip": gs / b,
                     "ablation_7_subsets_s_per_clip": subsets / b, "clip_shapley_s_per_clip": shap / b})
    print(f"IG steps={args.steps}, threads={args.threads}, ResNet-18 112 px, 16 frames (seconds per clip)")
    print(f"{'clips':>5} {'IG':>8} {'GradShap':>9} {'7 subsets':>10} {'Shapley':>8}")
    for r in rows:
        print(f"{r['clips']:>5} {r['ig_s_per_clip']:>8.2f} {r['gradient_shap_s_per_clip']:>9.2f} "
              f"{r['ablation_7_subsets_s_per_clip']:>10.2f} {r['clip_shapley_s_per_clip']:>8.2f}")
    out = ROOT / "benchmarks" / "results" / "attribution.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": args.steps, "threads": args.threads, "rows": rows,
                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
