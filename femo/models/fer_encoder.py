"""femo's own face-expression encoders trained on FER2013, and the loader for their weights.

Two architectures (:data:`FER_ARCHS`), each with weights that ship with the package:

* ``faceapi`` -> :class:`FerEncoderNet` (frame encoder ``faceapi_fer``), described below;
* ``vgg`` -> :class:`femo.models.fer_vgg.FerVggNet` (frame encoder ``fer_vgg``), a VGG-style CNN
  trained from scratch (``femo/resources/fer_vgg.pt``).

``FerEncoderNet``: gray faces at 48x48 (FER2013's own resolution) through the four dense blocks of
:class:`femo.models.faceapi.FaceApiExpressionNet` (initialised from the published face-api.js
weights), a global average pool over the final 3x3 map -> 256-d features -> 7 logits in
:data:`FER_LABELS` order. RGB inputs are turned to gray (ITU-R 601 luma) first, because the
training images are gray; gray replicated to three channels passes through unchanged.

The trained weights ship with the package (``femo/resources/fer_encoder.pt``, a float32 state
dict, with ``fer_encoder.json`` naming the command, seed, data and scores that produced them);
:func:`load_fer_encoder` reads them, or any state dict file of the same shape.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from femo.models.faceapi import MEAN_RGB, FaceApiExpressionNet
from femo.models.fer_vgg import FerVggNet, gray48

#: Class order of the logits: FER2013's label names, alphabetical (its folder names).
FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
RESOURCE_DIR = Path(__file__).resolve().parent.parent / "resources"
WEIGHTS_FILE = RESOURCE_DIR / "fer_encoder.pt"


class FerEncoderNet(nn.Module):
    """``(N, 3, 48, 48)`` preprocessed faces -> logits ``(N, 7)`` in :data:`FER_LABELS` order.

    ``preprocess`` maps RGB ``(N, 3, S, S)`` in [0, 1] to the network input; ``features`` gives the
    256-d pooled output of the last dense block; ``stages()`` lists the four blocks.
    """

    classes: tuple[str, ...] = FER_LABELS
    input_size: int = 48
    feature_dim: int = 256

    def __init__(self) -> None:
        super().__init__()
        base = FaceApiExpressionNet()
        self.blocks = base.blocks
        self.fc = nn.Linear(self.feature_dim, len(FER_LABELS))

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """RGB ``(N, 3, S, S)`` in [0, 1] -> gray replicated ``(N, 3, 48, 48)``, face-api.js scaling."""
        gray = gray48(x)  # (N, 1, 48, 48)
        mean = torch.tensor(MEAN_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (gray * 255.0 - mean) / 255.0  # (N, 3, 48, 48)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 48, 48) preprocessed -> (N, 256)."""
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 48, 48) preprocessed -> logits (N, 7)."""
        return self.fc(self.features(x))

    def stages(self) -> list[nn.Module]:
        """The four dense blocks, first to last (the classifier is not a stage)."""
        return list(self.blocks)


#: Architecture name -> (network class, the file of its shipped weights).
FER_ARCHS: dict[str, tuple[type[nn.Module], Path]] = {"faceapi": (FerEncoderNet, WEIGHTS_FILE),
                                                      "vgg": (FerVggNet, RESOURCE_DIR / "fer_vgg.pt")}


def _arch_entry(arch: str) -> tuple[type[nn.Module], Path]:
    if arch not in FER_ARCHS:
        raise ValueError(f"unknown encoder architecture {arch!r}; choose one of {sorted(FER_ARCHS)}")
    return FER_ARCHS[arch]


def build_fer_net(arch: str) -> nn.Module:
    """A freshly initialised network of architecture ``arch`` (one of :data:`FER_ARCHS`)."""
    return _arch_entry(arch)[0]()


def arch_of(state: dict) -> str:
    """The architecture whose parameter names a state dict has (``vgg`` nets have batch norms)."""
    return "vgg" if any(k.endswith("running_mean") for k in state) else "faceapi"


def fer_encoder_from_faceapi(faceapi: FaceApiExpressionNet) -> FerEncoderNet:
    """A :class:`FerEncoderNet` with face-api.js's dense blocks and a zero classifier.

    face-api.js's own classifier does not carry over to 48-pixel gray inputs (its loss there is
    ~3.8 nats, worse than uniform), and its large early gradients would disturb the pretrained
    blocks; a zero classifier starts at uniform probabilities and lets the blocks adapt gradually.
    """
    net = FerEncoderNet()
    net.blocks.load_state_dict(faceapi.blocks.state_dict())
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.zero_()
    return net


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_fer_encoder(path: str | Path | None = None, *, arch: str = "faceapi") -> nn.Module:
    """A trained encoder (eval mode) from ``path`` or, when None, the weights shipped in
    ``femo/resources`` for ``arch``. The architecture of a file is read from its parameter names.

    A file with a sidecar ``.json`` is checked against the sha256 recorded there. Raises
    FileNotFoundError naming the file when it is absent and ValueError when it does not fit.
    """
    path = _arch_entry(arch)[1] if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: fer_encoder weights not found (train them with "
                                f"`femo encoder train`, or pass a state dict file)")
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        expected = json.loads(sidecar.read_text()).get("sha256")
        if expected and sha256_file(path) != expected:
            raise ValueError(f"{path}: sha256 differs from the one recorded in {sidecar}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = build_fer_net(arch_of(state))
        # half-precision files (the shipped vgg weights) load into float32 parameters
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a fer_encoder state dict ({exc})") from exc
    return net.eval()
