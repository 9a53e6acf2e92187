"""FER2013-layout image manifests for the face-encoder tests: 48x48 gray images whose bright
bar's row encodes the label (learnable, not trivial noise)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from femo.models.fer_encoder import FER_LABELS


def pattern(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 48x48 uint8 image: noise with a bright bar at row 3 + 6 x label."""
    img = rng.integers(0, 60, (48, 48)).astype(np.uint8)
    row = 3 + 6 * label
    img[row:row + 5, 6:42] = 220
    return img


def write_manifest(root: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    """PNG files under ``root/<split>/<label>/`` and ``root/manifest.csv`` (clip_id, path, label,
    split); ``sizes``: images per split, labels cycling through FER_LABELS."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in sizes.items():
        for i in range(n):
            label = i % len(FER_LABELS)
            rel = f"{split}/{FER_LABELS[label]}/{i}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pattern(label, rng)).save(root / rel)
            rows.append({"clip_id": f"{split}_{i}", "path": rel, "label": FER_LABELS[label], "split": split})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"
