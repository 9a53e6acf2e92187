"""Decoding speed: 3-second 224x224 clips to 16 frames + 16 kHz audio, and the synthetic set's build time.

Cases (clips/s, median of ``--repeats`` passes over ``--clips`` clips, one process):

* ``mp4+audio``: H.264 + AAC mp4, 25 fps (75 frames), ``load_clip(num_frames=16)``
* ``mp4+audio max_side=112``: the same, frames downscaled while decoding
* ``frame folder (jpg)``: 75 JPEG frames per clip (DFEW's ``clip_224x224`` layout)
* ``audio only``: ``load_audio`` of the same mp4s
* ``femo synth`` (default size): wall seconds to generate the default synthetic dataset

Usage: python benchmarks/decode.py [--clips 20] [--repeats 3] [--skip-synth]
Writes benchmarks/results/decode.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from femo.data.decode import load_audio, load_clip
from femo.data.media import write_video
from femo.data.synth import SynthConfig, generate
from femo.data.synth_face import FaceRenderer, FaceStyle, envelope, expression
from femo.data.synth_voice import synth_voice

ROOT = Path(__file__).resolve().parent.parent
SIZE, FPS, SECONDS = 224, 25, 3.0


def make_clip(i: int, folder: Path) -> tuple[Path, Path]:
    """One talking drawn face (mp4 with audio) and the same frames as a JPEG folder."""
    rng = np.random.default_rng(i)
    style = FaceStyle(face_w=0.28, face_h=0.37, eye_dx=0.11, skin=(200, 150, 110), hair=(40, 30, 20),
                      background=tuple(int(v) for v in rng.integers(90, 200, 3)), long_hair=bool(i % 2),
                      wrinkles=False, headwear="none", yaw=float(rng.normal(0, 10)))
    renderer = FaceRenderer(style, SIZE)
    t = np.arange(int(SECONDS * FPS)) / FPS
    level = envelope(t, 0.3, 1.0, 2.0, 2.7)
    frames = np.stack([renderer.frame(expression("happy", float(v)), shift=(int(3 * np.sin(k / 5)), 0))
                       for k, v in enumerate(level)])
    frames = np.clip(frames + rng.normal(0, 3, frames.shape), 0, 255).astype(np.uint8)  # sensor noise
    audio = synth_voice(emotion="happy", intensity=1.0, sex="f", seconds=SECONDS, snr_db=20, rng=rng)
    mp4 = write_video(folder / f"clip{i:03d}.mp4", frames, fps=FPS, audio=audio)
    jpgs = folder / f"clip{i:03d}"
    jpgs.mkdir()
    for k, rgb in enumerate(frames):
        Image.fromarray(rgb).save(jpgs / f"{k + 1:05d}.jpg", quality=90)
    return mp4, jpgs


def rate(fn, paths: list[Path], repeats: int) -> float:
    """Median clips per second of ``fn`` over ``paths``."""
    speeds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for p in paths:
            fn(p)
        speeds.append(len(paths) / (time.perf_counter() - start))
    return statistics.median(speeds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-synth", action="store_true", help="do not time `femo synth` at its default size")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "decode.json"))
    args = ap.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="femo-bench-") as tmp:
        made = [make_clip(i, Path(tmp)) for i in range(args.clips)]
        mp4s, folders = [m for m, _ in made], [f for _, f in made]
        results["mp4+audio"] = rate(lambda p: load_clip(p, num_frames=16), mp4s, args.repeats)
        results["mp4+audio max_side=112"] = rate(lambda p: load_clip(p, num_frames=16, max_side=112), mp4s,
                                                 args.repeats)
        results["frame folder (jpg)"] = rate(lambda p: load_clip(p, num_frames=16), folders, args.repeats)
        results["audio only"] = rate(lambda p: load_audio(p), mp4s, args.repeats)
        synth_seconds = None
        if not args.skip_synth:
            cfg = SynthConfig()
            start = time.perf_counter()
            generate(Path(tmp) / "synth", cfg, log=lambda _: None)
            synth_seconds = time.perf_counter() - start
    print(f"decode benchmark: {args.clips} clips of {SECONDS:g} s, {SIZE}x{SIZE}, {FPS} fps -> 16 frames + 16 kHz audio")
    print(f"{'case':<26}{'clips/s':>10}{'ms/clip':>10}")
    for name, value in results.items():
        print(f"{name:<26}{value:>10.1f}{1000 / value:>10.1f}")
    if synth_seconds is not None:
        print(f"femo synth (default {cfg.clips} clips, {cfg.size}px, {cfg.seconds:g} s, {os.cpu_count()} workers): "
              f"{synth_seconds:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"clips_per_s": results, "synth_default_seconds": synth_seconds,
                               "clip": {"size": SIZE, "fps": FPS, "seconds": SECONDS, "num_frames": 16},
                               "cpus": os.cpu_count(), "machine": platform.platform()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
