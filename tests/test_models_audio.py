"""The audio encoder's input options (log-mel, functionals, both) and its handling of missing audio."""
from __future__ import annotations

import pytest
import torch

from femo.config import ModelConfig
from femo.models.audio import AUDIO_INPUTS, AudioEncoder, RunningStandardize
from femo.models.net import FemoNet

F, A = 88, 64


def batch(b: int = 4, *, present=(True, False, True, True), seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"audio": torch.rand(b, 1, 64, A, generator=g) * 2 - 1, "prosody": torch.rand(b, A, 4, generator=g),
            "functionals": 100 * torch.randn(b, F, generator=g) + 50, "audio_mask": torch.tensor(present)}


@pytest.mark.parametrize("audio_input, length", [("logmel", A // 8), ("functionals", 1), ("both", A // 8)])
def test_each_input_gives_tokens_and_masks_missing_audio(audio_input, length):
    enc = AudioEncoder(dim=32, audio_input=audio_input, functionals_dim=F)
    tokens, mask = enc(batch())
    assert tokens.shape == (4, length, 32) and mask.shape == (4, length)
    assert mask[:, 0].tolist() == [True, False, True, True]
    assert torch.all(tokens[1] == 0) and torch.all(tokens[0].abs().sum(-1) > 0)
    assert torch.isfinite(tokens).all()


@pytest.mark.parametrize("audio_input", AUDIO_INPUTS)
def test_femonet_reads_only_the_keys_of_its_audio_input(audio_input):
    net = FemoNet(ModelConfig(modalities=("audio",), audio_input=audio_input, functionals_dim=F, temporal="mean",
                              fusion="late", dim=32), 3).eval()
    keys = net.input_keys()
    assert ("functionals" in keys) == (audio_input != "logmel")
    assert ("audio" in keys) == (audio_input != "functionals")
    out = net({k: v for k, v in batch().items() if k in keys})
    assert out["logits"].shape == (4, 3) and out["present"][:, 0].tolist() == [True, False, True, True]


@pytest.mark.parametrize("audio_input", ["logmel", "both"])
@pytest.mark.parametrize("present", [(True, False, True, True), (False, False, False, False)])
def test_cnn_skips_clips_without_audio_with_the_same_outputs_and_gradients(audio_input, present):
    """The log-mel CNN runs only on clips with audio; tokens and parameter gradients equal those
    of a pass with every clip through the CNN (the masked tokens are zero either way)."""
    torch.manual_seed(0)
    enc = AudioEncoder(dim=16, audio_input=audio_input, functionals_dim=F, dropout=0.0)
    x = batch(present=present)
    tokens, mask = enc(x)
    full = enc._cnn_tokens(torch.nan_to_num(x["audio"]), x["prosody"])
    if audio_input == "both":
        full = full + enc._member_tokens(x["functionals"], x["audio_mask"]).mean(1, keepdim=True)
    reference = full * mask.unsqueeze(-1)
    torch.testing.assert_close(tokens, reference)
    grads = []
    for out in (tokens, reference):
        enc.zero_grad()
        if out.requires_grad:  # with no audio in the batch the tokens are constant zeros
            (out ** 2).sum().backward(retain_graph=True)
        grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in enc.cnn.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert any(g.abs().sum() > 0 for g in grads[0]) == any(present)


def test_functionals_output_ignores_other_clips_in_eval():
    enc = AudioEncoder(dim=16, audio_input="functionals", functionals_dim=F).eval()
    x = batch()
    y = {**x, "functionals": x["functionals"].clone()}
    y["functionals"][2] += 1000
    a, _ = enc(x)
    b, _ = enc(y)
    torch.testing.assert_close(a[[0, 3]], b[[0, 3]])
    assert not torch.allclose(a[2], b[2])


def test_running_standardize_uses_present_rows_only():
    norm = RunningStandardize(3).train()
    x = torch.tensor([[1.0, 10, 0], [3.0, 30, 0], [1e6, -1e6, 5]])
    out = norm(x, torch.tensor([True, True, False]))
    assert norm.count.item() == 2
    torch.testing.assert_close(norm.mean.float(), torch.tensor([2.0, 20.0, 0.0]))
    torch.testing.assert_close(out[:2, :2], torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    assert out[2].abs().max() <= 8.0  # clipped, constant feature passes centred


def test_functionals_mlp_learns_a_planted_signal():
    """A few hundred steps on raw-scale features where one functional carries the class."""
    torch.manual_seed(0)
    n, c, f = 400, 3, 16
    labels = torch.randint(0, c, (n,))
    x = 1000 + 200 * torch.randn(n, f)
    x[:, 5] = 1000 + 300 * labels.float() + 30 * torch.randn(n)
    net = FemoNet(ModelConfig(modalities=("audio",), audio_input="functionals", functionals_dim=f, temporal="mean",
                              fusion="late", dim=32, dropout=0.1), c)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    data = {"functionals": x, "audio_mask": torch.ones(n, dtype=torch.bool)}
    for _ in range(150):
        idx = torch.randint(0, n // 2, (32,))
        loss = torch.nn.functional.cross_entropy(net({k: v[idx] for k, v in data.items()})["logits"], labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    held_out = net({k: v[n // 2:] for k, v in data.items()})["logits"].argmax(1)
    assert (held_out == labels[n // 2:]).float().mean() > 0.9


def test_bad_options_name_the_problem():
    with pytest.raises(ValueError, match="unknown audio_input"):
        AudioEncoder(dim=16, audio_input="mfcc")
    with pytest.raises(ValueError, match="functionals_dim"):
        AudioEncoder(dim=16, audio_input="both")
    enc = AudioEncoder(dim=16, audio_input="functionals", functionals_dim=F)
    with pytest.raises(ValueError, match="audio_functionals"):
        enc({k: v for k, v in batch().items() if k != "functionals"})
