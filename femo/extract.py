"""The extraction job: manifest -> feature store (see :mod:`femo.data.store` for the format).

Per clip: decode T sampled frames and the audio track (:func:`femo.data.decode.load_clip`), run
the face tracker, pose tracker and audio features, compute the condition flags, and write the
clip atomically. The index row is every manifest column + ``status``, ``error``, ``file`` and
the flags. Audio-only clips get T all-False frame masks.

* **Resume.** The index is written atomically every ``flush_seconds`` and at the end. A re-run
  skips clips whose index row is ``ok`` and whose file exists (``force=True`` redoes all);
  failed and missing clips are redone. Every feature is a deterministic function of the clip
  alone (trackers reset per clip), so a resumed run writes the same arrays as an uninterrupted one.
* **Failures.** Any exception inside one clip is recorded as ``status="failed"`` with
  ``error="<ExceptionType>: <message>"`` (decoding errors name the file) and the run goes on.
* **Workers.** ``workers > 1`` uses a process pool (spawned, so no mediapipe state is forked);
  each worker creates its landmarkers once and writes its clips itself.
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
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from femo.data import store as fs

STAGES = ("decode", "face", "pose", "audio", "other")


class ExtractError(ValueError):
    """The job cannot start or finish (bad shard spec, store settings clash); names the problem."""


@dataclass(frozen=True)
class ExtractConfig:
    """Extraction settings: T frames, S crop side (px), audio rate (Hz), pose on every k-th frame,
    pitch tracker ("yin" | "pyin"), optional cap on the decoded frame's longer side (px)."""

    num_frames: int = 16
    face_size: int = 112
    sample_rate: int = 16_000
    pose_stride: int = 4
    pitch: str = "yin"
    max_side: int | None = None

    def __post_init__(self) -> None:
        bad = [f"{k}={getattr(self, k)}" for k, low in (("num_frames", 1), ("face_size", 16), ("pose_stride", 1),
                                                         ("sample_rate", 8000)) if getattr(self, k) < low]
        if self.max_side is not None and self.max_side < 32:
            bad.append(f"max_side={self.max_side}")
        if self.pitch not in ("yin", "pyin"):
            bad.append(f"pitch={self.pitch!r} (yin | pyin)")
        if bad:
            raise ExtractError(f"invalid extraction settings: {', '.join(bad)} (frames >= 1, face size >= 16, "
                               "pose stride >= 1, sample rate >= 8000, max side >= 32)")


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ExtractError(f"--shard must look like i/n with 0 <= i < n (e.g. 0/4), got {spec!r}")
    return int(m.group(1)), int(m.group(2))


def index_name(shard: tuple[int, int] | None) -> str:
    """``index.csv``, or ``index.shard-i-of-n.csv`` for a shard."""
    return "index.csv" if shard is None else f"index.shard-{shard[0]}-of-{shard[1]}.csv"


class ClipExtractor:
    """Owns one face tracker and one pose tracker; ``extract(path)`` -> (arrays, flags, seconds per stage)."""

    def __init__(self, config: ExtractConfig = ExtractConfig(), *, log_path: str | Path | None = None) -> None:
        from femo.features.audio import AudioConfig
        from femo.features.face import FaceTracker
        from femo.features.pose import PoseTracker

        self.config = config
        self.audio_config = AudioConfig(sample_rate=config.sample_rate, pitch=config.pitch)
        self.face = FaceTracker(face_size=config.face_size, log_path=log_path)
        self.pose = PoseTracker(stride=config.pose_stride, log_path=log_path)

    def close(self) -> None:
        """Release the landmarkers."""
        self.face.close()
        self.pose.close()

    def __enter__(self) -> ClipExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def extract(self, path: str, audio_path: str | None = None) -> tuple[dict, dict, dict]:
        """All CLIP_KEYS arrays, the condition flags, and wall (``<stage>``) and process CPU
        (``cpu_<stage>``) seconds per stage of :data:`STAGES` for one clip."""
        from femo.data.decode import load_clip
        from femo.features.audio import audio_features, empty_audio_features
        from femo.features.conditions import condition_flags
        from femo.features.face import empty_face_track
        from femo.features.pose import empty_pose_track

        cfg, t = self.config, self.config.num_frames
        t0, c0 = time.perf_counter(), time.process_time()
        clip = load_clip(path, num_frames=t, sample_rate=cfg.sample_rate, audio_path=audio_path or None,
                         max_side=cfg.max_side)
        video = len(clip.frames) > 0  # audio-only files decode to no frames: T all-False frame masks
        times = np.asarray(clip.times if video else np.zeros(t), np.float32)
        t1, c1 = time.perf_counter(), time.process_time()
        face = self.face.track(clip.frames, times) if video else empty_face_track(t, cfg.face_size)
        t2, c2 = time.perf_counter(), time.process_time()
        pose = self.pose.track(clip.frames) if video else empty_pose_track(t)
        t3, c3 = time.perf_counter(), time.process_time()
        audio = (audio_features(clip.audio, self.audio_config) if clip.has_audio
                 else empty_audio_features(self.audio_config))
        t4, c4 = time.perf_counter(), time.process_time()
        arrays = {"times": times, "has_audio": np.array(clip.has_audio), **face.arrays(), **pose.arrays(), **audio}
        flags = condition_flags(
            frames=clip.frames, face_found=face.face_found, head_pose=face.head_pose, faces=face.faces,
            landmarks_px=face.landmarks_px, rms=audio["prosody"][:, 2] if clip.has_audio else None,
            duration=clip.duration, has_audio=clip.has_audio)
        t5, c5 = time.perf_counter(), time.process_time()
        wall, cpu = (t0, t1, t2, t3, t4, t5), (c0, c1, c2, c3, c4, c5)
        sec = {k: wall[i + 1] - wall[i] for i, k in enumerate(STAGES)}
        sec.update({f"cpu_{k}": cpu[i + 1] - cpu[i] for i, k in enumerate(STAGES)})
        return arrays, flags, sec


_WORKER: dict[str, Any] = {}


def _init_worker(config: ExtractConfig, log_path: str | None) -> None:
    from multiprocessing.util import Finalize

    extractor = _WORKER["extractor"] = ClipExtractor(config, log_path=log_path)
    # close the landmarkers before interpreter teardown, else their __del__ prints errors
    Finalize(extractor, extractor.close, exitpriority=10)


def process_clip(store: str, clip_id: str, path: str, audio_path: str | None,
                 extractor: ClipExtractor | None = None) -> dict[str, Any]:
    """Extract and write one clip; never raises for a bad clip. Returns status/error/file/flags/seconds.

    ``seconds`` holds wall and CPU seconds per stage (see :meth:`ClipExtractor.extract`) and
    ``cpu``, the process CPU seconds of the whole clip including its write.
    """
    extractor = extractor or _WORKER["extractor"]
    cpu0 = time.process_time()
    try:
        arrays, flags, sec = extractor.extract(path, audio_path)
        file = fs.write_clip(store, clip_id, arrays)
        sec["cpu"] = time.process_time() - cpu0
    except Exception as exc:  # one bad clip must not stop the job; the reason is recorded
        return {"clip_id": clip_id, "status": fs.STATUS_FAILED, "error": f"{type(exc).__name__}: {exc}",
                "file": "", "seconds": {}}
    row = {"clip_id": clip_id, "status": fs.STATUS_OK, "error": "",
           "file": str(file.relative_to(store)), "seconds": sec}
    row.update(flags)
    return row


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
    extra = dict(extra or {})
    extra["extraction"] = {"pose_stride": config.pose_stride, "pitch": config.pitch, "max_side": config.max_side}
    return fs.StoreMeta(classes=tuple(classes), dataset=dataset, num_frames=config.num_frames,
                        face_size=config.face_size, sample_rate=config.sample_rate, manifest=manifest,
                        extra=extra)


def _check_meta(store: Path, meta: fs.StoreMeta, force: bool) -> None:
    if force or not (store / "store.json").is_file():
        return
    old = fs.read_meta(store)
    keys = ("num_frames", "face_size", "sample_rate", "n_mels", "hop_length")
    clash = [f"{k}={getattr(old, k)} (now {getattr(meta, k)})" for k in keys if getattr(old, k) != getattr(meta, k)]
    if clash:
        raise ExtractError(f"{store}: store was extracted with {', '.join(clash)}; "
                           "use another --out or --force to redo every clip")


def done_rows(store: Path, name: str) -> pd.DataFrame:
    """Rows of an existing index whose status is ok and whose clip file exists (empty if none)."""
    if not (store / name).is_file():
        return pd.DataFrame()
    old = fs.read_index(store) if name == "index.csv" else _read_csv(store / name)
    ok = (old["status"] == fs.STATUS_OK) & old["clip_id"].map(lambda c: fs.clip_file(store, c).is_file())
    return old[ok]


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"clip_id": str, "subject": str, "error": str}, keep_default_na=False,
                       na_values=[""])


def run_extraction(manifest: pd.DataFrame, store: str | Path, *, classes, dataset: str = "unknown",
                   manifest_path: str = "", manifest_extra: dict | None = None,
                   config: ExtractConfig = ExtractConfig(), workers: int = 1,
                   shard: tuple[int, int] | None = None, force: bool = False, progress: bool = True,
                   flush_seconds: float = 30.0,
                   on_clip: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Extract every (shard) clip of ``manifest`` into ``store``; returns the index written.

    ``on_clip(row)`` (optional) is called with each finished clip's result dict (clip_id,
    status, error, file, flags, seconds per stage) as it completes.

    The returned frame's ``attrs["seconds"]`` sums the per-clip ``seconds`` of
    :func:`process_clip` over the clips processed in this call (and over workers), and
    ``attrs["processed"]`` counts them.
    """
    if workers < 1:
        raise ExtractError(f"workers must be >= 1, got {workers}")
    store = Path(store)
    meta = store_meta(config, classes=classes, dataset=dataset, manifest=manifest_path, extra=manifest_extra)
    _check_meta(store, meta, force)
    store.mkdir(parents=True, exist_ok=True)
    fs.write_meta(store, meta)
    clips = select_shard(manifest, shard)
    name = index_name(shard)
    kept = pd.DataFrame() if force else done_rows(store, name)
    kept = kept[kept["clip_id"].isin(clips["clip_id"])] if len(kept) else kept
    todo = clips[~clips["clip_id"].isin(kept.get("clip_id", pd.Series(dtype=str)))]
    results: list[dict] = []
    seconds: dict[str, float] = {}

    def write() -> pd.DataFrame:
        index = _index_table(clips, kept, results)
        fs.write_index(store, index, name)
        return index

    log_path = store / "logs" / "mediapipe.log"
    log_path.parent.mkdir(exist_ok=True)
    last = time.monotonic()
    try:
        for row in _run(store, todo, config, workers, progress, str(log_path)):
            if on_clip is not None:
                on_clip(row)
            results.append(row)
            for k, v in row.pop("seconds").items():
                seconds[k] = seconds.get(k, 0.0) + v
            if time.monotonic() - last > flush_seconds:
                write()
                last = time.monotonic()
    finally:  # also on Ctrl-C or a dead worker: keep what is done so a re-run resumes
        index = write()
    index.attrs.update(seconds=seconds, processed=len(results))
    return index


def _run(store: Path, todo: pd.DataFrame, config: ExtractConfig, workers: int, progress: bool, log_path: str):
    """Yield one result row per clip of ``todo`` (in completion order)."""
    from tqdm import tqdm

    jobs = [(str(store), r.clip_id, str(r.path), _audio_path(r)) for r in todo.itertuples()]
    bar = tqdm(total=len(jobs), unit="clip", file=sys.stderr, disable=not progress or not jobs,
               dynamic_ncols=True, desc="extract")
    failed = 0
    try:
        if workers <= 1 or len(jobs) <= 1:
            with ClipExtractor(config, log_path=log_path) as extractor:
                for job in jobs:
                    row = process_clip(*job, extractor=extractor)
                    failed += row["status"] != fs.STATUS_OK
                    bar.set_postfix(failed=failed, refresh=False)
                    bar.update()
                    yield row
            return
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                   initializer=_init_worker, initargs=(config, log_path))
        try:
            for fut in as_completed([pool.submit(process_clip, *job) for job in jobs]):
                try:
                    row = fut.result()
                except BrokenProcessPool as exc:
                    raise ExtractError(f"a worker process died ({exc}); the index keeps the clips done so "
                                       "far: re-run the same command to resume") from exc
                failed += row["status"] != fs.STATUS_OK
                bar.set_postfix(failed=failed, refresh=False)
                bar.update()
                yield row
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


def _audio_path(row) -> str | None:
    value = getattr(row, "audio_path", None)
    return None if value is None or (isinstance(value, float) and np.isnan(value)) or value == "" else str(value)


def _index_table(clips: pd.DataFrame, kept: pd.DataFrame, results: list[dict]) -> pd.DataFrame:
    """Manifest columns + status/error/file + flags for every clip done so far, in clip_id order."""
    added = ["status", "error", "file", *fs.FLAG_COLUMNS]
    # a manifest column named like a store column keeps its values as `<name>_manifest`
    clips = clips.rename(columns={c: f"{c}_manifest" for c in clips.columns if c in added})
    new = pd.DataFrame(results, columns=["clip_id", *added])
    new = clips.merge(new, on="clip_id", how="inner")
    parts = [p for p in (kept, new) if len(p)]
    if not parts:
        return pd.DataFrame(columns=[*clips.columns, *added])
    index = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return index.sort_values("clip_id", kind="stable").reset_index(drop=True)


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
    index = pd.concat([_read_csv(Path(found[(i, n)])) for i in range(n)], ignore_index=True)
    dup = index["clip_id"][index["clip_id"].duplicated()]
    if len(dup):
        raise ExtractError(f"{store}: clip {dup.iloc[0]!r} appears in more than one shard index")
    index = index.sort_values("clip_id", kind="stable").reset_index(drop=True)
    fs.write_index(store, index)
    return index


def config_dict(config: ExtractConfig) -> dict[str, Any]:
    """JSON-ready settings (for logs and benchmarks)."""
    return asdict(config)
