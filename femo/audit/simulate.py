"""Simulated predictions tables with known subgroup effects, for checking the audit itself.

Each subject gets demographic attributes and a random ability effect (so a person's clips are
correlated); each clip is correct with probability sigmoid(logit(accuracy) + subject effect +
planted shift of the subject's group). The output follows ``RUN/predictions.csv``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from femo.config import CLASSES

__all__ = ["ATTRIBUTE_VALUES", "simulate_predictions"]

#: Subject-level attributes and their values (the last culture value is the rare group).
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "sex": ("female", "male"),
    "age_group": ("18-30", "31-50", "51+"),
    "skin_tone": ("light", "medium", "dark"),
    "culture": ("east", "west", "south"),
}


def _subjects(rng: np.random.Generator, n_subjects: int, rare_subjects: int) -> pd.DataFrame:
    table = {"subject": [f"s{i:03d}" for i in range(n_subjects)]}
    for name, values in ATTRIBUTE_VALUES.items():
        # balanced assignment, shuffled, so every group has subjects
        table[name] = rng.permutation(np.resize(np.array(values[:-1] if name == "culture" else values), n_subjects))
    subjects = pd.DataFrame(table)
    if rare_subjects:
        subjects.loc[subjects.index[-rare_subjects:], "culture"] = ATTRIBUTE_VALUES["culture"][-1]
    return subjects


def simulate_predictions(
    *,
    n_subjects: int = 40,
    clips_per_subject: int = 20,
    classes: Sequence[str] = CLASSES,
    accuracy: float = 0.65,
    subject_sd: float = 0.6,
    bias: Mapping[str, tuple[str, float]] | None = None,
    rare_subjects: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """A predictions table: clip_id, label, predicted, p_<class>..., subject, fold, attributes.

    accuracy: typical clip accuracy before effects. subject_sd: SD of the per-subject effect
    (logit scale). bias: {attribute: (group, logit shift)}, e.g. {"skin_tone": ("dark", -1.5)}
    lowers that group's accuracy. rare_subjects: how many subjects get the rare culture value
    ("south"), which the audit should call not assessable when below its minimum.
    """
    rng = np.random.default_rng(seed)
    subjects = _subjects(rng, n_subjects, rare_subjects)
    effect = rng.normal(0.0, subject_sd, n_subjects)
    for attribute, (group, shift) in (bias or {}).items():
        if group not in ATTRIBUTE_VALUES.get(attribute, ()):
            raise ValueError(f"bias: unknown group {attribute}={group!r}; known: {ATTRIBUTE_VALUES}")
        effect += shift * (subjects[attribute] == group).to_numpy()
    who = np.repeat(np.arange(n_subjects), clips_per_subject)  # (N,) subject index of each clip
    n, c = len(who), len(classes)
    label = rng.integers(0, c, n)
    logit = np.log(accuracy / (1 - accuracy)) + effect[who]
    correct = rng.random(n) < 1 / (1 + np.exp(-logit))
    wrong = (label + rng.integers(1, c, n)) % c  # a uniformly chosen other class
    predicted = np.where(correct, label, wrong)
    scores = rng.gamma(1.0, 1.0, (n, c))
    scores[np.arange(n), predicted] += scores.max(axis=1) + rng.gamma(2.0, 1.0, n)
    probs = scores / scores.sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"clip_id": [f"c{i:05d}" for i in range(n)],
                          "label": np.asarray(classes)[label], "predicted": np.asarray(classes)[predicted]})
    for k, name in enumerate(classes):
        frame[f"p_{name}"] = probs[:, k]
    frame["fold"] = who % 5 + 1
    return pd.concat([frame, subjects.iloc[who].reset_index(drop=True)], axis=1)
