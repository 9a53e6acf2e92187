"""A synthetic voice whose prosody follows an emotion, for the synthetic dataset.

The voice is a harmonic source (a sawtooth-like sum of harmonics up to 7 kHz) driven by a pitch
contour, chopped into syllables by an amplitude envelope, then mixed with white noise at a given
SNR. Each emotion sets (:data:`PROSODY`): pitch level (x the speaker's base f0), pitch range
(semitones of contour movement), tempo (syllables per second), energy (relative loudness), a
spectral tilt (harmonic roll-off: lower = brighter, as in angry speech) and a final pitch glide
(semitones over the clip). Intensity interpolates every parameter between neutral and the emotion.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prosody:
    """Prosody of one emotion at full intensity (see the module docstring for units)."""

    level: float
    range_st: float
    tempo: float
    energy: float
    tilt: float
    glide_st: float


PROSODY: dict[str, Prosody] = {
    "neutral": Prosody(level=1.00, range_st=1.5, tempo=4.0, energy=0.50, tilt=1.2, glide_st=-1.0),
    "happy": Prosody(level=1.30, range_st=5.0, tempo=5.0, energy=0.80, tilt=1.0, glide_st=1.0),
    "sad": Prosody(level=0.85, range_st=0.7, tempo=2.5, energy=0.30, tilt=1.6, glide_st=-2.5),
    "angry": Prosody(level=1.15, range_st=3.0, tempo=6.0, energy=1.00, tilt=0.7, glide_st=-1.5),
    "surprise": Prosody(level=1.45, range_st=7.0, tempo=4.5, energy=0.85, tilt=1.0, glide_st=5.0),
    "disgust": Prosody(level=0.92, range_st=2.0, tempo=3.0, energy=0.55, tilt=1.3, glide_st=-3.0),
    "fear": Prosody(level=1.35, range_st=4.0, tempo=6.5, energy=0.60, tilt=1.2, glide_st=2.0),
}
#: Speaker base f0 (Hz) by the ``sex`` column.
BASE_F0: dict[str, float] = {"f": 210.0, "m": 120.0}


def prosody_at(emotion: str, intensity: float) -> Prosody:
    """Prosody of ``emotion`` interpolated from neutral by ``intensity`` (0 = neutral, 1 = full)."""
    if emotion not in PROSODY:
        raise ValueError(f"unknown emotion {emotion!r}; known: {sorted(PROSODY)}")
    neutral, target = PROSODY["neutral"], PROSODY[emotion]
    mix = {f: getattr(neutral, f) + intensity * (getattr(target, f) - getattr(neutral, f))
           for f in Prosody.__dataclass_fields__}
    return Prosody(**mix)


def _syllable_envelope(t: np.ndarray, tempo: float, rng: np.random.Generator) -> np.ndarray:
    """(N,) amplitude envelope in [0, 1]: syllables of jittered length at ``tempo`` per second."""
    env = np.zeros_like(t)
    start = rng.uniform(0.02, 0.15)
    while start < t[-1]:
        length = rng.uniform(0.55, 0.85) / tempo
        inside = (t >= start) & (t < start + length)
        env[inside] = np.sin(np.pi * (t[inside] - start) / length) ** 0.7
        start += length + rng.uniform(0.15, 0.45) / tempo + (0.2 if rng.random() < 0.12 else 0.0)
    return env


def synth_voice(*, emotion: str, intensity: float, sex: str, seconds: float, snr_db: float,
                rng: np.random.Generator, speaker_f0: float = 1.0, sample_rate: int = 16_000) -> np.ndarray:
    """One utterance-like sound: (round(seconds * sample_rate),) float32 in [-1, 1].

    emotion/intensity: prosody (see :func:`prosody_at`). sex: "f" | "m" (base pitch).
    snr_db: signal-to-noise ratio of the added white noise, dB. speaker_f0: per-speaker pitch
    factor. rng: the only source of randomness (syllable timing, contour, noise).
    """
    pro = prosody_at(emotion, intensity)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    # pitch contour in semitones: slow wobble at a third of the syllable rate + a final glide
    phase = rng.uniform(0, 2 * np.pi, size=2)
    wobble = 0.6 * np.sin(2 * np.pi * pro.tempo / 3 * t + phase[0]) + 0.4 * np.sin(2 * np.pi * pro.tempo / 1.7 * t + phase[1])
    semitones = pro.range_st * wobble + pro.glide_st * (t / max(seconds, 1e-6)) ** 2
    f0 = BASE_F0.get(sex, 160.0) * speaker_f0 * pro.level * 2.0 ** (semitones / 12.0)  # (N,) Hz
    theta = 2 * np.pi * np.cumsum(f0) / sample_rate
    source = np.zeros(n)
    for h in range(1, 40):
        if h * f0.max() >= 0.45 * sample_rate:
            break
        source += np.sin(h * theta) / h ** pro.tilt
    voice = source * _syllable_envelope(t, pro.tempo, rng) * pro.energy
    power = float(np.mean(voice ** 2)) or 1e-8
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), size=n)
    out = voice + noise
    rms = float(np.sqrt(np.mean(out ** 2)))
    # loudness carries the emotion's energy: RMS 0.15 at energy 1 (about -16 dBFS)
    return np.clip(out * (0.15 * pro.energy / rms if rms > 0 else 1.0), -1.0, 1.0).astype(np.float32)
