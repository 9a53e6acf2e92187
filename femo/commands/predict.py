"""`femo predict`: emotion timeline of video files with a trained run.

Examples::

    femo predict interview.mp4 --run runs/dfew_fold1 --out interview.json --plot interview.png
    femo predict a.mp4 b.mp4 c.mp4 --run RUN --window 2.0 --hop 0.5 --out all.csv

Each video is decoded once (streaming); windows of ``--window`` seconds every ``--hop`` seconds
get per-class probabilities, the predicted label, the fraction of frames with a face and its box,
and whether audio was present; the clip summary is the mean of the window probabilities (JSON
layout in ``femo.predict_output``). With several videos, a failing file is reported and skipped;
the others go on, and the exit status is 1 when any failed (2 when the run cannot be loaded).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``predict`` sub-command to ``subparsers``."""
    p = subparsers.add_parser("predict", help="emotion timeline of video files with a trained run",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="video files (or frame folders)")
    p.add_argument("--run", required=True, type=Path, help="run folder (config.json + best.pt) from `femo train`")
    p.add_argument("--window", type=float, default=2.0, help="window length in seconds (default 2.0)")
    p.add_argument("--hop", type=float, default=0.5, help="window step in seconds (default 0.5)")
    p.add_argument("--out", type=Path, default=None, help="write results to FILE.json or FILE.csv")
    p.add_argument("--plot", type=Path, default=None,
                   help="timeline PNG (with several videos: one per video, named PLOT_<video stem>.png)")
    p.add_argument("--classes", default=None, help="comma-separated class list the run must have been trained with")
    p.set_defaults(func=run)


def _plot_path(plot: Path, video: Path, many: bool) -> Path:
    return plot.with_name(f"{plot.stem}_{video.stem}{plot.suffix or '.png'}") if many else plot


def run(args: argparse.Namespace) -> int:
    """Predict every video; 0 when all succeed, 1 when some failed, 2 when nothing could start."""
    from femo.assets import MissingModelError
    from femo.data.decode import MediaError
    from femo.predict import Predictor, RunError
    from femo.predict_output import plot_timeline, write_results
    from femo.train import CheckpointError

    if args.out is not None and args.out.suffix.lower() not in (".json", ".csv"):
        print(f"error: {args.out}: --out must end in .json or .csv", file=sys.stderr)
        return 2
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    try:
        predictor = Predictor.from_run(args.run, classes=classes)
    except (RunError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done, failed, many = [], [], len(args.videos) > 1
    with predictor:
        for video in args.videos:
            try:
                tl = predictor.timeline(video, window=args.window, hop=args.hop)
                if args.plot is not None:
                    plot_timeline(tl, _plot_path(args.plot, video, many))
            except MissingModelError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            except (MediaError, ValueError, OSError) as exc:
                reason = str(exc) if str(video) in str(exc) else f"{video}: {exc}"
                failed.append(f"{type(exc).__name__}: {reason}")
                print(f"failed: {reason}", file=sys.stderr)
                continue
            done.append(tl)
            top = tl.summary_probabilities.max()
            print(f"{video}: {tl.label} (p={top:.2f}; {len(tl.spans)} windows over {tl.duration:.1f} s, "
                  f"face in {tl.face_found.mean():.0%} of frames, audio {'yes' if tl.audio.any() else 'no'})")
    if args.out is not None and done:
        write_results(done, args.out, as_list=many)
    if failed:
        print(f"{len(failed)} of {len(args.videos)} file(s) failed:", file=sys.stderr)
        for reason in failed:
            print(f"  {reason}", file=sys.stderr)
        return 1
    return 0
