"""femo's FER2013 VGG-style face-expression CNN, trained from scratch at FER2013's resolution.

``FerVggNet``: gray faces at 48x48 through four stages of two 3x3 conv + batch-norm + ReLU layers
and a 2x2 max pool (64, 128, 256, 512 channels: 48 -> 24 -> 12 -> 6 -> 3 pixels), a global average
pool -> 512-d features -> dropout -> 7 logits in FER2013's label order. This is the plain VGG
layout that the FER2013 literature found strongest among single CNNs (Pramerdorfer & Kampel 2016;
Khaireddin & Chen 2021), kept narrow enough to train on a CPU: 4.7 M parameters, 0.47 GMAC per
image. RGB inputs are turned to gray (ITU-R 601 luma) first, because the training images are gray.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LUMA = (0.299, 0.587, 0.114)
_WIDTHS = (64, 128, 256, 512)
_MEAN, _STD = 0.5, 0.25  # FER2013's gray level is about 0.51 +- 0.25 over train


def gray48(x: torch.Tensor) -> torch.Tensor:
    """RGB ``(N, 3, S, S)`` in [0, 1] -> luma ``(N, 1, 48, 48)`` in [0, 1] (antialiased resize)."""
    luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    gray = (x * luma).sum(1, keepdim=True)  # (N, 1, S, S)
    if gray.shape[-2:] != (48, 48):
        gray = F.interpolate(gray, size=(48, 48), mode="bilinear", align_corners=False, antialias=True)
    return gray


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
