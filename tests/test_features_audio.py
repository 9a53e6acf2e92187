"""Audio features: shapes on the 10 ms grid, pitch and voicing of tones, silence and noise."""
from __future__ import annotations

import numpy as np
import pytest

from femo.features.audio import AudioConfig, audio_features, empty_audio_features, num_audio_frames

SR = 16_000


def tone(freq: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("seconds", [0.5, 1.37])
def test_shapes_share_one_frame_grid(seconds):
    y = tone(200, seconds)
    f = audio_features(y)
    a = num_audio_frames(len(y))
    assert a == 1 + len(y) // 160
    assert f["logmel"].shape == (64, a) and f["mfcc"].shape == (20, a) and f["prosody"].shape == (a, 4)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in f.values())
    assert f["logmel"].max() == pytest.approx(0.0) and f["logmel"].min() >= -80.0


@pytest.mark.parametrize("freq", [110.0, 220.0, 330.0])
def test_tone_pitch_and_voicing(freq):
    y = np.concatenate([tone(freq, 1.0), np.zeros(SR // 2, np.float32)])
    y += 0.003 * np.random.default_rng(0).standard_normal(len(y)).astype(np.float32)
    p = audio_features(y)["prosody"]
    tone_frames, quiet = p[10:90], p[110:]
    assert np.median(tone_frames[:, 0]) == pytest.approx(freq, rel=0.03)
    assert tone_frames[:, 3].mean() > 0.95 and tone_frames[:, 1].mean() > 0.9
    assert quiet[:, 3].sum() == 0 and (quiet[:, 0] == 0).all()  # f0 is 0 where unvoiced
    assert tone_frames[:, 2].mean() == pytest.approx(0.3 / np.sqrt(2), rel=0.05)  # RMS of a sine


def test_noise_is_not_voiced_and_silence_has_no_nan():
    noise = 0.2 * np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    assert audio_features(noise)["prosody"][:, 3].mean() < 0.1
    silent = audio_features(np.zeros(SR, np.float32))
    assert all(np.isfinite(v).all() for v in silent.values())
    assert silent["prosody"][:, 3].sum() == 0


def test_empty_and_bad_input():
    assert {k: v.shape for k, v in empty_audio_features().items()} == {
        "logmel": (64, 0), "mfcc": (20, 0), "prosody": (0, 4)}
    assert audio_features(np.zeros(0, np.float32))["prosody"].shape == (0, 4)
    with pytest.raises(ValueError, match="NaN"):
        audio_features(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="pitch method"):
        AudioConfig(pitch="crepe")


@pytest.mark.slow
def test_pyin_option_agrees_with_yin():
    y = tone(220, 1.0)
    fy = audio_features(y)["prosody"]
    fp = audio_features(y, AudioConfig(pitch="pyin"))["prosody"]
    assert np.median(fp[10:90, 0]) == pytest.approx(np.median(fy[10:90, 0]), rel=0.02)
    assert fp[10:90, 3].mean() > 0.9
