"""Fusion variants: shapes, presence handling, gates, factory."""
import pytest
import torch

from femo.models.fusion import FUSIONS, make_fusion

B, M, D, C = 4, 3, 8, 5


def _inputs():
    torch.manual_seed(0)
    present = torch.tensor([[True, True, True], [True, False, False], [False, False, True], [False, False, False]])
    tokens = [(torch.randn(B, 6, D), present[:, m : m + 1].expand(-1, 6).clone()) for m in range(M)]
    return torch.randn(B, M, D), present, torch.randn(B, M, C), tokens


@pytest.mark.parametrize("name", FUSIONS)
def test_shapes_finite_and_gradients(name):
    fusion = make_fusion(name, num_modalities=M, dim=D, num_classes=C, heads=2)
    embs, present, logits, tokens = _inputs()
    for t in (embs, logits, tokens[0][0]):
        t.requires_grad_(True)
    out, weights = fusion(embs, present, logits, tokens)
    assert out.shape == (B, C) and torch.isfinite(out).all()
    out.sum().backward()
    # late reads the per-modality logits, attention the token sequences, the others the embeddings
    used = {"late": logits, "attention": tokens[0][0]}.get(name, embs)
    assert used.grad is not None and used.grad.abs().sum() > 0
    assert (weights is not None) == (name == "gated")


def test_late_averages_present_modalities():
    embs, present, logits, tokens = _inputs()
    out, _ = make_fusion("late", num_modalities=M, dim=D, num_classes=C)(embs, present, logits, tokens)
    assert torch.allclose(out[0], logits[0].mean(0))
    assert torch.allclose(out[1], logits[1, 0])
    assert torch.allclose(out[2], logits[2, 2])
    assert torch.allclose(out[3], logits[3].mean(0))  # nothing present: every modality's (missing) logits


def test_gated_weights_ignore_absent_modalities():
    embs, present, logits, tokens = _inputs()
    _, w = make_fusion("gated", num_modalities=M, dim=D, num_classes=C)(embs, present, logits, tokens)
    assert w.sum(1).tolist() == pytest.approx([1.0] * B)
    assert w[1].tolist() == pytest.approx([1.0, 0.0, 0.0]) and w[2].tolist() == pytest.approx([0.0, 0.0, 1.0])
    assert (w[3] > 0).all()


def test_attention_ignores_tokens_of_absent_modalities():
    fusion = make_fusion("attention", num_modalities=M, dim=D, num_classes=C, heads=2, dropout=0.0).eval()
    embs, present, logits, tokens = _inputs()
    out, _ = fusion(embs, present, logits, tokens)
    garbage = [(seq.clone(), mask) for seq, mask in tokens]
    garbage[1][0][:] = 1e4  # modality 1 is present in row 0 only
    out2, _ = fusion(embs, present, logits, garbage)
    assert torch.allclose(out[1:], out2[1:], atol=1e-5) and not torch.allclose(out[0], out2[0])


def test_unknown_fusion_is_refused():
    with pytest.raises(ValueError, match="unknown fusion 'sum'.*gated"):
        make_fusion("sum", num_modalities=M, dim=D, num_classes=C)
