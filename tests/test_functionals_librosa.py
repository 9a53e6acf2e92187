"""The ``librosa`` functional set (utterance statistics of femo's own librosa features) and "+"
combinations: values, names, canonical spelling, extraction into a store, and the RAVDESS
benchmark's derived store being exactly what extraction writes."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sf = pytest.importorskip("soundfile")
pytest.importorskip("opensmile")

from femo.features.audio import AudioConfig, audio_features  # noqa: E402
from femo.features.functionals import (  # noqa: E402
    FUNCTIONAL_SETS, STAT_NAMES, FunctionalsError, check_set, feature_names, functionals, functionals_dim,
    utterance_statistics,
)

SR = 16_000


def tone(f0: float, seconds: float = 1.2, seed: int = 0) -> np.ndarray:
    """A harmonic tone at ``f0`` Hz with an envelope and a little noise, float32."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * np.hanning(len(t))
    x = x + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def test_set_widths_are_distinct_and_combinations_canonical():
    widths = [f for name, f in FUNCTIONAL_SETS.items() if name != "none"]
    assert len(set(widths)) == len(widths)  # a run's width names its set
    assert functionals_dim("librosa") == len(STAT_NAMES) == 218
    assert functionals_dim("egemaps+librosa") == 88 + 218
    with pytest.raises(FunctionalsError, match="'egemaps\\+librosa'"):
        check_set("librosa+egemaps")
    with pytest.raises(FunctionalsError, match="unknown"):
        check_set("librosa+mfcc")


@pytest.mark.parametrize("f0", [120.0, 240.0])
def test_librosa_statistics_follow_the_pitch(f0):
    """Median f0 in semitones re 100 Hz matches the tone; the set equals utterance_statistics of
    the clip's own features and needs them."""
    y = tone(f0)
    feats = audio_features(y, AudioConfig(pitch="yin"))
    values, reason = functionals(y, "librosa", features=feats)
    assert reason == "" and values.shape == (218,) and values.dtype == np.float32
    np.testing.assert_array_equal(values, utterance_statistics(feats["logmel"], feats["mfcc"], feats["prosody"]))
    assert values[STAT_NAMES.index("f0_semitone_p50")] == pytest.approx(12 * np.log2(f0 / 100.0), abs=1.0)
    assert 0.3 < values[STAT_NAMES.index("voiced_fraction")] <= 1.0
    with pytest.raises(FunctionalsError, match="features="):
        functionals(y, "librosa")


def test_combination_is_the_concatenation():
    y = tone(200.0)
    feats = audio_features(y, AudioConfig(pitch="yin"))
    both, _ = functionals(y, "egemaps+librosa", features=feats)
    ege, _ = functionals(y, "egemaps")
    lib, _ = functionals(y, "librosa", features=feats)
    np.testing.assert_array_equal(both, np.concatenate([ege, lib]))
    assert feature_names("egemaps+librosa") == [*feature_names("egemaps"), *STAT_NAMES]
    silent, why = functionals(np.zeros(SR, np.float32), "egemaps+librosa", features=feats)
    assert why == "digital silence" and silent.shape == (306,) and not silent.any()


def test_derived_store_equals_extraction(tmp_path):
    """benchmarks/ravdess_lib.derive_store on an eGeMAPS store gives the clip arrays and settings
    that extraction with audio_functionals="egemaps+librosa" writes."""
    from femo.data.store import read_clip, read_index, read_meta
    from femo.features.clip import ExtractConfig
    from femo.features.extract import run_extraction

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from ravdess_lib import derive_store

    for i, f0 in enumerate((150.0, 260.0)):
        sf.write(tmp_path / f"a{i}.flac", tone(f0, seed=i), SR)
    manifest = pd.DataFrame({"clip_id": ["a0", "a1"], "path": [str(tmp_path / "a0.flac"), str(tmp_path / "a1.flac")],
                             "label": ["happy", "sad"], "subject": ["s1", "s2"]})
    stores = {}
    for name in ("egemaps", "egemaps+librosa"):
        stores[name] = tmp_path / name
        run_extraction(manifest, stores[name], classes=("happy", "sad"), progress=False,
                       config=ExtractConfig(audio_functionals=name))
    derived = derive_store(stores["egemaps"], tmp_path / "derived", read_index(stores["egemaps"]))
    assert read_meta(derived).extra["extraction"] == read_meta(stores["egemaps+librosa"]).extra["extraction"]
    for clip in ("a0", "a1"):
        want, got = read_clip(stores["egemaps+librosa"], clip), read_clip(derived, clip)
        assert got["functionals"].shape == (306,)
        np.testing.assert_allclose(got["functionals"], want["functionals"], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got["logmel"], want["logmel"])
