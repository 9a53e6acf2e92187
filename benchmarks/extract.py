"""Extraction throughput: clips/s, sampled frames/s, peak RSS and time per stage, 1 vs 2 workers, Ray.

    python benchmarks/extract.py [--clips 24] [--set synth|astronaut] [--workers 1 2] [--ray 2]

``synth`` renders clips with :mod:`femo.data.synth` (192 px drawn faces, 2 s, 15 fps, with a
voice); ``astronaut`` writes 640x360 clips of the skimage astronaut photo moving a little, with a
tone. ``steady`` rates exclude start-up (imports, model loading, first-call JIT): they count the
clips finished after the first one per worker over the time since then. Peak memory is the
largest summed PSS (shared pages split between processes) of the process tree, polled every
0.25 s. Stage columns are median wall ms per clip (the CPU ms per stage follow the table);
``cpu ms`` is the median process CPU time per clip, and ``cpu-bound f/s`` = workers x T / that:
the rate an otherwise idle machine with one core per worker would reach (on a shared machine the
wall-clock rates mostly measure the other tenants). ``--ray N`` adds ``--engine ray`` rows (a
local Ray instance with N actors, started inside the timed run: its start-up counts in ``wall s``
but not in the steady rates; the Ray processes count in the PSS). Projections: DFEW's 16,372 clips
(MAFW 10,045; FERV39k 38,935) at the measured median CPU seconds per clip, one worker per core,
on one 16-core machine and on 4 such nodes (``--engine ray --address`` or ``--engine slurm``),
assuming the CPU-bound rate (I/O and start-up ignored; T and the frame size as measured).
Writes benchmarks/results/extract.json (``extract_astronaut.json`` for that set).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from femo.features.clip import STAGES, ExtractConfig
from femo.features.extract import config_dict, run_extraction


def synth_set(folder: Path, clips: int) -> Path:
    from femo.data.synth import SynthConfig, generate

    return generate(folder, SynthConfig(clips=clips, seed=0, workers=2), log=lambda *_: None)


def astronaut_set(folder: Path, clips: int) -> Path:
    import cv2
    from skimage.data import astronaut

    from femo.data.media import write_video

    face = cv2.resize(astronaut(), (300, 300))
    sr, seconds, fps = 16_000, 2.0, 25
    t = np.arange(int(seconds * sr)) / sr
    rows = []
    for k in range(clips):
        frames = np.full((int(seconds * fps), 360, 640, 3), 70, np.uint8)
        for i in range(len(frames)):
            m = cv2.getRotationMatrix2D((150, 150), 4 * math.sin(i / 4 + k), 1.0)
            m[:, 2] += [170 + 40 * math.sin(i / 10 + k), 30]
            frames[i] = cv2.warpAffine(face, m, (640, 360), dst=frames[i], borderMode=cv2.BORDER_TRANSPARENT)
        audio = (0.3 * np.sin(2 * np.pi * (150 + 5 * k) * t)).astype(np.float32)
        write_video(folder / f"c{k:03d}.mp4", frames, fps=fps, audio=audio)
        rows.append({"clip_id": f"c{k:03d}", "path": f"c{k:03d}.mp4", "label": "happy", "subject": f"s{k}"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    (folder / "manifest.meta.json").write_text(json.dumps({"dataset": "astronaut", "classes": ["happy"]}))
    return folder / "manifest.csv"


class PeakMemory:
    """Polls the summed PSS of this process and its descendants in a background thread."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_full_info().pss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.25)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure(manifest: Path, workers: int, config: ExtractConfig, engine: str = "local") -> dict:
    from femo.data.manifest import read_manifest
    from femo.features.engines import ray_runner

    df, meta = read_manifest(manifest)
    done: list[float] = []
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="femo-bench-") as tmp, PeakMemory() as rss:
        start = time.perf_counter()
        def record(row: dict) -> None:
            done.append(time.perf_counter())
            rows.append(dict(row))

        runner = ray_runner(workers=workers) if engine == "ray" else None
        index = run_extraction(df, Path(tmp) / "store", classes=meta.classes, config=config, workers=workers,
                               progress=False, on_clip=record, runner=runner)
        wall = time.perf_counter() - start
    n, t = len(done), config.num_frames
    warm = done[workers - 1] if n > workers else float("nan")
    steady = (n - workers) / (done[-1] - warm) if n > workers and done[-1] > warm else float("nan")
    ok = [r["seconds"] for r in rows if r["seconds"]]
    keys = (*STAGES, *(f"cpu_{k}" for k in STAGES), "cpu")
    median = {k: 1000 * float(np.median([r[k] for r in ok])) for k in keys}
    return {"engine": engine, "workers": workers, "clips": n, "ok": int((index["status"] == "ok").sum()),
            "face_ratio": float(index["face_ratio"].mean()), "wall_s": wall,
            "clips_per_s": n / wall, "frames_per_s": n * t / wall,
            "steady_clips_per_s": steady, "steady_frames_per_s": steady * t,
            "peak_pss_mib": rss.peak / 2**20, "median_ms_per_clip": median,
            "cpu_bound_frames_per_s": workers * t * 1000 / median["cpu"]}


def table(results: list[dict]) -> str:
    head = (f"{'engine':>6} {'workers':>7} {'clips':>5} {'wall s':>7} {'clips/s':>7} {'frames/s':>8} {'steady f/s':>10} "
            f"{'PSS MiB':>7} " + " ".join(f"{k:>7}" for k in STAGES) + f" {'cpu ms':>7} {'cpu-bound f/s':>13}")
    lines = [head]
    for r in results:
        m = r["median_ms_per_clip"]
        stages = " ".join(f"{m[k]:>7.0f}" for k in STAGES) + f" {m['cpu']:>7.0f}"
        lines.append(f"{r['engine']:>6} {r['workers']:>7} {r['clips']:>5} {r['wall_s']:>7.1f} {r['clips_per_s']:>7.2f} "
                     f"{r['frames_per_s']:>8.1f} {r['steady_frames_per_s']:>10.1f} {r['peak_pss_mib']:>7.0f} "
                     f"{stages} {r['cpu_bound_frames_per_s']:>13.1f}")
    lines.append("CPU ms per clip by stage (median): " + "; ".join(
        f"{r['engine']} x{r['workers']}: " + ", ".join(f"{k} {r['median_ms_per_clip']['cpu_' + k]:.0f}" for k in STAGES)
        for r in results))
    return "\n".join(lines)


DATASETS = {"DFEW": 16_372, "MAFW": 10_045, "FERV39k": 38_935}


def projection(results: list[dict], cores: int = 16, nodes: int = 4) -> str:
    """Hours for each dataset at the single-worker run's median CPU seconds per clip (see docstring)."""
    if not results:
        return "projection: nothing measured"
    base = next((r for r in results if r["engine"] == "local" and r["workers"] == 1), results[0])
    per_clip = base["median_ms_per_clip"]["cpu"] / 1000
    lines = [f"projection at {per_clip:.2f} CPU s per clip ({base['engine']} x{base['workers']}), one worker per core:"]
    for name, clips in DATASETS.items():
        lines.append(f"  {name} {clips:,} clips: {clips * per_clip / cores / 3600:.1f} h on one {cores}-core machine, "
                     f"{clips * per_clip / (cores * nodes) / 3600:.2f} h on {nodes} nodes")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--set", choices=("synth", "astronaut"), default="synth")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="local worker counts (none: skip)")
    parser.add_argument("--ray", type=int, nargs="*", default=[2], help="Ray actor counts to measure (none: skip)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--pose-stride", type=int, default=4)
    args = parser.parse_args()
    config = ExtractConfig(num_frames=args.frames, pose_stride=args.pose_stride)
    data = Path(tempfile.mkdtemp(prefix="femo-bench-data-"))
    try:
        manifest = (synth_set if args.set == "synth" else astronaut_set)(data, args.clips)
        results = [measure(manifest, w, config) for w in args.workers]
        for w in args.ray:
            try:
                results.append(measure(manifest, w, config, engine="ray"))
            except Exception as exc:  # e.g. Ray's start-up deadline on an overloaded machine
                print(f"ray x{w}: not measured ({type(exc).__name__}: {exc})")
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print(f"set={args.set} clips={args.clips} T={args.frames} pose_stride={args.pose_stride} "
          f"cpus={psutil.cpu_count()} load={psutil.getloadavg()[0]:.1f}")
    print(table(results) if results else "nothing measured")
    print(projection(results))
    out = Path(__file__).parent / "results" / ("extract.json" if args.set == "synth" else f"extract_{args.set}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"set": args.set, "config": config_dict(config), "machine": platform.platform(),
                               "cpus": psutil.cpu_count(), "results": results,
                               "projection": projection(results)}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
