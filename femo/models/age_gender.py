"""A torch port of face-api.js's AgeGenderNet (npm ``@vladmandic/face-api``, ``age_gender_model``).

The net estimates a *perceived* age and sex from a face crop; it knows nothing about the person,
only about how the face looks to the people who labelled its training set. Architecture, as in
face-api.js ``TinyXception(2)`` + ``AgeGenderNet``:

* input (N, 112, 112, 3) RGB in 0..255, minus the mean RGB (122.782, 117.001, 104.298), / 255;
* entry flow: 3x3 conv 3->32 stride 2 + ReLU (56 px), then two reduction blocks 32->64 (28 px)
  and 64->128 (14 px); a reduction block is [ReLU] -> separable conv -> ReLU -> separable conv
  -> 3x3 max pool stride 2, plus a strided 1x1 "expansion" conv of its input (the first block
  skips the input ReLU);
* middle flow: two main blocks of 128 channels, each three (ReLU -> separable conv) plus the input;
* exit flow: a reduction block 128->256 (7 px), separable conv 256->512 + ReLU;
* 7x7 average pool (stride 2, 'valid') -> (N, 512) -> two fully connected heads: age (N,) in
  years (a regression) and sex logits (N, 2) in :data:`SEX_CLASSES` order (softmax gives
  probabilities; face-api.js reads index 0 as "male").

All convolutions and pools use TensorFlow's 'same' padding (:class:`femo.models.tf_compat.SamePad`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from femo.assets import asset_path
from femo.models.faceapi import TfjsFormatError, faceapi_preprocess, read_tfjs_weights
from femo.models.tf_compat import SamePad, conv_weight, depthwise_weight, separable_conv

#: Order of the sex head's logits (face-api.js ``Gender``: index 0 is male).
SEX_CLASSES: tuple[str, ...] = ("male", "female")
MANIFEST_NAME = "age_gender_model-weights_manifest.json"


class _ReductionBlock(nn.Module):
    """(N, cin, H, W) -> (N, cout, H/2, W/2): two separable convs + max pool, plus a 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, *, activate_input: bool = True) -> None:
        super().__init__()
        self.activate_input = activate_input
        self.separable_conv0 = separable_conv(cin, cout)
        self.separable_conv1 = separable_conv(cout, cout)
        self.pool = nn.Sequential(SamePad((3, 3), (2, 2), value=float("-inf")), nn.MaxPool2d(3, stride=2))
        self.expansion_conv = nn.Sequential(SamePad((1, 1), (2, 2)), nn.Conv2d(cin, cout, 1, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(x) if self.activate_input else x
        out = self.separable_conv1(F.relu(self.separable_conv0(out)))
        return self.pool(out) + self.expansion_conv(x)


class _MainBlock(nn.Module):
    """(N, C, H, W) -> same shape: three ReLU + separable conv, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(separable_conv(channels, channels) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv in self.convs:
            out = conv(F.relu(out))
        return out + x


class AgeGenderNet(nn.Module):
    """(N, 3, 112, 112) normalised RGB -> (age (N,) years, sex logits (N, 2) in SEX_CLASSES order).

    Build with random weights (``AgeGenderNet()``) or load the published ones with
    :func:`load_age_gender`. :meth:`features` gives the 512-d pooled output.
    """

    sex_classes: tuple[str, ...] = SEX_CLASSES
    input_size: int = 112
    feature_dim: int = 512

    def __init__(self, num_main_blocks: int = 2) -> None:
        super().__init__()
        self.conv_in = nn.Sequential(SamePad((3, 3), (2, 2)), nn.Conv2d(3, 32, 3, stride=2))
        self.entry = nn.ModuleList([_ReductionBlock(32, 64, activate_input=False), _ReductionBlock(64, 128)])
        self.middle = nn.ModuleList(_MainBlock(128) for _ in range(num_main_blocks))
        self.exit_reduction = _ReductionBlock(128, 256)
        self.exit_conv = separable_conv(256, 512)
        self.fc_age = nn.Linear(512, 1)
        self.fc_sex = nn.Linear(512, len(SEX_CLASSES))

    preprocess = staticmethod(faceapi_preprocess)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 112) preprocessed -> (N, 512)."""
        out = F.relu(self.conv_in(x))  # (N, 32, 56, 56)
        for block in (*self.entry, *self.middle, self.exit_reduction):
            out = block(out)  # ... -> (N, 256, 7, 7)
        out = F.relu(self.exit_conv(out))  # (N, 512, 7, 7)
        return F.avg_pool2d(out, 7, stride=2).flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 112, 112) preprocessed -> (age (N,) years, sex logits (N, 2))."""
        f = self.features(x)
        return self.fc_age(f).squeeze(1), self.fc_sex(f)


def _copy_separable(seq: nn.Sequential, w: dict[str, np.ndarray], prefix: str) -> None:
    seq[1].weight.data.copy_(depthwise_weight(w[f"{prefix}/depthwise_filter"]))
    seq[2].weight.data.copy_(conv_weight(w[f"{prefix}/pointwise_filter"]))
    seq[2].bias.data.copy_(torch.from_numpy(w[f"{prefix}/bias"]))


def _copy_conv(conv: nn.Conv2d, w: dict[str, np.ndarray], prefix: str) -> None:
    conv.weight.data.copy_(conv_weight(w[f"{prefix}/filters"]))
    conv.bias.data.copy_(torch.from_numpy(w[f"{prefix}/bias"]))


def _copy_reduction(block: _ReductionBlock, w: dict[str, np.ndarray], prefix: str) -> None:
    _copy_separable(block.separable_conv0, w, f"{prefix}/separable_conv0")
    _copy_separable(block.separable_conv1, w, f"{prefix}/separable_conv1")
    _copy_conv(block.expansion_conv[1], w, f"{prefix}/expansion_conv")


def _copy_linear(fc: nn.Linear, w: dict[str, np.ndarray], prefix: str) -> None:
    fc.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(w[f"{prefix}/weights"].T)))
    fc.bias.data.copy_(torch.from_numpy(w[f"{prefix}/bias"]))


def age_gender_from_files(manifest: str | Path, shard_dir: str | Path | None = None) -> AgeGenderNet:
    """Load face-api.js age/gender weights (manifest + shard) into :class:`AgeGenderNet` (eval)."""
    w = read_tfjs_weights(manifest, shard_dir)
    net = AgeGenderNet()
    try:
        _copy_conv(net.conv_in[1], w, "entry_flow/conv_in")
        for i, block in enumerate(net.entry):
            _copy_reduction(block, w, f"entry_flow/reduction_block_{i}")
        for i, block in enumerate(net.middle):
            for j, conv in enumerate(block.convs):
                _copy_separable(conv, w, f"middle_flow/main_block_{i}/separable_conv{j}")
        _copy_reduction(net.exit_reduction, w, "exit_flow/reduction_block")
        _copy_separable(net.exit_conv, w, "exit_flow/separable_conv")
        _copy_linear(net.fc_age, w, "fc/age")
        _copy_linear(net.fc_sex, w, "fc/gender")
    except KeyError as exc:
        raise TfjsFormatError(f"{manifest}: weight {exc.args[0]} missing; not a face-api.js age/gender model") from None
    except RuntimeError as exc:  # shape mismatch in copy_
        raise TfjsFormatError(f"{manifest}: weight shapes do not match AgeGenderNet ({exc})") from exc
    return net.eval()


def load_age_gender(path: str | Path | None = None) -> AgeGenderNet:
    """The face-api.js age/gender net in torch (eval mode).

    ``path``: the weights manifest JSON (its shard ``age_gender_model.bin`` next to it), the
    shard, or a folder holding both; None = the femo cache
    (:class:`femo.assets.MissingModelError` naming ``femo models fetch --face-weights``).
    """
    if path is None:
        asset_path("age_gender_model.bin")
        manifest = asset_path(MANIFEST_NAME)
    else:
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        manifest = path if path.suffix == ".json" else folder / MANIFEST_NAME
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: face-api.js age/gender weights manifest not found")
    return age_gender_from_files(manifest)
