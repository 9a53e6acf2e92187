"""Cache frozen frame-encoder features for every clip of a feature store.

``STORE/embeddings/<name>/<clip_id>.npy`` holds ``(T, out_dim) float16``: one row per sampled
frame. What each row encodes is the embedding's *source* (:data:`SOURCES`), part of its name:

* ``crop`` (name ``<encoder>``, the default): the clip's stored mediapipe-aligned face crop
  (``faces``); rows where ``face_found`` is False are zeros, and the mask is the clip's
  ``face_found``.
* ``frame`` (name ``<encoder>@frame``): the whole sampled frame, letterboxed to a square (black
  bars) at the store's crop side, for every frame. For inputs that are already face crops
  (FER2013, AffectNet crops, the face-aligned frames some video corpora ship): mediapipe misses
  many such faces (FER2013 at 48x48: 15%), and a face-expression CNN trained on such crops reads
  them as they are. The sampled frames are decoded again from the index's ``path`` with the
  store's decode settings, so they are the frames extraction landmarked.
* ``fallback`` (name ``<encoder>@fallback``): the aligned crop where a face was found, the whole
  frame where not.

For ``frame`` and ``fallback`` every frame of a clip with video has a row, and
``<clip_id>.mask.npy`` ((T,) bool) says which rows hold a face input; training and ``femo
predict`` read the face mask from it (the landmarks keep the clip's ``face_found``).
Identical inputs of one clip (a still image's copies) are encoded once. ``meta.json`` records the
encoder, the source and the feature size; ``errors.csv`` lists clips that could not be embedded
(they are skipped, the job goes on). The job is resumable: existing files are kept unless
``force``; every file is written to a temporary name and renamed, so a killed run never leaves a
partial file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from femo.data.store import StoreError, atomic_write, atomic_write_text, ok_clips, read_clip, read_index
from femo.features.clip import distinct_frames
from femo.models.frames import build_frame_encoder


#: What a row of an embedding encodes (module docstring); ``crop`` is the default.
SOURCES: tuple[str, ...] = ("crop", "frame", "fallback")


def split_name(name: str) -> tuple[str, str]:
    """``"faceapi@frame"`` -> ``("faceapi", "frame")``; a name without ``@`` is a ``crop`` embedding.
    Raises ValueError naming the known sources for an unknown one."""
    encoder, _, source = str(name).partition("@")
    source = source or "crop"
    if source not in SOURCES:
        raise ValueError(f"embedding {name!r}: unknown source {source!r}; known: {', '.join(SOURCES)} "
                         "(written <encoder>@<source>, e.g. faceapi@frame; plain <encoder> means crop)")
    return encoder, source


def embedding_name(encoder: str, source: str = "crop") -> str:
    """The folder name of ``encoder``'s embeddings of ``source`` (inverse of :func:`split_name`)."""
    split_name(f"{encoder}@{source}")
    return encoder if source == "crop" else f"{encoder}@{source}"


def embeddings_dir(store: str | Path, name: str) -> Path:
    """Folder of the cached embeddings called ``name`` inside ``store``."""
    return Path(store) / "embeddings" / name


def mask_file(folder: str | Path, clip_id: str) -> Path:
    """The (T,) bool face mask of a ``frame`` / ``fallback`` embedding (absent for ``crop``)."""
    return Path(folder) / f"{clip_id}.mask.npy"


def letterbox(frames: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3): the whole frame scaled to fit, centred on black
    bars (area interpolation when shrinking, linear when enlarging)."""
    import cv2

    n, h, w = frames.shape[:3]
    out = np.zeros((n, size, size, 3), np.uint8)
    if n == 0 or h == 0 or w == 0:
        return out
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    for i, frame in enumerate(frames):
        out[i, y0:y0 + nh, x0:x0 + nw] = cv2.resize(frame, (nw, nh), interpolation=interp)
    return out


def face_inputs_of(source: str, crops: np.ndarray, found: np.ndarray, frames: np.ndarray | None,
                   size: int) -> tuple[np.ndarray, np.ndarray]:
    """(face inputs (T, S, S, 3), mask (T,)) of one clip for ``source``: the crops and
    ``face_found`` for ``crop``; the letterboxed frames (all True) for ``frame``; crops where
    found and frames elsewhere for ``fallback``. ``frames`` is None or empty for a clip without
    video (then nothing is a face input). Training (this module) and ``femo predict`` both
    build the encoder's input through this function."""
    found = np.asarray(found, bool)
    if source == "crop":
        return crops, found
    if frames is None or len(frames) == 0:
        return crops, np.zeros(len(found), bool)
    whole = letterbox(frames, size)
    if source == "frame":
        return whole, np.ones(len(whole), bool)
    return np.where(found[:, None, None, None], crops, whole), np.ones(len(whole), bool)


def cache_embeddings(store: str | Path, *, encoder: str | nn.Module = "faceapi", name: str | None = None,
                     source: str | None = None, batch_size: int = 64, force: bool = False,
                     progress: bool = True) -> Path:
    """Embed the faces of every ok clip of ``store``; returns the embeddings folder.

    encoder: a :data:`femo.models.frames.FRAME_ENCODERS` name, optionally with a source
    (``"faceapi@frame"``; built frozen, default weights), or a module mapping (N, 3, S, S) float
    in [0, 1] to (N, D) with an ``out_dim`` attribute. source: :data:`SOURCES` (default: the
    name's, else ``crop``). name: folder name (default: :func:`embedding_name` of the encoder's
    ``name`` and the source). batch_size: frames per forward pass.
    """
    if isinstance(encoder, str):
        base, named = split_name(encoder)
        source = source or named
        encoder = build_frame_encoder(base, freeze="frozen")
    source = source or "crop"
    split_name(f"x@{source}")
    base = getattr(encoder, "name", None)
    if not name and not base:
        raise ValueError("cache_embeddings: pass name= for an encoder without a .name attribute")
    name = name or embedding_name(base, source)
    out_dir = embeddings_dir(store, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = ok_clips(read_index(store))
    clip_ids = [str(c) for c in index["clip_id"]]
    todo = [c for c in clip_ids if force or not (out_dir / f"{c}.npy").is_file()
            or (source != "crop" and not mask_file(out_dir, c).is_file())]
    errors: list[dict[str, str]] = []
    frames_of = None if source == "crop" else _frame_reader(store, index)
    encoder.eval()
    with torch.inference_mode():
        for group in _groups(store, todo, batch_size, errors, progress, source, frames_of):
            _embed_group(encoder, group, out_dir, masks=source != "crop")
    atomic_write_text(out_dir / "meta.json", json.dumps(
        {"encoder": base or name, "source": source, "out_dim": int(getattr(encoder, "out_dim", 0)),
         "dtype": "float16", "n_clips": len(clip_ids), "n_failed": len(errors)}, indent=2))
    if errors:
        atomic_write_text(out_dir / "errors.csv", pd.DataFrame(errors).to_csv(index=False))
    return out_dir


def _frame_reader(store: str | Path, index: pd.DataFrame):
    """clip_id -> (T, H, W, 3) uint8 sampled frames, decoded from the index's ``path`` with the
    store's T and decode caps (the frames extraction landmarked); raises StoreError naming the
    file when it cannot be decoded or gives another number of frames."""
    from femo.data.decode import MediaError, load_clip
    from femo.data.store import read_meta
    from femo.features.clip import ExtractConfig, _max_side

    meta = read_meta(store)
    caps = (meta.extra or {}).get("extraction", {})
    config = ExtractConfig(num_frames=meta.num_frames, face_size=meta.face_size,
                           max_side=caps.get("max_side"), image_max_side=caps.get("image_max_side", 1280))
    paths = dict(zip(index["clip_id"].astype(str), index["path"].astype(str)))

    def read(clip_id: str, t: int) -> np.ndarray:
        path = paths[clip_id]
        try:
            clip = load_clip(path, num_frames=config.num_frames, max_side=_max_side(path, config), with_audio=False)
        except MediaError as exc:
            raise StoreError(f"clip {clip_id}: cannot decode its frames from {path} ({exc})") from exc
        if len(clip.frames) and len(clip.frames) != t:
            raise StoreError(f"clip {clip_id}: {path} now decodes to {len(clip.frames)} frames, the store has {t} "
                             "(the file changed since extraction?)")
        return clip.frames

    return read


def _groups(store, clip_ids, batch_size, errors, progress, source="crop", frames_of=None):
    """Yield lists of (clip_id, inputs, mask, distinct, spread) holding about ``batch_size``
    distinct face inputs (:func:`distinct_crops`)."""
    group, frames = [], 0
    for clip_id in tqdm(clip_ids, desc="embed", unit="clip", disable=not progress):
        try:
            arrays = read_clip(store, clip_id)
            faces, found = arrays["faces"], arrays["face_found"].astype(bool)
            if faces.ndim != 4 or faces.shape[-1] != 3 or len(found) != len(faces):
                raise StoreError(f"clip {clip_id}: faces {faces.shape} / face_found {found.shape} malformed")
            whole = frames_of(clip_id, len(found)) if frames_of is not None else None
        except StoreError as exc:
            errors.append({"clip_id": clip_id, "error": str(exc)})
            continue
        faces, found = face_inputs_of(source, faces, found, whole, faces.shape[1])
        distinct, spread = distinct_crops(faces, found)
        group.append((clip_id, faces, found, distinct, spread))
        frames += len(distinct)
        if frames >= batch_size:
            yield group
            group, frames = [], 0
    if group:
        yield group


def distinct_crops(faces: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frame positions of the found crops that differ from the previous found crop, (n_found,)
    position of each found crop among those): a still image's T identical crops, or the repeated
    frames of a short clip, go through the encoder once and their rows are copies."""
    pos = np.flatnonzero(found)
    changed = [True] + [not np.array_equal(faces[a], faces[b]) for a, b in zip(pos[1:], pos[:-1])]
    keep, spread = distinct_frames(np.cumsum(changed[:len(pos)]))  # a run id per found crop
    return pos[keep], spread


def _embed_group(encoder: nn.Module, group, out_dir: Path, *, masks: bool = False) -> None:
    """Run the distinct face inputs of a group of clips in one batch and write one file per clip
    (and its mask file with ``masks``; the embedding is renamed into place last)."""
    crops = [faces[distinct] for _, faces, _, distinct, _ in group]
    stacked = np.concatenate(crops) if crops else np.zeros((0,))
    feats = None
    if len(stacked):
        x = torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, S, S)
        feats = encoder(x).float().cpu().numpy()  # (N, D)
    dim = feats.shape[1] if feats is not None else int(encoder.out_dim)
    start = 0
    for clip_id, faces, found, distinct, spread in group:
        out = np.zeros((len(faces), dim), np.float16)  # (T, D); zero rows where no face
        if len(distinct):
            out[found] = feats[start:start + len(distinct)][spread]
            start += len(distinct)
        if masks:
            atomic_write(mask_file(out_dir, clip_id), lambda fh: np.save(fh, np.asarray(found, bool)), binary=True)
        atomic_write(out_dir / f"{clip_id}.npy", lambda fh: np.save(fh, out), binary=True)
