"""A window's audio inputs without librosa: the log-mel and prosody of :func:`femo.features.audio.audio_features`
recomputed in NumPy, for ``femo predict``.

Extraction computes audio features with librosa; its first call in a process costs about 2 CPU
seconds (scipy.signal import, numba compilation of yin's stencils), a tenth of the whole
``femo predict`` run on a 60 s clip. The head needs only ``logmel`` and ``prosody`` (not the
MFCC), so this module redoes those two with the same arithmetic, step for step:

* log-mel: centred STFT (periodic Hann window of ``n_fft``, zero padding, float64 product then
  complex64 as librosa stores it), power, Slaney mel filterbank (float32), dB relative to the
  window's maximum with an 80 dB floor;
* prosody: RMS of zero-padded centred frames; ``librosa.yin`` (cumulative mean normalised
  difference via FFT autocorrelation, troughs under 0.1, parabolic refinement) and the voicing
  rule of :func:`femo.features.audio.pitch_track` (periodicity >= 0.6 within 40 dB of the loudest
  frame).

``tests/test_inference_window_audio.py`` checks the outputs against librosa's on tones, noise,
a gliding voice-like signal, silence and short windows. Only ``pitch="yin"`` is covered: runs
trained with ``pyin`` keep librosa (:func:`window_audio_features` returns None for them).

Runs whose audio encoder reads utterance functionals (``audio_input`` ``functionals`` or ``both``)
get the set of their width (:func:`functionals_set`) on each window's samples
(:func:`window_functionals`, openSMILE through :mod:`femo.features.functionals`: ~0.06-0.5 s per
window on this CPU, so RTF 0.1-1 for eGeMAPS alone).
"""
from __future__ import annotations

import numpy as np

from femo.features.audio import ENERGY_GATE_DB, VOICING_THRESHOLD, AudioConfig, _fit, num_audio_frames

_MEL_CACHE: dict[tuple, np.ndarray] = {}


def window_audio_features(audio: np.ndarray, config: AudioConfig) -> dict[str, np.ndarray] | None:
    """``logmel`` (n_mels, A) and ``prosody`` (A, 4) float32 of (N,) float32 mono audio, as
    :func:`femo.features.audio.audio_features` gives them; None when ``config.pitch`` is not yin."""
    if config.pitch != "yin":
        return None
    y = np.asarray(audio, dtype=np.float32).reshape(-1)
    if y.size == 0 or not np.all(np.isfinite(y)):
        from femo.features.audio import audio_features

        return audio_features(y, config)  # its empty arrays, or its error message
    a = num_audio_frames(y.size, config.hop_length)
    mel = _mel_basis(config) @ _power_spectrogram(y, config.n_fft, config.hop_length)  # (n_mels, A')
    logmel = _power_to_db(mel) if np.any(mel > 0) else np.full_like(mel, -80.0)
    rms = _fit(_rms(y, config.n_fft, config.hop_length), a)
    f0 = _fit(yin(y, config), a)
    prob = _periodicity(y, f0, config)
    loud = 20 * np.log10(np.maximum(rms, 1e-10)) >= 20 * np.log10(max(float(rms.max()), 1e-10)) - ENERGY_GATE_DB
    voiced = (prob >= VOICING_THRESHOLD) & loud & (rms > 1e-6)
    prosody = np.stack([np.where(voiced, f0, 0.0).astype(np.float32), prob.astype(np.float32), rms,
                        voiced.astype(np.float32)], axis=1)
    return {"logmel": _fit(logmel, a).astype(np.float32), "prosody": np.nan_to_num(prosody, nan=0.0).astype(np.float32)}


def _frame(y: np.ndarray, length: int, hop: int) -> np.ndarray:
    """(length, F) frames of ``y`` every ``hop`` samples (librosa.util.frame)."""
    return np.lib.stride_tricks.sliding_window_view(y, length)[::hop].T


def _power_spectrogram(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """(1 + n_fft // 2, F) float32 |STFT|^2, centred frames with zero padding."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann, float64
    frames = _frame(np.pad(y, n_fft // 2), n_fft, hop)
    spec = np.fft.rfft(window[:, None] * frames, axis=0).astype(np.complex64)
    return np.abs(spec) ** 2


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, np.float64)
    mel = f / (200.0 / 3)
    log = f >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), m * (200.0 / 3))


def _mel_basis(config: AudioConfig) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32 Slaney-normalised mel filters from 0 Hz to sr / 2 (cached)."""
    key = (config.sample_rate, config.n_fft, config.n_mels)
    if key not in _MEL_CACHE:
        sr, n_fft, n_mels = key
        freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
        mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2))
        fdiff, ramps = np.diff(mel_f), np.subtract.outer(mel_f, freqs)
        weights = np.zeros((n_mels, len(freqs)), np.float32)
        for i in range(n_mels):
            weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
        weights *= (2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels]))[:, None]
        _MEL_CACHE[key] = weights
    return _MEL_CACHE[key]


def _power_to_db(s: np.ndarray, top_db: float = 80.0, amin: float = 1e-10) -> np.ndarray:
    """dB relative to the maximum, floored ``top_db`` below it."""
    db = 10.0 * np.log10(np.maximum(amin, s))
    db -= 10.0 * np.log10(np.maximum(amin, s.max()))
    return np.maximum(db, db.max() - top_db)


def _rms(y: np.ndarray, length: int, hop: int) -> np.ndarray:
    """(F,) float32 RMS of centred, zero-padded frames."""
    x = _frame(np.pad(y, length // 2), length, hop)
    return np.sqrt(np.mean(np.abs(x) ** 2, axis=0, dtype=np.float32))


def _next_fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (an FFT length scipy would pick for real input)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def yin(y: np.ndarray, config: AudioConfig, trough_threshold: float = 0.1) -> np.ndarray:
    """(F,) f0 in Hz of centred frames (``librosa.yin`` with the config's range and frame length).
    Works frame by row ((F, lag) arrays, contiguous FFTs); same arithmetic as librosa."""
    n, sr = config.pitch_frame_length, config.sample_rate
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(y, n // 2), n)[:: config.hop_length]  # (F, n)
    lo = int(np.floor(sr / config.fmax))
    hi = min(int(np.ceil(sr / config.fmin)), n - 1)
    size = _next_fast_len(2 * n - 1)
    power = np.fft.rfft(frames, n=size, axis=1)
    acf = np.fft.irfft(power.real ** 2 + power.imag ** 2, n=size, axis=1)[:, : hi + 1]  # (F, hi + 1)
    energy = np.cumsum(np.square(frames[:, : hi + 1]), axis=1)
    diff = np.empty_like(energy)
    diff[:, 0] = 0
    diff[:, 1: hi + 1] = 2 * (acf[:, 0:1] - acf[:, 1: hi + 1]) - energy[:, :hi]
    mean = np.cumsum(diff[:, 1: hi + 1], axis=1) / np.arange(1, hi + 1)
    d = diff[:, lo: hi + 1] / (mean[:, lo - 1: hi] + np.finfo(mean.dtype).tiny)  # (F, P)
    shifts = _parabolic_shifts(d)
    trough = np.zeros(d.shape, bool)
    trough[:, 1:-1] = (d[:, 1:-1] < d[:, :-2]) & (d[:, 1:-1] <= d[:, 2:])
    trough[:, 0], trough[:, -1] = d[:, 0] < d[:, 1], d[:, -1] < d[:, -2]
    below = trough & (d < trough_threshold)
    period = np.where(below.any(1), np.argmax(below, axis=1), np.argmin(d, axis=1))
    return sr / (lo + period + shifts[np.arange(len(d)), period])


def _parabolic_shifts(x: np.ndarray) -> np.ndarray:
    """(F, P) vertex offsets of the parabola through each bin and its neighbours along the lag
    axis (0 at the edges, and where the vertex lies more than one bin away)."""
    out = np.zeros_like(x)
    a = x[:, 2:] + x[:, :-2] - 2 * x[:, 1:-1]
    b = (x[:, 2:] - x[:, :-2]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, 1:-1] = np.where(np.abs(b) >= np.abs(a), 0, -b / a)
    return out


def _periodicity(y: np.ndarray, f0: np.ndarray, config: AudioConfig) -> np.ndarray:
    """(A,) normalised autocorrelation at lag sr / f0 (:func:`femo.features.audio.periodicity`)."""
    n = config.pitch_frame_length
    frames = _fit(_frame(np.pad(y, n // 2), n, config.hop_length), len(f0))
    lag = np.clip(np.round(config.sample_rate / np.maximum(f0, 1.0)), 1, n // 2).astype(int)
    width = n - int(np.ceil(config.sample_rate / config.fmin))
    x1 = frames[:width]
    x2 = np.take_along_axis(frames, np.arange(width)[:, None] + lag[None, :], axis=0)
    num = (x1 * x2).sum(0)
    den = np.sqrt((x1 ** 2).sum(0) * (x2 ** 2).sum(0))
    return np.clip(np.where(den > 1e-12, num / np.maximum(den, 1e-12), 0.0), 0.0, 1.0)


def functionals_set(config) -> str | None:
    """The functional set (:data:`femo.features.functionals.FUNCTIONAL_SETS`) a model's audio encoder
    reads, named by its width F, or None for a log-mel-only model; ValueError for a width no set has."""
    from femo.features.functionals import FUNCTIONAL_SETS

    if config.audio_input == "logmel" or not config.functionals_dim or "audio" not in config.modalities:
        return None
    names = {f: name for name, f in FUNCTIONAL_SETS.items()}
    if config.functionals_dim not in names:
        raise ValueError(f"functionals width {config.functionals_dim} matches no functional set {FUNCTIONAL_SETS}")
    return names[config.functionals_dim]


def window_functionals(seg: np.ndarray, name: str, config: AudioConfig, *,
                       features: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(F,) float32 functionals ``name`` of a window's (N,) samples, as extraction computes them for a
    clip (:func:`femo.features.functionals.functionals`; zeros without audio). features: the window's
    :func:`femo.features.audio.audio_features` when already computed (sets with ``librosa`` read
    its log-mel, MFCC and prosody; computed here when absent)."""
    from femo.features.audio import audio_features
    from femo.features.functionals import functionals, set_parts

    if "librosa" in set_parts(name) and len(seg) and (features is None or "mfcc" not in features):
        features = audio_features(seg, config)
    values, _ = functionals(seg, name, config.sample_rate, features=features)
    return np.nan_to_num(values.astype(np.float32))
