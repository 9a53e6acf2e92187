"""Per-speaker normalisation: each speaker's statistics come from its own clips only, and runs that
use it say they are transductive."""
from __future__ import annotations

import json

import numpy as np
import pytest
from _synth_store import build_store

from femo.config import DataConfig, ModelConfig, TrainConfig
from femo.data.dataset import FeatureDataset
from femo.data.speaker_norm import PROTOCOL_NOTE, protocol_note
from femo.data.store import read_clip, read_index, read_meta, write_clip, write_meta

F = 6


def add_functionals(store, *, offset_subject: str, offset: float, seed: int = 0):
    """Give every clip (F,) functionals; ``offset_subject``'s clips get ``offset`` added."""
    rng = np.random.default_rng(seed)
    index = read_index(store)
    for cid, subject in zip(index["clip_id"], index["subject"], strict=True):
        f = (10 + 3 * rng.standard_normal(F)).astype(np.float32) + (offset if subject == offset_subject else 0)
        write_clip(store, cid, {**read_clip(store, cid), "functionals": f})
    meta = read_meta(store)
    write_meta(store, meta.__class__(**{**meta.__dict__, "extra": {"extraction": {"functionals_dim": F}}}))
    return index


def samples(store, index, subject, **kw):
    ds = FeatureDataset(store, index=index, modalities=("audio",), **kw)
    rows = np.flatnonzero(ds.index["subject"].to_numpy() == subject)
    return np.stack([ds[i]["functionals"].numpy() for i in rows]), np.stack([ds[i]["audio"].numpy() for i in rows])


@pytest.fixture()
def store(tmp_path):
    root = build_store(tmp_path / "s", n=12, a=32, folds=2)  # subjects s000..s005, two clips each
    index = read_index(root)
    keep = index["subject"].isin(["s000", "s001"])  # 4 clips, 2 speakers
    return root, index[keep].reset_index(drop=True)


def test_each_speaker_is_zscored_with_its_own_rows(store):
    root, index = store
    add_functionals(root, offset_subject="s001", offset=500.0)
    on = DataConfig(num_frames=4, face_size=16, speaker_norm=True)
    for subject in ("s000", "s001"):
        func, mel = samples(root, index, subject, config=on)
        np.testing.assert_allclose(func.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(func.std(0), 1.0, atol=1e-4)  # two clips: +-1 after z-scoring
        np.testing.assert_allclose(mel.mean(axis=(0, 3)).ravel(), 0.0, atol=1e-4)  # per mel band
    raw, _ = samples(root, index, "s001", config=DataConfig(num_frames=4, face_size=16))
    assert raw.mean() > 400  # without the option the offset stays


def test_other_speakers_do_not_change_a_speakers_normalisation(store):
    root, index = store
    on = DataConfig(num_frames=4, face_size=16, speaker_norm=True)
    add_functionals(root, offset_subject="s001", offset=0.0)
    before, mel_before = samples(root, index, "s000", config=on)
    add_functionals(root, offset_subject="s001", offset=1e4)  # same seed: s000's clips are unchanged
    after, mel_after = samples(root, index, "s000", config=on)
    np.testing.assert_allclose(before, after, atol=1e-5)
    np.testing.assert_allclose(mel_before, mel_after, atol=1e-6)
    stats = FeatureDataset(root, index=index, config=on, modalities=("audio",)).speaker_stats()
    assert stats["s000"].n_clips == 2 and stats["s001"].n_clips == 2


def test_speaker_norm_run_is_labelled_transductive(tmp_path):
    from dataclasses import replace

    from femo.training.loop import data_config_for, train

    root = build_store(tmp_path / "s", n=36, a=32, folds=3)
    add_functionals(root, offset_subject="s000", offset=5.0)
    data = replace(data_config_for(root), speaker_norm=True)
    run = tmp_path / "run"
    result = train(root, out=run, fold=1, data=data, progress=False,
                   model=ModelConfig(modalities=("audio",), audio_input="both", temporal="mean", fusion="late", dim=16),
                   train=TrainConfig(epochs=1, batch_size=8, aux_weight=0.0))
    assert PROTOCOL_NOTE in result["protocol"]
    assert PROTOCOL_NOTE in json.loads((run / "metrics.json").read_text())["protocol"]
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["speaker_norm"] is True and config["model"]["functionals_dim"] == F
    assert protocol_note({"speaker_norm": False}) == ""


def test_femo_train_command_selects_audio_input_and_speaker_norm(tmp_path, capsys):
    from femo.cli import main

    root = build_store(tmp_path / "s", n=36, a=32, folds=3)
    add_functionals(root, offset_subject="s000", offset=5.0)
    run = tmp_path / "run"
    code = main(["train", str(root), "--out", str(run), "--fold", "1", "--modalities", "audio", "--temporal", "mean",
                 "--fusion", "late", "--audio-input", "functionals", "--speaker-norm", "--epochs", "1", "--quiet"])
    assert code == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["audio_input"] == "functionals" and config["data"]["speaker_norm"] is True
    assert "TRANSDUCTIVE" in json.loads(capsys.readouterr().out)["protocol"]
