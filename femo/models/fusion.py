"""Fusion of per-modality embeddings into class logits, chosen by name (``make_fusion``).

All fusions take, for M modalities in a fixed order:

- ``embs``: (B, M, D) clip embeddings (a modality missing for a sample already holds its learned
  "missing" embedding, never zeros),
- ``present``: (B, M) bool, True where the modality is available for that sample,
- ``logits``: (B, M, C) per-modality head logits,
- ``tokens``: list of M pairs ((B, L_m, D) sequence, (B, L_m) bool mask) -- used by ``attention``,

and return ``(logits (B, C), weights (B, M) or None)``. ``weights`` are the gated fusion's
per-clip modality weights (rows sum to 1; absent modalities get 0 unless none is present).
"""
from __future__ import annotations

import torch
from torch import nn

from femo.config import FUSIONS


class LateFusion(nn.Module):
    """Average of the per-modality logits over present modalities (all of them when none is)."""

    def forward(self, embs, present, logits, tokens):
        w = _present_or_all(present).to(logits.dtype).unsqueeze(-1)  # (B, M, 1)
        return (logits * w).sum(1) / w.sum(1), None


class ConcatFusion(nn.Module):
    """An MLP over the concatenated embeddings (B, M * D)."""

    def __init__(self, *, num_modalities: int, dim: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.LayerNorm(num_modalities * dim), nn.Dropout(dropout),
                                  nn.Linear(num_modalities * dim, dim), nn.GELU(), nn.Linear(dim, num_classes))

    def forward(self, embs, present, logits, tokens):
        return self.head(embs.flatten(1)), None


class GatedFusion(nn.Module):
    """Per-clip modality weights from a softmax gate over present modalities; weighted sum -> MLP."""

    def __init__(self, *, num_modalities: int, dim: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.gate = nn.Linear(num_modalities * dim, num_modalities)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Dropout(dropout), nn.Linear(dim, num_classes))

    def forward(self, embs, present, logits, tokens):
        scores = self.gate(embs.flatten(1))  # (B, M)
        scores = scores.masked_fill(~_present_or_all(present), float("-inf"))
        weights = torch.softmax(scores, dim=1)  # (B, M)
        fused = (weights.unsqueeze(-1) * embs).sum(1)  # (B, D)
        return self.head(fused), weights


class AttentionFusion(nn.Module):
    """A transformer over modality x time tokens with a CLS token and a key padding mask.

    Each modality's tokens get a learned modality embedding and learned time positions; an absent
    modality contributes one learned "missing" token instead, and the CLS token is never masked,
    so attention always has something to attend to.
    """

    def __init__(self, *, num_modalities: int, dim: int, num_classes: int, max_len: int = 512,
                 layers: int = 1, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.kind = nn.Parameter(torch.zeros(num_modalities, dim))
        self.missing = nn.Parameter(torch.zeros(num_modalities, dim))
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        for p in (self.kind, self.missing, self.pos):
            nn.init.trunc_normal_(p, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, embs, present, logits, tokens):
        b = embs.shape[0]
        seqs, keeps = [self.cls.expand(b, -1, -1)], [torch.ones(b, 1, dtype=torch.bool, device=embs.device)]
        for m, (seq, mask) in enumerate(tokens):
            seqs.append(seq + self.kind[m] + self.pos[:, : seq.shape[1]])
            keeps.append(mask.bool() & present[:, m : m + 1])
            seqs.append((self.missing[m] + self.kind[m]).expand(b, 1, -1))
            keeps.append(~present[:, m : m + 1])
        h = self.encoder(torch.cat(seqs, dim=1), src_key_padding_mask=~torch.cat(keeps, dim=1))
        return self.head(h[:, 0]), None


def _present_or_all(present: torch.Tensor) -> torch.Tensor:
    """``present`` (B, M) with all-False rows turned all-True (fall back to every modality)."""
    return present | ~present.any(dim=1, keepdim=True)


def make_fusion(name: str, *, num_modalities: int, dim: int, num_classes: int, max_len: int = 512,
                layers: int = 1, heads: int = 4, dropout: float = 0.1) -> nn.Module:
    """Build fusion ``name`` (one of FUSIONS); see the module docstring for its inputs and outputs."""
    if name == "late":
        return LateFusion()
    if name == "concat":
        return ConcatFusion(num_modalities=num_modalities, dim=dim, num_classes=num_classes, dropout=dropout)
    if name == "gated":
        return GatedFusion(num_modalities=num_modalities, dim=dim, num_classes=num_classes, dropout=dropout)
    if name == "attention":
        return AttentionFusion(num_modalities=num_modalities, dim=dim, num_classes=num_classes,
                               max_len=max_len, layers=layers, heads=heads, dropout=dropout)
    raise ValueError(f"unknown fusion {name!r}; choose one of {list(FUSIONS)}")
