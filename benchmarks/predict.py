"""End-to-end real-time factor of ``femo predict`` on CPU, split by stage, and peak memory.

    python benchmarks/predict.py [--seconds 60] [--fps 25] [--threads 1] [--window 2 --hop 0.5]

The clip: 640x360 H.264 + AAC mp4 of ``skimage.data.astronaut()`` with a small affine wobble and
a 220 Hz tone, written by :func:`femo.data.media.write_video` in a child process (so its frames
never count towards this process's memory). The model: the default configuration
(``ModelConfig()``: ResNet-18 frame CNN at 112 px, transformer temporal blocks, gated fusion;
``DataConfig()``: T = 16 frames per window) with untrained weights -- speed does not depend on
the weights. A 2-second warm-up clip runs first (numba/librosa JIT, landmarker start-up); the
model load and warm-up times are reported separately.

RTF = wall seconds / video seconds (< 1 is faster than real time), from the first frame decoded to
the last window predicted (model load and warm-up excluded). ``cpu RTF`` = process CPU
seconds / video seconds: what an otherwise idle core would need, since on a shared machine the
wall clock mostly measures the other tenants. Peak RSS is ``ru_maxrss`` of this process (model,
landmarkers and the streaming buffers). Writes benchmarks/results/predict.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

RESULTS = Path(__file__).resolve().parent / "results" / "predict.json"


def write_clip(path: Path, seconds: float, fps: float, size=(640, 360)) -> Path:
    """The astronaut clip (see module docstring)."""
    import cv2
    from skimage.data import astronaut

    from femo.data.media import write_video

    w, h = size
    img = cv2.resize(astronaut(), (h, h), interpolation=cv2.INTER_AREA)
    frames = np.empty((int(round(seconds * fps)), h, w, 3), np.uint8)
    for i in range(len(frames)):
        a = 2 * np.pi * i / (2 * fps)
        m = cv2.getRotationMatrix2D((h / 2, h / 2), 3 * np.sin(a), 1.0 + 0.02 * np.cos(a))
        m[:, 2] += [(w - h) / 2 + 6 * np.sin(a), 4 * np.cos(a)]
        frames[i] = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128))
    t = np.arange(int(seconds * 16_000)) / 16_000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(np.pi * t))).astype(np.float32)
    return write_video(path, frames, fps=fps, audio=tone)


def make_run(out: Path) -> Path:
    """A run folder with the default model, untrained."""
    import torch

    from femo.config import CLASSES, DataConfig, ModelConfig, to_dict
    from femo.models.net import FemoNet

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model, data = ModelConfig(), DataConfig()
    net = FemoNet(model, len(CLASSES))
    config = {"model": to_dict(model), "train": {}, "data": to_dict(data), "classes": list(CLASSES),
              "store": "", "fold": None, "versions": {}}
    (out / "config.json").write_text(json.dumps(config))
    torch.save({"model": net.state_dict(), "epoch": 0, "config": config, "classes": list(CLASSES)}, out / "best.pt")
    return out


def _child_clip(path: Path, seconds: float, fps: float) -> None:
    subprocess.run([sys.executable, __file__, "--write-clip", str(path), "--seconds", str(seconds),
                    "--fps", str(fps)], check=True)


def measure(args: argparse.Namespace, folder: Path) -> dict:
    """Load, warm up, then time one prediction of the long clip."""
    import torch

    import femo

    torch.set_num_threads(args.threads)
    clip, warm = folder / "clip.mp4", folder / "warm.mp4"
    _child_clip(clip, args.seconds, args.fps)
    _child_clip(warm, 2.0, args.fps)
    run = make_run(folder / "run")
    baseline = psutil.Process().memory_info().rss / 2**20  # torch + femo imported, nothing loaded
    t0 = time.perf_counter()
    predictor = femo.load(run)
    load_s = time.perf_counter() - t0
    with predictor:
        t0 = time.perf_counter()
        predictor.timeline(warm, window=args.window, hop=args.hop)
        warm_s = time.perf_counter() - t0
        cpu0, t0 = time.process_time(), time.perf_counter()
        tl = predictor.timeline(clip, window=args.window, hop=args.hop)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stages = dict(tl.seconds)
    stages["other"] = max(0.0, wall - sum(stages.values()))
    return {"video_seconds": tl.duration, "fps": args.fps, "size": "640x360", "windows": len(tl.spans),
            "window": args.window, "hop": args.hop, "threads": args.threads, "wall_seconds": wall,
            "cpu_seconds": cpu, "rtf": wall / tl.duration, "cpu_rtf": cpu / tl.duration,
            "stage_seconds": stages, "stage_rtf": {k: v / tl.duration for k, v in stages.items()},
            "load_seconds": load_s, "warmup_seconds": warm_s,
            "face_found": float(tl.face_found.mean()), "audio_windows": int(tl.audio.sum()),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_imports_mib": baseline,
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores (shared, loaded)",
            "load_average": list(__import__("os").getloadavg())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--window", type=float, default=2.0)
    p.add_argument("--hop", type=float, default=0.5)
    p.add_argument("--write-clip", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.write_clip is not None:
        write_clip(args.write_clip, args.seconds, args.fps)
        return
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(args, Path(tmp))
    print(f"{r['video_seconds']:.0f} s 640x360 @ {r['fps']:g} fps, {r['windows']} windows "
          f"({r['window']} s / hop {r['hop']} s), torch threads {r['threads']}, load avg {r['load_average'][0]:.1f}")
    print(f"{'stage':<10}{'seconds':>9}{'RTF':>8}")
    for k, v in r["stage_seconds"].items():
        print(f"{k:<10}{v:9.2f}{r['stage_rtf'][k]:8.3f}")
    print(f"{'total':<10}{r['wall_seconds']:9.2f}{r['rtf']:8.3f}   (cpu {r['cpu_seconds']:.2f} s, cpu RTF {r['cpu_rtf']:.3f})")
    print(f"peak RSS {r['peak_rss_mib']:.0f} MiB ({r['rss_after_imports_mib']:.0f} MiB of it after importing torch + femo); model load {r['load_seconds']:.1f} s, warm-up {r['warmup_seconds']:.1f} s; "
          f"face in {r['face_found']:.0%} of frames")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(r, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
