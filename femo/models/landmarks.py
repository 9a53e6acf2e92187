"""Landmark / geometry encoder: per-feature normalisation, then a per-frame MLP.

Input: ``landmarks`` (B, T, G) float32 (``femo.features.geometry``) and ``landmarks_mask`` (B, T)
bool. Output of :meth:`LandmarkEncoder.forward`: tokens (B, T, D) and their mask (B, T).

Geometry channels have very different offsets and spreads (a mean face shape, blendshape scores,
flags), so each channel is standardised by a BatchNorm computed over *present* frames only
(missing frames never enter its statistics) before the MLP; missing frames give zero tokens.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LandmarkEncoder(nn.Module):
    """Masked per-channel BatchNorm + per-frame two-layer MLP from G geometry features to D."""

    def __init__(self, *, in_dim: int, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))

    def _normalise(self, present: torch.Tensor) -> torch.Tensor:
        """(N, G) present frames -> standardised; batch statistics only when there are >= 2 frames."""
        if self.training and len(present) > 1:
            return self.norm(present)
        n = self.norm
        return F.batch_norm(present, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0, n.eps)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.nan_to_num(batch["landmarks"].float())  # (B, T, G)
        mask = batch["landmarks_mask"].bool()  # (B, T)
        normed = torch.zeros_like(x)
        if mask.any():
            normed[mask] = self._normalise(x[mask])
        tokens = self.mlp(normed) * mask.unsqueeze(-1).to(x.dtype)  # (B, T, D)
        return tokens, mask
