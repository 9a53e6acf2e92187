"""`femo extract`: decode clips and write face/pose/audio features and condition flags to a store.

Examples::

    femo extract data/manifest.csv --out store/ --workers 2
    femo extract data/manifest.csv --out store/ --shard 3/8      # one of 8 independent jobs
    femo extract --merge store/                                   # after all shards finished

Re-running resumes (clips already ok are skipped); a failed clip is recorded in the index with
its reason and the run goes on. mediapipe's native log lines go to STORE/logs/mediapipe.log.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Failed clips listed on stderr at the end of a run (all of them are in the index).
SHOW_FAILED = 20


def register(subparsers) -> None:
    """Add the ``extract`` sub-command to ``subparsers``."""
    p = subparsers.add_parser("extract", help="extract features of a manifest's clips into a feature store",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", nargs="?", type=Path, help="manifest CSV (its .meta.json sidecar gives classes)")
    p.add_argument("--out", type=Path, help="feature store folder")
    p.add_argument("--merge", type=Path, metavar="STORE", help="join STORE's shard indexes into index.csv and exit")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--shard", default=None, metavar="i/n",
                   help="take clips i, i+n, ... of the manifest sorted by clip_id (0 <= i < n)")
    p.add_argument("--frames", type=int, default=16, help="frames sampled per clip, T (default 16)")
    p.add_argument("--face-size", type=int, default=112, help="aligned face crop side S in pixels (default 112)")
    p.add_argument("--pose-stride", type=int, default=4,
                   help="run the pose model on every k-th sampled frame (default 4)")
    p.add_argument("--pitch", choices=("yin", "pyin"), default="yin",
                   help="pitch tracker (default yin; pyin is ~25x slower)")
    p.add_argument("--max-side", type=int, default=None, help="downscale decoded frames to this longer side (px)")
    p.add_argument("--force", action="store_true", help="redo every clip, even those already done")
    p.add_argument("--embed", default=None, metavar="NAME", help="then cache frozen-CNN embeddings with encoder NAME")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the job; exit status 0 when every clip is ok, 1 when some failed, 2 on bad input."""
    from femo.assets import MissingModelError
    from femo.data.manifest import ManifestError
    from femo.data.store import StoreError
    from femo.extract import ExtractError

    try:
        if args.merge is not None:
            return _merge(args.merge)
        return _extract(args)
    except (MissingModelError, ManifestError, ExtractError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _merge(store: Path) -> int:
    from femo.extract import merge_shards

    index = merge_shards(store)
    ok = int((index["status"] == "ok").sum())
    print(f"{store / 'index.csv'}: {len(index)} clip(s), {ok} ok, {len(index) - ok} failed")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from femo.data.manifest import read_manifest
    from femo.extract import ExtractConfig, ExtractError, index_name, parse_shard, run_extraction

    if args.manifest is None or args.out is None:
        raise ExtractError("give a MANIFEST and --out STORE (or --merge STORE)")
    if args.embed:
        _embed_function(args.embed)  # fail before hours of extraction, not after
    shard = parse_shard(args.shard) if args.shard else None
    df, meta = read_manifest(args.manifest)
    config = ExtractConfig(num_frames=args.frames, face_size=args.face_size, pose_stride=args.pose_stride,
                           pitch=args.pitch, max_side=args.max_side)
    index = run_extraction(df, args.out, classes=meta.classes, dataset=meta.dataset,
                           manifest_path=str(Path(args.manifest).absolute()), manifest_extra=meta.extra,
                           config=config, workers=args.workers, shard=shard, force=args.force,
                           progress=args.progress)
    failed = index[index["status"] != "ok"]
    print(f"{args.out / index_name(shard)}: {len(index)} clip(s), {len(index) - len(failed)} ok, "
          f"{len(failed)} failed ({index.attrs['processed']} processed now)")
    for cid, err in zip(failed["clip_id"][:SHOW_FAILED], failed["error"][:SHOW_FAILED], strict=True):
        print(f"  failed {cid}: {err}", file=sys.stderr)
    if len(failed) > SHOW_FAILED:
        print(f"  ... and {len(failed) - SHOW_FAILED} more (status/error columns of the index)", file=sys.stderr)
    if args.embed:
        folder = _embed_function(args.embed)(args.out, encoder=args.embed, progress=args.progress)
        print(f"embeddings: {folder}")
    return 1 if len(failed) else 0


def _embed_function(name: str):
    """``femo.embed.cache_embeddings`` once ``name`` is known to be a frame encoder."""
    from femo.extract import ExtractError

    try:
        from femo.embed import cache_embeddings
        from femo.models.frames import FRAME_ENCODERS
    except ImportError as exc:
        raise ExtractError(f"--embed needs femo.embed.cache_embeddings, which this install lacks ({exc})") from exc
    if name not in FRAME_ENCODERS:
        raise ExtractError(f"--embed: unknown frame encoder {name!r}; known: {', '.join(FRAME_ENCODERS)}")
    return cache_embeddings
