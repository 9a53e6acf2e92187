"""Inference on user videos: ``femo.load(RUN)`` -> :class:`Predictor`.

``Predictor.timeline(path, window=2.0, hop=0.5)`` streams the video once (see
:mod:`femo.timeline`) and returns a :class:`femo.predict_output.Timeline`;
``predict_timeline`` gives it as a DataFrame (one row per window) and ``predict_clip`` as one row
(the clip-level summary: mean of the window probabilities; a clip shorter than ``window`` is one
window over the whole clip, exactly how training clips were sampled).

Model split. The run's :class:`~femo.models.net.FemoNet` is loaded from ``RUN/best.pt`` and cut
in two: the per-frame CNN (run once per kept frame, so overlapping windows share it) and the
*head* -- the same FemoNet on frame embeddings (``face_emb``), holding every other weight. Runs
trained on cached embeddings (``ModelConfig.embeddings``) get their frame CNN rebuilt by that
name from :data:`femo.models.frames.FRAME_ENCODERS` with its default (cached) weights.

Preprocessing equals training: crops at the store's face size, resized to the model's as the
dataset does, :func:`femo.features.geometry.geometry_vector` for landmarks, and
:func:`femo.data.dataset.audio_inputs` on each window's own audio features. Extraction settings
(face crop size, pose stride, pitch tracker, max frame side) come from the run's store
(``store.json``) when it is reachable, else from the defaults of :class:`femo.extract.ExtractConfig`.

Main face: the face tracker's rule (:mod:`femo.features.face`), applied per chunk of ``chunk``
kept frames: among the faces the full-frame detector finds, the first one chosen maximises
sqrt(area) x (1 - distance of its centre from the frame centre), then the face nearest the
previous box is followed. When the detector finds no face in a whole chunk (faces under ~15% of
the frame), the tracker's tile search keeps the first face it meets scanning tiles left to right,
top to bottom; with several such small faces that need not be the largest one.
"""
from __future__ import annotations

import dataclasses
import json
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from femo.config import DataConfig, ModelConfig, from_dict
from femo.predict_output import Timeline
from femo.train import CheckpointError

#: Name given to the frame-embedding input of the head (a FemoNet with ``embeddings`` set).
HEAD_EMBEDDINGS = "frames"


class RunError(ValueError):
    """The --run folder is missing, incomplete, or not usable for inference; names the path."""


class ClassMismatchError(RunError):
    """The checkpoint's classes differ from the run's config, its heads or the expected classes."""


@dataclass(frozen=True)
class RunModel:
    """A run split for inference (see module docstring).

    head: FemoNet on ``face_emb`` (eval mode). frames: the per-frame CNN, (N, 3, S, S) float in
    [0, 1] -> (N, D), or None without a face modality. crop_size: store crop side (px).
    extraction: pose_stride, pitch, max_side of the run's store.
    """

    head: torch.nn.Module
    frames: torch.nn.Module | None
    classes: tuple[str, ...]
    data: DataConfig
    crop_size: int
    extraction: dict
    run: Path


def _read_config(run: Path) -> dict:
    if not run.is_dir():
        raise RunError(f"{run}: run folder not found")
    path = run / "config.json"
    if not path.is_file():
        folds = sorted(p.name for p in run.glob("fold_*") if (p / "best.pt").is_file())
        hint = f"; this is a k-fold run: pass one fold, e.g. {run / folds[0]}" if folds else \
            "; train one with `femo train STORE --out RUN`"
        raise RunError(f"{run}: not a run folder (config.json missing){hint}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: unreadable run config ({exc})") from exc


def _check_classes(ckpt: dict, config: dict, expected, run: Path) -> tuple[str, ...]:
    classes = tuple(ckpt["classes"])
    ckpt_path = run / "best.pt"
    if "classes" in config and list(config["classes"]) != list(classes):
        raise ClassMismatchError(f"{ckpt_path}: trained with classes {list(classes)} but {run / 'config.json'} "
                                 f"lists {list(config['classes'])}; the checkpoint belongs to another run")
    heads = {k: v.shape[0] for k, v in ckpt["model"].items() if k.startswith("heads.") and k.endswith(".weight")}
    if any(n != len(classes) for n in heads.values()):
        raise ClassMismatchError(f"{ckpt_path}: output layers have {sorted(set(heads.values()))} classes but "
                                 f"the checkpoint lists {len(classes)} {list(classes)}")
    if expected is not None and list(expected) != list(classes):
        raise ClassMismatchError(f"{ckpt_path}: trained with classes {list(classes)}, expected {list(expected)}")
    return classes


def _extraction(config: dict, data: DataConfig) -> tuple[int, dict]:
    """(crop size, extraction settings) from the run's store when reachable, else the defaults."""
    from femo.extract import ExtractConfig

    default = ExtractConfig()
    settings = {"pose_stride": default.pose_stride, "pitch": default.pitch, "max_side": default.max_side}
    store = Path(config.get("store", ""))
    if config.get("store") and (store / "store.json").is_file():
        meta = json.loads((store / "store.json").read_text())
        settings.update(meta.get("extra", {}).get("extraction", {}))
        return int(meta.get("face_size", data.face_size)), settings
    return data.face_size, settings


def load_run_model(run: str | Path, *, classes=None, device: str = "cpu") -> RunModel:
    """Load RUN/best.pt and split it; raises :class:`RunError`, :class:`ClassMismatchError` or
    :class:`femo.train.CheckpointError` naming the file and the problem."""
    from femo.models.net import FemoNet
    from femo.train import load_checkpoint, model_config_from

    run = Path(run)
    config = _read_config(run)
    if not (run / "best.pt").is_file():
        raise RunError(f"{run / 'best.pt'}: checkpoint missing; the run did not finish an epoch")
    ckpt = load_checkpoint(run / "best.pt")
    names = _check_classes(ckpt, config, classes, run)
    cfg = model_config_from(ckpt)
    if cfg.frame_encoder.startswith("resnet"):  # every weight is in the checkpoint: no ImageNet file needed
        cfg = dataclasses.replace(cfg, frame_weights=None)
    data = from_dict(DataConfig, {**config.get("data", {}), "classes": names})
    net = FemoNet(cfg, len(names))
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{run / 'best.pt'}: weights do not fit the model in its config ({exc})") from exc
    head, frames = _split(net, cfg, names)
    crop, extraction = _extraction(config, data)
    return RunModel(head.to(device).eval(), None if frames is None else frames.to(device).eval(),
                    names, data, crop, extraction, run)


def _split(net, cfg: ModelConfig, classes) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(head on face embeddings, frame CNN or None)."""
    from femo.models.frames import FRAME_ENCODERS, build_frame_encoder
    from femo.models.net import FemoNet

    if "face" not in cfg.modalities:
        return net, None
    if cfg.embeddings:
        if cfg.embeddings not in FRAME_ENCODERS:
            raise RunError(f"model trained on cached embeddings {cfg.embeddings!r}, which is not a frame encoder "
                           f"name ({', '.join(FRAME_ENCODERS)}); inference cannot recompute them")
        return net, build_frame_encoder(cfg.embeddings, freeze="frozen")
    frames = net.branches["face"].encoder.frames
    head_cfg = dataclasses.replace(cfg, embeddings=HEAD_EMBEDDINGS, embedding_dim=int(frames.out_dim))
    head = FemoNet(head_cfg, len(classes), frame_encoder=None)
    prefix = "branches.face.encoder.frames."
    head.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith(prefix)})
    return head, frames


class Predictor:
    """Runs a trained model on video files; see the module docstring. Use as a context manager
    (or call :meth:`close`) to release the mediapipe landmarkers.

    chunk: kept frames per face-tracking chunk (the windows ready after each chunk go through the
    head in one batch). log_path: where mediapipe's native log lines go (default: discarded).
    """

    def __init__(self, model: RunModel, *, chunk: int = 16, log_path: str | Path | None = None) -> None:
        self.model, self.chunk, self.log_path = model, chunk, log_path
        self._featurizer = None
        self.last_fusion_seconds = 0.0

    @classmethod
    def from_run(cls, run: str | Path, *, classes=None, device: str = "cpu", **kwargs) -> Predictor:
        """Load ``run`` (a run folder with config.json and best.pt); ``classes``: expected class list."""
        return cls(load_run_model(run, classes=classes, device=device), **kwargs)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, in probability-column order."""
        return self.model.classes

    def close(self) -> None:
        """Release the landmarkers (they are created again on the next call)."""
        if self._featurizer is not None:
            self._finalizer()
            self._featurizer = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def featurizer(self):
        """The :class:`femo.timeline.FrameFeaturizer` (created on first use)."""
        from femo.timeline import FrameFeaturizer

        if self._featurizer is None:
            m = self.model
            stride = int(m.extraction["pose_stride"]) if "landmarks" in m.head.modalities else None
            self._featurizer = FrameFeaturizer(frame_encoder=m.frames, crop_size=m.crop_size,
                                               model_size=m.data.face_size, pose_stride=stride,
                                               log_path=self.log_path)
            # notebooks rarely close: release the native landmarkers before interpreter teardown
            self._finalizer = weakref.finalize(self, self._featurizer.close)
        return self._featurizer

    def timeline(self, path: str | Path, *, window: float = 2.0, hop: float = 0.5) -> Timeline:
        """Predict every window of the video ``path``; raises :class:`femo.data.decode.MediaError`."""
        from femo.predict_stream import run_timeline

        return run_timeline(self, Path(path), window=window, hop=hop)

    def predict_timeline(self, path: str | Path, window: float = 2.0, hop: float = 0.5) -> pd.DataFrame:
        """One row per window: start, end, label, p_<class>..., face_found, face_x0..face_y1, audio."""
        return self.timeline(path, window=window, hop=hop).to_frame()

    def predict_clip(self, path: str | Path, *, window: float = 2.0, hop: float = 0.5) -> pd.DataFrame:
        """One row: file, duration, label, p_<class>... (mean over windows), windows, face_found, audio."""
        tl = self.timeline(path, window=window, hop=hop)
        row = {"file": tl.file, "duration": tl.duration, "label": tl.label}
        row.update({f"p_{c}": float(p) for c, p in zip(tl.classes, tl.summary_probabilities)})
        row.update(windows=len(tl.spans), face_found=float(tl.face_found.mean()), audio=bool(tl.audio.any()))
        return pd.DataFrame([row])

    @torch.inference_mode()
    def probabilities(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """(B, C) softmax of the head on a sample-dict batch with ``face_emb``; float64 numpy."""
        t0 = time.perf_counter()
        device = next(self.model.head.parameters()).device
        logits = self.model.head({k: v.to(device) for k, v in batch.items()})["logits"].float().cpu()
        self.last_fusion_seconds = time.perf_counter() - t0
        return torch.softmax(logits, dim=1).double().numpy()
