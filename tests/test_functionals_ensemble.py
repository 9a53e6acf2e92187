"""The functionals MLP as an ensemble (``ModelConfig.audio_members`` = K): K tokens, one member kept
per sample in training, the mean of the members' logits in eval, one shared standardiser, the
single-member path unchanged, and a K-member net that learns a planted rule through femo's loop."""
from __future__ import annotations

import pytest
import torch

from femo.config import ModelConfig
from femo.models.audio import AudioEncoder
from femo.models.net import FemoNet

F_DIM, B = 12, 32


def _batch(n: int = B, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"functionals": 5 + 3 * torch.randn(n, F_DIM, generator=g), "audio_mask": torch.ones(n, dtype=torch.bool)}


def test_members_give_k_tokens_and_one_member_per_training_sample():
    enc = AudioEncoder(dim=8, audio_input="functionals", functionals_dim=F_DIM, members=3)
    tokens, mask = enc.train()(_batch())
    assert tokens.shape == (B, 3, 8) and mask.shape == (B, 3)
    assert (mask.sum(1) == 1).all()  # exactly one member per sample in training
    assert len(set(mask.float().argmax(1).tolist())) == 3  # and all members get samples
    assert enc.functionals.norm.count.item() == B  # the shared standardiser counted the rows once
    tokens, mask = enc.eval()(_batch())
    assert mask.all() and not torch.allclose(tokens[:, 0], tokens[:, 1])  # independent weights


def test_eval_logits_are_the_mean_of_member_logits():
    torch.manual_seed(0)
    net = FemoNet(ModelConfig(modalities=("audio",), audio_input="functionals", functionals_dim=F_DIM,
                              temporal="mean", fusion="late", dim=8, audio_members=4), 5).eval()
    batch = _batch()
    with torch.no_grad():
        tokens, _ = net.branches["audio"].encoder(batch)  # (B, 4, D)
        members = torch.stack([net.heads["audio"](tokens[:, k]) for k in range(4)], dim=1)  # (B, 4, C)
        logits = net(batch)["logits"]
    torch.testing.assert_close(logits, members.mean(1), atol=1e-5, rtol=1e-5)


def test_one_member_is_the_plain_mlp():
    torch.manual_seed(1)
    enc = AudioEncoder(dim=8, audio_input="functionals", functionals_dim=F_DIM).eval()
    batch = _batch()
    enc.functionals.norm.train()(batch["functionals"], batch["audio_mask"])  # fit the standardiser
    enc.eval()
    tokens, mask = enc(batch)
    torch.testing.assert_close(tokens[:, 0], enc.functionals(batch["functionals"], batch["audio_mask"]))
    assert tokens.shape == (B, 1, 8) and len(enc.extra_members) == 0


@pytest.mark.parametrize("bad", [dict(members=0, audio_input="functionals"), dict(members=2, audio_input="logmel")])
def test_members_refused_where_they_mean_nothing(bad):
    with pytest.raises(ValueError, match="members"):
        AudioEncoder(dim=8, functionals_dim=F_DIM, **bad)


def test_ensemble_learns_a_planted_rule(tmp_path):
    """Label = which of 3 functionals is largest; a 3-member net trained by femo's loop on a
    store of such clips scores far above chance on held-out subjects."""
    import numpy as np
    import pandas as pd

    from femo.config import TrainConfig
    from femo.data.store import StoreMeta, write_clip, write_index, write_meta
    from femo.training.loop import train

    rng, classes, rows = np.random.default_rng(0), ("a", "b", "c"), []
    for i in range(150):
        func = rng.standard_normal(F_DIM).astype(np.float32)
        label = int(func[:3].argmax())
        write_clip(tmp_path / "s", f"c{i}", {
            "times": np.zeros(2, np.float32), "faces": np.zeros((2, 8, 8, 3), np.uint8),
            "face_found": np.zeros(2, bool), "face_box": np.zeros((2, 4), np.float32),
            "landmarks": np.zeros((2, 478, 3), np.float32), "blendshapes": np.zeros((2, 52), np.float32),
            "head_pose": np.zeros((2, 3), np.float32), "pose": np.zeros((2, 33, 4), np.float32),
            "pose_found": np.zeros(2, bool), "logmel": rng.standard_normal((64, 16)).astype(np.float32) - 20,
            "mfcc": np.zeros((20, 16), np.float32), "prosody": np.zeros((16, 4), np.float32),
            "has_audio": np.array(True), "functionals": func})
        rows.append({"clip_id": f"c{i}", "path": f"c{i}.wav", "label": classes[label], "subject": f"s{i // 3}",
                     "fold": 1 + (i // 3) % 3, "status": "ok", "error": "", "file": f"clips/c{i}.npz"})
    write_index(tmp_path / "s", pd.DataFrame(rows))
    write_meta(tmp_path / "s", StoreMeta(classes=classes, num_frames=2, face_size=8,
                                         extra={"extraction": {"audio_functionals": "egemaps", "functionals_dim": F_DIM}}))
    model = ModelConfig(modalities=("audio",), audio_input="functionals", temporal="mean", fusion="late", dim=16,
                        audio_members=3, modality_dropout=0.0)
    metrics = train(tmp_path / "s", out=tmp_path / "run", model=model, fold=1, progress=False,
                    train=TrainConfig(epochs=15, batch_size=16, lr=3e-3, augment=False, aux_weight=0.0, cache=True))
    assert metrics["uar"] > 0.6  # chance is 1/3
