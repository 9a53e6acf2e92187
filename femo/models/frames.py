"""Per-frame face encoders: ``x (N, 3, S, S) float in [0, 1] -> (N, out_dim)``.

:func:`build_frame_encoder` picks a backbone by name (:data:`FRAME_ENCODERS`) and a freeze
policy (:data:`FREEZE_POLICIES`); preprocessing (resize, normalisation) lives inside the module,
so callers always pass plain RGB crops in [0, 1].

* ``resnet18 | resnet34 | resnet50`` (torchvision; features = the pooled output before ``fc``).
  ``weights``: a torchvision weights enum (e.g. ``ResNet18_Weights.IMAGENET1K_V1``, or its
  member name as a string), read from the torch hub cache ``$TORCH_HOME/hub/checkpoints`` and
  never downloaded; a local checkpoint path (a state dict, ``fc.*`` keys ignored); or None
  (random init). Normalisation comes from the weights' ``transforms()`` (the model's default
  weights' for None or a checkpoint). ResNets run at the input's own size unless
  ``input_size`` is given (ImageNet weights were trained at 224; 112-pixel faces cost 4x less).
* ``fer_xception`` (128-d) and ``faceapi`` (256-d): face-expression ports from
  :mod:`femo.models.face_pretrained`; ``weights`` None = the femo cache, or a file path.
* ``faceapi_fer`` (256-d): femo's own encoder, face-api.js's architecture fine-tuned on FER2013
  (:mod:`femo.models.fer_encoder`, 48x48 gray); ``weights`` None = the weights shipped in
  ``femo/resources``, or a state dict file.
* ``fer_vgg`` (512-d): femo's own VGG-style CNN trained from scratch on FER2013's train split
  (:mod:`femo.models.fer_vgg`, 48x48 gray, 4.7 M parameters); ``weights`` None = the weights shipped
  in ``femo/resources`` (``fer_vgg.pt``), or a state dict file. ``last-block`` trains its 4th stage.
* ``crop_cnn`` (64-d): a small CNN trained from scratch with the rest of the net (use
  ``freeze="full"``): four conv3x3-BatchNorm-ReLU-maxpool blocks (8, 16, 32, 64 channels) at
  :data:`CROP_CNN_SIZE` px (``input_size`` overrides), 25k parameters, about 2.5 M multiply-adds
  per frame, so 16-frame clips train end to end on a CPU. ``weights`` None = random init, or a
  state dict file of the trunk. Made for data whose expressions are visible in small crops (the
  synthetic set); real faces want a pretrained encoder.

Freeze policies: ``frozen`` (no parameter trains, BatchNorm stays in eval mode even under
``.train()``), ``last-block`` (only the last stage trains: ResNet ``layer4``, face-api
``dense3``, mini-Xception's last residual block), ``full`` (every feature parameter trains;
the ports' unused classifier layers never do).
"""
from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from femo.models.face_pretrained import load_faceapi, load_mini_xception
from femo.models.fer_encoder import load_fer_encoder

FRAME_ENCODERS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "fer_xception", "faceapi", "faceapi_fer",
                                   "fer_vgg", "crop_cnn")
#: Side (px) at which ``crop_cnn`` reads its crops (resized inside the module).
CROP_CNN_SIZE: int = 48
FREEZE_POLICIES: tuple[str, ...] = ("frozen", "last-block", "full")


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not on disk; the message names the file and where to put it."""


class _Normalize(nn.Module):
    """Optional bilinear resize to ``size`` then ``(x - mean) / std`` per channel."""

    def __init__(self, mean: list[float], std: list[float], size: int | None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=True)
        return (x - self.mean) / self.std


class _ResNetTrunk(nn.Module):
    """A torchvision ResNet without its classifier: (N, 3, H, W) -> (N, C)."""

    def __init__(self, net: torchvision.models.ResNet) -> None:
        super().__init__()
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stages(self) -> list[list[nn.Module]]:
        n = self.net
        return [[n.conv1, n.bn1], [n.layer1], [n.layer2], [n.layer3], [n.layer4]]


class _CropCNN(nn.Module):
    """``crop_cnn``: (N, 3, s, s) normalised crops -> (N, widths[-1]); one stage per block."""

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32, 64)) -> None:
        super().__init__()
        blocks, previous = [], 3
        for width in widths:
            blocks.append(nn.Sequential(nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                        nn.ReLU(inplace=True), nn.MaxPool2d(2)))
            previous = width
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean((2, 3))  # global average pool: (N, C)

    def stages(self) -> list[list[nn.Module]]:
        return [[block] for block in self.blocks]


class _PortTrunk(nn.Module):
    """A face-expression port used for its penultimate features; preprocessing is separate."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        for p in net.parameters():  # the classifier stays frozen; stages() re-enable feature layers
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def stages(self) -> list[list[nn.Module]]:
        groups = self.net.stages()
        if groups and isinstance(groups[0], list):  # mini-Xception: layer names per block
            return [[self.net.graph.ops[name] for name in names] for names in groups]
        return [[g] for g in groups]


class _PortPreprocess(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.fn = type(net).preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class FrameEncoder(nn.Module):
    """RGB face crops ``x (N, 3, S, S) float in [0, 1]`` -> features ``(N, out_dim)``.

    Attributes: ``name``, ``out_dim``, ``freeze``, ``preprocess`` (resize + normalisation),
    ``backbone`` (the trunk, with ``stages()``).
    """

    def __init__(self, *, name: str, backbone: nn.Module, preprocess: nn.Module, out_dim: int,
                 freeze: str) -> None:
        super().__init__()
        self.name, self.out_dim, self.freeze = name, int(out_dim), freeze
        self.backbone, self.preprocess = backbone, preprocess
        stages = backbone.stages()
        trainable = {"frozen": [], "last-block": stages[-1:], "full": stages}[freeze]
        for group in stages:
            for module in group:
                module.requires_grad_(False)
        for group in trainable:
            for module in group:
                module.requires_grad_(True)
        self._frozen_idx = [i for i in range(len(stages)) if stages[i] not in trainable]
        self.train()  # torch convention: a new module is in training mode (frozen stages stay eval)

    def train(self, mode: bool = True) -> FrameEncoder:
        """Set training mode; frozen stages (and all of a ``frozen`` encoder) stay in eval mode."""
        super().train(mode)
        if self.freeze == "frozen":
            self.backbone.eval()
            return self
        stages = self.backbone.stages()
        for i in self._frozen_idx:
            for module in stages[i]:
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise ValueError(f"{self.name}: expected x (N, 3, S, S) float in [0, 1], got "
                             f"{tuple(x.shape)} {x.dtype}")
        return self.backbone(self.preprocess(x))


def build_frame_encoder(name: str, *, weights: object = None, freeze: str = "frozen",
                        input_size: int | None = None) -> FrameEncoder:
    """Build a :class:`FrameEncoder` by name; see the module docstring for ``weights``.

    Raises ValueError for unknown names/policies (listing the known ones) and
    :class:`MissingWeightsError` when pretrained weights are not on disk.
    """
    if name not in FRAME_ENCODERS:
        raise ValueError(f"unknown frame encoder {name!r}; known: {', '.join(FRAME_ENCODERS)}")
    if freeze not in FREEZE_POLICIES:
        raise ValueError(f"unknown freeze policy {freeze!r}; known: {', '.join(FREEZE_POLICIES)}")
    if name.startswith("resnet"):
        trunk, norm = _resnet(name, weights, input_size)
        return FrameEncoder(name=name, backbone=trunk, preprocess=norm, out_dim=trunk.out_dim, freeze=freeze)
    if name == "crop_cnn":
        return _crop_cnn(weights, input_size, freeze)
    if _is_weights_enum(weights):
        raise ValueError(f"{name}: weights must be None (femo cache) or a file path, not {weights}")
    loader = {"faceapi": load_faceapi, "fer_xception": load_mini_xception, "faceapi_fer": load_fer_encoder,
              "fer_vgg": partial(load_fer_encoder, arch="vgg")}[name]
    net = loader(weights)
    if input_size not in (None, net.input_size):
        raise ValueError(f"{name}: fixed input size {net.input_size}, got input_size={input_size}")
    return FrameEncoder(name=name, backbone=_PortTrunk(net), preprocess=_PortPreprocess(net),
                        out_dim=net.feature_dim, freeze=freeze)


def _crop_cnn(weights: object, input_size: int | None, freeze: str) -> FrameEncoder:
    """The ``crop_cnn`` encoder; ``weights`` None (random init) or a state dict file of its trunk."""
    trunk = _CropCNN()
    if weights is not None:
        if _is_weights_enum(weights) or not Path(str(weights)).is_file():
            raise FileNotFoundError(f"crop_cnn: weights must be None (random init) or a state dict file, got {weights!r}")
        _load_checkpoint(trunk, Path(weights))
    # crops in [0, 1] -> roughly zero mean, unit spread; BatchNorm does the rest
    norm = _Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25], input_size or CROP_CNN_SIZE)
    return FrameEncoder(name="crop_cnn", backbone=trunk, preprocess=norm, out_dim=trunk.out_dim, freeze=freeze)


def _is_weights_enum(weights: object) -> bool:
    """True for a torchvision weights enum member (torchvision not yet imported: it cannot be one)."""
    models = sys.modules.get("torchvision.models")
    return models is not None and isinstance(weights, models.WeightsEnum)


def _resnet(name: str, weights: object, input_size: int | None) -> tuple[_ResNetTrunk, _Normalize]:
    import torchvision  # here, not at import: runs on pretrained face ports never pay for it

    enum = torchvision.models.get_model_weights(name)
    net = getattr(torchvision.models, name)(weights=None)
    out_dim = net.fc.in_features
    resolved = _resolve_enum(name, enum, weights)
    if resolved is not None:
        net.load_state_dict(_hub_state_dict(name, resolved))
        transforms = resolved.transforms()
    else:
        if weights is not None:
            _load_checkpoint(net, Path(weights))
        transforms = enum.DEFAULT.transforms()
    trunk = _ResNetTrunk(net)
    trunk.out_dim = out_dim
    return trunk, _Normalize(list(transforms.mean), list(transforms.std), input_size)


def _resolve_enum(name: str, enum: type[WeightsEnum], weights: object) -> WeightsEnum | None:
    """The weights enum member ``weights`` denotes, or None (random init or a checkpoint path)."""
    if weights is None:
        return None
    if _is_weights_enum(weights):
        if not isinstance(weights, enum):
            raise ValueError(f"{name}: weights {weights} belong to another model; use a {enum.__name__} member")
        return weights
    if isinstance(weights, (str, os.PathLike)) and Path(weights).is_file():
        return None
    member = str(weights).split(".")[-1]
    if isinstance(weights, str) and member in enum.__members__:
        return enum[member]
    raise FileNotFoundError(f"{name}: weights {weights!r} is neither a checkpoint file nor a "
                            f"{enum.__name__} member (known: {', '.join(enum.__members__)})")


def _hub_state_dict(name: str, weights: WeightsEnum) -> dict:
    """Read ``weights`` from the torch hub cache; never downloads."""
    filename = os.path.basename(urlparse(weights.url).path)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / filename
    if not path.is_file():
        raise MissingWeightsError(
            f"{name}: {weights} needs the file {filename} in {folder} (the torch hub cache, "
            f"$TORCH_HOME/hub/checkpoints); femo does not download weights at run time. Copy the file "
            f"there (torchvision saves it there on a machine with network access), or use weights=None "
            f"or a local checkpoint path")
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_checkpoint(net: nn.Module, path: Path) -> None:
    """Load a state dict (or {'state_dict'|'model': state dict}) into ``net``, ignoring ``fc.*``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors, or a non-tensor payload refused by weights_only
        raise ValueError(f"{path}: not a loadable torch state dict ({exc})") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shape mismatches
        raise ValueError(f"{path}: checkpoint does not fit {type(net).__name__} ({exc})") from exc
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path}: checkpoint does not fit {type(net).__name__}: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
