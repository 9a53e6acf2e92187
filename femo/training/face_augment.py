"""Batch augmentation of gray face images for :mod:`femo.training.face_encoder`.

Whole batches are transformed at once (one ``affine_grid`` for rotation, scale, shift and mirror;
brightness and contrast; random erasing), so data loading costs nothing per training step.
"""
from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F


class AugmentSettings(Protocol):
    """The magnitudes :func:`augment` reads (``femo.training.face_encoder.EncoderTrainConfig`` has
    them): angles in degrees, the rest fractions of the image size or of the gray range."""

    rotation: float
    scale: float
    shift: float
    brightness: float
    contrast: float
    erase: float


def augment(x: torch.Tensor, gen: torch.Generator, cfg: AugmentSettings) -> torch.Tensor:
    """uint8 (B, H, W) -> float (B, 3, H, W) in [0, 1], gray replicated, randomly transformed."""
    b = x.shape[0]

    def uniform(*shape: int) -> torch.Tensor:  # in [-1, 1)
        return torch.rand(*shape, generator=gen) * 2 - 1

    img = x.float().div(255.0).unsqueeze(1)  # (B, 1, H, W)
    angle = uniform(b) * math.radians(cfg.rotation)
    zoom = 1 + uniform(b) * cfg.scale
    shift = uniform(b, 2) * cfg.shift * 2  # affine_grid coordinates span 2 units
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    img = F.grid_sample(img, grid, padding_mode="border", align_corners=False)
    mean = img.mean(dim=(2, 3), keepdim=True)
    contrast = 1 + uniform(b, 1, 1, 1) * cfg.contrast
    bright = uniform(b, 1, 1, 1) * cfg.brightness
    img = ((img - mean) * contrast + mean + bright).clamp(0, 1)
    if cfg.erase > 0:
        img = random_erase(img, gen, cfg.erase)
    return img.expand(-1, 3, -1, -1)


def random_erase(img: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """Random erasing: with probability ``p`` per image, one rectangle (2-20% of the area, aspect
    0.3-3.3) filled with uniform noise. ``img``: (B, 1, H, W) in [0, 1]."""
    b, _, h, w = img.shape
    area = (0.02 + 0.18 * torch.rand(b, generator=gen)) * h * w
    aspect = torch.exp(torch.empty(b).uniform_(math.log(0.3), math.log(3.3), generator=gen))
    eh = (area * aspect).sqrt().clamp(1, h).long()
    ew = (area / aspect).sqrt().clamp(1, w).long()
    top = (torch.rand(b, generator=gen) * (h - eh + 1)).long()
    left = (torch.rand(b, generator=gen) * (w - ew + 1)).long()
    on = torch.rand(b, generator=gen) < p
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    box = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))
           & (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1)) & on.view(b, 1, 1))
    noise = torch.rand(img.shape, generator=gen)
    return torch.where(box.unsqueeze(1), noise, img)
