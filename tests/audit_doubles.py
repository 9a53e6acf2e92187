"""Small stand-ins for the audit tests: a late-fusion model with FemoNet's forward contract and
synthetic batches whose label is planted in chosen modalities.

Shapes follow docs/ARCHITECTURE.md: face (B, T, 3, S, S) in [0, 1], face_mask (B, T), landmarks
(B, T, G), landmarks_mask (B, T), audio (B, 1, 64, A), prosody (B, A, 4), audio_mask (B,).
"""
from __future__ import annotations

import numpy as np
import pytest
import pandas as pd
import torch
from torch import nn

T, S, G, A, C = 4, 8, 6, 8, 3
MODS = ("face", "landmarks", "audio")


class LateFusionDouble(nn.Module):
    """Per-modality linear heads on masked means, summed over present modalities, plus a bias.

    A modality whose mask is all False contributes nothing (its own missing path), so the empty
    coalition predicts from the bias alone.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.face = nn.Linear(3 * S * S, C, bias=False)
        self.landmarks = nn.Linear(G, C, bias=False)
        self.audio = nn.Linear(64, C, bias=False)
        self.bias = nn.Parameter(torch.zeros(C))

    def forward(self, batch: dict) -> dict:
        fm = batch["face_mask"].float()  # (B, T)
        face = (batch["face"] * fm[:, :, None, None, None]).sum(1) / fm.sum(1).clamp(min=1)[:, None, None, None]
        lm = batch["landmarks_mask"].float()
        land = (batch["landmarks"] * lm[:, :, None]).sum(1) / lm.sum(1).clamp(min=1)[:, None]
        audio = batch["audio"].mean(-1)[:, 0]  # (B, 64)
        parts = {
            "face": self.face(face.flatten(1)) * (fm.sum(1, keepdim=True) > 0).float(),
            "landmarks": self.landmarks(land) * (lm.sum(1, keepdim=True) > 0).float(),
            "audio": self.audio(audio) * batch["audio_mask"].float()[:, None],
        }
        return {"logits": self.bias + sum(parts.values()), "modality_logits": parts}


def planted_data(n: int = 480, *, seed: int = 0, low_light_rate: float = 0.3) -> tuple[dict, pd.DataFrame]:
    """A dataset as one big batch plus its index table; class patterns are fixed, ``seed`` draws
    the clips (train and evaluate on different seeds).

    ``informative`` cycles face / landmarks / audio / both (face and audio). The informative
    modality shows a class pattern plus noise; the others show noise only. ``low_light`` clips
    have their face pattern dimmed to 5%, so the face is hard to read there.
    """
    p = torch.Generator().manual_seed(1234)
    face_pat = torch.randn(C, 3, S, S, generator=p)
    lm_pat = torch.randn(C, G, generator=p) * 2
    au_pat = torch.randn(C, 64, generator=p)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (n,), generator=g)
    kinds = np.array(["face", "landmarks", "audio", "both"])[np.arange(n) % 4]
    low = torch.rand(n, generator=g) < low_light_rate
    face_on = torch.tensor(np.isin(kinds, ["face", "both"]), dtype=torch.float32)
    lm_on = torch.tensor(kinds == "landmarks", dtype=torch.float32)
    au_on = torch.tensor(np.isin(kinds, ["audio", "both"]), dtype=torch.float32)
    dim = torch.where(low, 0.05, 1.0) * face_on
    face = 0.5 + 0.15 * (dim[:, None, None, None, None] * face_pat[labels][:, None]
                         + 0.8 * torch.randn(n, T, 3, S, S, generator=g))
    batch = {
        "face": face.clamp(0, 1),
        "face_mask": torch.ones(n, T, dtype=torch.bool),
        "landmarks": lm_on[:, None, None] * lm_pat[labels][:, None] + torch.randn(n, T, G, generator=g),
        "landmarks_mask": torch.ones(n, T, dtype=torch.bool),
        "audio": (au_on[:, None] * au_pat[labels])[:, None, :, None] + 1.5 * torch.randn(n, 1, 64, A, generator=g),
        "prosody": torch.zeros(n, A, 4),
        "audio_mask": torch.ones(n, dtype=torch.bool),
        "label": labels,
        "index": torch.arange(n),
    }
    index = pd.DataFrame({"clip_id": [f"c{i:04d}" for i in range(n)], "subject": [f"s{i % 40:02d}" for i in range(n)],
                          "informative": kinds, "low_light": low.numpy(),
                          "brightness": np.where(low.numpy(), 0.2, 0.6) + 0.01 * np.arange(n) / n})
    return batch, index


def train_double(batch: dict, *, steps: int = 300, seed: int = 0, dropout: float = 0.5) -> LateFusionDouble:
    """Fit the double with modality dropout (each modality dropped per clip with ``dropout``)."""
    model = LateFusionDouble(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(seed)
    n = len(batch["label"])
    for _ in range(steps):
        drop = torch.rand(n, 3, generator=g) < dropout
        masked = dict(batch)
        for i, m in enumerate(MODS):
            key = f"{m}_mask"
            keep = ~drop[:, i]
            masked[key] = batch[key] & (keep[:, None] if batch[key].dim() == 2 else keep)
        loss = nn.functional.cross_entropy(model(masked)["logits"], batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def split_batches(batch: dict, size: int) -> list[dict]:
    """The big batch cut into batches of ``size`` clips."""
    n = len(batch["label"])
    return [{k: v[i : i + size] for k, v in batch.items()} for i in range(0, n, size)]


# --- attribution doubles: expression drawn only in the mouth region of a 32 px crop ---------------

FS = 32  # face crop side of the attribution doubles
#: Region rows (y) of the synthetic mesh; each region's points lie on one row, x from 8 to 24.
REGION_ROWS = {"brows": 6, "eyes": 11, "nose": 16, "mouth": 24, "jaw": 29}
MOUTH_BOX = (slice(22, 27), slice(8, 25))  # rows, cols of the expression
BROW_BOX = (slice(4, 9), slice(8, 25))  # rows, cols of the distractor


def synthetic_regions() -> dict[str, tuple[int, ...]]:
    """Five disjoint sets of mesh indices, 9 points each."""
    return {r: tuple(range(10 * i, 10 * i + 9)) for i, r in enumerate(REGION_ROWS)}


def synthetic_mesh(t: int = 2) -> np.ndarray:
    """(t, 478, 2) crop pixel points: region points on their row, the rest far outside the crop."""
    pts = np.full((478, 2), -1000.0)
    for r, idx in synthetic_regions().items():
        pts[list(idx), 0] = np.linspace(8, 24, len(idx))
        pts[list(idx), 1] = REGION_ROWS[r]
    return np.repeat(pts[None], t, axis=0)


def mouth_faces(n: int, *, t: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops (n, t, 3, FS, FS) in [0, 1] whose class (0 bright bar, 1 dark bar, 2 checker) is drawn
    in the mouth box, with an unrelated random pattern of the same vocabulary in the brow box."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (n,), generator=g)
    distract = torch.randint(0, C, (n,), generator=g)
    face = 0.5 + 0.05 * torch.randn(n, t, 3, FS, FS, generator=g)
    patterns = torch.stack([torch.full((5, 17), 0.9), torch.full((5, 17), 0.1),
                            0.5 + 0.4 * (torch.arange(17)[None, :] % 2 * 2 - 1) * (torch.arange(5)[:, None] % 2 * 2 - 1)])
    face[:, :, :, MOUTH_BOX[0], MOUTH_BOX[1]] = patterns[labels][:, None, None]
    face[:, :, :, BROW_BOX[0], BROW_BOX[1]] = patterns[distract][:, None, None]
    return face.clamp(0, 1), labels


class FaceCNNDouble(nn.Module):
    """A small location-aware CNN on face crops, averaged over present frames; landmarks and audio
    get small linear heads so the forward contract (and the tuple of inputs) is complete."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.cnn = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                                 nn.Linear(8 * (FS // 4) ** 2, C))
        self.landmarks = nn.Linear(G, C)
        self.audio = nn.Linear(64, C)

    def forward(self, batch: dict) -> dict:
        b, t = batch["face_mask"].shape
        fm = batch["face_mask"].float()
        per_frame = self.cnn(batch["face"].reshape(b * t, 3, FS, FS)).reshape(b, t, C)
        face = (per_frame * fm[:, :, None]).sum(1) / fm.sum(1).clamp(min=1)[:, None]
        lm = batch["landmarks_mask"].float()
        land = self.landmarks((batch["landmarks"] * lm[:, :, None]).sum(1) / lm.sum(1).clamp(min=1)[:, None])
        audio = self.audio(batch["audio"].mean(-1)[:, 0]) * batch["audio_mask"].float()[:, None]
        logits = face + 0.1 * land + 0.1 * audio
        return {"logits": logits, "modality_logits": {"face": face, "landmarks": land, "audio": audio}}


def mouth_batch(n: int, *, t: int = 2, seed: int = 0) -> dict:
    """A full sample-dict batch around :func:`mouth_faces` (landmarks and audio are noise)."""
    face, labels = mouth_faces(n, t=t, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    return {"face": face, "face_mask": torch.ones(n, t, dtype=torch.bool),
            "landmarks": torch.randn(n, t, G, generator=g), "landmarks_mask": torch.ones(n, t, dtype=torch.bool),
            "audio": torch.randn(n, 1, 64, A, generator=g), "prosody": torch.randn(n, A, 4, generator=g),
            "audio_mask": torch.ones(n, dtype=torch.bool), "label": labels, "index": torch.arange(n)}


def train_face_cnn(*, n: int = 128, steps: int = 100, seed: int = 0) -> FaceCNNDouble:
    """Fit :class:`FaceCNNDouble` on one-frame :func:`mouth_batch` clips (~100% on held-out clips)."""
    model = FaceCNNDouble(seed)
    batch = mouth_batch(n, t=1, seed=seed + 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(batch)["logits"], batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def cnn() -> FaceCNNDouble:
    """A :class:`FaceCNNDouble` trained on mouth batches (one per test module)."""
    return train_face_cnn()


@pytest.fixture(scope="module")
def held_out() -> dict:
    """12 mouth clips the CNN fixture never saw."""
    return mouth_batch(12, seed=3)
