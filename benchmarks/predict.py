"""Real-time factor of ``femo predict`` on CPU, split by stage, the whole process, and peak memory.

    python benchmarks/predict.py [--seconds 60 1200] [--modes fast reference] [--threads 1] [--no-process]
                                 [--startup-ab 3] [--startup-variants numpy librosa pyplot]
                                 [--face resnet18|fer_vgg|faceapi]

The clip: 640x360 H.264 + AAC mp4 at 25 fps of ``skimage.data.astronaut()`` with a small affine
wobble (period 2 s) and a 220 Hz tone, encoded frame by frame with
:func:`femo.data.media.write_video`'s x264 settings; clips longer than 60 s (multiples of it) are
the 60 s clip repeated by copying its packets, so a 20-minute clip is ready in seconds. The model: the default
configuration (``ModelConfig()``: ResNet-18 frame CNN at 112 px, transformer temporal blocks,
gated fusion, face + landmarks + audio; ``DataConfig()``: T = 16 frames per 2 s window, hop 0.5 s)
with untrained weights -- speed does not depend on the weights. ``--face fer_vgg``: the same with
the face path ``femo train`` takes by default (cached embeddings of femo's FER2013 encoder;
predict runs that net on the crops instead of ResNet-18); ``--face faceapi``: face-api.js's.

Each measurement runs in its own child process (clean peak memory), after a 2-second warm-up
clip (numba/librosa JIT, landmarker start-up):

* ``fast``: :class:`femo.inference.predictor.Predictor` as ``femo predict`` runs it (only the
  frames the windows need, tracking across chunks, onnxruntime frame CNN, pose in a second
  thread, decoding ahead in a third); ``reference``: ``Predictor(reference=True)``, the
  per-chunk trackers, every k-th frame and eager PyTorch, as before.
* RTF = wall seconds / video seconds, first frame to last window (load and warm-up excluded);
  ``cpu RTF`` = process CPU seconds (all threads) / video seconds: what the work costs, which on
  this shared machine the wall clock does not show (load average printed with each row).
* ``process``: the whole ``python -m femo predict CLIP --run RUN --out X.json`` command, start-up,
  imports and model loading included (wall, CPU and peak RSS from ``wait4``).
* Outputs: max |p_fast - p_reference| over windows and classes, and the share of windows with
  the same label, on each clip measured in both modes.

* ``--startup-ab N``: a fresh interpreter loads the run and predicts the 2 s clip, N times for
  each of ``--startup-variants``, alternating: ``numpy`` as ``femo predict`` runs; ``librosa``, the
  window audio features from librosa instead of NumPy (:mod:`femo.inference.window_audio`): the CPU
  seconds librosa's first call adds to every process; ``pyplot``, matplotlib.pyplot imported
  before mediapipe (as mediapipe's drawing helpers import it unless
  :func:`femo.features.mediapipe_tasks` defers it): what the deferral saves.

Peak RSS is ``ru_maxrss`` of the child. Writes benchmarks/results/predict.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "predict.json"
STAGES = ("decode", "landmarks", "cnn", "audio", "fusion")


def write_clip(path: Path, seconds: float, fps: float = 25.0, size=(640, 360)) -> Path:
    """The astronaut clip (see module docstring), written one frame at a time."""
    import av
    import cv2
    from skimage.data import astronaut

    from femo.data.media import _encode_audio

    w, h = size
    img = cv2.resize(astronaut(), (h, h), interpolation=cv2.INTER_AREA)
    period = int(round(2 * fps))
    cycle = []
    for i in range(period):  # the wobble repeats every 2 s: render one period
        a = 2 * np.pi * i / period
        m = cv2.getRotationMatrix2D((h / 2, h / 2), 3 * np.sin(a), 1.0 + 0.02 * np.cos(a))
        m[:, 2] += [(w - h) / 2 + 6 * np.sin(a), 4 * np.cos(a)]
        cycle.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128)))
    t = np.arange(int(seconds * 16_000)) / 16_000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(np.pi * t))).astype(np.float32)
    with av.open(str(path), mode="w", format="mp4") as out:
        video = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.codec_context.thread_count = 1
        video.codec_context.options = {"crf": "23", "preset": "veryfast",
                                       "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0"}
        audio = out.add_stream("aac", rate=16_000)
        audio.layout = "mono"
        for i in range(int(round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(cycle[i % period], format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        _encode_audio(out, audio, tone, 16_000)
    return path


def repeat_clip(base: Path, times: int, out: Path) -> Path:
    """``base`` played ``times`` times in a row, by copying its packets with shifted timestamps
    (no re-encoding: the base clip is a whole number of wobble and tone periods long)."""
    import av

    with av.open(str(base)) as src, av.open(str(out), mode="w", format="mp4") as dst:
        vin, ain = src.streams.video[0], src.streams.audio[0]
        length = float(src.duration) / av.time_base  # seconds
        outs = {vin: dst.add_stream_from_template(vin), ain: dst.add_stream_from_template(ain)}
        last = {vin: None, ain: None}
        for k in range(times):
            src.seek(0)
            for packet in src.demux(vin, ain):
                if packet.dts is None:
                    continue
                stream = packet.stream
                shift = round(k * length / packet.time_base)
                packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                if last[stream] is not None and packet.dts <= last[stream]:
                    continue  # audio priming overlapping the previous copy's last frame
                last[stream] = packet.dts
                packet.stream = outs[stream]
                dst.mux(packet)
    return out


#: ``--face``: the frame CNN of the run predicted with. ``resnet18``: ``ModelConfig()``'s own
#: (ResNet-18 at 112 px); ``fer_vgg``: a run trained as ``femo train`` trains by default, on cached
#: embeddings of femo's FER2013 encoder (predict rebuilds that 4.7 M-parameter net from the package's
#: weights); ``faceapi``: the same on face-api.js embeddings (324k parameters; needs
#: `femo models fetch --face-weights`).
FACES = ("resnet18", "fer_vgg", "faceapi")


def make_run(out: Path, face: str = "resnet18") -> Path:
    """A run folder with the default model (face path ``face``, :data:`FACES`), untrained."""
    import torch

    from femo.config import CLASSES, DataConfig, ModelConfig, to_dict
    from femo.models.frames import build_frame_encoder
    from femo.models.net import FemoNet

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model, data = ModelConfig(), DataConfig()
    if face != "resnet18":
        dim = int(build_frame_encoder(face, freeze="frozen").out_dim)
        model = ModelConfig(embeddings=face, embedding_dim=dim)
    net = FemoNet(model, len(CLASSES))
    config = {"model": to_dict(model), "train": {}, "data": to_dict(data), "classes": list(CLASSES),
              "store": "", "fold": None, "versions": {}}
    (out / "config.json").write_text(json.dumps(config))
    torch.save({"model": net.state_dict(), "epoch": 0, "config": config, "classes": list(CLASSES)}, out / "best.pt")
    return out


def child(mode: str, clip: Path, warm: Path, run: Path, threads: int, probs_out: Path) -> dict:
    """One in-process measurement (runs in a child process); see module docstring."""
    import torch

    from femo.inference.predictor import Predictor

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    predictor = Predictor.from_run(run, reference=mode == "reference")
    load_s = time.perf_counter() - t0
    with predictor:
        t0 = time.perf_counter()
        predictor.timeline(warm)
        warm_s = time.perf_counter() - t0
        cpu0, t0 = time.process_time(), time.perf_counter()
        tl = predictor.timeline(clip)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    np.save(probs_out, tl.probabilities)
    stages = {k: float(tl.seconds.get(k, 0.0)) for k in STAGES}
    stages["other"] = max(0.0, wall - sum(stages.values()))
    return {"mode": mode, "video_seconds": tl.duration, "windows": len(tl.spans), "wall_seconds": wall,
            "cpu_seconds": cpu, "rtf": wall / tl.duration, "cpu_rtf": cpu / tl.duration,
            "stage_rtf": {k: v / tl.duration for k, v in stages.items()}, "load_seconds": load_s,
            "warmup_seconds": warm_s, "face_found": float(tl.face_found.mean()),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load_average": os.getloadavg()[0]}


def in_child(mode: str, clip: Path, warm: Path, run: Path, threads: int) -> tuple[dict, np.ndarray]:
    """:func:`child` in a fresh interpreter; (its result, its (W, C) probabilities)."""
    probs = clip.with_name(f"{clip.stem}.{mode}.npy")
    cmd = [sys.executable, __file__, "--child", mode, str(clip), str(warm), str(run), str(threads), str(probs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1]), np.load(probs)


def whole_process(clip: Path, run: Path, threads: int) -> dict:
    """Wall, CPU and peak RSS of ``python -m femo predict`` on ``clip``, start-up included."""
    out = clip.with_suffix(".json")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "femo", "predict", str(clip), "--run", str(run), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"femo predict {clip} failed with status {status}")
    duration = float(json.loads(out.read_text())["duration"])
    cpu = usage.ru_utime + usage.ru_stime
    return {"mode": "process", "video_seconds": duration, "wall_seconds": wall, "cpu_seconds": cpu,
            "rtf": wall / duration, "cpu_rtf": cpu / duration, "peak_rss_mib": usage.ru_maxrss / 1024,
            "load_average": os.getloadavg()[0]}


#: Start-up variants of ``--startup-ab``: what ``femo predict`` does, and each saving undone.
STARTUP_VARIANTS = ("numpy", "librosa", "pyplot")
#: Wall-clock phases of a start-up child, in order.
STARTUP_PHASES = ("import torch+pandas+femo", "import mediapipe", "load run", "ONNX export+landmarkers",
                  "predict 2 s clip")


def startup_child(variant: str, warm: Path, run: Path) -> dict:
    """Load the run and predict the 2 s warm clip in this (fresh) process: as ``femo predict`` does
    (``numpy``); with the window audio features from librosa (``librosa``); or with
    matplotlib.pyplot imported before mediapipe (``pyplot``)."""
    t0 = time.perf_counter()
    if variant == "librosa":
        import femo.inference.window_audio as window_audio

        window_audio.window_audio_features = lambda *args, **kwargs: None  # the stream falls back to librosa
    if variant == "pyplot":
        import matplotlib.pyplot  # noqa: F401  (imported before mediapipe: mediapipe_tasks cannot defer it)
    marks = [time.perf_counter()]
    from femo.inference.predictor import Predictor  # torch, pandas

    marks.append(time.perf_counter())
    from femo.features import mediapipe_tasks

    mediapipe_tasks()
    marks.append(time.perf_counter())
    with Predictor.from_run(run) as predictor:
        marks.append(time.perf_counter())
        predictor.featurizer()  # the frame CNN's ONNX export, the face (2) and body landmarkers
        marks.append(time.perf_counter())
        predictor.timeline(warm)
        marks.append(time.perf_counter())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    phases = dict(zip(STARTUP_PHASES, np.diff(marks).tolist()))
    return {"variant": variant, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "wall_seconds": time.perf_counter() - t0, "peak_rss_mib": usage.ru_maxrss / 1024,
            "load_average": os.getloadavg()[0], "phases": phases}


def startup_ab(warm: Path, run: Path, repeats: int, variants=STARTUP_VARIANTS[:2]) -> list[dict]:
    """:func:`startup_child` alternating ``variants`` ``repeats`` times, each in a fresh interpreter."""
    rows = []
    for _ in range(repeats):
        for variant in variants:
            cmd = [sys.executable, __file__, "--startup-child", variant, str(warm), str(run)]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"start-up + 2 s clip, {variant:<8} CPU {rows[-1]['cpu_seconds']:6.2f} s  wall "
                  f"{rows[-1]['wall_seconds']:6.2f} s  peak {rows[-1]['peak_rss_mib']:6.0f} MiB  "
                  f"load {rows[-1]['load_average']:.1f}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    head = f"{'clip':>6} {'mode':<10}{'RTF':>7}{'cpu RTF':>9}" + "".join(f"{k:>10}" for k in (*STAGES, "other")) + \
        f"{'peak MiB':>10}{'load':>6}"
    lines = [head, "(stage columns: wall RTF of each stage)"]
    for r in rows:
        st = r.get("stage_rtf", {})
        stages = "".join(f"{st[k]:>10.3f}" if k in st else f"{'':>10}" for k in (*STAGES, "other"))
        lines.append(f"{r['video_seconds']:>5.0f}s {r['mode']:<10}{r['rtf']:>7.3f}{r['cpu_rtf']:>9.3f}{stages}"
                     f"{r['peak_rss_mib']:>10.0f}{r['load_average']:>6.1f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, nargs="+", default=[60.0])
    p.add_argument("--modes", nargs="+", choices=("fast", "reference"), default=["fast", "reference"])
    p.add_argument("--reference-max", type=float, default=120.0,
                   help="measure the reference mode only on clips up to this many seconds (default 120)")
    p.add_argument("--process-max", type=float, default=120.0,
                   help="time the whole `femo predict` process only on clips up to this many seconds (default 120)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--face", choices=FACES, default="resnet18",
                   help="frame CNN of the run: ModelConfig()'s resnet18 (default); fer_vgg, the face path "
                        "`femo train` uses by default (cached embeddings of femo's FER2013 encoder); or faceapi")
    p.add_argument("--no-process", dest="process", action="store_false", help="skip the whole-process timing")
    p.add_argument("--keep", type=Path, default=None,
                   help="write (and reuse) the clips and the run in this folder instead of a temporary one")
    p.add_argument("--results", type=Path, default=RESULTS, help=f"JSON to write (default {RESULTS})")
    p.add_argument("--startup-ab", type=int, default=0, metavar="N",
                   help="also time start-up + the 2 s clip N times for each of --startup-variants, alternating")
    p.add_argument("--startup-variants", nargs="+", choices=STARTUP_VARIANTS, default=list(STARTUP_VARIANTS[:2]),
                   help="numpy: as femo predict runs; librosa: window audio features from librosa; pyplot: "
                        "matplotlib.pyplot imported before mediapipe (default: numpy librosa)")
    p.add_argument("--child", nargs=6, default=None, help=argparse.SUPPRESS)
    p.add_argument("--startup-child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.startup_child:
        audio, warm, run = args.startup_child
        print(json.dumps(startup_child(audio, Path(warm), Path(run))))
        return
    if args.child:
        mode, clip, warm, run, threads, probs = args.child
        print(json.dumps(child(mode, Path(clip), Path(warm), Path(run), int(threads), Path(probs))))
        return
    rows, outputs = [], []
    with tempfile.TemporaryDirectory(prefix="femo-bench-predict-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        clip_at = lambda name, seconds: folder / name if (folder / name).is_file() else write_clip(folder / name, seconds)
        name = "run" if args.face == "resnet18" else f"run_{args.face}"
        run = folder / name if (folder / name / "best.pt").is_file() else make_run(folder / name, args.face)
        warm = clip_at("warm.mp4", 2.0)
        startup = startup_ab(warm, run, args.startup_ab, args.startup_variants) if args.startup_ab else []
        for seconds in args.seconds:
            if seconds > 60 and seconds % 60 == 0 and not (folder / f"clip{seconds:g}.mp4").is_file():
                repeat_clip(clip_at("clip60.mp4", 60.0), int(seconds // 60), folder / f"clip{seconds:g}.mp4")
            clip = clip_at(f"clip{seconds:g}.mp4", seconds)
            probs = {}
            for mode in args.modes:
                if mode == "reference" and seconds > args.reference_max:
                    continue
                row, probs[mode] = in_child(mode, clip, warm, run, args.threads)
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
            if len(probs) == 2:
                d = np.abs(probs["fast"] - probs["reference"])
                same = float((probs["fast"].argmax(1) == probs["reference"].argmax(1)).mean())
                outputs.append({"video_seconds": seconds, "max_abs_dp": float(d.max()), "mean_abs_dp": float(d.mean()),
                                "same_label": same})
            if args.process and seconds <= args.process_max:
                rows.append(whole_process(clip, run, args.threads))
                print(table([rows[-1]]).splitlines()[-1], flush=True)
    print(f"\n640x360 @ 25 fps, window 2 s / hop 0.5 s, face path {args.face}, torch threads {args.threads}, "
          f"{os.cpu_count()} cores (shared)")
    print(table(rows))
    for o in outputs:
        print(f"{o['video_seconds']:.0f} s: fast vs reference max |dp| {o['max_abs_dp']:.4f} "
              f"(mean {o['mean_abs_dp']:.4f}), same label in {o['same_label']:.1%} of windows")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for variant in STARTUP_VARIANTS:
        cpu = [r["cpu_seconds"] for r in startup if r["variant"] == variant]
        wall = [r["wall_seconds"] for r in startup if r["variant"] == variant]
        if cpu:
            print(f"start-up + 2 s clip, {variant}: CPU {min(cpu):.2f}-{max(cpu):.2f} s (median {np.median(cpu):.2f}), "
                  f"wall {min(wall):.2f}-{max(wall):.2f} s (median {np.median(wall):.2f}) over {len(cpu)} runs")
            phases = [r["phases"] for r in startup if r["variant"] == variant]
            print("  median wall per phase: " + ", ".join(f"{k} {np.median([ph[k] for ph in phases]):.2f} s"
                                                          for k in STARTUP_PHASES))
    args.results.write_text(json.dumps({"rows": rows, "outputs": outputs, "startup": startup, "threads": args.threads,
                                        "face": args.face,
                                   "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)"}, indent=2))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
