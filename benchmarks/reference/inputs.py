"""Reference input images for the face-pretrained ports: exact pixel crops, no interpolation.

Each input is ``image[y0 : y0 + size * step : step, x0 : x0 + size * step : step]`` of a picture
bundled with scikit-image, optionally flipped left-right; gray pictures are replicated to RGB and
RGB pictures are converted to gray as OpenCV does (``fer``'s pipeline):
``round(0.299 R + 0.587 G + 0.114 B)``. The specs are stored in the reference JSON so that the
tests rebuild identical pixels.
"""
from __future__ import annotations

import numpy as np
from skimage import data

#: name -> (picture, y0, x0, step, flip) for the 112x112 RGB (face-api) and 64x64 gray (fer) inputs.
SPECS: dict[str, dict[str, list]] = {
    "astronaut_tight": {"faceapi": ["astronaut", 66, 168, 1, False], "fer": ["astronaut", 58, 160, 2, False]},
    "astronaut_wide": {"faceapi": ["astronaut", 20, 113, 2, False], "fer": ["astronaut", 30, 130, 3, False]},
    "astronaut_flipped": {"faceapi": ["astronaut", 66, 168, 1, True], "fer": ["astronaut", 58, 160, 2, True]},
    "camera_face": {"faceapi": ["camera", 56, 176, 1, False], "fer": ["camera", 50, 170, 2, False]},
}


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 gray with OpenCV's integer-rounded luma."""
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def crop(spec: list, size: int, *, gray: bool) -> np.ndarray:
    """One input: (size, size, 3) uint8 RGB, or (size, size) uint8 gray when ``gray``."""
    picture, y0, x0, step, flip = spec
    img = getattr(data, picture)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    out = img[y0:y0 + size * step:step, x0:x0 + size * step:step]
    if out.shape[:2] != (size, size):
        raise ValueError(f"crop {spec} leaves the {picture} picture: got {out.shape}")
    if flip:
        out = out[:, ::-1]
    out = np.ascontiguousarray(out)
    return to_gray(out) if gray else out
