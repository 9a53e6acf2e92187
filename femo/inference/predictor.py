"""Inference on user videos: ``femo.load(RUN)`` -> :class:`Predictor`.

``Predictor.timeline(path, window=WINDOW_SECONDS, hop=HOP_SECONDS)`` streams the video once (see
:mod:`femo.inference.stream`) and returns a :class:`femo.inference.timeline.Timeline`;
``predict_timeline`` gives it as a DataFrame (one row per window) and ``predict_clip`` as one row
(the clip-level summary: mean of the window probabilities; a clip shorter than ``window`` is one
window over the whole clip, exactly how training clips were sampled).

Model split. The run's :class:`~femo.models.net.FemoNet` is loaded from ``RUN/best.pt``
(:meth:`femo.training.runs.RunFolder.load_model`) and cut
in two: the per-frame CNN (run once per kept frame, so overlapping windows share it) and the
*head* -- the same FemoNet on frame embeddings (``face_emb``), holding every other weight. Runs
trained on cached embeddings (``ModelConfig.embeddings``) get their frame CNN rebuilt by that
name from :data:`femo.models.frames.FRAME_ENCODERS` with its default (cached) weights.

Preprocessing equals training: crops at the store's face size, resized to the model's as the
dataset does, :func:`femo.features.geometry.geometry_vector` for landmarks, and
:func:`femo.data.dataset.audio_inputs` on each window's own audio features. Extraction settings
(face crop size, pose stride, pitch tracker, max frame side) are the ones recorded in
``RUN/config.json`` at training time (:attr:`femo.training.runs.RunFolder.extraction`); the store
is never read.

Main face: the face tracker's rule (:mod:`femo.features.face`), kept for the whole video
(:mod:`femo.inference.tracking`): among the faces the full-frame detector finds, the first one
chosen maximises sqrt(area) x (1 - distance of its centre from the frame centre), then the face
nearest the previous box is followed, across chunks. When no face has been found for a whole
chunk (faces under ~15% of the frame), a tile search (at most one per 2 s of video) keeps the
first face it meets scanning tiles left to right, top to bottom; with several such small faces
that need not be the largest one. ``reference=True`` restarts the choice every ``chunk`` kept
frames, as before.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from femo.config import HOP_SECONDS, WINDOW_SECONDS, DataConfig, ModelConfig, from_dict
from femo.inference.timeline import Timeline
from femo.training.runs import RunError, RunFolder

#: Name given to the frame-embedding input of the head (a FemoNet with ``embeddings`` set).
HEAD_EMBEDDINGS = "frames"


@dataclass(frozen=True)
class RunModel:
    """A run split for inference (see module docstring).

    head: FemoNet on ``face_emb`` (eval mode). frames: the per-frame CNN, (N, 3, S, S) float in
    [0, 1] -> (N, D), or None without a face modality. crop_size: side (px) of the crops the run
    was trained on (its recorded extraction face size).
    extraction: the run's extraction settings (:attr:`femo.training.runs.RunFolder.extraction`).
    face_source: what the frame CNN reads (:data:`femo.features.embed.SOURCES`): ``crop`` (the
    aligned face crop), or for runs trained on ``<encoder>@frame`` / ``@fallback`` embeddings the
    whole frame (letterboxed), always or where no face is found, as those embeddings were made.
    """

    head: torch.nn.Module
    frames: torch.nn.Module | None
    classes: tuple[str, ...]
    data: DataConfig
    crop_size: int
    extraction: dict
    run: Path
    face_source: str = "crop"


def load_run_model(run: str | Path, *, classes=None, device: str = "cpu") -> RunModel:
    """Load RUN/best.pt and split it; raises :class:`~femo.training.runs.RunError`,
    :class:`~femo.training.runs.ClassMismatchError` or :class:`~femo.training.runs.CheckpointError`
    naming the file and the problem."""
    folder = RunFolder(run)
    net = folder.load_model(classes=classes)
    names = folder.classes
    data = from_dict(DataConfig, {**folder.config.get("data", {}), "classes": names})
    head, frames = _split(net, net.config, names)
    if net.absent_modalities:  # said once per loaded run: these inputs are ignored even when a file has them
        print(f"{folder.path}: {', '.join(net.absent_modalities)} absent from every training clip; "
              "masked at inference", file=sys.stderr)
    if data.speaker_norm:  # said once per loaded run
        print(f"{folder.path}: trained with per-speaker audio normalisation; femo predict scores each video's "
              "audio unnormalised (no speaker statistics at inference)", file=sys.stderr)
    extraction = folder.extraction
    from femo.features.embed import split_name

    source = split_name(net.config.embeddings)[1] if net.config.embeddings and frames is not None else "crop"
    if source != "crop":  # said once per loaded run
        print(f"{folder.path}: trained on {net.config.embeddings} embeddings; the frame CNN reads the whole "
              f"frame{' where no face is found' if source == 'fallback' else ''}", file=sys.stderr)
    return RunModel(head.to(device).eval(), None if frames is None else frames.to(device).eval(),
                    names, data, int(extraction["face_size"]), extraction, folder.path, source)


def _split(net, cfg: ModelConfig, classes) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(head on face embeddings, frame CNN or None)."""
    from femo.models.frames import FRAME_ENCODERS, build_frame_encoder
    from femo.models.net import FemoNet

    if "face" not in cfg.modalities:
        return net, None
    if cfg.embeddings:
        from femo.features.embed import split_name

        try:
            encoder, _ = split_name(cfg.embeddings)
        except ValueError as exc:
            raise RunError(f"model trained on cached embeddings: {exc}") from None
        if encoder not in FRAME_ENCODERS:
            raise RunError(f"model trained on cached embeddings {cfg.embeddings!r}, which is not a frame encoder "
                           f"name ({', '.join(FRAME_ENCODERS)}); inference cannot recompute them")
        return net, build_frame_encoder(encoder, freeze="frozen")
    frames = net.branches["face"].encoder.frames
    head_cfg = dataclasses.replace(cfg, embeddings=HEAD_EMBEDDINGS, embedding_dim=int(frames.out_dim))
    head = FemoNet(head_cfg, len(classes), frame_encoder=None)
    prefix = "branches.face.encoder.frames."
    head.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith(prefix)})
    head.absent_modalities = net.absent_modalities
    return head, frames


class Predictor:
    """Runs a trained model on video files; see the module docstring. Use as a context manager
    (or call :meth:`close`) to release the mediapipe landmarkers.

    chunk: kept frames per face-tracking chunk (the windows ready after each chunk go through the
    head in one batch). log_path: where mediapipe's native log lines go (default: discarded).
    """

    def __init__(self, model: RunModel, *, chunk: int = 16, log_path: str | Path | None = None,
                 reference: bool = False) -> None:
        self.model, self.chunk, self.log_path, self.reference = model, chunk, log_path, reference
        self._featurizer = self._faces = None
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
        self._close_faces()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def featurizer(self):
        """The :class:`femo.inference.tracking.StreamFeaturizer` (the reference path: the per-chunk
        :class:`femo.inference.stream.FrameFeaturizer`), created on first use."""
        from femo.inference.stream import FrameFeaturizer
        from femo.inference.tracking import StreamFeaturizer

        if self._featurizer is None:
            m = self.model
            stride = int(m.extraction["pose_stride"]) if "landmarks" in m.head.modalities else None
            kind = FrameFeaturizer if self.reference else StreamFeaturizer
            self._featurizer = kind(frame_encoder=m.frames, crop_size=m.crop_size, model_size=m.data.face_size,
                                    pose_stride=stride, log_path=self.log_path, face_source=m.face_source)
            # notebooks rarely close: release the native landmarkers before interpreter teardown
            self._finalizer = weakref.finalize(self, self._featurizer.close)
        return self._featurizer

    def face_featurizer(self, max_faces: int):
        """The :class:`femo.inference.faces.MultiFaceFeaturizer` for ``max_faces`` faces (kept
        while ``max_faces`` stays the same)."""
        from femo.inference.faces import MultiFaceFeaturizer

        if self.reference:
            raise ValueError("--faces all has no reference path; use Predictor(reference=False)")
        if self.model.face_source != "crop":
            raise ValueError(f"{self.model.run}: trained on whole-frame face inputs ({self.model.face_source}), "
                             "which do not separate people; --faces all needs a run trained on face crops")
        if self._faces is None or self._faces.max_faces != max_faces:
            self._close_faces()
            m = self.model
            stride = int(m.extraction["pose_stride"]) if "landmarks" in m.head.modalities else None
            self._faces = MultiFaceFeaturizer(max_faces=max_faces, frame_encoder=m.frames, crop_size=m.crop_size,
                                              model_size=m.data.face_size, pose_stride=stride, log_path=self.log_path)
            self._faces_finalizer = weakref.finalize(self, self._faces.close)
        return self._faces

    def _close_faces(self) -> None:
        if self._faces is not None:
            self._faces_finalizer()
            self._faces = None

    def timelines(self, path: str | Path, *, window: float = WINDOW_SECONDS, hop: float = HOP_SECONDS,
                  max_faces: int = 3) -> list[Timeline]:
        """One timeline per face id (up to ``max_faces`` people, stable ids: :mod:`femo.inference.faces`),
        in id order; an empty list when no face is ever found. Raises :class:`femo.data.decode.MediaError`."""
        from femo.inference.face_timelines import run_face_timelines

        return run_face_timelines(self, Path(path), window=window, hop=hop, max_faces=max_faces)

    def timeline(self, path: str | Path, *, window: float = WINDOW_SECONDS, hop: float = HOP_SECONDS,
                 progress=None) -> Timeline:
        """Predict every window of the video ``path``; raises :class:`femo.data.decode.MediaError`.
        ``progress``: optional callable, given the video time (s) reached after each chunk."""
        from femo.inference.stream import run_timeline

        return run_timeline(self, Path(path), window=window, hop=hop, progress=progress)

    def predict_timeline(self, path: str | Path, window: float = WINDOW_SECONDS, hop: float = HOP_SECONDS) -> pd.DataFrame:
        """One row per window: start, end, label, p_<class>..., face_found, face_x0..face_y1, audio."""
        return self.timeline(path, window=window, hop=hop).to_frame()

    def predict_clip(self, path: str | Path, *, window: float = WINDOW_SECONDS, hop: float = HOP_SECONDS) -> pd.DataFrame:
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
