"""CREMA-D: 91 actors, 12 sentences, 6 emotions, audio-visual recordings with demographics.

Under ROOT::

    VideoFlash/<ActorID>_<Sentence>_<Emotion>_<Level>.flv   # e.g. 1001_DFA_ANG_XX.flv
    AudioWAV/<same stem>.wav                                  # optional separate audio
    VideoDemographics.csv                                     # ActorID,Age,Sex,Race,Ethnicity

Media files are found anywhere under ROOT by name. Emotion codes ANG DIS FEA HAP NEU SAD ->
angry, disgust, fear, happy, neutral, sad (the 6 classes, canonical order); level LO MD HI XX
-> ``intensity`` low, medium, high, unspecified; the sentence code is kept as ``sentence``.
``subject`` is the actor id; the demographics table is joined on it as ``age`` (int),
``sex`` (lowercase), ``race`` and ``ethnicity`` (as written in the file). Without the table
those columns are absent (recorded in the sidecar's ``extra``). CREMA-D defines no folds, so
``fold`` is subject-independent and deterministic (:func:`femo.data.manifest.subject_folds`).
Media files whose names do not follow the pattern are reported through ``build_error``.

Options: ``media`` ``"video"`` (default: .flv/.mp4/... files, with ``audio_path`` = the
matching AudioWAV file when present) or ``"audio"`` (the .wav files as audio-only clips);
``folds`` (default 5).
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from femo.data.layouts import media_files, ordered, read_index
from femo.data.manifest import AUDIO_SUFFIXES, VIDEO_SUFFIXES, ManifestMeta, order_classes, subject_folds

EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
CREMAD_CLASSES: tuple[str, ...] = order_classes(EMOTIONS.values())
DEMOGRAPHICS = ("ActorID", "Age", "Sex", "Race", "Ethnicity")
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def parse_name(stem: str) -> dict[str, str]:
    """Columns encoded in a CREMA-D stem; ValueError naming the stem and the bad field."""
    match = _NAME.match(stem)
    if not match:
        raise ValueError(f"file name {stem!r} is not ActorID_Sentence_Emotion_Level (e.g. 1001_DFA_ANG_XX)")
    actor, sentence, emotion, level = match.groups()
    if emotion not in EMOTIONS or level not in LEVELS:
        raise ValueError(f"file name {stem!r}: unknown emotion {emotion!r} or level {level!r} "
                         f"(known: {sorted(EMOTIONS)}, {sorted(LEVELS)})")
    return {"label": EMOTIONS[emotion], "subject": actor, "sentence": sentence, "intensity": LEVELS[level]}


def read_demographics(path: Path) -> pd.DataFrame:
    """``subject, age, sex, race, ethnicity`` from VideoDemographics.csv (header checked)."""
    table = read_index(path, DEMOGRAPHICS)
    return pd.DataFrame({
        "subject": table["ActorID"].str.strip(), "age": pd.to_numeric(table["Age"], errors="coerce").astype("Int64"),
        "sex": table["Sex"].str.strip().str.lower(), "race": table["Race"].str.strip(),
        "ethnicity": table["Ethnicity"].str.strip(),
    }).drop_duplicates("subject")


def _rows(paths: list[Path]) -> pd.DataFrame:
    rows = []
    for path in paths:
        row: dict[str, object] = {"clip_id": path.stem, "path": str(path)}
        try:
            row.update(parse_name(path.stem))
        except ValueError as exc:
            row.update({"label": None, "subject": path.stem, "build_error": f"{path}: {exc}"})
        rows.append(row)
    return pd.DataFrame(rows, columns=["clip_id", "path", "label", "subject", "sentence", "intensity", "build_error"])


def build(root: Path, *, media: str = "video", folds: int = 5) -> tuple[pd.DataFrame, ManifestMeta]:
    """Manifest rows of a CREMA-D tree at ``root``; see the module docstring."""
    if media not in ("video", "audio"):
        raise ValueError(f"cremad: unknown media={media!r}; known: ['video', 'audio']")
    root = Path(root).absolute()
    df = _rows(media_files(root, VIDEO_SUFFIXES if media == "video" else AUDIO_SUFFIXES))
    if media == "video":
        wavs = {p.stem: str(p) for p in media_files(root, frozenset({".wav"}))}
        df["audio_path"] = df["clip_id"].map(wavs)
    table = root / "VideoDemographics.csv"
    if table.is_file():
        df = df.merge(read_demographics(table), on="subject", how="left")
    df["fold"] = subject_folds(df["subject"], folds) if len(df) else pd.Series(dtype="int64")
    if not df["build_error"].notna().any():
        df = df.drop(columns="build_error")
    extra = {"root": str(root), "media": media, "demographics": str(table) if table.is_file() else None,
             "protocol": f"{folds}-fold subject-independent (sha1-ordered actors, round-robin)"}
    return ordered(df), ManifestMeta(dataset="cremad", classes=CREMAD_CLASSES, extra=extra)
