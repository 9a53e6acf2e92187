"""Region occlusion: a region is hidden from crops and landmarks together, the drop is the exact
logit difference, the region a model reads comes first, and regions no input carries are NaN."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from audit_doubles import C, FS, G, mouth_batch, synthetic_mesh, synthetic_regions
from audit_doubles import cnn, held_out  # noqa: F401 (module-scoped fixtures)
from femo.audit import attribution as at
from femo.audit import attribution_regions as ar
from femo.audit import occlusion as oc

NAMES = [*synthetic_regions(), ar.OTHER]
#: Region of each of the doubles' G = 6 geometry features (two mouth, two brows, two of none).
FEATURE_REGIONS = ["mouth", "mouth", "brows", "brows", None, None]


def _labels(n: int, t: int = 2) -> np.ndarray:
    regions = synthetic_regions()
    return np.stack([ar.clip_label_maps(synthetic_mesh(t), np.ones(t, bool), size=FS, regions=regions, radius=2.5)
                     for _ in range(n)])


class LandmarkReader(nn.Module):
    """Logits from the frame-mean of geometry features 0 (mouth) and 2 (brows) only."""

    def forward(self, batch: dict) -> dict:
        lm = batch["landmarks"].mean(1)  # (B, G)
        logits = torch.stack([3.0 * lm[:, 0], 1.0 * lm[:, 2], torch.zeros_like(lm[:, 0])], 1)
        return {"logits": logits + 0.0 * batch["face"].mean((1, 2, 3, 4))[:, None]}


def test_the_region_the_cnn_reads_comes_first(cnn, held_out):
    drops = oc.region_occlusion(cnn, held_out, labels=_labels(12), regions=NAMES, feature_regions=FEATURE_REGIONS)
    assert drops.shape == (12, len(NAMES)) and np.isfinite(drops).all()
    mean = pd.Series(drops.mean(0), index=NAMES)
    assert mean.drop(ar.OTHER).idxmax() == "mouth"
    assert mean["mouth"] > 2 * mean.drop(["mouth", ar.OTHER]).abs().max()


def test_drop_is_the_exact_logit_difference_across_inputs():
    batch = mouth_batch(5, seed=3)
    means = {"landmarks": torch.full((G,), 0.25)}
    drops = oc.region_occlusion(LandmarkReader(), batch, labels=_labels(5), regions=NAMES, means=means,
                                feature_regions=FEATURE_REGIONS)
    lm = batch["landmarks"].mean(1)
    logits = torch.stack([3.0 * lm[:, 0], lm[:, 2], torch.zeros(5)], 1)
    target = logits.argmax(1)
    mouth_hidden = logits.clone()
    mouth_hidden[:, 0] = 3.0 * 0.25
    brows_hidden = logits.clone()
    brows_hidden[:, 1] = 0.25
    expect_mouth = (logits - mouth_hidden).gather(1, target[:, None])[:, 0].numpy()
    expect_brows = (logits - brows_hidden).gather(1, target[:, None])[:, 0].numpy()
    assert drops[:, NAMES.index("mouth")] == pytest.approx(expect_mouth, abs=1e-5)
    assert drops[:, NAMES.index("brows")] == pytest.approx(expect_brows, abs=1e-5)
    # the model reads no pixels: hiding the eyes' pixels changes nothing
    assert drops[:, NAMES.index("eyes")] == pytest.approx(np.zeros(5), abs=1e-6)


def test_regions_no_input_carries_are_nan_and_no_face_input_is_none():
    batch = mouth_batch(3, seed=4)
    drops = oc.region_occlusion(LandmarkReader(), batch, labels=None, regions=NAMES, feature_regions=FEATURE_REGIONS)
    assert np.isnan(drops[:, NAMES.index("eyes")]).all()  # no pixels and no eye landmarks
    assert np.isfinite(drops[:, NAMES.index("mouth")]).all()
    bare = {k: v for k, v in batch.items() if k not in ("landmarks", "landmarks_mask")}
    assert oc.region_occlusion(LandmarkReader(), bare, labels=None, regions=NAMES) is None
    with pytest.raises(ValueError, match="feature regions"):
        oc.region_occlusion(LandmarkReader(), batch, labels=None, regions=NAMES, feature_regions=["mouth"])


def test_geometry_regions_follow_the_feature_names():
    from femo.features.geometry import GEOMETRY_DIM

    names = ar.geometry_feature_names()
    regions = oc.geometry_regions(names)
    assert len(regions) == GEOMETRY_DIM
    by_name = dict(zip(names, regions))
    assert by_name["mouthSmileLeft"] == "mouth" and by_name["jawOpen"] == "jaw" and by_name["browInnerUp"] == "brows"
    assert by_name["eyeBlinkLeft"] == "eyes" and by_name["noseSneerLeft"] == "nose"
    assert by_name["cheekPuff"] == ar.OTHER
    assert by_name["_neutral"] is None and by_name["head_yaw"] is None and by_name["face_found"] is None
    assert by_name["mouth:61.x"] == "mouth" and by_name["jaw:152.y"] == "jaw"
    assert all(r is None for n, r in by_name.items() if n.startswith("body"))


def test_occlusion_shares_ignore_negative_drops():
    shares = oc.occlusion_shares(np.array([[0.3, -0.2, 0.1], [-0.1, -0.1, np.nan]]))
    assert shares[0] == pytest.approx([0.75, 0.0, 0.25])
    assert np.isnan(shares[1]).all()


def test_attribute_clips_adds_drop_columns(cnn, held_out, tmp_path, monkeypatch):
    from femo.audit import attribution_report as rep

    index = pd.DataFrame({"clip_id": [f"c{i}" for i in range(12)]})
    mesh = synthetic_mesh(2)
    monkeypatch.setattr(rep, "_meshes", lambda store, ids, size, aspect: (
        [mesh] * len(ids), [np.ones(2, bool)] * len(ids), [np.zeros((2, FS, FS, 3), np.uint8)] * len(ids)))
    monkeypatch.setattr(oc, "geometry_regions", lambda *a, **k: FEATURE_REGIONS)
    out = rep.attribute_clips(cnn, [held_out], index=index, store=tmp_path, classes=[str(c) for c in range(C)],
                              regions=synthetic_regions(), radius=2.5, n_steps=4)
    drops = out.table[[f"{rep.DROP}{n}" for n in NAMES]]
    assert drops.notna().all().all()
    assert drops.mean().drop(f"{rep.DROP}{ar.OTHER}").idxmax() == f"{rep.DROP}mouth"
    check = rep.planted_region_check(out.table.assign(expression_region="mouth"), NAMES, prefix=rep.DROP)
    assert check["passed"] and check["top"] == "mouth" and "hidden" in check["measure"]
    # the true emotion's logit: the same drops where the target is the label (every clip here), its own
    # where it is not (half the clips relabelled, so the double's predictions miss them)
    assert (out.table["target"] == out.table["label"]).all()
    assert np.allclose(out.table[[f"{rep.LABEL_DROP}{n}" for n in NAMES]].to_numpy(), drops.to_numpy())
    label = held_out["label"].clone()
    label[::2] = (label[::2] + 1) % C
    relabelled = dict(held_out, label=label)
    mixed = rep.attribute_clips(cnn, [relabelled], index=index, store=tmp_path, classes=[str(c) for c in range(C)],
                                regions=synthetic_regions(), radius=2.5, n_steps=4).table
    same = (mixed["target"] == mixed["label"]).to_numpy()
    assert 0 < same.sum() < len(same)
    label_drops = mixed[[f"{rep.LABEL_DROP}{n}" for n in NAMES]].to_numpy()
    expect = oc.region_occlusion(cnn, relabelled, labels=_labels(12), regions=NAMES, feature_regions=FEATURE_REGIONS,
                                 target=label.numpy())
    assert label_drops == pytest.approx(expect, abs=1e-5)
    target_drops = mixed[[f"{rep.DROP}{n}" for n in NAMES]].to_numpy()
    assert np.allclose(label_drops[same], target_drops[same], atol=1e-6)
    assert not np.allclose(label_drops[~same], target_drops[~same])
    labelled = rep.planted_region_check(mixed.assign(expression_region="mouth"), NAMES, prefix=rep.LABEL_DROP)
    assert "true emotion" in labelled["measure"] and labelled["n_clips"] == 12
    plain = rep.attribute_clips(cnn, [held_out], index=index, store=tmp_path, classes=[str(c) for c in range(C)],
                                regions=synthetic_regions(), radius=2.5, n_steps=4, occlusion=False)
    assert not any(c.startswith(rep.DROP) for c in plain.table.columns)


def test_result_reports_occlusion_and_judges_the_planted_region_by_it():
    import json

    from femo.audit import attribution_report as rep
    from femo.audit import attribution_sanity as san
    from femo.audit.attribution_result import AttributionResult

    regions = ("brows", "mouth", "jaw", ar.OTHER)
    table = pd.DataFrame({"clip_id": [f"c{i}" for i in range(6)], "target": ["a", "b"] * 3, "delta": 0.01,
                          "relative_delta": 0.01, "expression_region": "mouth",
                          "brows": 0.1, "mouth": 0.05, "jaw": 0.3, ar.OTHER: 0.55,  # IG shares: the outline wins
                          "drop_brows": 0.1, "drop_mouth": 0.6, "drop_jaw": 0.2, f"drop_{ar.OTHER}": 0.0})
    clips = rep.ClipAttributions(table, np.zeros((6, 2)), None, regions)
    result = AttributionResult(
        clips, "integrated_gradients", san.ConvergenceCheck(table["relative_delta"].to_numpy()), None,
        planted=rep.planted_region_check(table, regions, prefix=rep.DROP),
        planted_pixels=rep.planted_region_check(table, regions),
        occlusion_per_emotion=rep.occlusion_table(table, "target", regions), n_candidates=6)
    text = result.summary()
    assert "drops most without the mouth (+0.60), then the jaw (+0.20)" in text
    assert "the mouth comes first (0.60), as planted" in text and "put the jaw first" in text
    metrics = json.loads(json.dumps(result.to_metrics(), allow_nan=False))
    assert metrics["planted_region"]["passed"] is True and metrics["planted_region_pixels"]["passed"] is False
    assert metrics["occlusion"]["mouth"] == pytest.approx(0.6)
    assert metrics["occlusion_per_emotion"]["a"]["mouth"] == pytest.approx(0.6)
