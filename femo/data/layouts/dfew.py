"""DFEW (Dynamic Facial Expression in the Wild): 16,372 movie clips, 7 classes, 5-fold protocol.

Official layout under ROOT::

    EmoLabel_DataSplit/
      train(single-labeled)/set_1.csv .. set_5.csv   # header video_name,label
      test(single-labeled)/set_1.csv .. set_5.csv    # ("single_labeled" spelling also accepted)
    Clip/clip_224x224/<clip>/*.jpg       # face frames, all frames of the clip
    Clip/clip_224x224_16f/<clip>/*.jpg   # 16 frames per clip
    Clip/original/<clip>.mp4             # original clips, with audio
    Annotation/annotation.xlsx           # optional: per-clip vote counts of the 7 classes

Labels are 1-based in DFEW's order (1 happy, 2 sad, 3 neutral, 4 angry, 5 surprise,
6 disgust, 7 fear), which is ``femo.config.CLASSES``; a label outside 1..7 is kept as text so
validation excludes it with its reason. Clip names are zero-padded to 5 digits (``1`` ->
``00001``). ``fold`` is the set whose *test* CSV lists the clip (clip in test set_k -> fold k),
so training on folds != k and testing on fold k reproduces the official split k.

Options: ``frames`` ``"all"`` (clip_224x224, default) or ``"16f"`` (clip_224x224_16f);
``source`` ``"frames"`` (default) or ``"original"`` (path = the original mp4). With frame
folders, ``audio_path`` is the original mp4 when it exists (frame folders carry no audio).

Votes: ``Annotation/annotation.xlsx`` is read by :func:`femo.data.layouts.read_votes` (clip
column by name or first column; class columns by name in any case, optionally numbered,
``Happy`` / ``1happy`` / ``1_Happy``) into ``vote_<class>`` columns; clips it lacks get NaN.
The exact header of the official workbook could not be checked here, hence the tolerant match.

DFEW publishes no subject ids, so ``subject`` is the clip id (clustered statistics then treat
clips as independent).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from femo.config import CLASSES
from femo.data.layouts import first_existing, ordered, read_index, read_votes
from femo.data.manifest import ManifestError, ManifestMeta

FRAME_DIRS: dict[str, str] = {"all": "Clip/clip_224x224", "16f": "Clip/clip_224x224_16f"}
SOURCES: tuple[str, ...] = ("frames", "original")


def clip_name(value: object) -> str:
    """DFEW clip name zero-padded to 5 digits (``1``, ``"1"``, ``1.0`` -> ``"00001"``); blank -> ``""``."""
    text = "" if pd.isna(value) else str(value).strip()
    if re.fullmatch(r"\d+(\.0+)?", text):
        return f"{int(float(text)):05d}"
    return text


def _label(value: object) -> str:
    text = "" if pd.isna(value) else str(value).strip()
    if re.fullmatch(r"\d+(\.0+)?", text) and 1 <= int(float(text)) <= len(CLASSES):
        return CLASSES[int(float(text)) - 1]
    return text


def _test_splits(root: Path) -> pd.DataFrame:
    split_dir = first_existing(root, ("EmoLabel_DataSplit/test(single-labeled)",
                                      "EmoLabel_DataSplit/test(single_labeled)"), "DFEW test split folder")
    frames = []
    for k in range(1, 6):
        csv = split_dir / f"set_{k}.csv"
        if not csv.is_file():
            raise ManifestError(f"{csv}: DFEW split file not found (expected set_1.csv .. set_5.csv)")
        df = read_index(csv, ("video_name", "label"))
        frames.append(pd.DataFrame({"clip_id": df["video_name"].map(clip_name),
                                    "label": df["label"].map(_label), "fold": k}))
    return pd.concat(frames, ignore_index=True)


def build(root: Path, *, frames: str = "all", source: str = "frames") -> tuple[pd.DataFrame, ManifestMeta]:
    """Manifest rows of a DFEW tree at ``root``; see the module docstring for layout and options."""
    if frames not in FRAME_DIRS:
        raise ValueError(f"dfew: unknown frames={frames!r}; known: {sorted(FRAME_DIRS)}")
    if source not in SOURCES:
        raise ValueError(f"dfew: unknown source={source!r}; known: {list(SOURCES)}")
    root = Path(root).absolute()
    df = _test_splits(root)
    original = root / "Clip" / "original"
    if source == "original":
        df["path"] = [str(original / f"{c}.mp4") for c in df["clip_id"]]
    else:
        df["path"] = [str(root / FRAME_DIRS[frames] / c) for c in df["clip_id"]]
        have = set(os.listdir(original)) if original.is_dir() else set()
        df["audio_path"] = [str(original / f"{c}.mp4") if f"{c}.mp4" in have else None for c in df["clip_id"]]
    df["subject"] = df["clip_id"]
    annotation = root / "Annotation" / "annotation.xlsx"
    if annotation.is_file():
        df = df.merge(read_votes(annotation, CLASSES, clip_name=clip_name), on="clip_id", how="left")
    extra = {"root": str(root), "frames": frames, "source": source, "votes": annotation.is_file(),
             "protocol": "5-fold (official DFEW sets; fold k = test set k)"}
    return ordered(df), ManifestMeta(dataset="dfew", classes=CLASSES, extra=extra)
