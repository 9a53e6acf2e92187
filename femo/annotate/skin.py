"""Skin tone as a colour measurement: the Individual Typology Angle (ITA) of facial skin pixels.

ITA (Chardon et al., 1991) is a colorimetric angle in CIELAB (D65):
``ITA = arctan((L* - 50) / b*) * 180 / pi`` degrees; lighter skin has a larger angle. It is
measured on pixels, never predicted by a classifier, and says nothing about ethnicity or race.

Region: three polygons of the mediapipe 478-point face mesh -- the two cheeks (below the eye,
beside the nose, above the mouth corner) and the central forehead (between the brows and the
top of the mesh) -- which avoid eyes, brows, lips, nostrils and most hair. Within the region,
pixels whose L* falls in the darkest or brightest :data:`TRIM` share (shadows, specular
highlights, stray hair) are dropped, and ITA is computed from the median L* and median b* of
the rest (a per-pixel angle is unstable where b* is near 0).

Groups: the standard ITA categories (Del Bino & Bernerd, 2013), and three coarser groups for
audits where six would leave groups too small to judge:

=================  =================  ======================
``ita_skin_tone``  ITA (degrees)      ``ita_skin_group``
=================  =================  ======================
very_light         > 55               lighter (ITA > 41)
light              41 .. 55           lighter
intermediate       28 .. 41           medium (10 .. 41)
tan                10 .. 28           medium
brown              -30 .. 10          darker (ITA <= 10)
dark               <= -30             darker
=================  =================  ======================

The angle depends on illumination and white balance: a warm or dim light lowers it. Compare
groups recorded under similar light, and read it as a property of the image, not of the person.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Face-mesh vertex loops (image-left cheek, image-right cheek, forehead), each a closed polygon.
SKIN_REGIONS: dict[str, tuple[int, ...]] = {
    "cheek_left": (116, 117, 118, 119, 100, 142, 203, 206, 216, 192, 213, 147, 123),
    "cheek_right": (345, 346, 347, 348, 329, 371, 423, 426, 436, 416, 433, 376, 352),
    "forehead": (109, 10, 338, 337, 336, 9, 107, 108),
}
#: Share of region pixels dropped at each end of the L* distribution.
TRIM = 0.1
#: (lower bound exclusive, name) from light to dark; the last bound is -inf.
ITA_CATEGORIES: tuple[tuple[float, str], ...] = (
    (55.0, "very_light"), (41.0, "light"), (28.0, "intermediate"), (10.0, "tan"), (-30.0, "brown"),
    (-math.inf, "dark"),
)
ITA_GROUPS: tuple[tuple[float, str], ...] = ((41.0, "lighter"), (10.0, "medium"), (-math.inf, "darker"))
#: Fewest skin pixels (after trimming) a measurement needs.
MIN_PIXELS = 30


@dataclass(frozen=True)
class SkinMeasure:
    """ITA of one face: ``ita`` degrees, median ``lightness`` L* (0..100) and ``yellowness`` b*,
    and the number of skin ``pixels`` used."""

    ita: float
    lightness: float
    yellowness: float
    pixels: int


def skin_mask(shape: tuple[int, int], landmarks_px: np.ndarray) -> np.ndarray:
    """(H, W) bool mask of the cheek and forehead polygons; landmarks_px (478, 2) pixel x, y."""
    mask = np.zeros(shape, np.uint8)
    for loop in SKIN_REGIONS.values():
        pts = np.round(landmarks_px[list(loop), :2]).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    return mask.astype(bool)


def ita_from_lab(lightness: float, yellowness: float) -> float:
    """ITA in degrees from L* and b*; 90 / -90 when b* is 0 (the limit of the arctangent)."""
    if yellowness == 0:
        return math.copysign(90.0, lightness - 50.0)
    return math.degrees(math.atan((lightness - 50.0) / yellowness))


def measure_skin(image: np.ndarray, landmarks_px: np.ndarray) -> SkinMeasure | None:
    """ITA of the face in ``image`` (H, W, 3) uint8 RGB with its mesh ``landmarks_px`` (478, 2).

    Returns None when fewer than :data:`MIN_PIXELS` skin pixels remain (a tiny or cut-off face).
    """
    mask = skin_mask(image.shape[:2], landmarks_px)
    if mask.sum() < MIN_PIXELS:
        return None
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[mask]  # (P, 3): L 0..100
    lo, hi = np.quantile(lab[:, 0], [TRIM, 1.0 - TRIM])
    kept = lab[(lab[:, 0] >= lo) & (lab[:, 0] <= hi)]
    if len(kept) < MIN_PIXELS:
        return None
    lightness, yellowness = float(np.median(kept[:, 0])), float(np.median(kept[:, 2]))
    return SkinMeasure(ita_from_lab(lightness, yellowness), lightness, yellowness, int(len(kept)))


def _bin(ita: float, table: tuple[tuple[float, str], ...]) -> str:
    if not math.isfinite(ita):
        return ""
    return next(name for bound, name in table if ita > bound)


def ita_category(ita: float) -> str:
    """The standard six-way ITA category (see the module table); "" for NaN."""
    return _bin(ita, ITA_CATEGORIES)


def ita_group(ita: float) -> str:
    """The coarse three-way group: lighter / medium / darker; "" for NaN."""
    return _bin(ita, ITA_GROUPS)
