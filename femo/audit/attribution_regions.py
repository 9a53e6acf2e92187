"""Facial-region and feature-name summaries of attributions, and aggregates per emotion / subgroup.

Region masks: the clip's stored face mesh (478 points normalised to the face box) is projected
onto the aligned crop (:func:`femo.features.face.crop_landmarks`, the same alignment as extraction).
A pixel belongs to the region of its nearest region landmark (``FACE_REGIONS`` of
:mod:`femo.features.geometry`) when that landmark is within ``radius`` pixels (default S / 14,
8 px at S = 112), else to ``other`` (cheeks, forehead, hair, background). Dilated points rather
than convex hulls, because eyes and brows are two separate patches each and a hull would swallow
the nose bridge; the nearest-point rule keeps regions disjoint so shares add up to 1.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

OTHER = "other"


def default_regions() -> dict[str, tuple[int, ...]]:
    """``femo.features.geometry.FACE_REGIONS`` (mesh indices per region)."""
    from femo.features.geometry import FACE_REGIONS

    return dict(FACE_REGIONS)


def region_label_map(points: np.ndarray, *, size: int, regions: Mapping[str, Sequence[int]] | None = None,
                     radius: float | None = None) -> np.ndarray:
    """(S, S) int region index per pixel: ``i`` = ``list(regions)[i]``, ``len(regions)`` = other.

    points: (478, 2) pixel x, y of the mesh on the crop (points outside the crop are fine).
    """
    from scipy.spatial import cKDTree

    regions = default_regions() if regions is None else regions
    radius = size / 14 if radius is None else radius
    ys, xs = np.mgrid[0:size, 0:size]
    pix = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)  # (S*S, 2) pixel centres
    owner = np.concatenate([np.full(len(idx), i, np.int16) for i, idx in enumerate(regions.values())])
    pts = np.asarray(points, float)[np.concatenate([list(idx) for idx in regions.values()])]  # (P, 2)
    # nearest region point of every pixel (one k-d tree query; ties go to the earlier region, as
    # the points are listed region by region)
    dist, nearest = cKDTree(pts).query(pix, distance_upper_bound=radius * (1 + 1e-9))
    label = np.full(len(pix), len(regions), dtype=np.int16)
    hit = np.isfinite(dist) & (dist <= radius)
    label[hit] = owner[nearest[hit]]
    return label.reshape(size, size)


def crop_points(landmarks: np.ndarray, face_box: np.ndarray, *, size: int, aspect: float = 1.0) -> np.ndarray:
    """(T, 478, 2) pixel positions of a clip's stored mesh on its aligned crops.

    landmarks: (T, 478, 3) store key ``landmarks``; face_box: (T, 4) store key ``face_box``;
    aspect: the video's width / height (1.0 when unknown: only the mesh's aspect changes).
    """
    from femo.features.face import crop_landmarks

    return np.stack([crop_landmarks(lm, box, size=size, aspect=aspect) for lm, box in zip(landmarks, face_box)])


def region_shares(maps: np.ndarray, labels: np.ndarray, names: Sequence[str],
                  valid: np.ndarray | None = None) -> dict[str, float]:
    """Share of attribution mass per region over a clip's frames.

    maps: (T, S, S) non-negative attribution; labels: (T, S, S) from :func:`region_label_map`;
    names: region names in label order (``other`` appended); valid: (T,) bool frames to use
    (frames without a face have no mesh). Shares sum to 1 (NaN when there is no mass).
    """
    valid = np.ones(len(maps), bool) if valid is None else np.asarray(valid, bool)
    names = list(names) + [OTHER]
    mass = np.bincount(labels[valid].ravel().astype(int), weights=maps[valid].ravel(), minlength=len(names))
    total = mass.sum()
    return {n: float(m / total) if total > 0 else float("nan") for n, m in zip(names, mass)}


def clip_region_table(maps: np.ndarray, meshes: Sequence[np.ndarray | None], *, found: Sequence[np.ndarray],
                      regions: Mapping[str, Sequence[int]] | None = None,
                      radius: float | None = None, labels: Sequence[np.ndarray] | None = None) -> pd.DataFrame:
    """Region shares for B clips: one row per clip, one column per region plus ``other``.

    maps: (B, T, S, S) from :func:`femo.audit.attribution.spatial_maps`; meshes: per clip (T, 478, 2)
    crop pixel points (:func:`crop_points`) or None when the clip has no mesh (row of NaN);
    found: per clip (T,) bool face-found flags; labels: per clip its (T, S, S)
    :func:`clip_label_maps` when already computed (else computed here).
    """
    regions = default_regions() if regions is None else regions
    size = maps.shape[-1]
    rows = []
    for i, (m, points, ok) in enumerate(zip(maps, meshes, found)):
        if points is None or not np.any(ok):
            rows.append({n: float("nan") for n in [*regions, OTHER]})
            continue
        lab = labels[i] if labels is not None else clip_label_maps(points, ok, size=size, regions=regions,
                                                                    radius=radius)
        rows.append(region_shares(m, lab, list(regions), valid=ok))
    return pd.DataFrame(rows)


def clip_label_maps(points: np.ndarray | None, found: np.ndarray, *, size: int,
                    regions: Mapping[str, Sequence[int]] | None = None, radius: float | None = None) -> np.ndarray:
    """(T, S, S) int16 region index per crop pixel of one clip (:func:`region_label_map` per frame);
    frames without a face, or a clip without a mesh (``points`` None), are all ``other``."""
    regions = default_regions() if regions is None else regions
    found = np.asarray(found, bool)
    if points is None:
        return np.full((len(found), size, size), len(regions), np.int16)
    return np.stack([region_label_map(p, size=size, regions=regions, radius=radius) if f
                     else np.full((size, size), len(regions), np.int16) for p, f in zip(points, found)])


def geometry_feature_names() -> list[str]:
    """Names of the geometry vector's G entries (layout of :mod:`femo.features.geometry`).

    Blendshapes by their mediapipe names; mesh points as ``<region>:<index>.x|y`` (region from
    ``FACE_REGIONS``); ``head_yaw|pitch|roll``; body points as ``body<index>.x|y|vis``; then the
    ``face_found`` / ``pose_found`` flags.
    """
    from femo.features.face import BLENDSHAPE_NAMES
    from femo.features.geometry import BODY_POINTS, FACE_REGIONS, GEOMETRY_DIM, GEOMETRY_POINTS

    region_of = {i: r for r, idx in FACE_REGIONS.items() for i in idx}
    names = list(BLENDSHAPE_NAMES)
    names += [f"{region_of.get(p, 'face')}:{p}.{axis}" for p in GEOMETRY_POINTS for axis in "xy"]
    names += ["head_yaw", "head_pitch", "head_roll"]
    names += [f"body{p}.{axis}" for p in BODY_POINTS for axis in "xy"]
    names += [f"body{p}.vis" for p in BODY_POINTS]
    names += ["face_found", "pose_found"]
    if len(names) != GEOMETRY_DIM:
        raise RuntimeError(f"geometry names ({len(names)}) out of step with GEOMETRY_DIM ({GEOMETRY_DIM})")
    return names


def feature_group(name: str) -> str:
    """Coarse group of a geometry feature name: ``blendshape``, a face region, ``head``, ``body``, ``flag``."""
    if ":" in name:
        return name.split(":")[0]
    if name.startswith("head_"):
        return "head"
    if name.startswith("body"):
        return "body"
    if name.endswith("_found"):
        return "flag"
    return "blendshape"


def feature_table(importance: np.ndarray, names: Sequence[str], *, top: int | None = None) -> pd.DataFrame:
    """Mean importance per named feature over clips, with its share and group, largest first.

    importance: (B, F) from :func:`femo.audit.attribution.feature_importance`.
    """
    if importance.shape[1] != len(names):
        raise ValueError(f"feature_table: {importance.shape[1]} features but {len(names)} names")
    mean = importance.mean(0)
    total = mean.sum()
    frame = pd.DataFrame({"feature": list(names), "group": [feature_group(n) for n in names],
                          "importance": mean, "share": mean / total if total > 0 else np.nan})
    frame = frame.sort_values("importance", ascending=False).reset_index(drop=True)
    return frame.head(top) if top else frame


def aggregate_shares(table: pd.DataFrame, by: str, columns: Sequence[str]) -> pd.DataFrame:
    """Mean of ``columns`` (region shares) per value of ``by`` (e.g. emotion, subgroup), with
    ``n_clips``; rows with NaN shares (no face) are left out."""
    part = table.dropna(subset=list(columns))
    out = part.groupby(by)[list(columns)].mean()
    out.insert(0, "n_clips", part.groupby(by).size())
    return out
