"""Temporal blocks: masked pooling, all-missing rows, factory."""
import pytest
import torch

from femo.models.temporal import TEMPORAL_BLOCKS, make_temporal, masked_mean


def test_masked_mean_values():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_mean(x, mask).flatten().tolist() == pytest.approx([2.0, 0.0])


@pytest.mark.parametrize("name", TEMPORAL_BLOCKS)
def test_masked_steps_do_not_matter_and_no_nan(name):
    torch.manual_seed(0)
    block = make_temporal(name, dim=8, heads=2, dropout=0.0).eval()
    x = torch.randn(3, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [False] * 5])
    y = block(x, mask)
    assert y.shape == (3, 8) and torch.isfinite(y).all()
    x2 = x.clone()
    x2[1, 2:] = 1e3  # garbage in masked steps
    x2[2] = float("nan") * 0 + 7.0
    y2 = block(x2, mask)
    assert torch.allclose(y[:2], y2[:2], atol=1e-5)


@pytest.mark.parametrize("name", TEMPORAL_BLOCKS)
def test_gradients_flow(name):
    block = make_temporal(name, dim=8, heads=2)
    x = torch.randn(2, 4, 8, requires_grad=True)
    # a random read-out: the plain sum of a LayerNorm output is constant and has no gradient
    readout = torch.randn(8)
    (block(x, torch.ones(2, 4, dtype=torch.bool)) @ readout).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_block_is_refused():
    with pytest.raises(ValueError, match="unknown temporal block 'lstm'.*mean"):
        make_temporal("lstm", dim=8)
