"""Shared constants and frozen configuration dataclasses.

No I/O happens at import. Module-specific configurations (model, training, audit)
live here too so that a run's full configuration can be serialised in one place.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Canonical emotion classes, in DFEW's label order (DFEW label k is CLASSES[k-1]).
CLASSES: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")

#: Modalities a clip may carry. Sample keys follow the pattern ``<modality>`` and ``<modality>_mask``.
MODALITIES: tuple[str, ...] = ("face", "landmarks", "audio")

#: Audio is always analysed at this rate (Hz), mono float32.
SAMPLE_RATE: int = 16_000

#: Default number of frames sampled uniformly per clip (DFEW convention).
NUM_FRAMES: int = 16


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a (possibly nested) dataclass configuration."""
    return asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys with a clear message."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown option(s) {unknown}; known: {sorted(names)}")
    return cls(**data)


@dataclass(frozen=True)
class DataConfig:
    """How clips are turned into model inputs.

    num_frames: frames sampled per clip (T). face_size: face crop side (S, pixels).
    audio_frames: log-mel time steps the dataset resamples every clip to (A).
    """

    num_frames: int = NUM_FRAMES
    face_size: int = 112
    audio_frames: int = 128
    sample_rate: int = SAMPLE_RATE
    classes: tuple[str, ...] = field(default=CLASSES)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`femo.models.net.FemoNet`.

    modalities: which of MODALITIES the net uses. dim: embedding width D of every modality.
    temporal: per-modality temporal block (``mean | gru | transformer``).
    fusion: ``late | concat | gated | attention``. frame_encoder / frame_weights / freeze:
    the per-frame CNN (see ``femo.models.frames.build_frame_encoder``) when faces are used raw.
    embeddings: name of cached frame embeddings under ``STORE/embeddings/`` (replaces the CNN).
    embedding_dim: their width (filled in from the store by ``femo.train``).
    landmark_dim: geometry vector width G (None = ``femo.features.geometry.GEOMETRY_DIM``).
    modality_dropout: probability of dropping each present modality of a training sample.
    """

    modalities: tuple[str, ...] = MODALITIES
    dim: int = 128
    temporal: str = "transformer"
    fusion: str = "gated"
    frame_encoder: str = "resnet18"
    frame_weights: str | None = None
    freeze: str = "frozen"
    embeddings: str | None = None
    embedding_dim: int | None = None
    landmark_dim: int | None = None
    layers: int = 1
    heads: int = 4
    dropout: float = 0.1
    modality_dropout: float = 0.2


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of ``femo.train.train``.

    lr: peak AdamW learning rate, reached after ``warmup_epochs`` of linear warm-up, then cosine decay
    to zero. loss: ``ce`` (cross-entropy on the label) or ``kl`` (KL divergence to the annotators'
    vote distribution; equals ``ce`` when the manifest has no ``vote_*`` columns). balance:
    ``weights`` (inverse-frequency loss weights), ``sampler`` (class-balanced sampling) or ``none``.
    aux_weight: weight of the per-modality heads' loss (keeps each modality's head meaningful).
    augment: flip/brightness jitter of training face crops (no effect on cached embeddings).
    cache: keep decoded samples in memory across epochs (see ``FeatureDataset``).
    device: ``cpu``, ``cuda`` or ``auto``; amp only ever applies on CUDA.
    """

    epochs: int = 20
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    loss: str = "ce"
    label_smoothing: float = 0.0
    balance: str = "weights"
    aux_weight: float = 0.3
    grad_clip: float = 1.0
    val_fraction: float = 0.15
    augment: bool = True
    cache: bool = False
    seed: int = 0
    num_workers: int = 0
    device: str = "cpu"
    amp: bool = True
