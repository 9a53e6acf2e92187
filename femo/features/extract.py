"""The extraction job: manifest -> feature store (see :mod:`femo.data.store` for the format).

Per clip (:mod:`femo.features.clip`): decode T sampled frames and the audio track
(:func:`femo.data.decode.load_clip`), run the face tracker, pose tracker and audio features,
compute the condition flags, and write the clip atomically. The index row is every manifest column + ``status``, ``error``, ``file`` and
the flags. Audio-only clips get T all-False frame masks.

* **Screening.** Manifest rows are checked first (unsafe or duplicate ids, unknown labels, empty
  values; see :mod:`femo.features.resume`): a bad row is recorded as failed with its reason and
  costs nothing else; ``STORE/excluded.csv`` lists every excluded row. ``strict=True`` refuses
  the whole job instead, before writing anything.
* **Resume.** Each finished clip goes to a journal at once (a kill loses at most the clips in
  hand); the index is written atomically every ``flush_seconds`` and at the end. A re-run skips
  clips whose index row is ``ok``, whose file exists and whose fingerprint (media size/mtime,
  paths, settings) is unchanged, or whose media bytes are (a fresh copy of the data:
  :func:`femo.features.resume.content_fingerprints`; ``force=True`` redoes all); the manifest columns of kept rows
  come from the current manifest. Every feature is a deterministic function of the clip alone
  (trackers reset per clip), so a resumed run writes the same arrays as an uninterrupted one.
  ``STORE/.lock`` keeps a second job off the same store (and index).
* **Failures.** Any exception inside one clip is recorded as ``status="failed"`` with
  ``error="<ExceptionType>: <message>"`` (decoding errors name the file) and the run goes on.
  An audio-only clip without samples, or audio with NaN/inf samples, fails the same way.
* **Workers.** ``workers > 1`` uses a process pool (:mod:`femo.features.pool`: spawned, so no
  mediapipe state is forked; a worker that crashes costs only its clip; workers exit with their
  parent); each worker creates its landmarkers once and writes its clips itself.
* **Shards.** ``shard=(i, n)`` (0 <= i < n) takes positions i, i+n, i+2n, ... of the manifest
  sorted by ``clip_id`` and writes ``index.shard-i-of-n.csv``; no coordination is needed, and
  :func:`merge_shards` joins the shard indexes into ``index.csv``.
"""
from __future__ import annotations

import glob
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from femo.data import store as fs
from femo.features.clip import ClipExtractor, ExtractConfig, ExtractError, init_worker, process_clip
from femo.features.pool import PoolError, run_pool
from femo.features.resume import (
    Journal, LockedError, StoreLock, content_fingerprints, failed_rows, index_table, kept_results, read_index_file,
    row_fingerprints, screen_rows, write_excluded,
)

def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ExtractError(f"--shard must look like i/n with 0 <= i < n (e.g. 0/4), got {spec!r}")
    return int(m.group(1)), int(m.group(2))


def index_name(shard: tuple[int, int] | None) -> str:
    """``index.csv``, or ``index.shard-i-of-n.csv`` for a shard."""
    return "index.csv" if shard is None else f"index.shard-{shard[0]}-of-{shard[1]}.csv"


def select_shard(manifest: pd.DataFrame, shard: tuple[int, int] | None) -> pd.DataFrame:
    """The manifest sorted by clip_id, restricted to the shard's positions i, i+n, ..."""
    df = manifest.assign(clip_id=manifest["clip_id"].astype(str)).sort_values("clip_id", kind="stable")
    if df["clip_id"].duplicated().any():
        dup = df.loc[df["clip_id"].duplicated(), "clip_id"].iloc[0]
        raise ExtractError(f"manifest: clip_id {dup!r} appears more than once")
    df = df.reset_index(drop=True)
    return df if shard is None else df.iloc[shard[0]::shard[1]].reset_index(drop=True)


def store_meta(config: ExtractConfig, *, classes, dataset: str = "unknown", manifest: str = "",
               extra: dict | None = None) -> fs.StoreMeta:
    """The StoreMeta of a store extracted with ``config``."""
    from femo.features.functionals import functionals_dim

    extra = dict(extra or {})
    extra["extraction"] = {"pose_stride": config.pose_stride, "pitch": config.pitch, "max_side": config.max_side,
                           "image_max_side": config.image_max_side,
                           "audio_functionals": config.audio_functionals,
                           "functionals_dim": functionals_dim(config.audio_functionals)}
    return fs.StoreMeta(classes=tuple(classes), dataset=dataset, num_frames=config.num_frames,
                        face_size=config.face_size, sample_rate=config.sample_rate, manifest=manifest,
                        extra=extra)


def _check_meta(store: Path, meta: fs.StoreMeta, force: bool) -> None:
    if force or not (store / "store.json").is_file():
        return
    old = fs.read_meta(store)
    keys = ("num_frames", "face_size", "sample_rate", "n_mels", "hop_length")
    clash = [f"{k}={getattr(old, k)} (now {getattr(meta, k)})" for k in keys if getattr(old, k) != getattr(meta, k)]
    sets = [m.extra.get("extraction", {}).get("audio_functionals", "none") for m in (old, meta)]
    if sets[0] != sets[1]:
        clash.append(f"audio_functionals={sets[0]} (now {sets[1]})")
    if clash:
        raise ExtractError(f"{store}: store was extracted with {', '.join(clash)}; "
                           "use another --out or --force to redo every clip")


def run_extraction(manifest: pd.DataFrame, store: str | Path, *, classes, dataset: str = "unknown",
                   manifest_path: str = "", manifest_extra: dict | None = None,
                   config: ExtractConfig = ExtractConfig(), workers: int = 1,
                   shard: tuple[int, int] | None = None, force: bool = False, progress: bool = True,
                   flush_seconds: float = 5.0, strict: bool = False,
                   on_clip: Callable[[dict], None] | None = None, runner: Callable | None = None,
                   extractor: type | None = None) -> pd.DataFrame:
    """Extract every (shard) clip of ``manifest`` into ``store``; returns the index written.

    Rows are screened first (see the module docstring); ``strict=True`` raises ExtractError
    listing every row that would be excluded (media probed too) before anything is written.
    ``on_clip(row)`` (optional) is called with each finished clip's result dict (clip_id,
    status, error, file, flags, seconds per stage) as it completes.

    ``runner(jobs, config, log_path)`` (optional) replaces the local workers: it gets the
    ``(store, clip_id, path, audio_path)`` jobs and yields one :func:`process_clip` row per job,
    e.g. :func:`femo.features.engines.ray_runner`. ``extractor`` (optional) is the class the local
    workers build instead of :class:`ClipExtractor`, as ``extractor(config, log_path=...)``.

    The returned frame's ``attrs["seconds"]`` sums the per-clip ``seconds`` of
    :func:`process_clip` over the clips processed in this call (and over workers),
    ``attrs["processed"]`` counts them and ``attrs["excluded"]`` lists the rows screened out
    (dicts of clip_id, path, check, reason).
    """
    if workers < 1:
        raise ExtractError(f"workers must be >= 1, got {workers}")
    store = Path(store)
    good, excluded = screen_rows(manifest, classes, check_media=strict)
    if strict and len(excluded):
        lines = [f"  {c}: {r}" for c, r in zip(excluded["clip_id"], excluded["reason"])]
        raise ExtractError(f"--strict: {len(excluded)} manifest row(s) would be excluded; nothing written:\n"
                           + "\n".join(lines))
    meta = store_meta(config, classes=classes, dataset=dataset, manifest=manifest_path, extra=manifest_extra)
    _check_meta(store, meta, force)
    store.mkdir(parents=True, exist_ok=True)
    name = index_name(shard)
    try:
        lock = StoreLock(store, name).__enter__()
    except LockedError as exc:
        raise ExtractError(str(exc)) from None
    try:
        fs.write_meta(store, meta)
        write_excluded(store, excluded)
        bad, reasons = failed_rows(manifest, excluded)
        clips = select_shard(pd.concat([good, bad], ignore_index=True), shard)
        index = _extract_clips(clips, reasons, store, name, config=config, workers=workers, force=force,
                               progress=progress, flush_seconds=flush_seconds, on_clip=on_clip, runner=runner,
                               extractor=extractor)
    finally:
        lock.__exit__(None, None, None)
    index.attrs["excluded"] = excluded.to_dict("records")
    return index


def _extract_clips(clips: pd.DataFrame, reasons: dict[str, str], store: Path, name: str, *, config, workers,
                   force, progress, flush_seconds, on_clip, runner, extractor) -> pd.DataFrame:
    """The job behind :func:`run_extraction` once rows are screened and the store is locked."""
    screened = [{"clip_id": c, "status": fs.STATUS_FAILED, "error": reasons[c], "file": ""}
                for c in clips["clip_id"] if c in reasons]
    fingerprints = dict(zip(clips["clip_id"], row_fingerprints(clips, config)))
    by_id = clips.set_index("clip_id", drop=False)
    contents = lambda ids: dict(zip(ids, content_fingerprints(by_id.loc[list(ids)], config)))
    journal = Journal(store, name)
    kept, moved = ({}, []) if force else kept_results(store, name, fingerprints, journal, contents)
    if moved:
        print(f"{store}: {len(moved)} clip(s) kept whose files changed place or modification time but not "
              "content (same bytes, same settings)", file=sys.stderr)
    todo = clips[~clips["clip_id"].isin(kept) & ~clips["clip_id"].isin(reasons)]
    results: list[dict] = []
    seconds: dict[str, float] = {}

    def write() -> pd.DataFrame:
        index = index_table(clips, [*screened, *kept.values(), *results])
        fs.write_index(store, index, name)
        journal.clear()  # every journaled row is in the index now
        return index

    log_path = store / "logs" / "mediapipe.log"
    log_path.parent.mkdir(exist_ok=True)
    last = time.monotonic()
    try:
        for row in _run(store, todo, config, workers, progress, str(log_path), runner, extractor):
            row["fingerprint"] = fingerprints[row["clip_id"]]
            ok = row["status"] == fs.STATUS_OK  # the bytes it was extracted from (the files are hot in cache now)
            row["content"] = contents([row["clip_id"]])[row["clip_id"]] if ok else ""
            if on_clip is not None:
                on_clip(row)
            for k, v in row.pop("seconds").items():
                seconds[k] = seconds.get(k, 0.0) + v
            journal.append(row)  # at once: a kill loses at most the clips in hand
            results.append(row)
            if time.monotonic() - last > flush_seconds:
                write()
                last = time.monotonic()
    finally:  # also on Ctrl-C or a dead worker: keep what is done so a re-run resumes
        index = write()
    index.attrs.update(seconds=seconds, processed=len(results))
    return index


def _run(store: Path, todo: pd.DataFrame, config: ExtractConfig, workers: int, progress: bool, log_path: str,
         runner: Callable | None = None, extractor: type | None = None):
    """Yield one result row per clip of ``todo`` (in completion order)."""
    from tqdm import tqdm

    jobs = [(str(store), r.clip_id, str(r.path), _audio_path(r)) for r in todo.itertuples()]
    bar = tqdm(total=len(jobs), unit="clip", file=sys.stderr, disable=not progress or not jobs,
               dynamic_ncols=True, desc="extract")
    failed = 0
    try:
        for row in _rows(jobs, config, workers, log_path, runner, extractor):
            failed += row["status"] != fs.STATUS_OK
            bar.set_postfix(failed=failed, refresh=False)
            bar.update()
            yield row
    finally:
        bar.close()


def _rows(jobs: list[tuple], config: ExtractConfig, workers: int, log_path: str, runner: Callable | None,
          extractor: type | None):
    """process_clip rows of ``jobs``: through ``runner``, in this process, or in a crash-proof pool."""
    if runner is not None and jobs:
        yield from runner(jobs, config, log_path)
    elif workers <= 1 or len(jobs) <= 1:
        with (extractor or ClipExtractor)(config, log_path=log_path) as local:
            for job in jobs:
                yield process_clip(*job, extractor=local)
    else:
        try:
            for _, row in run_pool(process_clip, jobs, workers=workers, crashed=_crashed,
                                   initializer=init_worker, initargs=(config, log_path, extractor)):
                yield row
        except PoolError as exc:
            raise ExtractError(f"{exc}; the index keeps the clips done so far: re-run to resume") from exc


def _crashed(job: tuple, reason: str) -> dict[str, Any]:
    """The failed row of a clip whose worker died on it twice."""
    return {"clip_id": job[1], "status": fs.STATUS_FAILED, "error": f"WorkerCrash: {job[2]}: {reason}", "file": "",
            "seconds": {}}


def _audio_path(row) -> str | None:
    value = getattr(row, "audio_path", None)
    return None if value is None or (isinstance(value, float) and np.isnan(value)) or value == "" else str(value)


def merge_shards(store: str | Path) -> pd.DataFrame:
    """Join ``index.shard-*-of-n.csv`` into ``index.csv`` (sorted by clip_id); returns it.

    Raises :class:`ExtractError` when no shard index exists, shards disagree on n, a shard is
    missing, or a clip appears in two shards.
    """
    store = Path(store)
    files = sorted(glob.glob(str(store / "index.shard-*-of-*.csv")))
    if not files:
        raise ExtractError(f"{store}: no index.shard-*-of-*.csv to merge; run `femo extract --shard i/n` first")
    found = {tuple(int(x) for x in re.search(r"shard-(\d+)-of-(\d+)", f).groups()): f for f in files}
    counts = {n for _, n in found}
    if len(counts) != 1:
        raise ExtractError(f"{store}: shard indexes from different splits {sorted(counts)}; remove the stale ones")
    n = counts.pop()
    missing = sorted(set(range(n)) - {i for i, _ in found})
    if missing:
        raise ExtractError(f"{store}: shards {missing} of {n} have no index yet; run them before merging")
    index = pd.concat([read_index_file(Path(found[(i, n)])) for i in range(n)], ignore_index=True)
    dup = index["clip_id"][index["clip_id"].duplicated()]
    if len(dup):
        raise ExtractError(f"{store}: clip {dup.iloc[0]!r} appears in more than one shard index")
    index = index.sort_values("clip_id", kind="stable").reset_index(drop=True)
    fs.write_index(store, index)
    return index


def config_dict(config: ExtractConfig) -> dict[str, Any]:
    """JSON-ready settings (for logs and benchmarks)."""
    return asdict(config)
