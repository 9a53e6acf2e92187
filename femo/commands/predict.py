"""`femo predict`: emotion timeline of video files with a trained run.

Examples::

    femo predict interview.mp4 --run runs/dfew_fold1 --out interview.json --plot interview.png
    femo predict a.mp4 b.mp4 c.mp4 --run RUN --window 2.0 --hop 0.5 --out all.csv
    femo predict calls/ --run RUN --out-dir results/ --workers 2      # resumable; results/summary.csv
    femo predict talk.mp4 --run RUN --video-out talk_annotated.mp4   # box, label, class bars; audio kept
    femo predict panel.mp4 --run RUN --faces all --max-faces 4 --out panel.csv  # one timeline per face_id
    femo predict face.jpg --audio voice.flac --run RUN --out pair.csv  # a face and a voice recorded apart
    femo predict --manifest pairs.csv --run RUN --out pairs_pred.csv  # rows with path and audio_path

Each video is decoded once (streaming); windows of ``--window`` seconds every ``--hop`` seconds
get per-class probabilities, the predicted label, the fraction of frames with a face and its box,
and whether audio was present; the clip summary is the mean of the window probabilities (JSON
layout in ``femo.inference.timeline``).

Main face (the default, ``--faces main``): among the faces the detector finds, the first one chosen
maximises sqrt(area) x (1 - distance of its centre from the frame centre / 0.707); after that the
face nearest the previous box is followed for the whole video. ``--faces all`` gives one timeline
per person instead (up to ``--max-faces``), with ids that stay stable across the video
(``femo.inference.faces``).

With several videos, a failing file is reported and skipped;
the others go on, and the exit status is 1 when any failed (2 when the run cannot be loaded).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from femo.config import HOP_SECONDS, WINDOW_SECONDS


def register(subparsers) -> None:
    """Add the ``predict`` sub-command to ``subparsers``."""
    p = subparsers.add_parser("predict", help="emotion timeline of video files with a trained run",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="*", type=Path, metavar="VIDEO", help="video files (or frame folders)")
    p.add_argument("--audio", type=Path, default=None,
                   help="audio file of the one input (an image, video or frame folder): the pair is extracted "
                        "as training extracted clips and scored as one clip (femo.inference.pairs)")
    p.add_argument("--manifest", type=Path, default=None,
                   help="CSV with a path column and an optional audio_path column (relative to the CSV's folder): "
                        "one clip-level prediction per row; unreadable rows are reported")
    p.add_argument("--run", required=True, type=Path, help="run folder (config.json + best.pt) from `femo train`")
    p.add_argument("--window", type=float, default=WINDOW_SECONDS,
                   help=f"window length in seconds (default {WINDOW_SECONDS})")
    p.add_argument("--hop", type=float, default=HOP_SECONDS, help=f"window step in seconds (default {HOP_SECONDS})")
    p.add_argument("--out", type=Path, default=None, help="write results to FILE.json or FILE.csv")
    p.add_argument("--plot", type=Path, default=None,
                   help="timeline PNG (with several videos: one per video, named PLOT_<video stem>.png)")
    p.add_argument("--classes", default=None, help="comma-separated class list the run must have been trained with")
    p.add_argument("--video-out", type=Path, default=None,
                   help="FILE.mp4: the video with the face box, label and class bars drawn, audio kept "
                        "(with several videos: one per video, named FILE_<video stem>.mp4)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="many videos (VIDEO may be a folder of videos or a quoted glob): one OUT_DIR/<name>.json "
                        "each plus OUT_DIR/summary.csv; results already there from the same run are kept (resume)")
    p.add_argument("--workers", type=int, default=1, help="with --out-dir: videos predicted in parallel processes")
    p.add_argument("--quiet", action="store_true",
                   help="with --out-dir: no progress bars (they are shown only on a terminal anyway: one per "
                        "active worker and a total with the overall ETA)")
    p.add_argument("--faces", choices=("main", "all"), default="main",
                   help="main (default): one timeline of the main face -- the first face chosen is the one with the "
                        "largest sqrt(area) x (1 - distance of its centre from the frame centre / 0.707), then the "
                        "face nearest the previous box is followed; all: one timeline per face id (CSV column "
                        "face_id, JSON key face_id), ids stable across the video (box overlap, then colour "
                        "appearance after an absence), face 0 being the default mode's first main face")
    p.add_argument("--max-faces", type=int, default=3, help="with --faces all: people tracked at most (default 3)")
    p.set_defaults(func=run)


def _plot_path(plot: Path, video: Path, many: bool) -> Path:
    return plot.with_name(f"{plot.stem}_{video.stem}{plot.suffix or '.png'}") if many else plot


def run(args: argparse.Namespace) -> int:
    """Predict every video; 0 when all succeed, 1 when some failed, 2 when nothing could start."""
    from femo.assets import MissingModelError
    from femo.data.decode import MediaError
    from femo.inference.outputs import plot_timeline, write_results
    from femo.inference.predictor import Predictor
    from femo.training.runs import CheckpointError, RunError

    if args.out is not None and args.out.suffix.lower() not in (".json", ".csv"):
        print(f"error: {args.out}: --out must end in .json or .csv", file=sys.stderr)
        return 2
    if args.video_out is not None and args.video_out.suffix.lower() != ".mp4":
        print(f"error: {args.video_out}: --video-out must end in .mp4", file=sys.stderr)
        return 2
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    if args.audio is not None or args.manifest is not None:
        return _pairs(args)
    if not args.videos:
        print("error: give VIDEO file(s), or --manifest CSV", file=sys.stderr)
        return 2
    if args.faces == "all" and (args.out_dir is not None or args.video_out is not None):
        print("error: --faces all writes --out and --plot; --out-dir and --video-out follow the main face only",
              file=sys.stderr)
        return 2
    if args.max_faces < 1:
        print(f"error: --max-faces must be >= 1, got {args.max_faces}", file=sys.stderr)
        return 2
    if args.out_dir is not None:
        return _batch(args, classes)
    try:
        predictor = Predictor.from_run(args.run, classes=classes)
    except (RunError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done, failed, many = [], [], len(args.videos) > 1
    with predictor:
        for video in args.videos:
            if args.faces == "all":
                try:
                    done += _all_faces(predictor, video, args, many)
                except (MediaError, ValueError, OSError) as exc:
                    reason = str(exc) if str(video) in str(exc) else f"{video}: {exc}"
                    failed.append((video, f"{type(exc).__name__}: {reason}"))
                    print(f"failed: {reason}", file=sys.stderr)
                continue
            try:
                tl = predictor.timeline(video, window=args.window, hop=args.hop)
                if args.plot is not None:
                    plot_timeline(tl, _plot_path(args.plot, video, many))
                if args.video_out is not None:
                    from femo.inference.video_out import write_annotated

                    write_annotated(video, tl, _plot_path(args.video_out, video, many))
            except MissingModelError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            except (MediaError, ValueError, OSError) as exc:
                reason = str(exc) if str(video) in str(exc) else f"{video}: {exc}"
                failed.append((video, f"{type(exc).__name__}: {reason}"))
                print(f"failed: {reason}", file=sys.stderr)
                continue
            done.append(tl)
            top = tl.summary_probabilities.max()
            print(f"{video}: {tl.label} (p={top:.2f}; {len(tl.spans)} windows over {tl.duration:.1f} s, "
                  f"face in {tl.face_found.mean():.0%} of frames, audio {'yes' if tl.audio.any() else 'no'})")
    if args.out is not None and done:
        write_results(done, args.out, as_list=many or args.faces == "all")
    if args.out is not None and failed:
        add_failures(args.out, failed, as_list=many, good=bool(done))
    if failed:
        print(f"{len(failed)} of {len(args.videos)} file(s) failed:", file=sys.stderr)
        for _, reason in failed:
            print(f"  {reason}", file=sys.stderr)
        return 1
    return 0


def _all_faces(predictor, video: Path, args: argparse.Namespace, many: bool) -> list:
    """``--faces all``: the timelines of every face id of ``video`` (plots PLOT_face<id>.png), printed."""
    from femo.inference.outputs import plot_timeline

    tls = predictor.timelines(video, window=args.window, hop=args.hop, max_faces=args.max_faces)
    if not tls:
        print(f"{video}: no face found")
    for tl in tls:
        if args.plot is not None:
            plot = _plot_path(args.plot, video, many)
            plot_timeline(tl, plot.with_name(f"{plot.stem}_face{tl.face_id}{plot.suffix or '.png'}"))
        print(f"{video} face {tl.face_id}: {tl.label} (p={tl.summary_probabilities.max():.2f}; "
              f"{len(tl.spans)} windows with this face, from {tl.spans[0, 0]:.1f} s to {tl.spans[-1, 1]:.1f} s)")
    return tls


def _pairs(args: argparse.Namespace) -> int:
    """``--audio`` / ``--manifest``: clip-level predictions of (media, audio file) rows."""
    import pandas as pd

    from femo.inference.pairs import pair_table, predict_pairs

    if args.manifest is not None:
        if args.videos or args.audio is not None:
            print("error: --manifest replaces VIDEO and --audio", file=sys.stderr)
            return 2
        table = pd.read_csv(args.manifest, dtype=str)
        if "path" not in table.columns:
            print(f"error: {args.manifest}: no 'path' column", file=sys.stderr)
            return 2
        base = args.manifest.resolve().parent
        resolve = lambda v: None if pd.isna(v) or not str(v) else str(base / v)  # noqa: E731
        rows = pair_table([resolve(v) for v in table["path"]],
                          [resolve(v) for v in table.get("audio_path", pd.Series([None] * len(table)))])
    elif len(args.videos) != 1:
        print("error: --audio pairs with exactly one input", file=sys.stderr)
        return 2
    else:
        rows = pair_table([args.videos[0].resolve()], [args.audio.resolve()])
    try:
        pred = predict_pairs(args.run, rows)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in pred.itertuples():
        print(f"{r.path} + {r.audio_path}: {r.label} (p={max(getattr(r, f'p_{c}') for c in _classes(pred)):.2f})"
              if r.status == "ok" else f"failed: {r.path} + {r.audio_path}: {r.error}",
              file=sys.stdout if r.status == "ok" else sys.stderr)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix.lower() == ".csv":
            pred.to_csv(args.out, index=False)
        else:
            pred.to_json(args.out, orient="records", indent=2)
    return 1 if (pred["status"] != "ok").any() else 0


def _classes(pred) -> list[str]:
    return [c[2:] for c in pred.columns if c.startswith("p_")]


def add_failures(out: Path, failed: list[tuple[Path, str]], *, as_list: bool, good: bool) -> Path:
    """Add the files that failed to the results file ``out`` (``good``: it was just written by
    write_results; else it holds only the failures): JSON gets one
    ``{"file", "status": "failed", "error"}`` entry each (the good entries get ``"status": "ok"``), CSV
    one row each with an ``error`` column (empty for the windows of good files)."""
    import json

    import pandas as pd

    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"file": str(video), "status": "failed", "error": reason} for video, reason in failed]
    if out.suffix.lower() == ".json":
        data = json.loads(out.read_text()) if good else []
        good = data if isinstance(data, list) else [data]
        entries = [{**entry, "status": "ok"} for entry in good] + rows
        out.write_text(json.dumps(entries if as_list or len(entries) != 1 else entries[0], indent=2))
        return out
    table = pd.read_csv(out) if good else pd.DataFrame(columns=["file"])
    table = pd.concat([table.assign(status="ok", error=""), pd.DataFrame(rows)], ignore_index=True)
    table.to_csv(out, index=False)
    return out


def _batch(args: argparse.Namespace, classes) -> int:
    """--out-dir: every video into OUT_DIR (femo.inference.batch); 1 when some failed, 2 when none could start."""
    from femo.inference.batch import expand_inputs, predict_many
    from femo.training.runs import CheckpointError, RunError

    videos = expand_inputs(args.videos)
    if not videos:
        print(f"error: no video matches {' '.join(map(str, args.videos))}", file=sys.stderr)
        return 2
    try:
        summary = predict_many(videos, args.run, args.out_dir, window=args.window, hop=args.hop,
                               workers=args.workers, classes=classes, progress=not args.quiet)
    except (RunError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = summary["status"].value_counts()
    print(f"{args.out_dir / 'summary.csv'}: {len(summary)} video(s), {counts.get('ok', 0)} predicted, "
          f"{counts.get('skipped', 0)} already done, {counts.get('failed', 0)} failed")
    for _, row in summary[summary["status"] == "failed"].iterrows():
        print(f"  failed {row['error']}", file=sys.stderr)
    return 1 if counts.get("failed", 0) else 0
