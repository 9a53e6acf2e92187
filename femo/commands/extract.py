"""`femo extract`: decode clips and write face/pose/audio features and condition flags to a store.

Examples::

    femo extract data/manifest.csv --out store/ --workers 2
    femo extract data/manifest.csv --out store/ --shard 3/8      # one of 8 independent jobs
    femo extract --merge store/                                   # after all shards finished
    femo extract data/manifest.csv --out store/ --engine ray --workers 8 [--address ray://head:10001]
    femo extract data/manifest.csv --out store/ --engine slurm --workers 32 --slurm slurm_partition=cpu

Re-running resumes: clips already ok are skipped unless their media, paths or settings changed
(label and metadata edits refresh the index). A bad manifest row or a failed clip is recorded in
the index with its reason and the run goes on (--strict refuses the manifest instead). A second
job on the same store refuses while STORE/.lock is held. mediapipe's native log lines go to
STORE/logs/mediapipe.log.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Failed clips listed on stderr at the end of a run (all of them are in the index).
SHOW_FAILED = 20


def _defaults():
    """The library's extraction defaults (:class:`femo.features.clip.ExtractConfig`), shown by --help."""
    from femo.features.clip import ExtractConfig

    return ExtractConfig()


def register(subparsers) -> None:
    """Add the ``extract`` sub-command to ``subparsers``."""
    from femo.features.functionals import FUNCTIONAL_SETS  # numpy only: opensmile loads on first use

    p = subparsers.add_parser("extract", help="extract features of a manifest's clips into a feature store",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", nargs="?", type=Path, help="manifest CSV (its .meta.json sidecar gives classes)")
    p.add_argument("--out", type=Path, help="feature store folder")
    p.add_argument("--merge", type=Path, metavar="STORE", help="join STORE's shard indexes into index.csv and exit")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--engine", choices=("local", "ray", "slurm"), default="local",
                   help="local: --workers processes here (default); ray: --workers Ray actors (femo[ray]); "
                        "slurm: --workers shards as a SLURM job array, merged at the end (femo[slurm])")
    p.add_argument("--address", default=None,
                   help="--engine ray: join this Ray cluster (ray://HOST:10001 or auto) instead of a local Ray")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="--engine slurm: a submitit option, e.g. slurm_partition=cpu or timeout_min=240 (repeatable)")
    p.add_argument("--shard", default=None, metavar="i/n",
                   help="take clips i, i+n, ... of the manifest sorted by clip_id (0 <= i < n)")
    d = _defaults()
    p.add_argument("--frames", type=int, default=d.num_frames, help=f"frames sampled per clip, T (default {d.num_frames})")
    p.add_argument("--face-size", type=int, default=d.face_size,
                   help=f"aligned face crop side S in pixels (default {d.face_size})")
    p.add_argument("--pose-stride", type=int, default=d.pose_stride,
                   help=f"run the pose model on every k-th sampled frame (default {d.pose_stride})")
    p.add_argument("--pitch", choices=("yin", "pyin"), default=d.pitch,
                   help=f"pitch tracker (default {d.pitch}; pyin is ~25x slower)")
    p.add_argument("--audio-functionals", choices=tuple(FUNCTIONAL_SETS), default="none",
                   help="utterance functionals stored per clip: egemaps (88), compare (6,373), librosa (218 "
                        "log-mel/MFCC/pitch/energy statistics), a '+' combination (egemaps+librosa: 306) "
                        "or none (default)")
    p.add_argument("--max-side", type=int, default=d.max_side, help="downscale decoded frames to this longer side (px)")
    p.add_argument("--image-max-side", type=int, default=d.image_max_side,
                   help=f"downscale still images and frame-folder images to this longer side (default {d.image_max_side})")
    p.add_argument("--force", action="store_true", help="redo every clip, even those already done")
    p.add_argument("--strict", action="store_true",
                   help="refuse the whole manifest (exit 2, nothing written) if any row would be excluded")
    p.add_argument("--embed", default=None, metavar="NAME",
                   help="then cache frozen-CNN embeddings with encoder NAME, of the aligned face crops; "
                        "NAME@frame embeds the whole frame (inputs that are already face crops, such as "
                        "FER2013), NAME@fallback the crop where a face was found and the whole frame elsewhere")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the job; exit status 0 when every clip is ok, 1 when some failed, 2 on bad input."""
    from femo.assets import MissingModelError
    from femo.data.manifest import ManifestError
    from femo.data.store import StoreError
    from femo.features.clip import ExtractError

    try:
        if args.merge is not None:
            return _merge(args.merge)
        return _extract(args)
    except (MissingModelError, ManifestError, ExtractError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _merge(store: Path) -> int:
    from femo.features.extract import merge_shards

    index = merge_shards(store)
    ok = int((index["status"] == "ok").sum())
    print(f"{store / 'index.csv'}: {len(index)} clip(s), {ok} ok, {len(index) - ok} failed")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from femo.data.manifest import read_manifest
    from femo.features.clip import ExtractConfig, ExtractError
    from femo.features.extract import index_name, parse_shard, run_extraction

    if args.manifest is None or args.out is None:
        raise ExtractError("give a MANIFEST and --out STORE (or --merge STORE)")
    if args.embed:
        _embed_function(args.embed)  # fail before hours of extraction, not after
    shard = parse_shard(args.shard) if args.shard else None
    df, meta = read_manifest(args.manifest)
    config = ExtractConfig(num_frames=args.frames, face_size=args.face_size, pose_stride=args.pose_stride,
                           pitch=args.pitch, max_side=args.max_side, audio_functionals=args.audio_functionals,
                           image_max_side=args.image_max_side)
    common = dict(classes=meta.classes, dataset=meta.dataset, manifest_path=str(Path(args.manifest).absolute()),
                  manifest_extra=meta.extra, config=config, force=args.force, strict=args.strict)
    if args.engine == "slurm":
        return _slurm(args, df, shard, common)
    runner = _ray_runner(args) if args.engine == "ray" else None
    index = run_extraction(df, args.out, **common, workers=args.workers, shard=shard, progress=args.progress,
                           runner=runner)
    failed = index[index["status"] != "ok"]
    print(f"{args.out / index_name(shard)}: {len(index)} clip(s), {len(index) - len(failed)} ok, "
          f"{len(failed)} failed ({index.attrs['processed']} processed now)")
    _print_excluded(args.out, index.attrs.get("excluded", []))
    for cid, err in zip(failed["clip_id"][:SHOW_FAILED], failed["error"][:SHOW_FAILED], strict=True):
        print(f"  failed {cid}: {err}", file=sys.stderr)
    if len(failed) > SHOW_FAILED:
        print(f"  ... and {len(failed) - SHOW_FAILED} more (status/error columns of the index)", file=sys.stderr)
    if args.embed:
        folder = _embed_function(args.embed)(args.out, encoder=args.embed, progress=args.progress)
        print(f"embeddings: {folder}")
    return 1 if len(failed) else 0


def _print_excluded(store: Path, excluded: list[dict]) -> None:
    """One summary line for the manifest rows screened out before extraction (counts per check)."""
    if excluded:
        counts: dict[str, int] = {}
        for row in excluded:
            counts[row["check"]] = counts.get(row["check"], 0) + 1
        print(f"{len(excluded)} manifest row(s) excluded before extraction "
              f"({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}); reasons in {store / 'excluded.csv'}")


def _ray_runner(args: argparse.Namespace):
    from femo.features.engines import ray_runner

    return ray_runner(workers=args.workers, address=args.address)


def _slurm(args: argparse.Namespace, df, shard, common: dict) -> int:
    """--engine slurm: --workers shards as one job array, then the merged index."""
    from femo.features.engines import ExtractError, slurm_extraction

    if shard is not None or args.embed:
        raise ExtractError("--engine slurm makes its own shards and cannot --embed; drop --shard/--embed")
    bad = [kv for kv in args.slurm if "=" not in kv]
    if bad:
        raise ExtractError(f"--slurm takes KEY=VALUE, got {bad}")
    params = {k: int(v) if v.isdigit() else v for k, v in (kv.split("=", 1) for kv in args.slurm)}
    index = slurm_extraction(df, args.out, shards=args.workers, parameters=params, progress=args.progress,
                             **common)
    failed = int((index["status"] != "ok").sum())
    print(f"{args.out / 'index.csv'}: {len(index)} clip(s), {len(index) - failed} ok, {failed} failed")
    return 1 if failed else 0


def _embed_function(name: str):
    """``femo.features.embed.cache_embeddings`` once ``name`` is known to be a frame encoder."""
    from femo.features.clip import ExtractError

    try:
        from femo.features.embed import cache_embeddings, split_name
        from femo.models.frames import FRAME_ENCODERS
    except ImportError as exc:
        raise ExtractError(f"--embed needs femo.features.embed.cache_embeddings, which this install lacks ({exc})") from exc
    try:
        encoder, _ = split_name(name)
    except ValueError as exc:
        raise ExtractError(f"--embed: {exc}") from None
    if encoder not in FRAME_ENCODERS:
        raise ExtractError(f"--embed: unknown frame encoder {encoder!r}; known: {', '.join(FRAME_ENCODERS)}")
    return cache_embeddings
