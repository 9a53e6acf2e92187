"""`femo annotate`: add perceived demographics, skin tone and face-pipeline columns to a table.

Input: a feature store (a folder with ``store.json``; its ``index.csv`` rows are annotated from
the stored face crops) or a manifest CSV (each row's ``path`` -- image, video or frame folder --
is decoded and its faces found with the mediapipe face landmarker). Output: the input table with
the columns below appended, one row per input row, written to ``out`` (CSV).

=========================  ===============================================================
columns                    from
=========================  ===============================================================
perceived_* (7 columns)    :mod:`femo.annotate.perceived` (estimates, not identities)
ita, ita_skin_tone,        :mod:`femo.annotate.skin` (a colour measurement of skin pixels;
ita_skin_group, ita_frames  named after the measure so that a manifest's own ``skin_tone`` stays)
face_found_rate,           :mod:`femo.annotate.faces` (how well the face pipeline saw the clip)
face_score
annotate_reason            empty when the face was seen; else why the perceived columns are empty
=========================  ===============================================================

A clip without any face frame gets empty ``perceived_*`` and skin columns and a reason; never a
guess. The job is resumable: ``out`` is rewritten atomically every ``checkpoint`` rows, and a
rerun with ``resume=True`` keeps the rows already there (matched by ``clip_id``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from femo.annotate import faces as face_cols
from femo.annotate.perceived import PERCEIVED_COLUMNS, AgeSexEstimator, empty_perceived
from femo.data.decode import MediaError, load_clip, media_kind
from femo.data.manifest import read_manifest
from femo.data.store import STATUS_OK, StoreError, atomic_write_text, read_clip, read_index
from femo.features.face import FaceTracker

REASON = "annotate_reason"
ANNOTATION_COLUMNS: tuple[str, ...] = (*PERCEIVED_COLUMNS, *face_cols.SKIN_COLUMNS, *face_cols.FACE_COLUMNS, REASON)
#: Annotation columns holding text ("" = empty); the others are numbers (NaN = empty).
TEXT_COLUMNS: tuple[str, ...] = ("perceived_age_group", "perceived_sex", "ita_skin_tone", "ita_skin_group", REASON)


def _empty(reason: str, **known: float) -> dict[str, object]:
    row = {**empty_perceived(), **face_cols.skin_columns([], []),
           "face_found_rate": math.nan, "face_score": math.nan, REASON: reason}
    row.update(known)
    return row


def _finish(crops: np.ndarray, columns: dict[str, object], estimator: AgeSexEstimator, n_frames: int) -> dict:
    if len(crops) == 0:
        return _empty(f"no face found in any of the {n_frames} sampled frames",
                      **{k: columns[k] for k in face_cols.FACE_COLUMNS})
    return {**estimator.clip(crops), **columns, REASON: ""}


@dataclass(frozen=True)
class _Tools:
    """The models one annotation run shares across clips."""

    estimator: AgeSexEstimator
    tracker: FaceTracker
    scorer: face_cols.FaceScorer


def _stored_clip(store: Path, row: pd.Series, tools: _Tools, *, skin_frames: int) -> dict[str, object]:
    """Annotation columns of one store row, from its stored face crops."""
    if row.get("status", STATUS_OK) != STATUS_OK:
        return _empty(f"extraction failed: {row.get('error', '') or 'unknown error'}")
    try:
        arrays = read_clip(store, str(row["clip_id"]))
    except StoreError as exc:
        return _empty(str(exc))
    crops, columns = face_cols.from_crops(arrays["faces"], arrays["face_found"], tools.tracker, tools.scorer,
                                          skin_frames=skin_frames)
    return _finish(crops, columns, tools.estimator, len(arrays["face_found"]))


def _media_clip(row: pd.Series, tools: _Tools, *, num_frames: int) -> dict[str, object]:
    """Annotation columns of one manifest row, from its decoded image, frames or video."""
    try:
        clip = load_clip(row["path"], num_frames=1 if media_kind(row["path"]) == "image" else num_frames)
    except MediaError as exc:
        return _empty(f"unreadable media: {exc}")
    if len(clip.frames) == 0:
        return _empty("no video frames (audio-only clip)")
    crops, columns = face_cols.from_frames(clip.frames, clip.times, tools.tracker, tools.scorer)
    return _finish(crops, columns, tools.estimator, len(clip.frames))


def _write(table: pd.DataFrame, done: dict[str, dict], out: Path) -> pd.DataFrame:
    ann = pd.DataFrame([{"clip_id": k, **v} for k, v in done.items()], columns=["clip_id", *ANNOTATION_COLUMNS])
    base = table.drop(columns=[c for c in ANNOTATION_COLUMNS if c in table.columns])
    merged = base.assign(clip_id=base["clip_id"].astype(str)).merge(ann, on="clip_id", how="left")
    atomic_write_text(out, merged.to_csv(index=False))
    return merged


def _previous(out: Path) -> dict[str, dict]:
    """Rows already annotated in ``out`` (those with a perceived_frames count), keyed by clip_id."""
    if not out.is_file():
        return {}
    prev = pd.read_csv(out, dtype={"clip_id": str}, keep_default_na=False, na_values=[""])
    if not set(ANNOTATION_COLUMNS) <= set(prev.columns):
        return {}
    prev = prev[prev["perceived_frames"].notna()]
    for column in TEXT_COLUMNS:
        prev[column] = prev[column].fillna("").astype(str)
    return {cid: dict(zip(ANNOTATION_COLUMNS, values)) for cid, values in
            zip(prev["clip_id"], prev[list(ANNOTATION_COLUMNS)].itertuples(index=False, name=None))}


def annotate(source: str | Path, out: str | Path, *, resume: bool = True, num_frames: int = 8,
             skin_frames: int = 4, checkpoint: int = 200, progress: bool = True,
             estimator: AgeSexEstimator | None = None) -> pd.DataFrame:
    """Annotate a feature store or a manifest CSV (see the module docstring); returns the table.

    num_frames: frames sampled per video for a manifest (images use one). skin_frames: stored
    crops per clip used for skin tone. checkpoint: rows between atomic rewrites of ``out``.
    """
    source, out = Path(source), Path(out)
    if source.is_dir():
        if not (source / "store.json").is_file():
            raise StoreError(f"{source}: a folder but not a feature store (store.json missing); "
                             "pass a store or a manifest CSV")
        table = read_index(source)
        one = partial(_stored_clip, source, skin_frames=skin_frames)
    else:
        table, _ = read_manifest(source)
        one = partial(_media_clip, num_frames=num_frames)
    done = _previous(out) if resume else {}
    todo = [row for _, row in table.iterrows() if str(row["clip_id"]) not in done]
    estimator = estimator or AgeSexEstimator()
    with FaceTracker(rescue=True) as tracker, face_cols.FaceScorer() as scorer:
        tools = _Tools(estimator, tracker, scorer)
        for i, row in enumerate(tqdm(todo, desc="annotate", unit="clip", disable=not progress)):
            done[str(row["clip_id"])] = one(row, tools)
            if (i + 1) % checkpoint == 0:
                _write(table, done, out)
    return _write(table, done, out)
