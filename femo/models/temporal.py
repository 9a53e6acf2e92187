"""Temporal blocks: pool a masked sequence of per-step embeddings into one clip embedding.

Every block maps ``x: (B, L, D)`` float and ``mask: (B, L)`` bool (True = present) to ``(B, D)``.
Masked steps never influence the output; rows whose mask is all False give a finite vector (zeros
for ``mean``) that the caller replaces with its learned "missing" embedding.
"""
from __future__ import annotations

import torch
from torch import nn

from femo.config import TEMPORAL_BLOCKS


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, L, D) over steps where ``mask`` (B, L) is True; all-False rows give zeros."""
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


class MeanPool(nn.Module):
    """Masked mean over time (pytorchvideo ``MaskedTemporalPooling``-style)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(x, mask)


class GRUPool(nn.Module):
    """A bidirectional GRU over the sequence (missing steps zeroed), then a masked mean of its outputs."""

    def __init__(self, *, dim: int, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, dim // 2, num_layers=layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.out = nn.Linear(2 * (dim // 2), dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(x * mask.unsqueeze(-1).to(x.dtype))  # (B, L, 2 * (D // 2))
        return masked_mean(self.out(h), mask)


class TransformerPool(nn.Module):
    """A CLS token + learned positions + a transformer encoder with a key padding mask.

    The CLS token is never masked, so a row with no present step still attends to something.
    """

    def __init__(self, *, dim: int, max_len: int = 512, layers: int = 1, heads: int = 4,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        if length > self.pos.shape[1]:
            raise ValueError(f"sequence of {length} steps exceeds max_len={self.pos.shape[1]}")
        tokens = torch.cat([self.cls.expand(b, -1, -1), x + self.pos[:, :length]], dim=1)  # (B, 1+L, D)
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), mask.bool()], dim=1)
        h = self.encoder(tokens, src_key_padding_mask=~keep)
        return self.norm(h[:, 0])


def make_temporal(name: str, *, dim: int, max_len: int = 512, layers: int = 1, heads: int = 4,
                  dropout: float = 0.1) -> nn.Module:
    """Build the temporal block ``name`` (one of TEMPORAL_BLOCKS) for width ``dim``."""
    if name == "mean":
        return MeanPool()
    if name == "gru":
        return GRUPool(dim=dim, layers=layers, dropout=dropout)
    if name == "transformer":
        return TransformerPool(dim=dim, max_len=max_len, layers=layers, heads=heads, dropout=dropout)
    raise ValueError(f"unknown temporal block {name!r}; choose one of {list(TEMPORAL_BLOCKS)}")
