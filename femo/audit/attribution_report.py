"""Attribution over many clips of a trained run, collected into tables for the report.

:func:`attribute_clips` runs :func:`femo.audit.attribution.attribute` batch by batch and keeps
small summaries per clip (region shares, per-frame curve, input shares, convergence delta,
geometry-feature importance) plus full maps for the first ``n_examples`` clips only, so memory
stays flat however many clips are attributed.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from femo.audit import attribution as at
from femo.audit import attribution_regions as ar


#: Column prefix of the region-occlusion drops (``drop_mouth``: target-logit drop with the mouth hidden).
DROP = "drop_"
#: Same for the logit of the clip's true emotion (``label_drop_mouth``), what the planted-truth check reads.
LABEL_DROP = "label_drop_"


@dataclass
class ClipAttributions:
    """Per-clip summaries of a run's attributions.

    table: one row per clip: ``index, clip_id, label, target`` (class names), ``delta``,
    ``relative_delta``, ``share_<input>`` (face / landmarks / audio / prosody) and one column per
    facial region (``brows .. jaw, other``; NaN without face crops or mesh), ``drop_<region>`` (the
    target logit's drop when that region is hidden from crops and landmarks,
    :mod:`femo.audit.occlusion`; absent when not computed), ``label_drop_<region>`` (the same for
    the true emotion's logit; equal to ``drop_`` where the target is the label), then the index's
    metadata columns.
    curves: (N, T) per-frame face importance. features: (N, G) geometry-feature importance (None
    without a landmarks input). examples: full maps of the first clips
    (``faces`` (n, S, S, 3) uint8 of each clip's most important frame, ``maps`` (n, S, S),
    ``points`` (n, 478, 2), ``logmel`` / ``logmel_attr`` (n, 64, A)).
    """

    table: pd.DataFrame
    curves: np.ndarray
    features: np.ndarray | None
    regions: tuple[str, ...]
    examples: dict[str, np.ndarray] = field(default_factory=dict)


def _meshes(store: Path, clip_ids: Sequence[str], size: int, aspect: Sequence[float]) -> tuple[list, list, list]:
    """Crop pixel meshes, face-found flags and uint8 crops per clip from the feature store."""
    from femo.data.store import read_clip

    points, found, faces = [], [], []
    for cid, asp in zip(clip_ids, aspect):
        arrays = read_clip(store, cid)
        ok = np.asarray(arrays["face_found"], bool)
        points.append(ar.crop_points(arrays["landmarks"], arrays["face_box"], size=size, aspect=asp) if ok.any() else None)
        found.append(ok)
        faces.append(arrays["faces"])
    return points, found, faces


def _aspect(rows: pd.DataFrame) -> list[float]:
    """Frame width / height per clip from ``width``/``height`` or ``aspect`` columns; 1.0 when unknown."""
    if "aspect" in rows.columns:
        return pd.to_numeric(rows["aspect"], errors="coerce").fillna(1.0).tolist()
    if {"width", "height"} <= set(rows.columns):
        ratio = pd.to_numeric(rows["width"], errors="coerce") / pd.to_numeric(rows["height"], errors="coerce")
        return ratio.fillna(1.0).tolist()
    return [1.0] * len(rows)


def _face_part(res: at.Attribution, rows: pd.DataFrame, store: Path, regions: Mapping, radius: float | None):
    """Region table, region label maps (B, T, S, S) and example material of one batch (requires raw
    face crops)."""
    maps = at.spatial_maps(res)  # (B, T, S, S)
    size = maps.shape[-1]
    points, found, faces = _meshes(store, rows["clip_id"].astype(str).tolist(), size, _aspect(rows))
    labels = np.stack([ar.clip_label_maps(p, f, size=size, regions=regions, radius=radius)
                       for p, f in zip(points, found)])
    table = ar.clip_region_table(maps, points, found=found, regions=regions, radius=radius, labels=labels)
    return table, maps, points, faces, labels


def _example(store_faces, maps, points, curves, res, i) -> dict[str, np.ndarray]:
    t = int(np.argmax(curves[i]))
    out = {"faces": store_faces[i][t], "maps": maps[i][t], "frame": np.array(t)}
    out["points"] = points[i][t] if points[i] is not None else np.full((478, 2), -1.0)
    if "audio" in res.maps:
        out["logmel_attr"] = at.logmel_maps(res)[i]
    return out


def attribute_clips(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], *,
                    index: pd.DataFrame, store: str | Path, classes: Sequence[str],
                    method: str = "integrated_gradients", n_examples: int = 4,
                    regions: Mapping[str, Sequence[int]] | None = None, radius: float | None = None,
                    occlusion: bool = True, **kwargs) -> ClipAttributions:
    """Attribute every clip of ``batches`` and summarise (see :class:`ClipAttributions`).

    index: the dataset's index (row ``i`` = sample ``index == i``; needs ``clip_id``). store: the
    feature store (face meshes for the region masks). occlusion: also hide one facial region at a
    time from the crops and landmarks (:func:`femo.audit.occlusion.region_occlusion`; columns
    ``drop_<region>`` for the attributed target and ``label_drop_<region>`` for the true emotion,
    computed a second time only for batches where some target is not the label). kwargs go to
    :func:`attribute` (``target``, ``means``, ``n_steps``, ``n_samples``, ``blur_sigma``).
    """
    from femo.audit import occlusion as occ

    regions = ar.default_regions() if regions is None else regions
    names = [*regions, ar.OTHER]
    tables, curves, features, examples = [], [], [], []
    for batch in batches:
        res = at.attribute(model, batch, method=method, **kwargs)
        rows = index.iloc[res.index].reset_index(drop=True)
        frame = pd.DataFrame({"index": res.index, "clip_id": rows["clip_id"].astype(str),
                              "label": [classes[i] for i in res.label], "target": [classes[i] for i in res.target],
                              "delta": res.delta, "relative_delta": res.relative_delta()})
        for key, value in at.input_shares_per_clip(res).items():
            frame[f"share_{key}"] = value
        face_key = "face" if "face" in res.maps else "face_emb"
        curve = at.frame_importance(res, face_key)
        labels = None
        if "face" in res.maps:
            region_table, maps, points, faces, labels = _face_part(res, rows, Path(store), regions, radius)
            frame = pd.concat([frame, region_table], axis=1)
            for i in range(min(len(rows), n_examples - len(examples))):
                example = _example(faces, maps, points, curve, res, i)
                if "audio" in batch:
                    example["logmel"] = batch["audio"][i, 0].cpu().numpy()
                examples.append(example)
        if "landmarks" in res.maps:
            features.append(at.feature_importance(res, "landmarks"))
        hide = dict(labels=labels, regions=names, means=kwargs.get("means"), blur_sigma=kwargs.get("blur_sigma"))
        drops = occ.region_occlusion(model, batch, target=res.target, **hide) if occlusion else None
        if drops is not None:
            same = bool(np.array_equal(res.target, res.label))
            label_drops = drops if same else occ.region_occlusion(model, batch, target=res.label, **hide)
            frame = pd.concat([frame, pd.DataFrame(drops, columns=[f"{DROP}{n}" for n in names]),
                               pd.DataFrame(label_drops, columns=[f"{LABEL_DROP}{n}" for n in names])], axis=1)
        meta = rows.drop(columns=[c for c in rows.columns if c in frame.columns or c == "label"])
        tables.append(pd.concat([frame, meta], axis=1))
        curves.append(curve)
    table = pd.concat(tables, ignore_index=True)
    stacked = {k: np.stack([e[k] for e in examples]) for k in (examples[0] if examples else {})}
    return ClipAttributions(table, np.concatenate(curves), np.concatenate(features) if features else None,
                            (*regions, ar.OTHER), stacked)


def region_summary(result: ClipAttributions) -> dict[str, float]:
    """Mean share per facial region over clips with a face (NaN-free clips only)."""
    cols = list(result.regions)
    if not set(cols) <= set(result.table.columns):  # no face crops were attributed
        return {}
    part = result.table[cols].dropna()
    return {c: float(part[c].mean()) for c in cols} if len(part) else {}


#: Column :func:`with_planted_expression` adds: ``expression_region`` where it is planted truth.
PLANTED = "planted_expression"
#: The synthetic set's emotion with nothing drawn on the face.
NO_EXPRESSION = "neutral"


def planted_expression(table: pd.DataFrame, column: str = "expression_region") -> pd.Series | None:
    """The synthetic set's ``column`` (``expression_region``: full | mouth) of the clips where it
    says where the clip's emotion is drawn, else missing: the face must show the clip's own emotion
    (``face_emotion == true_emotion``; in audio-informative clips it shows another one) and an
    expression at all (not ``neutral``, where no region moves). None without ``column``; without
    the emotion columns every clip's region is kept."""
    if column not in table.columns:
        return None
    region = table[column].astype(str)
    if not {"face_emotion", "true_emotion"} <= set(table.columns):
        return region
    face = table["face_emotion"].astype(str)
    return region.where((face == table["true_emotion"].astype(str)) & (face != NO_EXPRESSION))


def with_planted_expression(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the :data:`PLANTED` column (:func:`planted_expression`) when it has
    ``expression_region``, else unchanged."""
    planted = planted_expression(table)
    return table if planted is None else table.assign(**{PLANTED: planted})


def choose_clips(table: pd.DataFrame, by: Mapping[str, int], *, seed: int = 0) -> np.ndarray:
    """Rows of ``table`` to explain, stratified: for every column ``c`` of ``by`` and every value of
    ``table[c]``, up to ``by[c]`` rows with that value (all of them when fewer exist), drawn with
    ``seed``; rows already chosen for an earlier column count towards later ones. Rows without a
    value (NaN) in a column are no stratum of it.

    E.g. ``by={"predicted": 5, PLANTED: 5}`` on :func:`with_planted_expression`'s table: five clips
    per predicted emotion, and at least five mouth-only clips whose face shows their emotion.
    Columns absent from ``table`` are skipped. Returns sorted positional row numbers (int64).
    """
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for column, count in by.items():
        if column not in table.columns or count <= 0:
            continue
        values = table[column].astype(str).where(table[column].notna(), "").to_numpy()
        for value in sorted(set(values) - {""}):
            rows = np.flatnonzero(values == value)
            have = [r for r in rows if r in chosen]
            rest = rng.permutation([r for r in rows if r not in chosen])
            chosen.update(int(r) for r in rest[: max(0, count - len(have))])
    return np.array(sorted(chosen), dtype=np.int64)


@torch.no_grad()
def predict_classes(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> np.ndarray:
    """(N,) predicted class index of every clip of ``batches``, in order (one forward pass each)."""
    model.eval()
    return np.concatenate([model(batch)["logits"].argmax(-1).cpu().numpy() for batch in batches])


def subset_batches(dataset: torch.utils.data.Dataset, rows: Sequence[int], *, batch_size: int = 2):
    """Batches over the dataset rows ``rows`` only (each sample keeps its own ``index``)."""
    from torch.utils.data import DataLoader, Subset

    return DataLoader(Subset(dataset, [int(r) for r in rows]), batch_size=batch_size, shuffle=False, num_workers=0)


def occlusion_table(table: pd.DataFrame, by: str, regions: Sequence[str]) -> pd.DataFrame:
    """Mean region-occlusion drop per value of ``by`` (e.g. predicted emotion ``target``), one
    column per region of ``regions`` (named without the ``drop_`` prefix) plus ``n_clips``; empty
    when the table has no drop columns."""
    cols = [f"{DROP}{r}" for r in regions]
    if by not in table.columns or not set(cols) <= set(table.columns):
        return pd.DataFrame()
    out = ar.aggregate_shares(table.astype({by: str}), by, cols)
    return out.rename(columns=dict(zip(cols, regions)))


#: What :func:`planted_region_check` ranks, by column prefix.
MEASURES: dict[str, str] = {"": "share of the face crops' |integrated gradients|",
                            DROP: "drop of the target logit with the region hidden from crops and landmarks",
                            LABEL_DROP: "drop of the true emotion's logit with the region hidden from crops and "
                                        "landmarks"}


def planted_region_check(table: pd.DataFrame, regions: Sequence[str], *, column: str = "expression_region",
                         value: str = "mouth", expected: str = "mouth", min_clips: int = 5,
                         prefix: str = "") -> dict | None:
    """On a synthetic set: do the clips whose expression is drawn only in ``value`` (column
    ``expression_region``) put the most on the ``expected`` region?

    Only clips where that column is planted truth count (:func:`planted_expression`: the face
    shows the clip's own emotion, not neutral). prefix: which measure is ranked
    (:data:`MEASURES`): ``""`` the IG region shares of the face crops, ``"drop_"`` the
    region-occlusion drops of the attributed target, ``"label_drop_"`` those of the true emotion
    (what was planted: where the clip's emotion is drawn, whatever the model predicted; a wrong
    prediction's evidence is elsewhere by definition). Regions compared: the named facial regions
    (``other`` -- cheeks, forehead, background -- is reported but not ranked). Returns None without
    the column or the measure, else ``{column, value, expected, measure, n_clips, values, top,
    judged, passed}`` (``values``: the mean per region; ``judged`` False below ``min_clips`` clips).
    """
    cols = [f"{prefix}{r}" for r in regions]
    if column not in table.columns or not set(cols) <= set(table.columns):
        return None
    named = [r for r in regions if r != ar.OTHER]
    part = table[planted_expression(table, column).fillna("") == value].dropna(subset=cols)
    values = {r: float(part[f"{prefix}{r}"].mean()) for r in regions} if len(part) else {}
    top = max(named, key=lambda r: values[r]) if values else None
    judged = len(part) >= min_clips
    return {"column": column, "value": value, "expected": expected, "measure": MEASURES.get(prefix, prefix),
            "n_clips": int(len(part)), "values": values, "top": top, "judged": judged,
            "passed": bool(judged and top == expected)}
