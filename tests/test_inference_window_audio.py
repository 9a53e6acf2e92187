"""The NumPy audio path of ``femo predict`` (femo.inference.window_audio) gives librosa's features."""
from __future__ import annotations

import numpy as np
import pytest

from femo.features.audio import AudioConfig, audio_features
from femo.inference.window_audio import _mel_basis, _next_fast_len, window_audio_features, yin

SR = 16_000
#: Stated tolerances against femo.features.audio.audio_features (librosa): log-mel in dB, RMS,
#: f0 in Hz on voiced frames, periodicity; the voiced flag must agree on all but 1% of frames.
DB_TOL, RMS_TOL, F0_TOL, PROB_TOL = 1e-3, 1e-6, 1e-3, 1e-4


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    glide = 150 + 80 * np.sin(2 * np.pi * 0.7 * t)  # a voice-like pitch contour, Hz
    voice = np.sin(2 * np.pi * np.cumsum(glide) / SR) * (0.2 + 0.2 * np.sin(2 * np.pi * 3 * t) ** 2)
    voice = voice + 0.3 * np.sin(4 * np.pi * np.cumsum(glide) / SR) * (t > 0.8)
    return {"tone": 0.3 * np.sin(2 * np.pi * 220 * t), "noise": 0.1 * rng.standard_normal(len(t)),
            "voice": voice + 0.01 * rng.standard_normal(len(t)), "silence": np.zeros(len(t)),
            "short": 0.2 * np.sin(2 * np.pi * 300 * t[:250]),
            "half_silent": np.where(t < 1.0, 0.3 * np.sin(2 * np.pi * 180 * t), 0.0)}


@pytest.mark.parametrize("name", list(_signals()))
def test_features_match_librosa(name):
    y = _signals()[name].astype(np.float32)
    config = AudioConfig()
    want, got = audio_features(y, config), window_audio_features(y, config)
    assert got["logmel"].shape == want["logmel"].shape and got["prosody"].shape == want["prosody"].shape
    assert np.abs(got["logmel"] - want["logmel"]).max() <= DB_TOL
    pw, pg = want["prosody"], got["prosody"]
    assert np.abs(pg[:, 2] - pw[:, 2]).max() <= RMS_TOL
    assert np.abs(pg[:, 1] - pw[:, 1]).max() <= PROB_TOL
    assert (pg[:, 3] != pw[:, 3]).mean() <= 0.01
    both = (pg[:, 3] > 0) & (pw[:, 3] > 0)
    assert np.abs(pg[both, 0] - pw[both, 0]).max(initial=0.0) <= F0_TOL
    if name in ("tone", "voice"):
        assert both.mean() > 0.5  # the comparison covers voiced frames


def test_yin_and_filters_match_librosa_pieces():
    import librosa

    config = AudioConfig()
    y = _signals()["voice"].astype(np.float32)
    kw = dict(fmin=config.fmin, fmax=config.fmax, sr=SR, frame_length=config.pitch_frame_length,
              hop_length=config.hop_length)
    np.testing.assert_allclose(yin(y, config), librosa.yin(y, **kw), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(_mel_basis(config), librosa.filters.mel(sr=SR, n_fft=400, n_mels=64), atol=1e-7)
    assert [_next_fast_len(n) for n in (2047, 97, 1)] == [2048, 100, 1]


def test_pyin_runs_keep_librosa():
    assert window_audio_features(np.ones(100, np.float32), AudioConfig(pitch="pyin")) is None


@pytest.mark.parametrize("audio_input, width", [
    pytest.param("functionals", 88, marks=pytest.mark.slow),  # openSMILE: ~10 s on this machine under load
    ("both", 218)])
def test_streaming_feeds_functionals_runs(tmp_path, audio_input, width):
    """Runs trained on utterance functionals get them per window, computed on the window's own samples."""
    import dataclasses

    from femo.data.decode import load_clip
    from femo.features.functionals import functionals
    from femo.inference.predictor import Predictor

    from femo.data.media import write_video

    from _media import TINY_MODEL, gradient_frames, make_run

    model = dataclasses.replace(TINY_MODEL, audio_input=audio_input, functionals_dim=width)
    run = make_run(tmp_path / "run", model=model)
    t = np.arange(3 * SR) / SR
    chirp = (0.3 * np.sin(2 * np.pi * (150 * t + 40 * t ** 2))).astype(np.float32)  # pitch rises over 3 s
    clip = write_video(tmp_path / "chirp.mp4", gradient_frames(seconds=3.0, fps=10), fps=10, audio=chirp)
    batches = []
    with Predictor.from_run(run) as p:
        real = p.probabilities
        p.probabilities = lambda batch: (batches.append(batch), real(batch))[1]
        tl = p.timeline(clip, window=2.0, hop=1.0)
    got = np.concatenate([b["functionals"].numpy() for b in batches])  # (W, F)
    assert got.shape == (len(tl.spans), width) and np.isfinite(tl.probabilities).all()
    audio = load_clip(clip).audio
    name = {88: "egemaps", 218: "librosa"}[width]
    for row, (start, end) in zip(got, tl.spans):
        seg = audio[int(round(start * SR)): int(round(end * SR))]
        feats = audio_features(seg, AudioConfig()) if name == "librosa" else None
        want, _ = functionals(seg, name, SR, features=feats)
        np.testing.assert_allclose(row, want, rtol=1e-3, atol=1e-3)
    assert np.abs(got[0] - got[-1]).max() > 0.1  # the pitch rises: each window has its own samples
