"""RAVDESS: 24 actors, posed speech and song, file names carrying every attribute.

Files anywhere under ROOT (typically ``Actor_01/`` .. ``Actor_24/``) named
``MM-VV-EE-II-SS-RR-AA.ext`` (``.mp4`` video, ``.wav`` audio-only):

==== ============ ==========================================================
code column       values
==== ============ ==========================================================
MM   modality     01 audio-video, 02 video-only, 03 audio-only
VV   vocal_channel 01 speech, 02 song
EE   label        01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fear(ful),
                  07 disgust, 08 surprise(d)
II   intensity    01 normal, 02 strong (neutral has only normal)
SS   statement    01 "Kids are talking by the door" (kids), 02 "Dogs are sitting by the door" (dogs)
RR   repetition   1, 2
AA   subject      actor 01..24; sex: odd = male, even = female
==== ============ ==========================================================

Classes: the 7 canonical ones plus ``calm`` (kept, last). RAVDESS defines no folds, so
``fold`` (1..``folds``) is subject-independent and deterministic
(:func:`femo.data.manifest.subject_folds`). Media files whose names do not follow the
pattern are reported through ``build_error``, not skipped.

Options: ``modality`` ``"all"`` (default), ``"audio-video"``, ``"video-only"`` or
``"audio-only"``; ``folds`` (default 5).
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from femo.config import CLASSES
from femo.data.layouts import media_files, ordered
from femo.data.manifest import MEDIA_SUFFIXES, ManifestMeta, subject_folds

MODALITIES = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
CHANNELS = {"01": "speech", "02": "song"}
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fear",
            "07": "disgust", "08": "surprise"}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "kids", "02": "dogs"}
RAVDESS_CLASSES: tuple[str, ...] = CLASSES + ("calm",)
_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")


def parse_name(stem: str) -> dict[str, object]:
    """Columns encoded in a RAVDESS file stem; ValueError naming the stem and the bad field."""
    match = _NAME.match(stem)
    if not match:
        raise ValueError(f"file name {stem!r} is not MM-VV-EE-II-SS-RR-AA (7 two-digit fields)")
    mm, vv, ee, ii, ss, rr, aa = match.groups()
    for value, table, field in ((mm, MODALITIES, "modality"), (vv, CHANNELS, "vocal channel"),
                                (ee, EMOTIONS, "emotion"), (ii, INTENSITIES, "intensity"),
                                (ss, STATEMENTS, "statement")):
        if value not in table:
            raise ValueError(f"file name {stem!r}: unknown {field} code {value} (known: {sorted(table)})")
    actor = int(aa)
    if not 1 <= actor <= 24 or rr not in {"01", "02"}:
        raise ValueError(f"file name {stem!r}: actor {aa} or repetition {rr} out of range")
    return {"label": EMOTIONS[ee], "subject": aa, "sex": "male" if actor % 2 else "female",
            "intensity": INTENSITIES[ii], "statement": STATEMENTS[ss], "repetition": int(rr),
            "modality": MODALITIES[mm], "vocal_channel": CHANNELS[vv]}


def build(root: Path, *, modality: str = "all", folds: int = 5) -> tuple[pd.DataFrame, ManifestMeta]:
    """Manifest rows of a RAVDESS tree at ``root``; see the module docstring."""
    if modality != "all" and modality not in MODALITIES.values():
        raise ValueError(f"ravdess: unknown modality={modality!r}; known: {['all', *MODALITIES.values()]}")
    root = Path(root).absolute()
    rows = []
    for path in media_files(root, MEDIA_SUFFIXES):
        row: dict[str, object] = {"clip_id": path.stem, "path": str(path)}
        try:
            row.update(parse_name(path.stem))
        except ValueError as exc:
            row.update({"label": None, "subject": path.stem, "build_error": f"{path}: {exc}"})
        if modality == "all" or row.get("modality") in (modality, None):
            rows.append(row)
    df = pd.DataFrame(rows, columns=["clip_id", "path", "label", "subject", "sex", "intensity", "statement",
                                     "repetition", "modality", "vocal_channel", "build_error"])
    df["fold"] = subject_folds(df["subject"], folds) if len(df) else pd.Series(dtype="int64")
    if not df["build_error"].notna().any():
        df = df.drop(columns="build_error")
    extra = {"root": str(root), "modality": modality,
             "protocol": f"{folds}-fold subject-independent (sha1-ordered actors, round-robin)"}
    return ordered(df), ManifestMeta(dataset="ravdess", classes=RAVDESS_CLASSES, extra=extra)
