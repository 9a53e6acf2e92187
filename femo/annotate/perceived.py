"""Perceived age and sex of a clip's face crops, averaged over its face frames.

These are *estimates of how a face looks* to face-api.js's AgeGenderNet
(:mod:`femo.models.age_gender`), not facts about the person; the columns are therefore named
``perceived_*`` everywhere. How far to trust them, per group, is measured on UTKFace by
``benchmarks/utkface.py``.

Per clip (K = frames with a face):

=================================  ========================================================
column                             meaning
=================================  ========================================================
perceived_age                      mean of the K per-frame ages, years
perceived_age_sd                   their standard deviation (0 for one frame), years
perceived_age_group                :data:`AGE_GROUPS` bin of ``perceived_age``
perceived_age_group_confidence     share of the K frames whose own age falls in that bin
perceived_sex                      "female" / "male": the larger mean probability
perceived_sex_confidence           that mean probability, in [0.5, 1]
perceived_frames                   K
=================================  ========================================================
"""
from __future__ import annotations

import math

import numpy as np
import torch

from femo.models.age_gender import SEX_CLASSES, AgeGenderNet, load_age_gender

#: Age bins of UTKFace's manifest, youngest first; a bin holds ages >= its lower edge.
AGE_GROUPS: tuple[str, ...] = ("0-12", "13-19", "20-39", "40-59", "60+")
AGE_EDGES: tuple[float, ...] = (13.0, 20.0, 40.0, 60.0)
PERCEIVED_COLUMNS: tuple[str, ...] = (
    "perceived_age", "perceived_age_sd", "perceived_age_group", "perceived_age_group_confidence",
    "perceived_sex", "perceived_sex_confidence", "perceived_frames",
)


def age_group(age: float | np.ndarray) -> str | np.ndarray:
    """The :data:`AGE_GROUPS` bin of an age in years (scalar -> str, array -> object array)."""
    codes = np.digitize(np.asarray(age, dtype=float), AGE_EDGES)
    names = np.array(AGE_GROUPS, dtype=object)[codes]
    return str(names) if np.ndim(age) == 0 else names


def empty_perceived() -> dict[str, object]:
    """The perceived columns of a clip without a face: empty, never a guess."""
    return {"perceived_age": math.nan, "perceived_age_sd": math.nan, "perceived_age_group": "",
            "perceived_age_group_confidence": math.nan, "perceived_sex": "",
            "perceived_sex_confidence": math.nan, "perceived_frames": 0}


def summarise(age: np.ndarray, p_female: np.ndarray) -> dict[str, object]:
    """Clip columns from per-frame ages (K,) years and female probabilities (K,); K >= 1."""
    age, p_female = np.asarray(age, float), np.asarray(p_female, float)
    if len(age) == 0:
        raise ValueError("summarise needs at least one face frame; use empty_perceived() for none")
    mean_age = float(age.mean())
    group = age_group(mean_age)
    female = float(p_female.mean())
    return {
        "perceived_age": mean_age,
        "perceived_age_sd": float(age.std()),
        "perceived_age_group": group,
        "perceived_age_group_confidence": float(np.mean(age_group(age) == group)),
        "perceived_sex": "female" if female >= 0.5 else "male",
        "perceived_sex_confidence": max(female, 1.0 - female),
        "perceived_frames": int(len(age)),
    }


class AgeSexEstimator:
    """Per-frame perceived age and sex of face crops with :class:`AgeGenderNet`.

    ``net``: a loaded net (default: the published weights from the femo cache, see
    :func:`femo.models.age_gender.load_age_gender`). ``batch_size``: crops per forward pass.
    """

    def __init__(self, net: AgeGenderNet | None = None, *, batch_size: int = 64) -> None:
        self.net = (net or load_age_gender()).eval()
        self.batch_size = batch_size
        self._female = SEX_CLASSES.index("female")

    @torch.no_grad()
    def frames(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """crops (K, S, S, 3) uint8 RGB -> (age (K,) years, p_female (K,)) float32."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"crops must be (K, S, S, 3) RGB, got shape {crops.shape}")
        ages, females = [], []
        for start in range(0, len(crops), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[start:start + self.batch_size]))
            x = self.net.preprocess(x.permute(0, 3, 1, 2).float() / 255.0)  # (B, 3, 112, 112)
            age, logits = self.net(x)
            ages.append(age.numpy())
            females.append(torch.softmax(logits, dim=1)[:, self._female].numpy())
        if not ages:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return np.concatenate(ages), np.concatenate(females)

    def clip(self, crops: np.ndarray) -> dict[str, object]:
        """The perceived columns of one clip from its face crops (K, S, S, 3); K = 0 -> empty."""
        if len(crops) == 0:
            return empty_perceived()
        return summarise(*self.frames(crops))
