"""Audio encoder: a log-mel CNN with a prosody MLP, an MLP on utterance functionals, or both.

Inputs (sample keys of ``femo.data.dataset``): ``audio`` (B, 1, M, A) normalised log-mel (M mel
bands, A time steps), ``prosody`` (B, A, 4), ``functionals`` (B, F) openSMILE functionals (raw
values), ``audio_mask`` (B,) bool (False = no audio). ``audio_input`` picks what is read:

* ``"logmel"``: three strided conv blocks halve mel and time each; channels x the remaining M // 8
  mel bins are flattened (keeping where in frequency a pattern sits) and projected, leaving
  L = A // 8 time tokens of width D; the prosody is average-pooled to the same L steps, projected
  by an MLP and added. GroupNorm instead of BatchNorm, so clips without audio (all zeros) do not
  skew running statistics.
* ``"functionals"``: the F values are standardised with running training-set statistics
  (:class:`RunningStandardize`, rows without audio excluded; stored with the weights, so inference
  uses the same ones), then an MLP with dropout gives one token, L = 1.
* ``"both"``: the functionals token is added to every log-mel token (L = A // 8).

``members`` = K > 1 makes the functionals path an ensemble of K MLPs (independent weights, one
shared standardiser) giving K tokens (L = K for ``"functionals"``; their mean for ``"both"``).
In training each sample's mask keeps one member drawn at random, so with the ``mean`` temporal
block and the modality's linear head every member is fitted on its own random share of the
samples (bagging-like diversity); in eval all K are kept and the logits are the mean of the K
members' logits (the head is linear). Small labelled sets (a few thousand utterances) are where
this pays: one MLP's test score swings with its initialisation and its early-stopping epoch.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: What the audio encoder can read; see the module docstring.
AUDIO_INPUTS: tuple[str, ...] = ("logmel", "functionals", "both")
#: Standardised functionals are clipped to +-CLIP so one outlier value cannot dominate.
CLIP = 8.0


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(1, c_out), nn.GELU())


def _mlp(in_dim: int, dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, dim))


class RunningStandardize(nn.Module):
    """z-scores (B, F) rows with the running mean / variance of every row seen in training.

    In training mode the statistics are first updated (Chan's parallel update, no gradient) with
    the rows where ``present`` is True, then applied; in eval mode they are only applied. Features
    with (near) zero variance pass through centred. Output clipped to [-CLIP, CLIP].
    """

    def __init__(self, num_features: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(num_features, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(num_features, dtype=torch.float64))

    @torch.no_grad()
    def _update(self, x: torch.Tensor) -> None:
        n, mean = float(len(x)), x.double().mean(0)
        m2 = ((x.double() - mean) ** 2).sum(0)
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta ** 2 * self.count * n / total
        self.count += n

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        if self.training and bool(present.any()):
            self._update(x[present])
        var = self.m2 / self.count.clamp(min=1.0)
        scale = torch.where(var > self.eps, var.clamp(min=self.eps).rsqrt(), torch.ones_like(var))
        return ((x.double() - self.mean) * scale).clamp(-CLIP, CLIP).to(x.dtype)


class FunctionalsMLP(nn.Module):
    """(B, F) raw functionals + (B,) present mask -> (B, D): standardise, dropout, 2-layer MLP."""

    def __init__(self, in_dim: int, dim: int, *, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = RunningStandardize(in_dim)
        self.mlp = _mlp(in_dim, dim, hidden, dropout)

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(torch.nan_to_num(x.float()), present))


class AudioEncoder(nn.Module):
    """Audio -> tokens (B, L, D) with mask (B, L) = audio_mask repeated; see the module docstring.

    audio_input: one of :data:`AUDIO_INPUTS`. functionals_dim: F, required unless ``"logmel"``.
    members: K functionals MLPs (an ensemble; 1 = a single MLP). hidden: their hidden width.
    """

    def __init__(self, *, dim: int, n_mels: int = 64, channels: int = 32, dropout: float = 0.1,
                 audio_input: str = "logmel", functionals_dim: int | None = None, members: int = 1,
                 hidden: int = 256) -> None:
        super().__init__()
        if audio_input not in AUDIO_INPUTS:
            raise ValueError(f"unknown audio_input {audio_input!r}; choose one of {list(AUDIO_INPUTS)}")
        if members < 1 or (members > 1 and audio_input == "logmel"):
            raise ValueError(f"members={members}: needs >= 1, and > 1 only with functionals (audio_input "
                             f"'functionals' or 'both', got {audio_input!r})")
        self.audio_input, self.members = audio_input, members
        self.n_mels = n_mels
        if audio_input != "functionals":
            if n_mels % 8:
                raise ValueError(f"n_mels must be a multiple of 8, got {n_mels}")
            self.cnn = nn.Sequential(_block(1, channels // 2), _block(channels // 2, channels),
                                     _block(channels, channels))
            self.proj = nn.Linear(channels * (n_mels // 8), dim)
            self.prosody = nn.Sequential(nn.Linear(4, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        if audio_input != "logmel":
            if not functionals_dim:
                raise ValueError(f"audio_input={audio_input!r} needs functionals_dim (F of the store's "
                                 "functionals; extract with audio_functionals='egemaps' or 'compare')")
            self.functionals = FunctionalsMLP(functionals_dim, dim, dropout=dropout, hidden=hidden)
            # members 2..K: MLPs reading the standardised values of member 1 (self.functionals)
            self.extra_members = nn.ModuleList(_mlp(functionals_dim, dim, hidden, dropout) for _ in range(members - 1))

    def input_keys(self) -> list[str]:
        """The batch keys this encoder reads."""
        keys = {"logmel": ["audio", "prosody"], "functionals": ["functionals"],
                "both": ["audio", "prosody", "functionals"]}[self.audio_input]
        return [*keys, "audio_mask"]

    def _logmel_tokens(self, batch: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """(B, L, D) log-mel tokens. The CNN runs only on the clips with audio: the others' tokens
        are masked to zero by :meth:`forward` anyway (and GroupNorm is per sample), so a batch of
        stills or silent clips skips its cost (the largest part of a training step on cached face
        embeddings) with the same outputs and gradients. Under tracing (ONNX / TorchScript export)
        every clip goes through the CNN, so the exported graph has no data-dependent shapes."""
        mel = torch.nan_to_num(batch["audio"].float())  # (B, 1, M, A)
        if mel.shape[-1] < 8 or mel.shape[-2] != self.n_mels:
            raise ValueError(f"audio must be (B, 1, {self.n_mels}, A>=8), got {tuple(mel.shape)}")
        pro = torch.nan_to_num(batch["prosody"].float())
        if torch.jit.is_tracing() or bool(present.all()):  # a traced export keeps one shape-free path
            return self._cnn_tokens(mel, pro)
        keep = present if bool(present.any()) else torch.arange(len(mel), device=mel.device) == 0
        sub = self._cnn_tokens(mel[keep], pro[keep])  # (B', L, D); B' = 1 only for the shape when none has audio
        out = sub.new_zeros(len(mel), *sub.shape[1:])
        if bool(present.any()):
            out[present] = sub
        return out

    def _cnn_tokens(self, mel: torch.Tensor, prosody: torch.Tensor) -> torch.Tensor:
        h = self.cnn(mel)  # (B, C, M // 8, L)
        h = h.flatten(1, 2).transpose(1, 2)  # (B, L, C * M // 8)
        pro = F.adaptive_avg_pool1d(prosody.transpose(1, 2), h.shape[1])
        return self.proj(h) + self.prosody(pro.transpose(1, 2))  # (B, L, D)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        present = batch["audio_mask"].bool().reshape(-1)  # (B,)
        tokens = None if self.audio_input == "functionals" else self._logmel_tokens(batch, present)
        if self.audio_input != "logmel":
            if "functionals" not in batch:
                raise ValueError(f"audio_input={self.audio_input!r} needs batch['functionals'] (B, F): the store "
                                 "was extracted without functionals (audio_functionals='none')")
            f = self._member_tokens(batch["functionals"], present)  # (B, K, D)
            tokens = f if tokens is None else tokens + f.mean(1, keepdim=True)
        mask = present.unsqueeze(1).expand(-1, tokens.shape[1])  # (B, L)
        if self.members > 1 and self.audio_input == "functionals" and self.training:
            pick = torch.randint(self.members, (len(mask),), device=mask.device)  # one member per sample
            mask = mask & F.one_hot(pick, self.members).bool()
        return tokens * mask.unsqueeze(-1).to(tokens.dtype), mask

    def _member_tokens(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(B, F) raw functionals -> (B, K, D), one token per member (the standardiser updates once)."""
        z = self.functionals.norm(torch.nan_to_num(x.float()), present)  # (B, F) standardised
        return torch.stack([self.functionals.mlp(z), *(mlp(z) for mlp in self.extra_members)], dim=1)
