"""femo.training.face_encoder and femo.models.fer_encoder: data loading, augmentation, the
resumable training loop (on small synthetic images) and the weights shipped in femo/resources."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from _fer_images import pattern as _pattern, write_manifest

from femo.models.fer_encoder import FER_LABELS, WEIGHTS_FILE, FerEncoderNet, load_fer_encoder, sha256_file
from femo.models.frames import build_frame_encoder
from femo.training.face_augment import augment
from femo.training.face_encoder import (EncoderTrainConfig, finish_face_encoder, load_image_split, predict_probs,
                                        train_face_encoder)


@pytest.fixture
def manifest(tmp_path):
    """A FER2013-layout manifest: 96 train / 28 public_test / 28 private_test synthetic images."""
    return write_manifest(tmp_path, {"train": 96, "public_test": 28, "private_test": 28})


def _cfg(**kw) -> EncoderTrainConfig:
    # no geometric jitter: a shift of a few pixels would move a bar onto its neighbour's row
    base = dict(epochs=2, batch_size=16, lr=3e-3, ema_decay=0.5, pretrained=False, threads=1,
                rotation=0.0, scale=0.0, shift=0.0)
    return EncoderTrainConfig(**{**base, **kw})


def test_load_image_split_reads_pixels_and_labels(manifest):
    split = load_image_split(manifest, "public_test")
    assert split.x.shape == (28, 48, 48) and split.x.dtype == torch.uint8
    assert split.y.tolist() == [i % 7 for i in range(28)]
    first = np.asarray(Image.open(manifest.parent / "public_test/angry/0.png"))
    assert np.array_equal(split.x[0].numpy(), first)


def test_load_image_split_names_the_bad_row(manifest):
    table = pd.read_csv(manifest)
    table.loc[3, "label"] = "contempt"
    table.to_csv(manifest, index=False)
    with pytest.raises(ValueError, match=r"row 5: label 'contempt'"):
        load_image_split(manifest, "train")
    with pytest.raises(ValueError, match="no rows with split == 'val'"):
        load_image_split(manifest, "val")


def test_augment_without_magnitudes_is_identity_or_mirror():
    x = torch.randint(0, 256, (32, 48, 48), dtype=torch.uint8)
    cfg = EncoderTrainConfig(rotation=0, scale=0, shift=0, brightness=0, contrast=0)
    out = augment(x, torch.Generator().manual_seed(1), cfg)
    assert out.shape == (32, 3, 48, 48)
    ref = x.float().div(255)
    same = (out[:, 0] - ref).abs().amax(dim=(1, 2)) < 1e-5
    mirrored = (out[:, 0] - ref.flip(-1)).abs().amax(dim=(1, 2)) < 1e-5
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 32


def test_augment_is_seeded_and_in_range():
    x = torch.randint(0, 256, (8, 48, 48), dtype=torch.uint8)
    a = augment(x, torch.Generator().manual_seed(3), EncoderTrainConfig())
    b = augment(x, torch.Generator().manual_seed(3), EncoderTrainConfig())
    c = augment(x, torch.Generator().manual_seed(4), EncoderTrainConfig())
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


@pytest.mark.slow
def test_training_lowers_the_loss_and_learns_the_pattern(manifest, tmp_path):
    result = train_face_encoder(manifest, tmp_path / "run", _cfg(epochs=8, lr=5e-3), progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.1
    assert result["private_test"]["war"] > 0.3  # chance is 1/7
    assert result["n"] == {"train": 96, "public_test": 28, "private_test": 28}
    assert result["selected_epoch"] == max(history, key=lambda r: r["public_test_war"])["epoch"]


def test_resume_after_a_stop_reproduces_the_uninterrupted_run(manifest, tmp_path):
    whole = train_face_encoder(manifest, tmp_path / "a", _cfg(), progress=False)
    stopped = train_face_encoder(manifest, tmp_path / "b", _cfg(), stop_after_steps=3, progress=False)
    assert stopped == {"stopped_at_step": 3}
    with pytest.raises(FileNotFoundError, match="no epoch has finished"):
        finish_face_encoder(manifest, tmp_path / "b")
    with pytest.raises(FileExistsError):
        train_face_encoder(manifest, tmp_path / "b", _cfg(), progress=False)
    resumed = train_face_encoder(manifest, tmp_path / "b", _cfg(), resume=True, progress=False)
    assert (tmp_path / "a" / "fer_encoder.pt").read_bytes() == (tmp_path / "b" / "fer_encoder.pt").read_bytes()
    assert resumed["private_test"] == whole["private_test"]
    with pytest.raises(ValueError, match="other settings"):
        train_face_encoder(manifest, tmp_path / "b", _cfg(lr=1e-2), resume=True, progress=False)


def test_finish_early_scores_the_best_epoch_so_far(manifest, tmp_path):
    train_face_encoder(manifest, tmp_path / "run", _cfg(epochs=3), stop_after_steps=7, progress=False)
    result = finish_face_encoder(manifest, tmp_path / "run", command="femo encoder finish")
    assert result["epochs_run"] == 1 and result["selected_epoch"] == 1
    record = json.loads((tmp_path / "run" / "fer_encoder.json").read_text())
    assert record["sha256"] == sha256_file(tmp_path / "run" / "fer_encoder.pt")
    assert load_fer_encoder(tmp_path / "run" / "fer_encoder.pt").fc.weight.shape == (7, 256)


def test_shipped_weights_match_their_record():
    record = json.loads(WEIGHTS_FILE.with_suffix(".json").read_text())
    assert sha256_file(WEIGHTS_FILE) == record["sha256"]
    assert WEIGHTS_FILE.stat().st_size < 20_000_000
    assert record["selection_split"] == "public_test" and record["n"]["train"] == 28_707
    assert "femo encoder train" in record["command"] and record["config"]["seed"] == record["seed"]


def test_shipped_weights_classify_deterministically():
    net = load_fer_encoder()
    rng = np.random.default_rng(0)
    faces = torch.from_numpy(np.stack([_pattern(i, rng) for i in range(7)]))
    a, b = predict_probs(net, faces), predict_probs(load_fer_encoder(), faces)
    assert a.shape == (7, 7) and np.allclose(a.sum(1), 1.0, atol=1e-5)
    assert np.array_equal(a, b)
    enc = build_frame_encoder("faceapi_fer")
    rgb = faces.float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)
    feats = enc(rgb)
    assert feats.shape == (7, FerEncoderNet.feature_dim) and torch.isfinite(feats).all()
    assert not any(p.requires_grad for p in enc.parameters())


def test_load_fer_encoder_refuses_a_tampered_file(tmp_path):
    net = FerEncoderNet()
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    (tmp_path / "w.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(ValueError, match="sha256"):
        load_fer_encoder(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_fer_encoder(tmp_path / "missing.pt")


def test_a_run_can_continue_from_earlier_weights(manifest, tmp_path):
    from femo.training.face_encoder import _new_state

    first = train_face_encoder(manifest, tmp_path / "a", _cfg(), progress=False)
    start = tmp_path / "a" / "fer_encoder.pt"
    state = _new_state(_cfg(init=str(start)), steps_per_epoch=6)
    trained = load_fer_encoder(start).state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in state["net"].state_dict().items())  # starts where a ended
    assert all(torch.equal(v, trained[k]) for k, v in state["ema"].state_dict().items())
    second = train_face_encoder(manifest, tmp_path / "b", _cfg(init=str(start), lr=1e-3), progress=False)
    assert second["init_sha256"] == sha256_file(start) and second["config"]["init"] == str(start)
    assert second["private_test"]["war"] >= first["private_test"]["war"] - 0.15  # no restart from scratch
    with pytest.raises(FileNotFoundError, match="not found"):
        _new_state(_cfg(init=str(tmp_path / "missing.pt")), steps_per_epoch=6)
