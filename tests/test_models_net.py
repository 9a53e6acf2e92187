"""FemoNet and the modality encoders: any subset of modalities, missing rows, dropout, gradients."""
import pytest
import torch
from torch import nn

from femo.config import ModelConfig
from femo.features.geometry import GEOMETRY_DIM
from femo.models import FUSIONS, FemoNet
from femo.models.audio import AudioEncoder
from femo.models.landmarks import LandmarkEncoder

B, T, A, E, C = 4, 5, 16, 12, 3


def _batch(seed=0, face=False):
    g = torch.Generator().manual_seed(seed)
    batch = {
        "face_emb": torch.randn(B, T, E, generator=g), "face_mask": torch.rand(B, T, generator=g) > 0.3,
        "landmarks": torch.randn(B, T, GEOMETRY_DIM, generator=g), "landmarks_mask": torch.ones(B, T, dtype=torch.bool),
        "audio": torch.randn(B, 1, 64, A, generator=g), "prosody": torch.randn(B, A, 4, generator=g),
        "audio_mask": torch.tensor([True, True, False, False]),
    }
    if face:
        batch["face"] = torch.rand(B, T, 3, 32, 32, generator=g)
    batch["face_mask"][0, 0] = True
    batch["face_mask"][3] = False  # row 3: nothing at all
    batch["landmarks_mask"][3] = False
    batch["face_mask"][2] = False  # row 2: landmarks only
    return batch


def _net(fusion="gated", modalities=("face", "landmarks", "audio"), temporal="mean", **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(modalities=modalities, dim=16, temporal=temporal, fusion=fusion, embeddings="emb",
                      embedding_dim=E, heads=2, **kw)
    return FemoNet(cfg, C)


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("temporal", ["mean", "transformer"])
def test_forward_all_missing_rows_finite_and_gradients(fusion, temporal):
    # no modality dropout: it may drop the face of both rows that have one, leaving its branch no gradient
    net = _net(fusion, temporal=temporal, modality_dropout=0.0).train()
    out = net(_batch())
    assert out["logits"].shape == (B, C) and torch.isfinite(out["logits"]).all()
    assert set(out["modality_logits"]) == {"face", "landmarks", "audio"}
    assert ("weights" in out) == (fusion == "gated")
    out["logits"].sum().backward()
    for m, branch in net.branches.items():
        grads = [p.grad for p in branch.encoder.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, m


@pytest.mark.parametrize("modalities", [("face",), ("landmarks",), ("audio",), ("face", "audio"), ("landmarks", "audio")])
def test_any_subset_of_modalities(modalities):
    net = _net("attention", modalities=modalities).eval()
    out = net(_batch())
    assert out["present"].shape == (B, len(modalities)) and torch.isfinite(out["logits"]).all()
    assert set(net.input_keys()) <= set(_batch())


def test_missing_modality_uses_learned_embedding_not_inputs():
    net = _net("concat").eval()
    a, b = _batch(), _batch()
    b["audio"][2:] = 1e3  # rows 2, 3 have no audio: their audio values must not matter
    b["face_emb"][3] = float("nan")  # row 3 has no face at all
    out_a, out_b = net(a), net(b)
    assert torch.allclose(out_a["logits"][2:], out_b["logits"][2:], atol=1e-5)
    assert out_a["present"][3].tolist() == [False, False, False]


def test_masking_a_modality_changes_the_prediction():
    net = _net("late").eval()
    batch = _batch()
    masked = dict(batch, audio_mask=torch.zeros(B, dtype=torch.bool))
    assert not torch.allclose(net(batch)["logits"][:2], net(masked)["logits"][:2])


def test_modality_dropout_never_drops_everything():
    net = _net(modality_dropout=1.0).train()
    masks = [torch.ones(64, 3, dtype=torch.bool), torch.rand(64, 3) > 0.5, torch.zeros(64, 3, dtype=torch.bool)]
    kept = net._drop(masks)
    present_after = torch.stack([m.any(1) for m in kept], 1)
    assert present_after.sum(1).tolist() == [1] * 64  # p=1 drops all but one, chosen among present ones
    assert not present_after[:, 2].any()


def test_gated_weights_sum_to_one_over_present():
    out = _net("gated").eval()(_batch())
    assert out["weights"].sum(1).tolist() == pytest.approx([1.0] * B)
    assert out["weights"][2].tolist() == pytest.approx([0.0, 1.0, 0.0])  # only landmarks present


class _TinyCNN(nn.Module):
    out_dim = 8

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


def test_raw_faces_through_a_frame_encoder_only_on_present_frames():
    torch.manual_seed(0)
    cnn = _TinyCNN()
    calls = []
    cnn.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    net = FemoNet(ModelConfig(dim=16, temporal="gru", fusion="gated"), C, frame_encoder=cnn).train()
    batch = _batch(face=True)
    out = net(batch)
    assert calls == [int(batch["face_mask"].sum())]
    out["logits"].sum().backward()
    assert cnn.net[0].weight.grad is not None and torch.isfinite(out["logits"]).all()


def test_builds_the_named_frame_encoder():
    torch.manual_seed(0)
    net = FemoNet(ModelConfig(modalities=("face",), dim=16, temporal="mean", fusion="late", freeze="last-block"), C)
    assert net.branches["face"].encoder.frames.out_dim == 512  # resnet18, weights=None
    out = net.eval()(_batch(face=True))
    assert torch.isfinite(out["logits"]).all()


def test_encoders_shapes():
    lm_tokens, lm_mask = LandmarkEncoder(in_dim=GEOMETRY_DIM, dim=16).train()(_batch())
    assert lm_tokens.shape == (B, T, 16) and float(lm_tokens[3].detach().abs().sum()) == 0.0
    au_tokens, au_mask = AudioEncoder(dim=16)(_batch())
    assert au_tokens.shape == (B, A // 8, 16) and au_mask.tolist() == [[True] * 2, [True] * 2, [False] * 2, [False] * 2]
    with pytest.raises(ValueError, match="audio must be"):
        AudioEncoder(dim=16)(dict(_batch(), audio=torch.zeros(B, 1, 40, A)))


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="unknown modality 'video'"):
        FemoNet(ModelConfig(modalities=("video",)), C)
    with pytest.raises(ValueError, match="embedding_dim"):
        FemoNet(ModelConfig(embeddings="x"), C)
    with pytest.raises(ValueError, match="unknown fusion"):
        FemoNet(ModelConfig(fusion="sum", embeddings="x", embedding_dim=4, dim=8), C)
