"""openSMILE functionals: values on synthetic speech-like audio, unmeasurable clips, the store key,
and the per-clip audio record extraction writes for silence and unvoiced sound."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

sf = pytest.importorskip("soundfile")
pytest.importorskip("opensmile")

from femo.data.store import read_clip, write_clip  # noqa: E402
from femo.features.functionals import (  # noqa: E402
    FunctionalsError, feature_names, functionals, functionals_dim,
)

SR = 16_000


def voiced(f0: float = 200.0, seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """A harmonic tone at ``f0`` Hz with a little noise and an amplitude envelope, float32 in [-1, 1]."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
    x = x * np.hanning(len(t)) + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture()
def flac(tmp_path):
    """The voiced tone written to and read back from FLAC (as extraction decodes files)."""
    path = tmp_path / "tone.flac"
    sf.write(path, voiced(), SR)
    y, sr = sf.read(path, dtype="float32")
    assert sr == SR
    return y


@pytest.mark.parametrize("name", ["egemaps", "compare"])
def test_functionals_shape_and_finite(flac, name):
    values, reason = functionals(flac, name)
    assert reason == ""
    assert values.shape == (functionals_dim(name),) and values.dtype == np.float32
    assert np.all(np.isfinite(values)) and np.abs(values).sum() > 0
    assert len(feature_names(name)) == functionals_dim(name)


@pytest.mark.parametrize("f0", [150.0, 250.0])
def test_egemaps_pitch_follows_the_tone(f0):
    """eGeMAPS' mean F0 (semitones from 27.5 Hz) must match the tone's pitch."""
    values, _ = functionals(voiced(f0), "egemaps")
    mean_st = values[feature_names("egemaps").index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    assert mean_st == pytest.approx(12 * np.log2(f0 / 27.5), abs=1.0)


@pytest.mark.parametrize("audio, reason", [
    (np.zeros(SR, np.float32), "digital silence"),
    (np.zeros(0, np.float32), "no audio"),
    (voiced(seconds=0.05), "audio shorter than 0.1 s"),
])
def test_unmeasurable_audio_gets_zeros_and_a_reason(audio, reason):
    values, why = functionals(audio, "egemaps")
    assert why == reason
    assert values.shape == (88,) and not values.any()


def test_none_set_and_unknown_set():
    values, why = functionals(voiced(), "none")
    assert values.shape == (0,) and why == ""
    with pytest.raises(FunctionalsError, match="egemaps"):
        functionals(voiced(), "gemaps")


def test_store_round_trip_of_functionals(tmp_path):
    from _synth_store import build_store

    store = build_store(tmp_path / "s", n=2, folds=1)
    z = read_clip(store, "c0000")
    assert z["functionals"].shape == (0,)  # a store extracted without them
    values = np.arange(88, dtype=np.float32)
    write_clip(store, "c0000", {**z, "functionals": values})
    np.testing.assert_array_equal(read_clip(store, "c0000")["functionals"], values)


def test_extraction_records_silence_and_unvoiced_clips(tmp_path):
    """Noise stays an ok clip with a (64, A > 0) log-mel, a voiced ratio of 0 and a note saying
    why; an audio-only clip of digital silence is recorded as failed with the reason (it has
    nothing to analyse) and the others are still extracted; the meta names the set."""
    from femo.data.dataset import FeatureDataset
    from femo.features.clip import ExtractConfig
    from femo.features.extract import run_extraction

    sf.write(tmp_path / "speech.flac", voiced(), SR)
    sf.write(tmp_path / "silence.flac", np.zeros(SR, np.float32), SR)
    sf.write(tmp_path / "noise.wav", (0.1 * np.random.default_rng(1).standard_normal(SR)).astype(np.float32), SR)
    names = ["speech", "silence", "noise"]
    manifest = pd.DataFrame({"clip_id": names, "path": [str(tmp_path / f) for f in
                                                        ("speech.flac", "silence.flac", "noise.wav")],
                             "label": ["happy", "sad", "happy"], "subject": ["a", "b", "c"]})
    store = tmp_path / "store"
    index = run_extraction(manifest, store, classes=("happy", "sad"), progress=False,
                           config=ExtractConfig(audio_functionals="egemaps")).set_index("clip_id")
    assert index.loc["speech", "status"] == "ok" and index.loc["noise", "status"] == "ok"
    assert index.loc["silence", "status"] != "ok" and "digital silence" in index.loc["silence", "error"]
    assert index.loc["speech", "audio_note"] == "" and index.loc["speech", "voiced_ratio"] > 0.2
    assert index.loc["noise", "audio_note"] == "no voiced frames" and index.loc["noise", "voiced_ratio"] == 0
    noise = read_clip(store, "noise")
    assert noise["logmel"].shape[0] == 64 and noise["logmel"].shape[1] > 50
    assert read_clip(store, "speech")["functionals"].shape == (88,)
    extraction = json.loads((store / "store.json").read_text())["extra"]["extraction"]
    assert extraction["audio_functionals"] == "egemaps" and extraction["functionals_dim"] == 88
    ds = FeatureDataset(store, modalities=("audio",))
    masks = {ds.index["clip_id"][i]: bool(ds[i]["audio_mask"]) for i in range(len(ds))}
    assert masks == {"speech": True, "noise": True}
    assert ds[0]["functionals"].shape == (88,)
