"""Defaults a bare ``femo train STORE --out RUN`` can be trusted with: the test protocol and the face path.

* Protocol: the store's ``split == test`` rows when it has a ``split`` column, else its first fold
  (:func:`default_fold`), said in the output.
* Face path: the best pretrained face encoder that is installed (:data:`FACE_ENCODERS`, best
  first), as cached embeddings in ``STORE/embeddings/<name>`` computed on first use with progress;
  else ImageNet weights for the ResNet when they are in the torch hub cache; a frozen encoder
  without pretrained weights (random features) is refused (:class:`FacePathError`). When the
  store's clips are all stills and mediapipe missed the face in many of them, the output says
  so and names ``--embeddings <name>@frame`` (:func:`crop_hint`): such images are often face crops
  already, and the default reads only the aligned crops it found.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pandas as pd

from femo.config import ModelConfig

#: Pretrained face encoders for the default face path, best first (names of
#: :data:`femo.models.frames.FRAME_ENCODERS`). The first one whose weights are installed is used.
#: ``fer_vgg`` ships with femo and reads mediapipe's aligned crops better than face-api.js on real
#: faces (FER2013 private_test crops, benchmarks/fer2013_crops.py: linear-probe UAR 0.589 vs 0.453).
FACE_ENCODERS: tuple[str, ...] = ("fer_vgg", "faceapi", "fer_xception")


class FacePathError(ValueError):
    """The face modality would run on a frozen encoder with no pretrained weights (random features)."""


def default_fold(index: pd.DataFrame, fold: int | None) -> tuple[int | None, str]:
    """(test fold to use, note for the user): ``fold`` itself when given or when the index has a
    ``split`` column; the smallest value of its ``fold`` column otherwise (note says so)."""
    if fold is not None or "split" in index.columns or "fold" not in index.columns:
        return fold, ""
    folds = sorted(int(f) for f in pd.to_numeric(index["fold"], errors="coerce").dropna().unique())
    if not folds:
        return fold, ""
    return folds[0], (f"no 'split' column: testing on fold {folds[0]} of {folds} (the others train; "
                      "choose another with --fold K, or every fold with --folds all)")


def installed_face_encoder() -> str | None:
    """The first of :data:`FACE_ENCODERS` whose weights load, or None."""
    from femo.models.frames import build_frame_encoder

    for name in FACE_ENCODERS:
        try:
            build_frame_encoder(name, freeze="frozen")
        except FileNotFoundError:  # MissingModelError / MissingWeightsError: not installed
            continue
        return name
    return None


def imagenet_weights(frame_encoder: str) -> str | None:
    """The torchvision DEFAULT weights name of ``frame_encoder`` when their file is already in the
    torch hub cache (never downloaded), else None."""
    import torch
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(frame_encoder).DEFAULT
    except ValueError:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    return weights.name if path.is_file() else None


def crop_hint(store: str | Path, name: str, *, below: float = 0.9) -> str:
    """A note when every ok clip of ``store`` is a still (duration 0) and the face was found in
    fewer than ``below`` of them, naming the whole-frame embedding; "" otherwise."""
    from femo.data.store import ok_clips, read_index

    index = ok_clips(read_index(store))
    if not len(index) or not {"face_ratio", "duration"} <= set(index.columns):
        return ""
    stills = pd.to_numeric(index["duration"], errors="coerce").fillna(-1).eq(0).all()
    found = float((pd.to_numeric(index["face_ratio"], errors="coerce").fillna(0) > 0).mean())
    if not stills or found >= below:
        return ""
    return (f"{store}: a face was found in {found:.0%} of the images; the others carry no face input. If the "
            f"images are face crops already (as in FER2013), --embeddings {name}@frame embeds every whole image "
            f"(computed on first use; or ahead: femo extract MANIFEST --out STORE --embed {name}@frame)")


def ensure_embeddings(store: str | Path, name: str, *, progress: bool = True) -> Path:
    """``STORE/embeddings/<name>``, computing what is missing (resumable, with a progress bar)."""
    from femo.data.store import ok_clips, read_index
    from femo.features.embed import cache_embeddings, embeddings_dir

    folder = embeddings_dir(store, name)
    ids = ok_clips(read_index(store))["clip_id"].astype(str)
    if (folder / "meta.json").is_file() and all((folder / f"{c}.npy").is_file() for c in ids):
        return folder
    return cache_embeddings(store, encoder=name, progress=progress)


def untrained_frozen(model: ModelConfig) -> bool:
    """True when the model's face path is a frozen torchvision CNN (or a frozen ``crop_cnn``, which
    has no pretrained weights) with random weights."""
    return ("face" in model.modalities and not model.embeddings and model.freeze == "frozen"
            and (model.frame_encoder.startswith("resnet") or model.frame_encoder == "crop_cnn")
            and not model.frame_weights)


def resolve_face_path(store: str | Path, model: ModelConfig, *, auto: bool, progress: bool = True,
                      log: Callable[[str], None] = print) -> ModelConfig:
    """The model with a trustworthy face path (see the module docstring).

    auto: the user chose no frame encoder or embeddings, so the best installed encoder may be
    used. Raises :class:`FacePathError` explaining the choices when only random frozen features
    are left.
    """
    if not untrained_frozen(model):
        return model
    if auto:
        name = installed_face_encoder()
        if name is not None:
            folder = ensure_embeddings(store, name, progress=progress)
            log(f"face path: cached {name} embeddings ({folder}), the best installed pretrained face encoder")
            hint = crop_hint(store, name)
            if hint:
                log(hint)
            return replace(model, embeddings=name)
    weights = imagenet_weights(model.frame_encoder)
    if weights is not None:
        log(f"face path: {model.frame_encoder} with {weights} weights from the torch hub cache (frozen)")
        return replace(model, frame_weights=weights)
    raise FacePathError(
        f"the face path would be a frozen {model.frame_encoder} with no pretrained weights, whose "
        "features are random (a model trained on them stays near chance). Install face-expression "
        "weights (`femo models fetch --face-weights`; then cached embeddings are used), pass "
        "--embeddings NAME (cached in STORE/embeddings/NAME) or --frame-weights FILE_OR_ENUM, "
        "train the CNN with --freeze last-block or --freeze full, or leave the face out with "
        "--modalities landmarks,audio")
