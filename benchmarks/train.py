"""Training cost: seconds per epoch and peak RSS for (a) cached frame embeddings + heads and
(b) end-to-end ResNet-18 at 112x112 (all layers trained, weights=None is enough for timing).

A fake feature store of ``--clips`` random clips with real shapes (16 frames, 112x112 faces,
3 s of log-mel, 512-d float16 embeddings) is written to a temporary folder; each case times one
training epoch (after one warm-up batch) over ``--clips`` clips (a) or ``--e2e-clips`` clips (b)
(wall and process CPU time: on a shared machine the CPU time is the steadier number)
and extrapolates linearly to ``--target`` clips (default 1,000; DFEW's 5-fold protocol trains on
about 9,400 clips per fold: ``--target 9400``). Every case runs in its own process so its peak RSS
is its own. Writes benchmarks/results/train.json and prints a table.

    python benchmarks/train.py                      # CPU
    python benchmarks/train.py --cache --batch 64 --clips 512 --target 10000 --threads 1
    python benchmarks/train.py --cache --batch 64 --clips 512 --target 10000 --threads 1 --no-audio --cases a  # stills
    python benchmarks/train.py --cache --clips 512 --target 10000 --threads 1 --cases a --legacy  # the step before
    python benchmarks/train.py --cache --clips 512 --e2e-clips 16 --threads 1 --profile   # where the time goes
    python benchmarks/train.py --device cuda --target 9400 --clips 512 --e2e-clips 512 --workers 8
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
import pandas as pd

T, S, MEL_FRAMES, EMB = 16, 112, 300, 512
CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
CASES = {"a": "cached embeddings + heads", "b": "end-to-end ResNet-18 112x112"}


def build_store(root: Path, n: int, *, audio: bool = True) -> Path:
    """Write ``n`` random clips with the store's real shapes (and 512-d embeddings); ``audio=False``:
    clips without an audio track (stills, silent video: zero log-mel, ``has_audio`` False)."""
    from femo.data.store import StoreMeta, write_clip, write_index, write_meta

    rng = np.random.default_rng(0)
    (root / "embeddings" / "bench").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        cid = f"b{i:05d}"
        write_clip(root, cid, {
            "times": np.arange(T, dtype=np.float32), "faces": rng.integers(0, 255, (T, S, S, 3), dtype=np.uint8),
            "face_found": np.ones(T, bool), "face_box": np.zeros((T, 4), np.float32),
            "landmarks": rng.random((T, 478, 3), dtype=np.float32), "blendshapes": rng.random((T, 52), dtype=np.float32),
            "head_pose": np.zeros((T, 3), np.float32), "pose": rng.random((T, 33, 4), dtype=np.float32),
            "pose_found": np.ones(T, bool),
            "logmel": -80 * rng.random((64, MEL_FRAMES), dtype=np.float32) * audio,
            "mfcc": np.zeros((20, MEL_FRAMES), np.float32), "prosody": rng.random((MEL_FRAMES, 4), dtype=np.float32) * audio,
            "has_audio": np.array(audio)})
        np.save(root / "embeddings" / "bench" / f"{cid}.npy", rng.standard_normal((T, EMB)).astype(np.float16))
        rows.append({"clip_id": cid, "path": f"{cid}.mp4", "label": CLASSES[i % 7], "subject": f"s{i // 4}",
                     "fold": 1 + i % 5, "status": "ok", "error": "", "file": f"clips/{cid}.npz"})
    write_index(root, pd.DataFrame(rows))
    write_meta(root, StoreMeta(classes=CLASSES, dataset="bench"))
    return root


def run_case(case: str, store: Path, n: int, device: str, threads: int, batch: int, workers: int,
             cache: bool = False, profile: bool = False, legacy: bool = False) -> dict:
    """Time one epoch of case ``case`` over the first ``n`` clips; returns the measurements.

    cache: ``FeatureDataset(cache=True)`` as ``femo train --cache`` (what the pipeline uses): one
    untimed first epoch reads the clips from disk (its time is returned as ``first_epoch_seconds``),
    the timed one is a steady-state epoch served from memory. profile: cProfile the timed epoch
    (cumulative top 30 on stderr). legacy: :func:`_legacy_training` first."""
    import torch

    from femo.config import DataConfig, ModelConfig, TrainConfig
    from femo.data.dataset import FeatureDataset
    from femo.data.store import read_index
    from femo.models.net import FemoNet
    from femo.training.loop import _Trainer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if legacy:
        _legacy_training()
    index = read_index(store).iloc[:n]
    emb = "bench" if case == "a" else None
    ds = FeatureDataset(store, index=index, config=DataConfig(classes=CLASSES), embeddings=emb, cache=cache)
    model = ModelConfig(embeddings=emb, embedding_dim=EMB if emb else None, freeze="full", temporal="transformer")
    cfg = TrainConfig(epochs=2 if cache else 1, batch_size=batch, device=device, augment=False, num_workers=workers,
                      cache=cache)
    net = FemoNet(model, len(CLASSES)).to(device)
    trainer = _Trainer(net, ds, ds, cfg, torch.device(device))
    warm = next(iter(trainer.loader))  # first batch: lazy init, allocator warm-up
    net.train()(dict((k, v.to(device)) for k, v in warm.items()))["logits"].sum().backward()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    first = None
    if cache:  # the first epoch fills the in-memory cache
        t0 = time.perf_counter()
        trainer.epoch(0, progress=False)
        first = time.perf_counter() - t0
    profiler = None
    if profile:  # where the timed epoch's time goes, printed to stderr (it slows the epoch a little)
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.epoch(1 if cache else 0, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    steps = len(trainer.loader)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    out = {"case": case, "what": CASES[case], "device": device, "threads": threads, "batch": batch,
           "workers": workers, "cache": cache, "first_epoch_seconds": first, "clips_timed": steps * batch, "seconds_timed": seconds,
           "cpu_seconds_timed": cpu_seconds, "peak_rss_mib": rss,
           "params_trained": sum(p.numel() for p in net.parameters() if p.requires_grad)}
    if device.startswith("cuda"):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _legacy_training() -> None:
    """What femo's training step did before (the same-run baseline of ``--legacy``): AdamW's
    per-tensor loop (torch's CPU default) instead of the fused kernel, and the log-mel CNN on
    every clip, with or without audio. Outputs are the same up to float rounding; only the cost
    differs."""
    import torch

    import femo.training.loop as loop
    from femo.models.audio import AudioEncoder

    loop.adamw = lambda params, **kw: torch.optim.AdamW(params, foreach=False, **kw)
    AudioEncoder._logmel_tokens = lambda self, batch, present: self._cnn_tokens(
        torch.nan_to_num(batch["audio"].float()), torch.nan_to_num(batch["prosody"].float()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=96, help="clips in the fake store (timed for case a)")
    p.add_argument("--e2e-clips", type=int, default=32, help="clips timed for case b")
    p.add_argument("--target", type=int, default=1000, help="clips per epoch to extrapolate to")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--cache", action="store_true",
                   help="case a with the in-memory sample cache (femo train --cache): time a steady-state epoch")
    p.add_argument("--profile", action="store_true", help="cProfile each timed epoch (printed to stderr)")
    p.add_argument("--no-audio", dest="audio", action="store_false",
                   help="clips without an audio track (like a store of stills: FER2013), audio modality masked")
    p.add_argument("--legacy", action="store_true",
                   help="time the training step as femo ran it before (per-tensor AdamW, log-mel CNN on every clip)")
    p.add_argument("--cases", default=",".join(sorted(CASES)), help="comma-separated cases to time (default a,b)")
    p.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = p.parse_args()
    if args.case:  # child process: one case, JSON on stdout
        n = args.clips if args.case == "a" else args.e2e_clips
        print(json.dumps(run_case(args.case, args.store, n, args.device, args.threads, args.batch, args.workers,
                                  cache=args.cache and args.case == "a", profile=args.profile, legacy=args.legacy)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = build_store(Path(tmp), max(args.clips, args.e2e_clips), audio=args.audio)
        print(f"fake store of {max(args.clips, args.e2e_clips)} clips written in {time.perf_counter() - t0:.1f} s")
        rows = []
        for case in [c for c in sorted(CASES) if c in args.cases.split(",")]:
            cmd = [sys.executable, __file__, "--case", case, "--store", tmp, *_passthrough(args)]
            res = json.loads(subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE,
                                            stderr=None if args.profile else subprocess.PIPE).stdout.splitlines()[-1])
            res["target_clips"], res["audio"], res["legacy"] = args.target, args.audio, args.legacy
            res["seconds_per_epoch_at_target"] = res["seconds_timed"] * args.target / res["clips_timed"]
            res["cpu_seconds_per_epoch_at_target"] = res["cpu_seconds_timed"] * args.target / res["clips_timed"]
            rows.append(res)
    table = pd.DataFrame(rows)[["what", "device", "clips_timed", "seconds_timed", "target_clips",
                                "seconds_per_epoch_at_target", "cpu_seconds_per_epoch_at_target", "peak_rss_mib"]]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.node(), "python": platform.python_version(),
                                    "extrapolated": "linear in clips from the timed subset", "results": rows},
                                   indent=2))
    print(f"wrote {args.out}")
    return 0


def _passthrough(args) -> list[str]:
    return ["--clips", str(args.clips), "--e2e-clips", str(args.e2e_clips), "--device", args.device,
            "--threads", str(args.threads), "--batch", str(args.batch), "--workers", str(args.workers),
            *(["--cache"] if args.cache else []), *(["--profile"] if args.profile else []),
            *(["--no-audio"] if not args.audio else []), *(["--legacy"] if args.legacy else [])]


if __name__ == "__main__":
    sys.exit(main())
