"""Small torch pieces that reproduce TensorFlow/Keras semantics in ported networks.

TensorFlow's ``padding="same"`` pads ``total = max((ceil(in/s) - 1) * s + k - in, 0)`` pixels per
axis and puts the odd pixel at the bottom/right; torch's symmetric ``padding=`` cannot express
that for stride-2 layers on even inputs, so ported layers pad explicitly with :class:`SamePad`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding TensorFlow's 'same' uses on an axis of ``size`` pixels."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SamePad(nn.Module):
    """Pad (N, C, H, W) as TensorFlow's 'same' does before a ``kernel``/``stride`` window.

    ``value`` fills the border (0 for convolutions, -inf for max pooling).
    """

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], value: float = 0.0) -> None:
        super().__init__()
        self.kernel, self.stride, self.value = tuple(kernel), tuple(stride), float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel[1], self.stride[1])
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom), value=self.value)


def conv_weight(kernel: np.ndarray) -> torch.Tensor:
    """TF conv kernel (kh, kw, in, out) -> torch (out, in, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(kernel, np.float32).transpose(3, 2, 0, 1)))


def depthwise_weight(kernel: np.ndarray) -> torch.Tensor:
    """TF depthwise kernel (kh, kw, in, mult) -> torch grouped-conv weight (in * mult, 1, kh, kw).

    TF orders depthwise output channels as ``c * mult + m``, which this reshape preserves.
    """
    kh, kw, cin, mult = kernel.shape
    w = np.asarray(kernel, np.float32).transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
    return torch.from_numpy(np.ascontiguousarray(w))


def separable_conv(cin: int, cout: int, *, kernel: int = 3, stride: int = 1, mult: int = 1,
                   bias: bool = True) -> nn.Sequential:
    """TF ``separableConv2d`` with 'same' padding: depthwise (groups=cin) then 1x1 pointwise."""
    return nn.Sequential(
        SamePad((kernel, kernel), (stride, stride)),
        nn.Conv2d(cin, cin * mult, kernel, stride=stride, groups=cin, bias=False),
        nn.Conv2d(cin * mult, cout, 1, bias=bias),
    )
