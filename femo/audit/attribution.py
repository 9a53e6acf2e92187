"""Captum attributions of a FemoNet-style model over its inputs: face frames, geometry features,
log-mel and prosody, in one call over the tuple of inputs.

Methods (:data:`METHODS`): ``integrated_gradients`` (captum ``IntegratedGradients``, reports the
convergence delta) and the faster ``gradient_shap`` (captum ``GradientShap``: expected gradients
over a baseline distribution, ``n_samples`` forward/backward passes instead of ``n_steps``).

Baselines (what "absent evidence" means for each input), never plain zeros:

* ``face``: the clip's own crops under a Gaussian blur (sigma = S / 16 px, 7 px at S = 112): the
  face stays a face in the same place and light, but its expression detail is gone.
* ``face_emb``, ``landmarks``, ``prosody``: the per-feature mean over a reference set
  (:func:`reference_means`; by default the attributed batch itself), the same for every frame.
* ``audio``: the reference set's mean log-mel spectrum, constant over time (no temporal events).

For ``gradient_shap`` the baseline distribution is the batch's baselines (blurred crops of every
clip in the batch, the reference means). Masks and all other keys are held fixed; a frame whose
mask is False gets zero attribution because the model ignores it.

The result's ``delta`` is captum's convergence delta: sum of attributions minus
(f(x) - f(baseline)) for the target logit, per clip; ``gap`` is f(x) - f(baseline).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

METHODS: tuple[str, ...] = ("integrated_gradients", "gradient_shap")
#: Attributable sample keys, in the order they are passed to captum.
INPUT_KEYS: tuple[str, ...] = ("face", "face_emb", "landmarks", "audio", "prosody")
#: Mask key of each attributable key; features are averaged over present elements only.
MASK_OF: dict[str, str] = {"face": "face_mask", "face_emb": "face_mask", "landmarks": "landmarks_mask",
                           "audio": "audio_mask", "prosody": "audio_mask"}


@dataclass(frozen=True)
class Attribution:
    """Attributions of a batch of B clips for their target class logit.

    maps: ``{key: tensor shaped like batch[key]}`` (e.g. face (B, T, 3, S, S)), in logit units.
    target: (B,) class index attributed. label: (B,) true class. index: (B,) dataset rows.
    delta: (B,) convergence delta; gap: (B,) f(x) - f(baseline) of the target logit.
    """

    method: str
    maps: dict[str, torch.Tensor]
    target: np.ndarray
    label: np.ndarray
    index: np.ndarray
    delta: np.ndarray
    gap: np.ndarray

    def relative_delta(self) -> np.ndarray:
        """|delta| / max(|gap|, 1e-6) per clip: 0 = attributions add up exactly."""
        return np.abs(self.delta) / np.maximum(np.abs(self.gap), 1e-6)


def attributed_keys(batch: Mapping[str, torch.Tensor], keys: Sequence[str] | None = None) -> tuple[str, ...]:
    """The keys to attribute: ``keys`` (checked against the batch) or every :data:`INPUT_KEYS` present."""
    if keys is None:
        return tuple(k for k in INPUT_KEYS if k in batch)
    unknown = [k for k in keys if k not in INPUT_KEYS]
    missing = [k for k in keys if k not in batch]
    if unknown or missing:
        raise ValueError(f"cannot attribute {unknown or missing}: attributable keys are {list(INPUT_KEYS)}, "
                         f"batch has {sorted(batch)}")
    return tuple(keys)


def _feature_mean(x: torch.Tensor, mask: torch.Tensor, key: str) -> torch.Tensor:
    """Mean over present clips/frames (and time for audio) -> one value per feature."""
    x = x.float()
    if key == "audio":  # (B, 1, 64, A) -> (64,)
        w = mask.float()[:, None, None, None].expand_as(x)
        return (x * w).sum((0, 1, 3)) / w.sum((0, 1, 3)).clamp(min=1)
    if key == "prosody":  # (B, A, 4) -> (4,)
        w = mask.float()[:, None, None].expand_as(x)
        return (x * w).sum((0, 1)) / w.sum((0, 1)).clamp(min=1)
    w = mask.float()[:, :, None].expand_as(x)  # (B, T, F) -> (F,)
    return (x * w).sum((0, 1)) / w.sum((0, 1)).clamp(min=1)


def reference_means(batches: Iterable[Mapping[str, torch.Tensor]],
                    keys: Sequence[str] = ("face_emb", "landmarks", "audio", "prosody")) -> dict[str, torch.Tensor]:
    """Per-feature means over a reference set (e.g. training clips), present elements only.

    Returns ``{key: (F,)}``: landmarks (G,), face_emb (D,), audio (64,) mel bands, prosody (4,).
    Keys absent from the batches are skipped.
    """
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, float] = {}
    for batch in batches:
        for key in keys:
            if key not in batch:
                continue
            n = float(batch[MASK_OF[key]].float().sum())
            mean = _feature_mean(batch[key], batch[MASK_OF[key]], key)
            sums[key] = sums.get(key, 0) + mean * n
            counts[key] = counts.get(key, 0.0) + n
    return {k: sums[k] / max(counts[k], 1.0) for k in sums}


def blur_faces(face: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Gaussian-blurred crops, same shape: face (B, T, 3, S, S) in [0, 1]; sigma default S / 16 px."""
    s = face.shape[-1]
    sigma = float(sigma if sigma is not None else max(s / 16, 1.0))
    kernel = 2 * int(round(3 * sigma)) + 1
    kernel = min(kernel, 2 * ((s - 1) // 2) + 1)  # odd and no larger than the image
    flat = face.reshape(-1, *face.shape[-3:]).float()
    return gaussian_blur(flat, [kernel, kernel], [sigma, sigma]).reshape(face.shape)


def make_baselines(batch: Mapping[str, torch.Tensor], keys: Sequence[str], *,
                   means: Mapping[str, torch.Tensor] | None = None,
                   blur_sigma: float | None = None) -> tuple[torch.Tensor, ...]:
    """One baseline per attributed key, shaped like the input (see the module docstring)."""
    out = []
    for key in keys:
        x = batch[key].float()
        if key == "face":
            out.append(blur_faces(x, blur_sigma))
            continue
        mean = (means or {}).get(key)
        if mean is None:
            mean = _feature_mean(x, batch[MASK_OF[key]], key)
        mean = mean.to(x.device, x.dtype)
        if key == "audio":
            out.append(mean[None, None, :, None].expand_as(x).contiguous())
        else:
            out.append(mean.expand_as(x).contiguous())
    return tuple(out)


class _Forward:
    """Callable ``(*attributed, *fixed) -> target logits source`` rebuilding the batch dict."""

    def __init__(self, model: torch.nn.Module, keys: Sequence[str], fixed: Sequence[str]) -> None:
        self.model, self.keys, self.fixed = model, tuple(keys), tuple(fixed)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        batch = dict(zip(self.keys + self.fixed, args))
        logits = self.model(batch)["logits"].float()  # (B, C)
        # an input the model ignores here (e.g. prosody when no clip has audio) must still be in
        # the graph for autograd; it then gets exactly zero attribution
        unused = sum(x.reshape(len(x), -1)[:, :1] for x in args[: len(self.keys)]) * 0.0  # (B, 1)
        return logits + unused


def _fixed_keys(batch: Mapping[str, torch.Tensor], keys: Sequence[str]) -> tuple[str, ...]:
    wanted = set(MASK_OF.values()) | set(INPUT_KEYS)
    return tuple(k for k in batch if k in wanted and k not in keys)


def attribute(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], *,
              method: str = "integrated_gradients", target: str = "predicted",
              keys: Sequence[str] | None = None, means: Mapping[str, torch.Tensor] | None = None,
              blur_sigma: float | None = None, n_steps: int = 24, n_samples: int = 8,
              internal_batch_size: int | None = None) -> Attribution:
    """Attribute the target-class logit of every clip of ``batch`` to its inputs.

    method: one of :data:`METHODS`. target: ``"predicted"`` (the model's class) or ``"label"``.
    keys: inputs to attribute (default: every attributable key in the batch). means: reference
    per-feature means (:func:`reference_means`; default the batch's own). n_steps: IG steps;
    n_samples: GradientShap samples. internal_batch_size: clips per IG forward/backward chunk
    (default max(B, 8): with 16 frames per clip, at most ~128 frames through the CNN at once).
    """
    from captum.attr import GradientShap, IntegratedGradients

    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {list(METHODS)}")
    if target not in ("predicted", "label"):
        raise ValueError(f"target must be 'predicted' or 'label', got {target!r}")
    model.eval()
    keys = attributed_keys(batch, keys)
    fixed = _fixed_keys(batch, keys)
    forward = _Forward(model, keys, fixed)
    inputs = tuple(batch[k].float() for k in keys)
    extra = tuple(batch[k] for k in fixed)
    base = make_baselines(batch, keys, means=means, blur_sigma=blur_sigma)
    with torch.no_grad():
        logits = forward(*inputs, *extra)
        tgt = logits.argmax(-1) if target == "predicted" else batch["label"].long()
        gap = (logits - forward(*base, *extra)).gather(1, tgt[:, None])[:, 0]
    if internal_batch_size is None:
        internal_batch_size = max(len(tgt), 8)
    if method == "integrated_gradients":
        attr, delta = IntegratedGradients(forward).attribute(
            inputs, baselines=base, target=tgt, additional_forward_args=extra, n_steps=n_steps,
            internal_batch_size=internal_batch_size, return_convergence_delta=True)
    else:
        attr, delta = GradientShap(forward).attribute(
            inputs, baselines=base, target=tgt, additional_forward_args=extra, n_samples=n_samples,
            stdevs=0.0, return_convergence_delta=True)
        delta = delta.reshape(len(tgt), n_samples).mean(1)
    n = len(tgt)
    index = batch["index"].cpu().numpy() if "index" in batch else np.arange(n)
    label = batch["label"].cpu().numpy() if "label" in batch else np.full(n, -1)
    return Attribution(method, {k: a.detach() for k, a in zip(keys, attr)}, tgt.cpu().numpy(), label,
                       index, delta.detach().cpu().numpy(), gap.cpu().numpy())


def frame_importance(attr: Attribution, key: str = "face", *, normalise: bool = True) -> np.ndarray:
    """(B, T) per-frame importance: sum of |attribution| over each frame's features (face crops or
    embeddings); with ``normalise`` each clip's curve sums to 1 (all-zero curves stay zero)."""
    a = attr.maps[key].abs()
    curve = a.reshape(a.shape[0], a.shape[1], -1).sum(-1).cpu().numpy()
    if normalise:
        total = curve.sum(1, keepdims=True)
        curve = np.divide(curve, total, out=np.zeros_like(curve), where=total > 0)
    return curve


def spatial_maps(attr: Attribution) -> np.ndarray:
    """(B, T, S, S) face saliency: sum over colour channels of |attribution|."""
    return attr.maps["face"].abs().sum(2).cpu().numpy()


def feature_importance(attr: Attribution, key: str = "landmarks") -> np.ndarray:
    """(B, F) per-feature importance of a per-frame input (landmarks, face_emb): sum over frames
    of |attribution|; prosody: sum over time."""
    return attr.maps[key].abs().sum(1).cpu().numpy()


def logmel_maps(attr: Attribution) -> np.ndarray:
    """(B, 64, A) time-frequency importance: |attribution| on the log-mel input."""
    return attr.maps["audio"].abs()[:, 0].cpu().numpy()


def input_shares(attr: Attribution) -> dict[str, float]:
    """Share of total |attribution| per attributed key, summed over the batch."""
    totals = {k: float(a.abs().sum()) for k, a in attr.maps.items()}
    s = sum(totals.values())
    return {k: v / s if s else float("nan") for k, v in totals.items()}


def input_shares_per_clip(attr: Attribution) -> dict[str, np.ndarray]:
    """Per clip, each attributed key's share of the clip's total |attribution|: ``{key: (B,)}``."""
    totals = {k: a.abs().reshape(len(a), -1).sum(1).cpu().numpy() for k, a in attr.maps.items()}
    s = sum(totals.values())
    return {k: np.divide(v, s, out=np.full_like(v, np.nan), where=s > 0) for k, v in totals.items()}


def randomised_copy(model: torch.nn.Module, *, seed: int = 0) -> torch.nn.Module:
    """A deep copy of ``model`` with every weight re-initialised (Adebayo et al.'s full model
    randomisation): modules with ``reset_parameters`` are reset, other parameters redrawn
    from N(0, 0.02^2)."""
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    handled = set()
    for module in clone.modules():
        if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
            module.reset_parameters()
            handled |= {id(p) for p in module.parameters(recurse=False)}
    with torch.no_grad():
        for p in clone.parameters():
            if id(p) not in handled:
                p.normal_(0.0, 0.02)
    return clone.eval()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two flattened arrays (NaN when either is constant)."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def randomisation_similarity(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], *,
                             key: str = "face", seed: int = 0, **kwargs) -> dict[str, float]:
    """Model-randomisation sanity check: how similar attributions stay when weights are random.

    Attributes ``batch`` with ``model`` and with :func:`randomised_copy` (same target classes:
    the trained model's), then per clip the Spearman rank correlation of |attribution| on
    ``key`` (face: the (T, S, S) spatial maps). A faithful method gives a low value. Returns
    ``{"spearman": mean over clips, "spearman_min", "spearman_max"}``. kwargs go to :func:`attribute`.
    """
    kwargs.setdefault("target", "predicted")
    original = attribute(model, batch, **kwargs)
    fixed = dict(batch, label=torch.as_tensor(original.target))
    random = attribute(randomised_copy(model, seed=seed), fixed, **{**kwargs, "target": "label"})
    pick = spatial_maps if key == "face" else (lambda r: r.maps[key].abs().cpu().numpy())
    a, b = pick(original), pick(random)
    values = np.array([spearman(x, y) for x, y in zip(a, b)])
    return {"spearman": float(np.nanmean(values)), "spearman_min": float(np.nanmin(values)),
            "spearman_max": float(np.nanmax(values))}
