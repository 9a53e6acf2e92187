"""Audio encoder: a small 2D CNN over the log-mel plus a prosody MLP, as a token sequence.

Input: ``audio`` (B, 1, M, A) normalised log-mel (M mel bands, A time steps), ``prosody`` (B, A, 4)
and ``audio_mask`` (B,) bool. Three strided conv blocks halve mel and time each; channels x the remaining
M // 8 mel bins are flattened (keeping where in frequency a pattern sits) and projected, leaving
L = A // 8 time tokens of width D; the prosody is average-pooled to the same L steps,
projected by an MLP and added. GroupNorm instead of BatchNorm, so clips without audio (all zeros)
do not skew running statistics.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(1, c_out), nn.GELU())


class AudioEncoder(nn.Module):
    """Log-mel CNN + prosody MLP -> tokens (B, L, D) with mask (B, L) = audio_mask repeated."""

    def __init__(self, *, dim: int, n_mels: int = 64, channels: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        if n_mels % 8:
            raise ValueError(f"n_mels must be a multiple of 8, got {n_mels}")
        self.n_mels = n_mels
        self.cnn = nn.Sequential(_block(1, channels // 2), _block(channels // 2, channels), _block(channels, channels))
        self.proj = nn.Linear(channels * (n_mels // 8), dim)
        self.prosody = nn.Sequential(nn.Linear(4, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mel = torch.nan_to_num(batch["audio"].float())  # (B, 1, M, A)
        if mel.shape[-1] < 8 or mel.shape[-2] != self.n_mels:
            raise ValueError(f"audio must be (B, 1, {self.n_mels}, A>=8), got {tuple(mel.shape)}")
        h = self.cnn(mel)  # (B, C, M // 8, L)
        h = h.flatten(1, 2).transpose(1, 2)  # (B, L, C * M // 8)
        steps = h.shape[1]
        pro = F.adaptive_avg_pool1d(torch.nan_to_num(batch["prosody"].float()).transpose(1, 2), steps)
        present = batch["audio_mask"].bool().reshape(-1)  # (B,)
        tokens = self.proj(h) + self.prosody(pro.transpose(1, 2))  # (B, L, D)
        mask = present.unsqueeze(1).expand(-1, steps)
        return tokens * mask.unsqueeze(-1).to(tokens.dtype), mask
