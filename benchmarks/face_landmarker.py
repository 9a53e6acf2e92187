"""Cost of mediapipe's face landmarker per frame: the floor under `femo predict`'s landmarks stage.

    python benchmarks/face_landmarker.py [--seconds 10] [--repeats 2] [--faces 1 3]

Frames: the 640x360 astronaut clip of ``benchmarks/predict.py`` (``write_clip``), decoded with
PyAV, every third frame kept (25 fps -> 8.3 frames/s, what predict's 16 frames per 2 s window
need). Each setting runs femo's FaceLandmarker (``FaceTracker``'s, VIDEO mode: tracking between
frames; blendshapes and the transformation matrix), ``--faces`` = ``num_faces`` (femo uses 3 so a
second face can be seen; mediapipe runs its face detector on frames where fewer faces than that
are tracked), ``--repeats`` times alternating, after one warm-up pass. Prints milliseconds per
frame (wall and process CPU; the landmarker runs on the calling thread) and what that costs per
second of video at 8 frames/s. Writes benchmarks/results/face_landmarker.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results" / "face_landmarker.json"
KEEP_EVERY = 3  # 25 fps -> ~8 frames/s


def frames_of(clip: Path) -> list[np.ndarray]:
    """Every ``KEEP_EVERY``-th decoded frame of ``clip``, RGB uint8."""
    import av

    with av.open(str(clip)) as f:
        return [fr.to_ndarray(format="rgb24") for i, fr in enumerate(f.decode(video=0)) if i % KEEP_EVERY == 0]


def time_landmarker(frames: list[np.ndarray], num_faces: int, start_ms: int) -> dict:
    """One pass over ``frames`` in VIDEO mode with ``num_faces``; ms per frame (wall and CPU).
    The landmarker is the one :class:`femo.features.face.FaceTracker` builds (its VIDEO-mode
    landmarker alone: no rescue, no crops), so the options are femo's."""
    import mediapipe as mp

    from femo.features.face import FaceTracker

    tracker = FaceTracker(max_faces=num_faces, rescue=False)
    lm = tracker._video
    try:
        step = int(round(1000 * KEEP_EVERY / 25))
        found = 0
        for i, frame in enumerate(frames[:8]):  # warm-up
            lm.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame), start_ms + i * step)
        start_ms += 8 * step + 1000
        wall, cpu = time.perf_counter(), time.process_time()
        for i, frame in enumerate(frames):
            found += bool(lm.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame),
                                              start_ms + i * step).face_landmarks)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        tracker.close()
    n = len(frames)
    return {"num_faces": num_faces, "frames": n, "found": found, "ms_per_frame": 1000 * wall / n,
            "cpu_ms_per_frame": 1000 * cpu / n, "cpu_s_per_video_s_at_8fps": 8 * cpu / n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--faces", type=int, nargs="+", default=[1, 3], help="num_faces settings (default 1 3)")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    from predict import write_clip

    with tempfile.TemporaryDirectory(prefix="femo-bench-landmarker-") as tmp:
        frames = frames_of(write_clip(Path(tmp) / "clip.mp4", args.seconds))
    rows = [time_landmarker(frames, n, start_ms=100_000 * (1 + r * len(args.faces) + k))
            for r in range(args.repeats) for k, n in enumerate(args.faces)]
    print(f"{len(frames)} frames of 640x360 (every {KEEP_EVERY}rd of 25 fps), load average {os.getloadavg()[0]:.1f}")
    print("num_faces  ms/frame  CPU ms/frame  CPU-s per video s at 8 fps  found")
    for r in rows:
        print(f"{r['num_faces']:>9}  {r['ms_per_frame']:8.1f}  {r['cpu_ms_per_frame']:12.1f}  "
              f"{r['cpu_s_per_video_s_at_8fps']:26.3f}  {r['found']}/{r['frames']}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"rows": rows, "load_average": os.getloadavg()[0]}, indent=2))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
