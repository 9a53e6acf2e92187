"""Cache frozen frame-encoder features for every clip of a feature store.

``STORE/embeddings/<name>/<clip_id>.npy`` holds ``(T, out_dim) float16``: one row per sampled
frame, computed from the clip's ``faces`` array; rows where ``face_found`` is False are zeros
(the mask stays in the clip's ``face_found``); identical crops of one clip (a still image's
copies) are encoded once. ``meta.json`` beside them records the encoder
and the feature size; ``errors.csv`` lists clips that could not be embedded (they are skipped,
the job goes on). The job is resumable: existing files are kept unless ``force``; every file is
written to a temporary name and renamed, so a killed run never leaves a partial file.
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


def embeddings_dir(store: str | Path, name: str) -> Path:
    """Folder of the cached embeddings called ``name`` inside ``store``."""
    return Path(store) / "embeddings" / name


def cache_embeddings(store: str | Path, *, encoder: str | nn.Module = "faceapi", name: str | None = None,
                     batch_size: int = 64, force: bool = False, progress: bool = True) -> Path:
    """Embed the faces of every ok clip of ``store``; returns the embeddings folder.

    encoder: a :data:`femo.models.frames.FRAME_ENCODERS` name (built frozen, default weights)
    or a module mapping (N, 3, S, S) float in [0, 1] to (N, D) with an ``out_dim`` attribute.
    name: folder name (default: the encoder's ``name``). batch_size: frames per forward pass.
    """
    if isinstance(encoder, str):
        encoder = build_frame_encoder(encoder, freeze="frozen")
    name = name or getattr(encoder, "name", None)
    if not name:
        raise ValueError("cache_embeddings: pass name= for an encoder without a .name attribute")
    out_dir = embeddings_dir(store, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    clip_ids = [str(c) for c in ok_clips(read_index(store))["clip_id"]]
    todo = [c for c in clip_ids if force or not (out_dir / f"{c}.npy").is_file()]
    errors: list[dict[str, str]] = []
    encoder.eval()
    with torch.inference_mode():
        for group in _groups(store, todo, batch_size, errors, progress):
            _embed_group(encoder, group, out_dir)
    atomic_write_text(out_dir / "meta.json", json.dumps(
        {"encoder": name, "out_dim": int(getattr(encoder, "out_dim", 0)), "dtype": "float16",
         "n_clips": len(clip_ids), "n_failed": len(errors)}, indent=2))
    if errors:
        atomic_write_text(out_dir / "errors.csv", pd.DataFrame(errors).to_csv(index=False))
    return out_dir


def _groups(store, clip_ids, batch_size, errors, progress):
    """Yield lists of (clip_id, faces, face_found, distinct, spread) holding about ``batch_size``
    distinct found frames (:func:`distinct_crops`)."""
    group, frames = [], 0
    for clip_id in tqdm(clip_ids, desc="embed", unit="clip", disable=not progress):
        try:
            arrays = read_clip(store, clip_id)
            faces, found = arrays["faces"], arrays["face_found"].astype(bool)
            if faces.ndim != 4 or faces.shape[-1] != 3 or len(found) != len(faces):
                raise StoreError(f"clip {clip_id}: faces {faces.shape} / face_found {found.shape} malformed")
        except StoreError as exc:
            errors.append({"clip_id": clip_id, "error": str(exc)})
            continue
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


def _embed_group(encoder: nn.Module, group, out_dir: Path) -> None:
    """Run the distinct found frames of a group of clips in one batch and write one file per clip."""
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
        atomic_write(out_dir / f"{clip_id}.npy", lambda fh: np.save(fh, out), binary=True)
