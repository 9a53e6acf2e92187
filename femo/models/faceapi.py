"""A torch port of face-api.js's FaceExpressionNet (npm ``@vladmandic/face-api``).

Weights come as a TF.js weights manifest (JSON) plus a binary shard; :func:`read_tfjs_weights`
decodes them (float32 as is, uint8/uint16 affine-quantized as ``q * scale + min``, float16).
Architecture, as in face-api.js ``FaceFeatureExtractor`` + ``FaceExpressionNet``:

* input (N, 112, 112, 3) RGB in 0..255, minus the mean RGB (122.782, 117.001, 104.298), / 255;
* four ``denseBlock4`` stages (32, 64, 128, 256 channels), each halving the resolution: conv0
  (a plain 3x3 conv in the first block, a depthwise-separable conv elsewhere, stride 2) then
  three depthwise-separable convs whose inputs are the ReLU of the running sum of the previous
  outputs (a dense connection); all convs use TF 'same' padding and a bias;
* 7x7 average pool (stride 2, 'valid') -> (N, 256) features -> fully connected -> 7 logits
  (softmax gives FACEAPI_CLASSES probabilities).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from femo.models.tf_compat import SamePad, conv_weight, depthwise_weight, separable_conv

#: Output order of face-api.js FaceExpressions.
FACEAPI_CLASSES: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
MEAN_RGB: tuple[float, float, float] = (122.782, 117.001, 104.298)
_CHANNELS = (32, 64, 128, 256)


class TfjsFormatError(ValueError):
    """A TF.js weights manifest or shard is malformed; the message names the file."""


def read_tfjs_weights(manifest: str | Path, shard_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Decode a TF.js ``*-weights_manifest.json`` and its shards -> {name: float32 array}.

    Shards are looked up next to the manifest unless ``shard_dir`` is given.
    """
    manifest = Path(manifest)
    folder = Path(shard_dir) if shard_dir else manifest.parent
    try:
        groups = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TfjsFormatError(f"{manifest}: unreadable weights manifest ({exc})") from exc
    out: dict[str, np.ndarray] = {}
    for group in groups:
        buf = b"".join((folder / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            arr, offset = _decode_one(spec, buf, offset, manifest)
            out[spec["name"]] = arr
        if offset != len(buf):
            raise TfjsFormatError(f"{manifest}: shards hold {len(buf)} B, the manifest describes {offset} B")
    return out


def _decode_one(spec: dict, buf: bytes, offset: int, manifest: Path) -> tuple[np.ndarray, int]:
    shape = tuple(spec["shape"])
    count = int(np.prod(shape)) if shape else 1
    quant = spec.get("quantization")
    stored = quant["dtype"] if quant else spec["dtype"]
    dtypes = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "uint16": np.uint16,
              "float16": np.float16}
    if stored not in dtypes:
        raise TfjsFormatError(f"{manifest}: weight {spec['name']} has unsupported dtype {stored!r}")
    dtype = np.dtype(dtypes[stored]).newbyteorder("<")
    end = offset + count * dtype.itemsize
    if end > len(buf):
        raise TfjsFormatError(f"{manifest}: weight {spec['name']} runs past the end of the shards")
    raw = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    if quant and stored in ("uint8", "uint16"):
        values = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
    else:
        values = raw.astype(np.float32)
    return values.reshape(shape), end


class _DenseBlock4(nn.Module):
    """face-api.js ``denseBlock4``: (N, cin, H, W) -> (N, cout, H/2, W/2)."""

    def __init__(self, cin: int, cout: int, *, first: bool) -> None:
        super().__init__()
        if first:
            self.conv0 = nn.Sequential(SamePad((3, 3), (2, 2)), nn.Conv2d(cin, cout, 3, stride=2))
        else:
            self.conv0 = separable_conv(cin, cout, stride=2)
        self.conv1, self.conv2, self.conv3 = (separable_conv(cout, cout) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = F.relu(self.conv0(x))
        out2 = self.conv1(out1)
        out3 = self.conv2(F.relu(out1 + out2))
        out4 = self.conv3(F.relu(out1 + out2 + out3))
        return F.relu(out1 + out2 + out3 + out4)


def faceapi_preprocess(x: torch.Tensor) -> torch.Tensor:
    """RGB (N, 3, S, S) in [0, 1] -> (N, 3, 112, 112) as face-api.js normalises 0..255 pixels
    (shared by every face-api.js net femo ports)."""
    if x.shape[-2:] != (112, 112):
        x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(MEAN_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * 255.0 - mean) / 255.0


class FaceApiExpressionNet(nn.Module):
    """(N, 3, 112, 112) normalised RGB -> logits (N, 7) in FACEAPI_CLASSES order.

    Build with random weights (``FaceApiExpressionNet()``) or load the published ones with
    :func:`faceapi_from_files`. ``features`` gives the 256-d pooled output of the last block.
    """

    classes: tuple[str, ...] = FACEAPI_CLASSES
    input_size: int = 112
    feature_dim: int = 256

    def __init__(self) -> None:
        super().__init__()
        cins = (3,) + _CHANNELS[:-1]
        self.blocks = nn.ModuleList(_DenseBlock4(ci, co, first=i == 0)
                                    for i, (ci, co) in enumerate(zip(cins, _CHANNELS)))
        self.fc = nn.Linear(_CHANNELS[-1], len(FACEAPI_CLASSES))

    preprocess = staticmethod(faceapi_preprocess)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 112) preprocessed -> (N, 256)."""
        for block in self.blocks:
            x = block(x)
        return F.avg_pool2d(x, 7, stride=2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 112) preprocessed -> logits (N, 7)."""
        return self.fc(self.features(x))

    def stages(self) -> list[nn.Module]:
        """The four dense blocks, first to last (the classifier is not a stage)."""
        return list(self.blocks)


def _load_separable(seq: nn.Sequential, w: dict[str, np.ndarray], prefix: str) -> None:
    seq[1].weight.data.copy_(depthwise_weight(w[f"{prefix}/depthwise_filter"]))
    seq[2].weight.data.copy_(conv_weight(w[f"{prefix}/pointwise_filter"]))
    seq[2].bias.data.copy_(torch.from_numpy(w[f"{prefix}/bias"]))


def faceapi_from_files(manifest: str | Path, shard_dir: str | Path | None = None) -> FaceApiExpressionNet:
    """Load face-api.js expression weights (manifest + shard) into :class:`FaceApiExpressionNet`."""
    w = read_tfjs_weights(manifest, shard_dir)
    net = FaceApiExpressionNet()
    try:
        for i, block in enumerate(net.blocks):
            if i == 0:
                block.conv0[1].weight.data.copy_(conv_weight(w["dense0/conv0/filters"]))
                block.conv0[1].bias.data.copy_(torch.from_numpy(w["dense0/conv0/bias"]))
            else:
                _load_separable(block.conv0, w, f"dense{i}/conv0")
            for j in (1, 2, 3):
                _load_separable(getattr(block, f"conv{j}"), w, f"dense{i}/conv{j}")
        net.fc.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(w["fc/weights"].T)))
        net.fc.bias.data.copy_(torch.from_numpy(w["fc/bias"]))
    except KeyError as exc:
        raise TfjsFormatError(f"{manifest}: weight {exc.args[0]} missing; not a face-api.js expression model") from None
    except RuntimeError as exc:  # shape mismatch in copy_
        raise TfjsFormatError(f"{manifest}: weight shapes do not match FaceExpressionNet ({exc})") from exc
    return net.eval()
