"""femo's FER2013 VGG-style face-expression CNN, trained from scratch at FER2013's resolution.

``FerVggNet``: gray faces at 48x48 through four stages of two 3x3 conv + batch-norm + ReLU layers
and a 2x2 max pool (64, 128, 256, 512 channels: 48 -> 24 -> 12 -> 6 -> 3 pixels), a global average
pool -> 512-d features -> dropout -> 7 logits in FER2013's label order. This is the plain VGG
layout that the FER2013 literature found strongest among single CNNs (Pramerdorfer & Kampel 2016;
Khaireddin & Chen 2021), kept narrow enough to train on a CPU: 4.7 M parameters, 0.47 GMAC per
image. RGB inputs are turned to gray (ITU-R 601 luma) first, because the training images are gray.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

_LUMA = (0.299, 0.587, 0.114)
_WIDTHS = (64, 128, 256, 512)
_MEAN, _STD = 0.5, 0.25  # FER2013's gray level is about 0.51 +- 0.25 over train


@functools.lru_cache(maxsize=16)
def resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``(size_out, size_in)`` float64 weights of an antialiased bilinear resize along one axis.

    The triangle filter widened by the scale factor when shrinking, each row normalised to sum 1:
    the weights ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)`` (and PIL)
    apply, written out so that the resize is two matrix products, which export to ONNX (the
    antialiased interpolate has no ONNX form). Computed in NumPy: a traced graph holds it as a
    constant.
    """
    scale = size_in / size_out
    support = max(scale, 1.0)  # the triangle's half-width in input pixels
    inv = 1.0 / max(scale, 1.0)
    w = np.zeros((size_out, size_in))
    for i in range(size_out):
        center = scale * (i + 0.5)
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), size_in)
        taps = np.maximum(0.0, 1.0 - np.abs((np.arange(lo, hi) - center + 0.5) * inv))
        w[i, lo:hi] = taps / taps.sum()
    return w


def gray48(x: torch.Tensor) -> torch.Tensor:
    """RGB ``(N, 3, H, W)`` in [0, 1] -> luma ``(N, 1, 48, 48)`` in [0, 1]: ITU-R 601 luma, then an
    antialiased bilinear resize as two matrix products (:func:`resize_matrix`; equal to
    ``F.interpolate(..., antialias=True)`` up to float rounding, and exportable to ONNX)."""
    luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    gray = (x * luma).sum(1, keepdim=True)  # (N, 1, H, W)
    h, w = gray.shape[-2:]
    if (h, w) == (48, 48):
        return gray
    rows = torch.from_numpy(resize_matrix(int(h), 48)).to(x.dtype).to(x.device)  # (48, H)
    cols = torch.from_numpy(resize_matrix(int(w), 48).T.copy()).to(x.dtype).to(x.device)  # (W, 48)
    return rows @ gray @ cols


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.MaxPool2d(2))


class FerVggNet(nn.Module):
    """``(N, 1, 48, 48)`` preprocessed faces -> logits ``(N, 7)`` in FER2013's label order.

    ``preprocess`` maps RGB ``(N, 3, S, S)`` in [0, 1] to the network input; ``features`` gives the
    512-d pooled output of the last stage; ``stages()`` lists the four conv stages.
    """

    input_size: int = 48
    feature_dim: int = _WIDTHS[-1]

    def __init__(self, *, dropout: float = 0.4, num_classes: int = 7) -> None:
        super().__init__()
        cins = (1, *_WIDTHS[:-1])
        self.blocks = nn.ModuleList(_stage(i, o) for i, o in zip(cins, _WIDTHS))
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """RGB ``(N, 3, S, S)`` in [0, 1] -> standardised gray ``(N, 1, 48, 48)``."""
        return (gray48(x) - _MEAN) / _STD

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 48, 48) preprocessed -> (N, 512)."""
        for block in self.blocks:
            x = block(x)
        return x.float().mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 48, 48) preprocessed -> logits (N, 7)."""
        return self.fc(self.drop(self.features(x)))

    def stages(self) -> list[nn.Module]:
        """The four conv stages, first to last (the classifier is not a stage)."""
        return list(self.blocks)
