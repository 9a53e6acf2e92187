"""Sanity checks of attributions: cascading model randomisation and IG convergence, each ending in
a pass/fail verdict in words.

**Cascading model randomisation** (Adebayo et al., 2018, "Sanity checks for saliency maps"): the
model's parametric layers on the path from the checked input (the face crops) to the logits are
re-initialised from the top (logits) down, one layer per step (:func:`layer_labels`: heads and
fusion, the temporal block, the face projection, then each block of the frame CNN down to the
input; merged into ``max_steps`` groups when there are more layers), cumulatively; after each
step the same clips are attributed again (same target classes: the trained model's) and each
clip's map is compared with the trained model's by the Spearman rank correlation.

What is compared: an Integrated Gradients map is the product of two factors, the input's
difference from the baseline (x - b: for the blurred-face baseline, the crop's edges and pixel
noise) and the gradient averaged along the path (the model's part). The first factor is the same
for every model, so the ranks of whole |attribution| maps stay correlated even between two
unrelated random models (on the drawn faces of the synthetic set: about 0.8), and such a number
says nothing about the model. The check therefore ranks the model's factor,
|attribution| / |x - b| (per pixel, summed over colour), over the pixels where the input differs
from the baseline (|x - b| above :data:`SUPPORT_FRACTION` of the clip's largest difference) in
frames that hold a face. The whole-map correlation is reported next to it (``spearman_maps``).

Verdict: **passed** when the correlation after the last step (every layer on the path random) is
below :data:`RANDOMISATION_THRESHOLD` = 0.5, i.e. trained and randomised maps share less than a
quarter of their rank variance (rho^2 < 0.25). The threshold is femo's choice; Adebayo et al.
give curves, not a cut-off.

**Convergence** of Integrated Gradients: attributions must add up to f(x) - f(baseline) of the
target logit; the relative delta |sum - (f(x) - f(baseline))| / |f(x) - f(baseline)| measures
the shortfall. Verdict: **passed** when the median over clips is below
:data:`CONVERGENCE_THRESHOLD` = 0.05 (more IG steps lower it).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from femo.audit import attribution as at

RANDOMISATION_THRESHOLD = 0.5
CONVERGENCE_THRESHOLD = 0.05
#: Pixels (elements) compared by the randomisation check: |x - b| above this share of the clip's largest.
SUPPORT_FRACTION = 0.02


def _tensors(value) -> list[torch.Tensor]:
    """Every tensor inside a module output (tensor, tuple/list, dict)."""
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def path_modules(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], key: str = "face") -> list[str]:
    """Names of the modules with their own parameters that lie downstream of ``batch[key]``, in the
    order one forward pass calls them (bottom first).

    Found by a forward pass in which only ``batch[key]`` requires gradients (parameters frozen for
    the pass): a module is on the path when its output requires gradients.
    """
    names = {id(m): n for n, m in model.named_modules()}
    order: list[str] = []
    own = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]

    def hook(module, args, output):
        name = names[id(module)]
        if name not in order and any(t.requires_grad for t in _tensors(output)):
            order.append(name)

    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    handles = [m.register_forward_hook(hook) for m in own]
    try:
        for p in params:
            p.requires_grad_(False)
        inputs = dict(batch, **{key: batch[key].float().detach().requires_grad_(True)})
        with torch.enable_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    return order


def layer_labels(model: torch.nn.Module, names: Sequence[str]) -> list[str]:
    """The layer each module of ``names`` belongs to, so a cascade step randomises whole layers.

    A frame CNN's stages (``stages()`` of a frame encoder's backbone: a conv block each, see
    :mod:`femo.models.frames`) are one layer each (``<backbone> stage k``, k = 1 at the input);
    under a modality branch, the face projection (``...encoder.proj``) and the temporal block
    (``...temporal``) are one layer each; the per-modality heads and the fusion layer together are
    the top layer (``heads + fusion``). Any other module is a layer of its own.
    """
    from femo.models.frames import FrameEncoder

    stage_of: dict[int, str] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, FrameEncoder):
            for k, group in enumerate(module.backbone.stages(), start=1):
                for part in group:
                    for sub in part.modules():
                        stage_of.setdefault(id(sub), f"{prefix + '.' if prefix else ''}backbone stage {k}")
    modules = dict(model.named_modules())
    out = []
    for name in names:
        parts = name.split(".")
        if id(modules[name]) in stage_of:
            out.append(stage_of[id(modules[name])])
        elif parts[0] in ("heads", "fusion"):
            out.append("heads + fusion")
        else:
            key = next((k for k in ("proj", "temporal") if k in parts), None)
            out.append(".".join(parts[: parts.index(key) + 1]) if key else name)
    return out


def cascade_steps(names: Sequence[str], max_steps: int = 4, labels: Sequence[str] | None = None) -> list[list[str]]:
    """Top-first cumulative randomisation steps over the modules ``names`` (bottom first).

    labels: the layer of each module (:func:`layer_labels`; None = every module its own layer).
    Layers are taken from the top (the logits) down, one per step when there are no more layers
    than ``max_steps`` (or ``max_steps <= 0``), else merged into ``max_steps`` contiguous groups of
    about equal size. Returns one list of module names per step (each step adds its modules to the
    previous ones).
    """
    names = list(names)
    labels = list(names) if labels is None else list(labels)
    layers: list[list[str]] = []  # top first, modules of one layer together
    previous = None
    for name, label in reversed(list(zip(names, labels))):
        if layers and label == previous:
            layers[-1].append(name)
        else:
            layers.append([name])
        previous = label
    if not layers:
        return []
    n = len(layers) if max_steps <= 0 else min(max_steps, len(layers))
    chunks = np.array_split(np.arange(len(layers)), n)
    return [[m for i in chunk for m in layers[i]] for chunk in chunks]


def _span(names: Sequence[str]) -> str:
    """Label of a step: its layer (or module), or its first and last one."""
    names = list(dict.fromkeys(names))
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"


def randomise(model: torch.nn.Module, names: Sequence[str], *, seed: int = 0) -> torch.nn.Module:
    """A deep copy of ``model`` whose modules ``names`` are re-initialised (``reset_parameters``
    where the module has it, else N(0, 0.02^2)); everything else keeps its trained weights."""
    clone = copy.deepcopy(model)
    modules = dict(clone.named_modules())
    torch.manual_seed(seed)
    with torch.no_grad():
        for name in names:
            module = modules[name]
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
            else:
                for p in module.parameters(recurse=False):
                    p.normal_(0.0, 0.02)
    return clone.eval()


def _maps(res: at.Attribution, key: str) -> np.ndarray:
    """(B, ...) absolute attribution of ``key``: face -> (B, T, S, S) summed over colour."""
    return at.spatial_maps(res) if key == "face" else res.maps[key].abs().cpu().numpy()


def _difference(batch: Mapping[str, torch.Tensor], key: str, **kwargs) -> np.ndarray:
    """(B, ...) |x - baseline| of ``key``, shaped like :func:`_maps` (face: summed over colour).
    kwargs: ``means``, ``blur_sigma`` (the baselines' settings, femo.audit.attribution)."""
    (base,) = at.make_baselines(batch, (key,), means=kwargs.get("means"), blur_sigma=kwargs.get("blur_sigma"))
    diff = (batch[key].float() - base).abs()
    return (diff.sum(2) if key == "face" else diff).cpu().numpy()


def model_factor(maps: np.ndarray, difference: np.ndarray) -> np.ndarray:
    """(B, ...) |attribution| / |x - b| where |x - b| > SUPPORT_FRACTION x the clip's largest
    difference, NaN elsewhere: the model's factor of an IG map (its path-averaged |gradient|)."""
    peak = difference.reshape(len(difference), -1).max(1).reshape(-1, *[1] * (difference.ndim - 1))
    support = difference > SUPPORT_FRACTION * peak
    return np.where(support, maps / np.where(support, difference, 1.0), np.nan)


def clip_spearman(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(B,) Spearman correlation per clip of two (B, T, ...) maps over the frames ``valid`` (B, T),
    leaving out elements that are NaN in either map."""
    out = []
    for i in range(len(a)):
        keep = slice(None) if valid is None else np.asarray(valid[i], bool)
        x, y = np.ravel(a[i][keep]), np.ravel(b[i][keep])
        both = ~(np.isnan(x) | np.isnan(y))
        out.append(at.spearman(x[both], y[both]) if both.sum() > 2 else float("nan"))
    return np.array(out, float)


@dataclass(frozen=True)
class RandomisationCheck:
    """Result of :func:`cascading_randomisation`.

    table: one row per step: ``step`` (1 = the top modules only), ``randomised`` (the modules added
    at that step, top first), ``n_modules`` (cumulative), ``spearman`` (mean over clips of the rank
    correlation of the model's factor, see the module docstring), ``spearman_min``, ``spearman_max``,
    ``spearman_maps`` (mean correlation of the whole |attribution| maps, input factor included).
    threshold: the pass line for the last step. key: the input checked.
    """

    table: pd.DataFrame
    threshold: float
    key: str
    n_clips: int

    @property
    def final(self) -> float:
        """Mean rank correlation after the last step (NaN when there were no steps)."""
        return float(self.table["spearman"].iloc[-1]) if len(self.table) else float("nan")

    @property
    def passed(self) -> bool:
        """True when the last step's correlation is below the threshold."""
        return bool(self.final < self.threshold)

    def verdict(self) -> str:
        """One sentence: passed or failed, with the figures."""
        if not len(self.table):
            return f"Model randomisation: not run (no layer on the path from {self.key} to the logits)."
        first = float(self.table["spearman"].iloc[0])
        figures = (f"rank correlation between the trained and randomised model's {self.key} maps (their model "
                   f"factor, attribution / (input - baseline)) {first:.2f} after randomising the top layer, "
                   f"{self.final:.2f} with every layer random ({len(self.table)} steps, {self.n_clips} clips; "
                   f"pass below {self.threshold:.2f})")
        if "spearman_maps" in self.table:
            figures += (f"; the whole |attribution| maps, which share the input's difference from the baseline "
                        f"whatever the model, correlate {float(self.table['spearman_maps'].iloc[-1]):.2f}")
        if self.passed:
            return (f"Model randomisation passed: {figures}. The model's part of the maps depends on what it learned; "
                    "read the maps' fine texture (edges, pixel noise) as the input's, not the model's.")
        return (f"Model randomisation FAILED: {figures}. The trained model's {self.key} maps cannot be told from "
                "a randomised model's: they show the input's structure more than what the model learned.")

    def to_metrics(self) -> dict:
        """``{spearman_final, passed, threshold, steps: [{step, randomised, n_modules, spearman, ...}]}``."""
        steps = [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.items()}
                 for r in self.table.to_dict("records")]
        return {"spearman_final": None if np.isnan(self.final) else self.final, "passed": self.passed,
                "threshold": self.threshold, "key": self.key, "n_clips": self.n_clips, "steps": steps}


def cascading_randomisation(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], *, key: str = "face",
                            max_steps: int = 4, seed: int = 0, threshold: float = RANDOMISATION_THRESHOLD,
                            **kwargs) -> RandomisationCheck:
    """Cascading model-randomisation check of ``key``'s attributions on the clips of ``batch``.

    Only ``key`` is attributed (the other inputs are held fixed). kwargs go to
    :func:`femo.audit.attribution.attribute` (``method``, ``n_steps``, ``means``, ``blur_sigma``).
    """
    kwargs = {**kwargs, "keys": (key,)}
    kwargs.setdefault("target", "predicted")
    trained = at.attribute(model, batch, **kwargs)
    fixed = dict(batch, label=torch.as_tensor(trained.target))
    valid = batch[at.MASK_OF[key]].cpu().numpy() if key in ("face", "face_emb", "landmarks") else None
    reference = _maps(trained, key)
    difference = _difference(batch, key, **kwargs)
    factor = model_factor(reference, difference)
    done: list[str] = []
    rows = []
    names = path_modules(model, batch, key)
    label = dict(zip(names, layer_labels(model, names)))
    for step, group in enumerate(cascade_steps(names, max_steps, [label[n] for n in names]), start=1):
        done += group
        res = at.attribute(randomise(model, done, seed=seed), fixed, **{**kwargs, "target": "label"})
        maps = _maps(res, key)
        rho = clip_spearman(factor, model_factor(maps, difference), valid)
        rows.append({"step": step, "randomised": _span([label[n] for n in group]), "n_modules": len(done),
                     "spearman": float(np.nanmean(rho)), "spearman_min": float(np.nanmin(rho)),
                     "spearman_max": float(np.nanmax(rho)),
                     "spearman_maps": float(np.nanmean(clip_spearman(reference, maps, valid)))})
    return RandomisationCheck(pd.DataFrame(rows, columns=["step", "randomised", "n_modules", "spearman",
                                                          "spearman_min", "spearman_max", "spearman_maps"]),
                              threshold, key, len(trained.target))


@dataclass(frozen=True)
class ConvergenceCheck:
    """IG convergence over clips: ``relative`` (N,) relative deltas, the pass ``threshold``, the
    IG ``n_steps`` used."""

    relative: np.ndarray
    threshold: float = CONVERGENCE_THRESHOLD
    n_steps: int | None = None

    @property
    def median(self) -> float:
        """Median relative delta (NaN without clips)."""
        return float(np.median(self.relative)) if len(self.relative) else float("nan")

    @property
    def passed(self) -> bool:
        """True when the median relative delta is below the threshold."""
        return bool(self.median < self.threshold)

    def verdict(self) -> str:
        """One sentence with the median, the share of clips above the threshold and the steps."""
        steps = f" with {self.n_steps} steps" if self.n_steps else ""
        above = float(np.mean(self.relative >= self.threshold)) if len(self.relative) else float("nan")
        figures = (f"median relative delta {self.median:.3f}{steps} ({above:.0%} of {len(self.relative)} clips at or "
                   f"above {self.threshold:g})")
        if self.passed:
            return f"IG convergence passed: {figures}; the attributions add up to the logit change."
        return (f"IG convergence FAILED: {figures}; the attributions do not add up to the logit change, "
                "raise the number of IG steps.")

    def to_metrics(self) -> dict:
        """``{median_relative, passed, threshold, n_steps, share_above}``."""
        return {"median_relative": self.median, "passed": self.passed, "threshold": self.threshold,
                "n_steps": self.n_steps,
                "share_above": float(np.mean(self.relative >= self.threshold)) if len(self.relative) else None}
