"""Training step time of femo's FER2013 encoders on the CPU: float32 vs bfloat16 autocast,
NCHW vs channels-last.

One training step = augmentation-free forward, cross-entropy, backward and an AdamW step on a
batch of random 48x48 gray images, as ``femo encoder train`` runs it. Reports the median of the
timed steps (after warm-up) and the projected time of one epoch of FER2013's 28,709 training images.
bfloat16 autocast pays off where the CPU has AMX or AVX-512 BF16 units (oneDNN uses them); on
other CPUs it can be slower than float32.

Usage: python benchmarks/encoder_speed.py [--arch vgg] [--batch 128] [--threads 2] [--steps 6]
Writes benchmarks/results/encoder_speed.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from femo.models.fer_encoder import build_fer_net

ROOT = Path(__file__).resolve().parent.parent
FER2013_TRAIN = 28_709


def step_ms(arch: str, *, batch: int, bf16: bool, channels_last: bool, steps: int, warmup: int = 2) -> float:
    """Median milliseconds of one training step (see module doc)."""
    torch.manual_seed(0)
    net = build_fer_net(arch).train()
    x = net.preprocess(torch.rand(batch, 3, 48, 48))
    y = torch.randint(0, 7, (batch,))
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - t0))
    return sorted(times)[len(times) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="vgg")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "encoder_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for bf16 in (False, True):
        for cl in (False, True):
            ms = step_ms(args.arch, batch=args.batch, bf16=bf16, channels_last=cl, steps=args.steps)
            rows.append({"dtype": "bfloat16 autocast" if bf16 else "float32", "layout": "channels-last" if cl else "NCHW",
                         "ms_per_step": round(ms, 1), "epoch_s": round(ms / 1000 * FER2013_TRAIN / args.batch, 1)})
            print(f"{rows[-1]['dtype']:18s} {rows[-1]['layout']:13s} {ms:8.0f} ms/step  "
                  f"epoch of {FER2013_TRAIN} images {rows[-1]['epoch_s']:7.0f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"arch": args.arch, "batch": args.batch, "threads": args.threads,
                                    "steps": args.steps, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
