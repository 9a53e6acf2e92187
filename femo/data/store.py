"""The feature store: one compressed ``.npz`` per clip plus an index table.

Layout::

    STORE/
      store.json            # StoreMeta: classes, dataset, T, S, audio settings, manifest meta
      index.csv             # one row per manifest clip: every manifest column + the columns below
      clips/<clip_id>.npz   # per-clip arrays (see CLIP_KEYS)
      embeddings/<name>/<clip_id>.npy   # optional cached frozen-CNN features, (T, D) float16
      cache/masked/<key>.npz            # a trained run's masked per-modality predictions (femo.audit.masked)
      excluded.csv          # manifest rows screened out by the extraction job, with reasons
      .lock                 # pid and host of the extraction job writing the store (while it runs)
      index.journal.jsonl   # clips finished since the index was last written (while a job runs)

``clip_id`` must be a safe file name (:func:`clip_id_problem`); :func:`clip_file` refuses any
other, so nothing is ever written outside the store.

Index columns added to the manifest's: ``status`` ("ok" | "failed"), ``error`` (reason, empty when
ok), ``file`` (npz path relative to STORE), ``fingerprint`` (what the clip's features depend on,
see ``femo.features.resume``), ``content`` (the same over the media's bytes, so a copied or moved
dataset keeps its clips), and per-clip condition flags (see
``femo.features.conditions``): ``brightness, face_ratio, yaw, pitch, roll, occlusion, motion,
snr_db, duration, has_audio``; and the audio record columns (:data:`AUDIO_COLUMNS`):
``voiced_ratio`` (fraction of voiced 10 ms frames, NaN without audio) and ``audio_note`` (empty, or
why the audio carries no speech cue: "no audio track", "digital silence", "no voiced frames",
plus "; functionals: <reason>" when the functionals could not be computed).

Per-clip arrays (T sampled frames, S face crop side, A audio frames at 10 ms hop):

========== ==================== =====================================================
key        shape / dtype        meaning
========== ==================== =====================================================
times      (T,) float32         timestamp of each sampled frame, seconds
faces      (T, S, S, 3) uint8   aligned RGB face crops (zeros where no face)
face_found (T,) bool            False = no face in that frame
face_box   (T, 4) float32       x0, y0, x1, y1 in [0, 1] frame coordinates
landmarks  (T, 478, 3) float32  face mesh, x/y normalised to the face box, z scaled alike
blendshapes(T, 52) float32      mediapipe blendshape scores in [0, 1]
head_pose  (T, 3) float32       yaw, pitch, roll in degrees from the face transform
pose       (T, 33, 4) float32   body landmarks x, y, z, visibility (frame coordinates)
pose_found (T,) bool            False = no body detected in that frame
logmel     (64, A) float32      log-mel power in dB (0 dB = max), 25 ms window, 10 ms hop
mfcc       (20, A) float32      MFCC from the same frames
prosody    (A, 4) float32       f0 Hz (0 unvoiced), voiced probability, RMS energy, voiced flag
has_audio  () bool              False = the clip has no audio track
functionals(F,) float32         optional: openSMILE functionals of the utterance (see
                                ``femo.features.functionals``); F = 88 (eGeMAPSv02) or 6,373
                                (ComParE_2016), the set named in store.json
                                ``extra.extraction.audio_functionals``; all zeros when they
                                could not be computed (the index's ``audio_note`` says why)
========== ==================== =====================================================

Audio arrays have A = 0 columns when ``has_audio`` is False. Keys of :data:`OPTIONAL_CLIP_KEYS`
are written when given; a store extracted without them reads back as a (0,) array. Writes are
atomic (temporary file then ``os.replace``), so a killed run never leaves a half-written clip.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import pandas as pd

CLIP_KEYS: tuple[str, ...] = (
    "times", "faces", "face_found", "face_box", "landmarks", "blendshapes", "head_pose",
    "pose", "pose_found", "logmel", "mfcc", "prosody", "has_audio",
)
#: Per-clip arrays a store may lack (older stores, ``audio_functionals="none"``): read as (0,).
OPTIONAL_CLIP_KEYS: tuple[str, ...] = ("functionals",)
#: Index columns recording what the audio holds (see the module docstring).
AUDIO_COLUMNS: tuple[str, ...] = ("voiced_ratio", "audio_note")
FLAG_COLUMNS: tuple[str, ...] = (
    "brightness", "face_ratio", "yaw", "pitch", "roll", "occlusion", "motion", "snr_db",
    "duration", "has_audio",
)
STATUS_OK = "ok"
STATUS_FAILED = "failed"


class StoreError(ValueError):
    """A feature store or one of its clips is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class StoreMeta:
    """Settings a store was extracted with; saved as ``store.json``."""

    classes: tuple[str, ...]
    dataset: str = "unknown"
    num_frames: int = 16
    face_size: int = 112
    sample_rate: int = 16_000
    n_mels: int = 64
    hop_length: int = 160
    manifest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


#: Longest clip id in UTF-8 bytes: ``.<id>.npz.<random>.tmp`` must stay under the 255-byte name limit.
MAX_CLIP_ID_BYTES = 200
_DRIVE = re.compile(r"^[A-Za-z]:")


def clip_id_problem(clip_id: Any) -> str | None:
    """Why ``clip_id`` cannot be a file name inside a store, or None when it can.

    Refused: empty ids, path separators (``/``, ``\\``), a leading dot (``.``, ``..``, hidden
    files), control characters (NUL, newline, ...), a Windows drive prefix (``C:``) and ids over
    :data:`MAX_CLIP_ID_BYTES` bytes. Manifests, the extraction job and :func:`clip_file` all use
    this one rule.
    """
    text = "" if clip_id is None else str(clip_id)
    if not text.strip():
        return "is empty"
    if "/" in text or "\\" in text:
        return "contains a path separator (/ or \\)"
    if text.startswith("."):
        return "starts with a dot (hidden file, '.' or '..')"
    bad = sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")})
    if bad:
        return f"contains control character(s) {', '.join(bad)}"
    if _DRIVE.match(text):
        return "starts with a drive letter (an absolute Windows path)"
    if len(text.encode("utf-8")) > MAX_CLIP_ID_BYTES:
        return f"is longer than {MAX_CLIP_ID_BYTES} bytes (too long for a file name)"
    return None


def clip_file(store: str | Path, clip_id: str) -> Path:
    """Where the arrays of ``clip_id`` live inside ``store``.

    Raises :class:`StoreError` for an id that is not a safe file name (see
    :func:`clip_id_problem`) or whose path would leave ``STORE/clips`` (defence in depth: nothing
    is ever read or written outside the store).
    """
    problem = clip_id_problem(clip_id)
    if problem is not None:
        raise StoreError(f"clip id {clip_id!r} {problem}; it cannot name a file in {store}")
    folder = os.path.normpath(os.path.abspath(Path(store) / "clips"))
    target = os.path.normpath(os.path.join(folder, f"{clip_id}.npz"))
    if os.path.dirname(target) != folder:
        raise StoreError(f"clip id {clip_id!r} would resolve to {target}, outside {folder}")
    return Path(store) / "clips" / f"{clip_id}.npz"


def write_meta(store: str | Path, meta: StoreMeta) -> None:
    """Write ``store.json`` atomically."""
    atomic_write_text(Path(store) / "store.json", json.dumps(asdict(meta), indent=2))


def read_meta(store: str | Path) -> StoreMeta:
    """Read ``store.json``; raises :class:`StoreError` naming the path when it is missing."""
    path = Path(store) / "store.json"
    if not path.is_file():
        raise StoreError(f"{path}: not a feature store (store.json missing); run `femo extract` first")
    data = json.loads(path.read_text())
    data["classes"] = tuple(data["classes"])
    return StoreMeta(**data)


def write_clip(store: str | Path, clip_id: str, arrays: dict[str, np.ndarray]) -> Path:
    """Validate and atomically write one clip's arrays; returns the file written."""
    missing = [k for k in CLIP_KEYS if k not in arrays]
    if missing:
        raise StoreError(f"clip {clip_id}: arrays missing keys {missing}")
    target = clip_file(store, clip_id)
    keys = [*CLIP_KEYS, *(k for k in OPTIONAL_CLIP_KEYS if k in arrays)]
    atomic_write(target, lambda fh: np.savez_compressed(fh, **{k: np.asarray(arrays[k]) for k in keys}),
                 binary=True)
    return target


def read_clip(store: str | Path, clip_id: str) -> dict[str, np.ndarray]:
    """Load one clip's arrays (CLIP_KEYS + OPTIONAL_CLIP_KEYS, the latter (0,) when absent); raises
    :class:`StoreError` naming the file."""
    path = clip_file(store, clip_id)
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise StoreError(f"{path}: clip file missing from the store") from None
    except Exception as exc:  # zipfile/zlib errors for a damaged file
        raise StoreError(f"{path}: unreadable clip file ({exc})") from exc
    missing = [k for k in CLIP_KEYS if k not in out]
    if missing:
        raise StoreError(f"{path}: clip file lacks keys {missing}")
    for key in OPTIONAL_CLIP_KEYS:
        out.setdefault(key, np.zeros(0, np.float32))
    return out


def read_index(store: str | Path) -> pd.DataFrame:
    """The store's index (manifest columns + status/error/file + flags)."""
    path = Path(store) / "index.csv"
    if not path.is_file():
        raise StoreError(f"{path}: index missing; run `femo extract` (or `femo extract --merge`)")
    return pd.read_csv(path, dtype={"clip_id": str, "subject": str, "error": str}, keep_default_na=False,
                       na_values=[""])


def write_index(store: str | Path, index: pd.DataFrame, name: str = "index.csv") -> None:
    """Write an index table atomically (``name`` lets shards write ``index.shard-i-of-n.csv``)."""
    atomic_write_text(Path(store) / name, index.to_csv(index=False))


def ok_clips(index: pd.DataFrame) -> pd.DataFrame:
    """Rows whose extraction succeeded."""
    return index[index["status"] == STATUS_OK].reset_index(drop=True)


def atomic_write(path: str | Path, write: Callable[[IO], None], *, binary: bool = False) -> Path:
    """Create ``path`` atomically: ``write(fh)`` fills a temporary file in the same folder, which
    then replaces ``path``; a failure or a kill leaves no partial file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(text))
