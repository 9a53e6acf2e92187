"""Region occlusion: how much a decision rests on each facial region, through every face input at once.

For each clip and each facial region (brows, eyes, nose, mouth, jaw and ``other``), the region is
hidden from every input that carries it and the drop of the target-class logit is recorded
(captum ``FeatureAblation`` with one feature mask across the tuple of inputs, so one region's
pixels and landmarks are ablated together):

* face crops ``face`` (B, T, 3, S, S): the region's pixels (``region_label_map`` of the clip's mesh
  on the crop) replaced by the same pixels of the blurred crop, the face baseline of
  :mod:`femo.audit.attribution`; in frames without a face every pixel counts as ``other``;
* geometry ``landmarks`` (B, T, G): the region's mesh points and the blendshapes named after it
  (:func:`geometry_regions`: ``brow*`` -> brows, ``eye*`` -> eyes, ``nose*`` -> nose, ``mouth*``
  -> mouth, ``jaw*`` -> jaw, ``cheek*`` -> other) set to the reference means, the landmark
  baseline of :mod:`femo.audit.attribution`. Head pose, body points, the found-flags and
  ``_neutral`` belong to no facial region and are never hidden.

Why next to the integrated-gradients region shares: an IG map is the input's difference from its
baseline times the path-averaged gradient, and for a blurred baseline that difference is largest
at strong edges (the face outline lies in the jaw region, the hairline in ``other``) whatever the
model: the randomisation check shows whole maps of a randomised model still correlating with the
trained one's. Region shares of such maps carry that input structure, and they see the pixels
only, although a fusion model may read the same region from its landmarks. Occlusion asks the
model itself: without this region, how much less does it believe its answer? Regions differ in
size, so read the drop as "this region's evidence", not "per pixel".
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from femo.audit import attribution as at
from femo.audit import attribution_regions as ar

#: Blendshape name prefix -> facial region (``cheek`` has no region of its own: ``other``).
BLENDSHAPE_REGION: dict[str, str] = {"brow": "brows", "eye": "eyes", "nose": "nose", "mouth": "mouth",
                                     "jaw": "jaw", "cheek": ar.OTHER}


def geometry_regions(names: Sequence[str] | None = None,
                     regions: Sequence[str] | None = None) -> list[str | None]:
    """Facial region of every geometry feature (``None``: head pose, body, flags, ``_neutral``).

    names: geometry feature names (default :func:`femo.audit.attribution_regions.geometry_feature_names`);
    regions: the named regions (default ``FACE_REGIONS``); mesh points outside them count as ``other``.
    """
    names = ar.geometry_feature_names() if names is None else names
    regions = list(ar.default_regions()) if regions is None else list(regions)
    out: list[str | None] = []
    for name in names:
        group = ar.feature_group(name)
        if group == "blendshape":
            out.append(next((r for p, r in BLENDSHAPE_REGION.items() if name.startswith(p)), None))
        elif group in regions:
            out.append(group)
        elif ":" in name:  # a mesh point of no named region ("face:<i>")
            out.append(ar.OTHER)
        else:
            out.append(None)
    return out


def _masks(batch: Mapping[str, torch.Tensor], keys: Sequence[str], names: Sequence[str],
           labels: torch.Tensor | None, feature_regions: Sequence[str | None]) -> tuple[torch.Tensor, ...]:
    """captum feature masks: region i of ``names`` is id i in every input; id len(names) = never hidden."""
    b = len(batch[keys[0]])
    out = []
    for key in keys:
        if key == "face":
            out.append(labels.long()[:, :, None])  # (B, T, 1, S, S)
        else:  # landmarks
            ids = [names.index(r) if r is not None and r in names else len(names) for r in feature_regions]
            out.append(torch.tensor(ids, dtype=torch.long).view(1, 1, -1).expand(b, 1, -1).contiguous())
    return tuple(out)


def region_occlusion(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], *,
                     labels: torch.Tensor | np.ndarray | None, regions: Sequence[str],
                     target: str | np.ndarray = "predicted", means: Mapping[str, torch.Tensor] | None = None,
                     blur_sigma: float | None = None,
                     feature_regions: Sequence[str | None] | None = None) -> np.ndarray | None:
    """(B, R) drop of the target logit when each region of ``regions`` is hidden (R = len(regions),
    the last one ``other``); None when the batch has neither crops with region labels nor landmarks.

    labels: (B, T, S, S) region index per crop pixel (i = ``regions[i]``; from
    :func:`femo.audit.attribution_regions.region_label_map`, frames without a face all ``other``),
    or None when the model reads no crops. target: ``predicted`` or ``label`` (as IG), or the (B,)
    class indices already chosen (e.g. an IG result's ``target``).
    means: reference means (landmark baseline). feature_regions: per geometry feature (default
    :func:`geometry_regions`). A drop is NaN for a region no input of the clip carries.
    """
    from captum.attr import FeatureAblation

    regions = list(regions)
    keys = tuple(k for k in (("face",) if "face" in batch and labels is not None else ())
                 + (("landmarks",) if "landmarks" in batch else ()))
    if not keys:
        return None
    model.eval()
    labels_t = None if labels is None else torch.as_tensor(np.asarray(labels))
    feature_regions = geometry_regions() if feature_regions is None else feature_regions
    if "landmarks" in keys and len(feature_regions) != batch["landmarks"].shape[-1]:
        raise ValueError(f"region_occlusion: {len(feature_regions)} feature regions for "
                         f"{batch['landmarks'].shape[-1]} geometry features")
    fixed = at._fixed_keys(batch, keys)
    forward = at._Forward(model, keys, fixed)
    inputs = tuple(batch[k].float() for k in keys)
    extra = tuple(batch[k] for k in fixed)
    base = at.make_baselines(batch, keys, means=means, blur_sigma=blur_sigma)
    masks = _masks(batch, keys, regions, labels_t, feature_regions)
    with torch.no_grad():
        if isinstance(target, str):
            tgt = forward(*inputs, *extra).argmax(-1) if target == "predicted" else batch["label"].long()
        else:
            tgt = torch.as_tensor(np.asarray(target), dtype=torch.long)
        attr = FeatureAblation(forward).attribute(inputs, baselines=base, target=tgt, additional_forward_args=extra,
                                                  feature_mask=masks)
    drops = np.full((len(tgt), len(regions)), np.nan)
    for i in range(len(regions)):
        total = torch.zeros(len(tgt), dtype=torch.float64)
        count = torch.zeros(len(tgt), dtype=torch.float64)
        for a, m in zip(attr, masks):
            hit = (m == i).expand_as(a)  # every element of region i carries the same drop
            total += (a.double() * hit).reshape(len(a), -1).sum(1)
            count += hit.reshape(len(a), -1).sum(1).double()
        drops[:, i] = np.where(count.numpy() > 0, (total / count.clamp(min=1)).numpy(), np.nan)
    return drops


def occlusion_shares(drops: np.ndarray) -> np.ndarray:
    """(B, R) share of each region in a clip's positive drops (a region whose hiding raises the
    logit counts 0); rows with no positive drop are NaN."""
    pos = np.clip(np.nan_to_num(drops, nan=0.0), 0.0, None)
    total = pos.sum(1, keepdims=True)
    return np.divide(pos, total, out=np.full_like(pos, np.nan), where=total > 0)
