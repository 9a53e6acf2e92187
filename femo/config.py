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
