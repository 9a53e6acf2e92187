"""``FemoNet``: per-modality encoders + temporal blocks + fusion, tolerant of missing modalities.

``FemoNet(config, num_classes).forward(batch)`` reads only the sample-dict keys of
docs/ARCHITECTURE.md (``face`` or ``face_emb``, ``landmarks``, ``audio``, ``prosody`` and the
``<modality>_mask`` keys; B leading) and returns::

    {"logits": (B, C), "modality_logits": {name: (B, C)}, "present": (B, M) bool,
     "weights": (B, M)  # gated fusion only: per-clip modality weights}

A modality whose mask is all False for a sample (no face in any frame, no audio track, or masked
out by an ablation) is replaced by that modality's learned "missing" embedding (pytorchvideo's
``LearnMaskedDefault`` idea). In training, modality dropout drops each present modality of a
sample with probability ``config.modality_dropout``, never all of them.
"""
from __future__ import annotations

import torch
from torch import nn

from femo.config import MODALITIES, ModelConfig
from femo.models.audio import AudioEncoder
from femo.models.fusion import make_fusion
from femo.models.landmarks import LandmarkEncoder
from femo.models.temporal import make_temporal


class FaceEncoder(nn.Module):
    """Face tokens (B, T, D) from cached embeddings ``face_emb`` (B, T, E) or raw ``face`` crops.

    With a frame encoder (``femo.models.frames.build_frame_encoder``: (N, 3, S, S) in [0, 1] ->
    (N, out_dim)), only frames whose ``face_mask`` is True go through the CNN; the others stay zero.
    """

    def __init__(self, *, dim: int, frame_encoder: nn.Module | None = None, emb_dim: int | None = None) -> None:
        super().__init__()
        if (frame_encoder is None) == (emb_dim is None):
            raise ValueError("FaceEncoder needs exactly one of frame_encoder or emb_dim")
        self.frames = frame_encoder
        in_dim = emb_dim if frame_encoder is None else int(frame_encoder.out_dim)
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, dim))

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mask = batch["face_mask"].bool()  # (B, T)
        if self.frames is None:
            feats = torch.nan_to_num(batch["face_emb"].float())  # (B, T, E)
        else:
            feats = self._cnn(batch["face"], mask)
        tokens = self.proj(feats) * mask.unsqueeze(-1).to(feats.dtype)
        return tokens, mask

    def _cnn(self, face: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = mask.shape
        flat = face.reshape(b * t, *face.shape[2:])  # (B*T, 3, S, S)
        keep = mask.reshape(-1)
        out = flat.new_zeros(b * t, int(self.frames.out_dim))
        if keep.any():
            out[keep] = self.frames(flat[keep].float()).to(out.dtype)
        return out.reshape(b, t, -1)


class ModalityBranch(nn.Module):
    """Encoder -> masked temporal pooling -> (B, D), with a learned embedding for absent samples."""

    def __init__(self, encoder: nn.Module, temporal: nn.Module, *, dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.temporal = temporal
        self.missing = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.missing, std=0.02)

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D), (B, L) -> clip embedding (B, D) and presence (B,) bool."""
        present = mask.any(dim=1)
        pooled = self.temporal(tokens, mask)
        return torch.where(present.unsqueeze(-1), pooled, self.missing.to(pooled.dtype).expand_as(pooled)), present


def _build_face(config: ModelConfig, frame_encoder: nn.Module | None) -> FaceEncoder:
    if config.embeddings:
        if not config.embedding_dim:
            raise ValueError(f"embeddings={config.embeddings!r} needs ModelConfig.embedding_dim (the cached width)")
        return FaceEncoder(dim=config.dim, emb_dim=config.embedding_dim)
    if frame_encoder is None:
        from femo.models.frames import build_frame_encoder  # torchvision import only when needed

        frame_encoder = build_frame_encoder(config.frame_encoder, weights=config.frame_weights, freeze=config.freeze)
    return FaceEncoder(dim=config.dim, frame_encoder=frame_encoder)


def _build_encoder(name: str, config: ModelConfig, frame_encoder: nn.Module | None) -> nn.Module:
    if name == "face":
        return _build_face(config, frame_encoder)
    if name == "landmarks":
        from femo.features.geometry import GEOMETRY_DIM

        return LandmarkEncoder(in_dim=config.landmark_dim or GEOMETRY_DIM, dim=config.dim, dropout=config.dropout)
    if name == "audio":
        return AudioEncoder(dim=config.dim, dropout=config.dropout, audio_input=config.audio_input,
                            functionals_dim=config.functionals_dim, members=config.audio_members)
    raise ValueError(f"unknown modality {name!r}; choose from {list(MODALITIES)}")


class FemoNet(nn.Module):
    """The multimodal classifier; see the module docstring for inputs and outputs.

    frame_encoder: an already-built per-frame CNN (with ``out_dim``) to use instead of building
    ``config.frame_encoder``; ignored when ``config.embeddings`` is set.
    """

    def __init__(self, config: ModelConfig, num_classes: int, *, frame_encoder: nn.Module | None = None) -> None:
        super().__init__()
        if not config.modalities:
            raise ValueError("ModelConfig.modalities is empty")
        self.config = config
        self.modalities = tuple(config.modalities)
        #: Modalities treated as missing whatever the batch holds (set by the run loader for the
        #: modalities that no training clip had: their branch never learned anything).
        self.absent_modalities: tuple[str, ...] = ()
        self.num_classes = num_classes
        d = config.dim
        self.branches = nn.ModuleDict({
            m: ModalityBranch(_build_encoder(m, config, frame_encoder),
                              make_temporal(config.temporal, dim=d, layers=config.layers, heads=config.heads,
                                            dropout=config.dropout), dim=d)
            for m in self.modalities})
        self.heads = nn.ModuleDict({m: nn.Linear(d, num_classes) for m in self.modalities})
        self.fusion = make_fusion(config.fusion, num_modalities=len(self.modalities), dim=d, num_classes=num_classes,
                                  layers=config.layers, heads=config.heads, dropout=config.dropout)

    def input_keys(self) -> list[str]:
        """The batch keys this net reads."""
        keys = {"face": ["face_emb" if self.config.embeddings else "face", "face_mask"],
                "landmarks": ["landmarks", "landmarks_mask"],
                "audio": {"logmel": ["audio", "prosody"], "functionals": ["functionals"],
                          "both": ["audio", "prosody", "functionals"]}.get(self.config.audio_input, []) + ["audio_mask"]}
        return [k for m in self.modalities for k in keys[m]]

    def _drop(self, masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Modality dropout on token masks (B, L_m): drop whole modalities per sample, never all."""
        present = torch.stack([m.any(1) for m in masks], dim=1)  # (B, M)
        keep = present & (torch.rand(present.shape, device=present.device) >= self.config.modality_dropout)
        rescue = present.any(1) & ~keep.any(1)
        pick = (torch.rand(present.shape, device=present.device) * present).argmax(1)  # a random present one
        keep = keep | (rescue.unsqueeze(1) & nn.functional.one_hot(pick, len(masks)).bool())
        return [m & keep[:, i : i + 1] for i, m in enumerate(masks)]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        encoded = [self.branches[m].encoder(batch) for m in self.modalities]  # [(tokens, mask)]
        # a modality named in ``absent_modalities`` (e.g. one no training clip had) is always missing
        masks = [torch.zeros_like(mask) if m in self.absent_modalities else mask
                 for m, (_, mask) in zip(self.modalities, encoded)]
        if self.training and self.config.modality_dropout > 0 and len(masks) > 1:
            masks = self._drop(masks)
        tokens = [(tok * mask.unsqueeze(-1).to(tok.dtype), mask) for (tok, _), mask in zip(encoded, masks)]
        pooled = [self.branches[m].pool(tok, mask) for m, (tok, mask) in zip(self.modalities, tokens)]
        embs = torch.stack([e for e, _ in pooled], dim=1)  # (B, M, D)
        present = torch.stack([p for _, p in pooled], dim=1)  # (B, M)
        mod_logits = torch.stack([self.heads[m](embs[:, i]) for i, m in enumerate(self.modalities)], dim=1)
        logits, weights = self.fusion(embs, present, mod_logits, tokens)
        out = {"logits": logits, "present": present,
               "modality_logits": {m: mod_logits[:, i] for i, m in enumerate(self.modalities)}}
        if weights is not None:
            out["weights"] = weights
        return out
