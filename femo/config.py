"""Shared constants and the frozen configuration dataclasses: the one source of femo's defaults.

No I/O happens at import. :class:`DataConfig` (model inputs), :class:`ModelConfig` (the net) and
:class:`TrainConfig` (optimisation) live here so that a run's full configuration is serialised in
one place (``RUN/config.json``, :mod:`femo.training.runs`); the extraction defaults
(:class:`femo.features.clip.ExtractConfig`) and the CLIs read their defaults from the constants
below.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Canonical emotion classes, in DFEW's label order (DFEW label k is CLASSES[k-1]).
CLASSES: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")

#: Modalities a clip may carry. Sample keys follow the pattern ``<modality>`` and ``<modality>_mask``.
MODALITIES: tuple[str, ...] = ("face", "landmarks", "audio")

#: Fusion layers (:func:`femo.models.fusion.make_fusion`) and temporal blocks
#: (:func:`femo.models.temporal.make_temporal`) a :class:`ModelConfig` may name.
FUSIONS: tuple[str, ...] = ("late", "concat", "gated", "attention")
TEMPORAL_BLOCKS: tuple[str, ...] = ("mean", "gru", "transformer")

#: Audio is always analysed at this rate (Hz), mono float32.
SAMPLE_RATE: int = 16_000

#: Default number of frames sampled uniformly per clip (DFEW convention).
NUM_FRAMES: int = 16

#: Default side (pixels) of the aligned face crop.
FACE_SIZE: int = 112

#: Default pose-tracker stride (every k-th sampled frame) and pitch tracker of the extraction.
POSE_STRIDE: int = 4
PITCH_METHOD: str = "yin"

#: Default prediction window and hop (seconds) of ``femo predict`` / :class:`femo.inference.predictor.Predictor`.
WINDOW_SECONDS: float = 2.0
HOP_SECONDS: float = 0.5


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


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _parse_value(kind: str, text: str, key: str) -> Any:
    """``text`` as the annotated field type ``kind`` (a string: annotations are postponed)."""
    kind = kind.replace(" ", "")
    if kind.endswith("|None"):
        return None if text.strip().lower() in ("none", "null", "") else _parse_value(kind[:-5], text, key)
    if kind.startswith("tuple["):
        return tuple(x.strip() for x in text.split(",") if x.strip())
    try:
        if kind == "bool":
            if text.strip().lower() not in _TRUE | _FALSE:
                raise ValueError
            return text.strip().lower() in _TRUE
        return {"int": int, "float": float, "str": str}[kind](text)
    except (ValueError, KeyError):
        raise ValueError(f"option {key}={text!r}: expected {kind}") from None


def parse_options(pairs: list[str], *classes: type) -> list[dict[str, Any]]:
    """``["layers=2", "lr=1e-3"]`` -> one dict of typed values per dataclass of ``classes``.

    Each key goes to the first class with that field; its value is parsed by the field's type
    (``none`` for optional fields, commas for tuples). An unknown key or a malformed pair raises
    ValueError listing the valid keys.
    """
    out: list[dict[str, Any]] = [{} for _ in classes]
    kinds = [{f.name: str(f.type) for f in fields(cls)} for cls in classes]
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        owner = next((i for i, k in enumerate(kinds) if key in k), None)
        if not sep or owner is None:
            valid = sorted(set().union(*kinds))
            raise ValueError(f"-o {pair!r}: expected KEY=VALUE with KEY one of {valid}")
        out[owner][key] = _parse_value(kinds[owner][key], value, key)
    return out


@dataclass(frozen=True)
class DataConfig:
    """How clips are turned into model inputs.

    num_frames: frames sampled per clip (T). face_size: face crop side (S, pixels).
    audio_frames: log-mel time steps the dataset resamples every clip to (A).
    speaker_norm: z-score each speaker's (``subject``'s) audio features with that speaker's own
    statistics over all of its clips in the split (see ``femo.data.speaker_norm``). Test speakers
    are normalised with their own unlabelled audio, so a run with it is transductive.
    """

    num_frames: int = NUM_FRAMES
    face_size: int = FACE_SIZE
    audio_frames: int = 128
    sample_rate: int = SAMPLE_RATE
    classes: tuple[str, ...] = field(default=CLASSES)
    speaker_norm: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`femo.models.net.FemoNet`.

    modalities: which of MODALITIES the net uses. dim: embedding width D of every modality.
    temporal: per-modality temporal block (``mean | gru | transformer``).
    fusion: ``late | concat | gated | attention``. frame_encoder / frame_weights / freeze:
    the per-frame CNN (see ``femo.models.frames.build_frame_encoder``) when faces are used raw.
    embeddings: name of cached frame embeddings under ``STORE/embeddings/`` (replaces the CNN).
    embedding_dim: their width (filled in from the store by :func:`femo.training.loop.train`).
    landmark_dim: geometry vector width G (None = ``femo.features.geometry.GEOMETRY_DIM``).
    modality_dropout: probability of dropping each present modality of a training sample.
    audio_input: what the audio encoder reads (``femo.models.audio.AUDIO_INPUTS``): ``logmel``
    (CNN on the log-mel + prosody), ``functionals`` (MLP on the store's openSMILE functionals) or
    ``both``. functionals_dim: their width F (filled in from the store by training).
    audio_members: K > 1 makes the functionals MLP an ensemble of K members, each trained on a random
    share of the samples, averaged at inference (``femo.models.audio``; use with ``temporal="mean"``).
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
    audio_input: str = "logmel"
    functionals_dim: int | None = None
    audio_members: int = 1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of :func:`femo.training.loop.train`.

    lr: peak AdamW learning rate, reached after ``warmup_epochs`` of linear warm-up, then cosine decay
    to zero. loss: ``ce`` (cross-entropy on the label) or ``kl`` (KL divergence to the annotators'
    vote distribution; equals ``ce`` when the manifest has no ``vote_*`` columns). balance:
    ``weights`` (inverse-frequency loss weights), ``sampler`` (class-balanced sampling) or ``none``.
    aux_weight: weight of the per-modality heads' loss (keeps each modality's head meaningful).
    augment: flip/brightness jitter of training face crops (no effect on cached embeddings).
    cache: keep decoded samples in memory across epochs (see ``FeatureDataset``).
    device: ``cpu``, ``cuda`` or ``auto``; amp only ever applies on CUDA.
    fold_workers: processes that train the folds of a k-fold run side by side (on CPU each gets
    ``cores // fold_workers`` torch threads); 1 = one fold after another in this process.
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
    fold_workers: int = 1
