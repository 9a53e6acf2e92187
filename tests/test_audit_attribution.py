"""Captum attributions: baselines, shapes, completeness, facial-region shares against a model that
only reads the mouth, the model-randomisation check, feature names and aggregates."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from audit_doubles import (FS, G, LateFusionDouble, REGION_ROWS, mouth_batch, planted_data, synthetic_mesh,
                           synthetic_regions)
from audit_doubles import cnn, held_out  # noqa: F401 (module-scoped fixtures shared with the sanity tests)
from femo.audit import attribution as at
from femo.audit import attribution_regions as ar




@pytest.fixture(scope="module")
def ig(cnn, held_out):
    return at.attribute(cnn, held_out, method="integrated_gradients", n_steps=24)


def test_model_double_learned_the_mouth(cnn, held_out):
    with torch.no_grad():
        acc = (cnn(held_out)["logits"].argmax(-1) == held_out["label"]).float().mean()
    assert float(acc) == pytest.approx(1.0)


def test_blur_baseline_keeps_brightness_and_removes_detail(held_out):
    face = held_out["face"]
    blurred = at.blur_faces(face)
    assert blurred.shape == face.shape
    assert float(blurred.mean()) == pytest.approx(float(face.mean()), abs=0.01)
    assert float(blurred.std()) < 0.6 * float(face.std())


def test_reference_means_use_present_elements_only():
    batch, _ = planted_data(16)
    batch["landmarks"][:8] = 100.0
    batch["landmarks_mask"][:8] = False  # those frames are missing: they must not move the mean
    means = at.reference_means([batch])
    assert means["landmarks"].shape == (G,) and means["audio"].shape == (64,) and means["prosody"].shape == (4,)
    expected = batch["landmarks"][8:].mean((0, 1))
    assert means["landmarks"].numpy() == pytest.approx(expected.numpy(), abs=1e-5)


def test_baselines_are_not_zeros(held_out):
    keys = at.attributed_keys(held_out)
    assert keys == ("face", "landmarks", "audio", "prosody")
    base = at.make_baselines(held_out, keys)
    assert [b.shape for b in base] == [held_out[k].shape for k in keys]
    assert float(base[0].mean()) == pytest.approx(0.5, abs=0.05)
    audio = base[2]
    assert torch.allclose(audio[..., 0], audio[..., -1])  # constant over time
    with pytest.raises(ValueError, match="cannot attribute"):
        at.attributed_keys(held_out, ["pose"])


def test_ig_shapes_and_completeness(ig, held_out):
    assert ig.maps["face"].shape == held_out["face"].shape
    assert ig.maps["audio"].shape == held_out["audio"].shape
    assert ig.target.shape == (12,)
    assert np.median(ig.relative_delta()) < 0.05
    # completeness: attributions add up to f(x) - f(baseline) up to the delta
    total = sum(a.reshape(12, -1).sum(1) for a in ig.maps.values()).numpy()
    assert total == pytest.approx(ig.gap + ig.delta, abs=1e-4)
    assert at.spatial_maps(ig).shape == (12, 2, FS, FS)
    assert at.logmel_maps(ig).shape == (12, 64, held_out["audio"].shape[-1])
    assert at.feature_importance(ig, "landmarks").shape == (12, G)


def test_frame_importance_follows_the_frame_mask(cnn, held_out):
    batch = dict(held_out, face_mask=held_out["face_mask"].clone())
    batch["face_mask"][:, 1] = False  # the model never sees frame 1
    res = at.attribute(cnn, batch, n_steps=8)
    curve = at.frame_importance(res)
    assert curve.shape == (12, 2)
    assert curve[:, 0] == pytest.approx(np.ones(12))
    assert curve[:, 1] == pytest.approx(np.zeros(12))


@pytest.mark.parametrize("method", at.METHODS)
def test_mouth_gets_the_largest_region_share(cnn, held_out, method):
    res = at.attribute(cnn, held_out, method=method, n_steps=16, n_samples=8)
    table = ar.clip_region_table(at.spatial_maps(res), [synthetic_mesh()] * 12, found=[np.ones(2, bool)] * 12,
                                 regions=synthetic_regions())
    mean = table.mean()
    assert mean.sum() == pytest.approx(1.0)
    named = mean.drop(ar.OTHER)
    assert named.idxmax() == "mouth"
    assert named["mouth"] > 2 * named.drop("mouth").max()


def test_randomisation_changes_attributions(cnn, held_out):
    out = at.randomisation_similarity(cnn, held_out, n_steps=8)
    assert out["spearman"] < 0.8
    again = at.randomisation_similarity(cnn, held_out, n_steps=8)
    assert again["spearman"] == pytest.approx(out["spearman"])  # seeded
    same = at.attribute(cnn, held_out, n_steps=8)
    assert at.spearman(at.spatial_maps(same)[0], at.spatial_maps(same)[0]) == pytest.approx(1.0)


def test_randomised_copy_leaves_the_original_alone(cnn):
    before = [p.clone() for p in cnn.parameters()]
    clone = at.randomised_copy(cnn, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(before, cnn.parameters()))
    assert not torch.equal(next(clone.parameters()), before[0])


def test_unknown_method_and_target_refused(cnn, held_out):
    with pytest.raises(ValueError, match="unknown attribution method"):
        at.attribute(cnn, held_out, method="occlusion_xl")
    with pytest.raises(ValueError, match="target"):
        at.attribute(cnn, held_out, target="best")


def test_attribution_on_unused_input_is_zero():
    batch, _ = planted_data(6)
    batch["audio_mask"][:] = False  # no clip has audio: audio and prosody inputs are unused
    res = at.attribute(LateFusionDouble(), batch, n_steps=4)
    assert float(res.maps["audio"].abs().sum()) == 0.0
    assert float(res.maps["prosody"].abs().sum()) == 0.0
    assert at.input_shares(res)["audio"] == 0.0


def test_region_label_map_nearest_region_within_radius():
    pts = synthetic_mesh(1)[0]
    labels = ar.region_label_map(pts, size=FS, regions=synthetic_regions(), radius=2.0)
    names = list(synthetic_regions())
    assert labels[REGION_ROWS["mouth"], 16] == names.index("mouth")
    assert labels[REGION_ROWS["brows"], 16] == names.index("brows")
    assert labels[0, 0] == len(names)  # far from every region: other
    shares = ar.region_shares(np.ones((1, FS, FS)), labels[None], names)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["mouth"] == pytest.approx((labels == names.index("mouth")).mean())


def test_clip_region_table_handles_missing_mesh():
    maps = np.ones((2, 2, FS, FS))
    table = ar.clip_region_table(maps, [synthetic_mesh(), None], found=[np.ones(2, bool), np.zeros(2, bool)],
                                 regions=synthetic_regions())
    assert table.iloc[0].sum() == pytest.approx(1.0)
    assert table.iloc[1].isna().all()


def test_crop_points_with_real_alignment():
    mesh = np.zeros((1, 478, 3), np.float32)
    rng = np.random.default_rng(0)
    mesh[0, :, :2] = rng.uniform(0.0, 1.0, (478, 2))
    mesh[0, 33, :2], mesh[0, 133, :2], mesh[0, 362, :2], mesh[0, 263, :2] = (0.2, 0.4), (0.4, 0.4), (0.6, 0.4), (0.8, 0.4)
    pts = ar.crop_points(mesh, np.array([[0.3, 0.2, 0.7, 0.8]], np.float32), size=112)
    assert pts.shape == (1, 478, 2)
    assert pts[0].min() >= 0 and pts[0].max() <= 112  # the landmark box fits inside the crop (with margin)


def test_geometry_feature_names_and_table():
    names = ar.geometry_feature_names()
    from femo.features.geometry import GEOMETRY_DIM

    assert len(names) == GEOMETRY_DIM
    assert names[0] == "_neutral" and names[52].startswith("brows:")
    assert ar.feature_group("mouthSmileLeft") == "blendshape" and ar.feature_group("mouth:61.x") == "mouth"
    imp = np.zeros((3, GEOMETRY_DIM))
    imp[:, names.index("mouthSmileLeft")] = 2.0
    imp[:, names.index("head_yaw")] = 1.0
    table = ar.feature_table(imp, names, top=2)
    assert table["feature"].tolist() == ["mouthSmileLeft", "head_yaw"]
    assert table["share"].tolist() == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="names"):
        ar.feature_table(imp, names[:-1])


def test_aggregate_shares_per_emotion():
    table = pd.DataFrame({"emotion": ["happy", "happy", "angry", "angry"], "mouth": [0.6, 0.4, 0.1, np.nan],
                          "brows": [0.1, 0.3, 0.7, np.nan]})
    out = ar.aggregate_shares(table, "emotion", ["mouth", "brows"])
    assert out.loc["happy", "mouth"] == pytest.approx(0.5)
    assert out.loc["angry", "n_clips"] == 1


class _TinyFrames(torch.nn.Module):
    """A per-frame CNN with the frame-encoder contract ((N, 3, S, S) -> (N, out_dim))."""

    out_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_attribute_clips_with_femonet_on_a_feature_store(tmp_path):
    from _synth_store import CLASSES, build_store
    from torch.utils.data import DataLoader, Subset

    from femo.audit.attribution_report import attribute_clips, region_summary
    from femo.config import DataConfig, ModelConfig
    from femo.data.dataset import FeatureDataset
    from femo.features.geometry import GEOMETRY_DIM
    from femo.models.net import FemoNet

    store = build_store(tmp_path / "store", n=8, t=4, s=16, a=32, no_audio_every=3)
    torch.manual_seed(0)
    model = FemoNet(ModelConfig(dim=16, temporal="mean", fusion="gated"), 3, frame_encoder=_TinyFrames()).eval()
    ds = FeatureDataset(store, config=DataConfig(num_frames=4, face_size=16, audio_frames=32, classes=CLASSES))
    batches = DataLoader(Subset(ds, range(6)), batch_size=3)
    out = attribute_clips(model, batches, index=ds.index, store=store, classes=CLASSES, n_steps=4, n_examples=2)
    assert len(out.table) == 6 and set(out.table["label"]) <= set(CLASSES)
    regions = list(out.regions)
    assert out.table[regions].sum(axis=1).to_numpy() == pytest.approx(np.ones(6))
    assert sum(region_summary(out).values()) == pytest.approx(1.0)
    assert out.curves.shape == (6, 4) and out.features.shape == (6, GEOMETRY_DIM)
    assert out.examples["faces"].shape == (2, 16, 16, 3) and out.examples["maps"].shape == (2, 16, 16)
    assert out.examples["logmel_attr"].shape == (2, 64, 32)
    no_audio = out.table["has_audio"].astype(str) == "False"
    assert no_audio.any() and (out.table.loc[no_audio, "share_audio"] == 0).all()


@pytest.mark.parametrize("mode", ["none", "blur", "landmarks"])
def test_privacy_modes(mode):
    from femo.audit import plots_attribution as pa

    faces = np.random.default_rng(0).integers(0, 255, (2, FS, FS, 3), dtype=np.uint8)
    shown = pa.private_faces(faces, mode, points=synthetic_mesh(2))
    assert shown.shape == faces.shape and shown.dtype == np.uint8
    if mode == "none":
        assert np.array_equal(shown, faces)
    else:
        assert np.abs(shown.astype(int) - faces).mean() > 20  # identity detail is gone
    assert pa.privacy_mode("auto", "synthetic") == "none" and pa.privacy_mode("auto", "dfew") == "blur"
    with pytest.raises(ValueError, match="privacy"):
        pa.privacy_mode("pixelate", "dfew")


def test_attribution_figures_draw(ig, held_out):
    import matplotlib

    matplotlib.use("Agg")
    from femo.audit import plots_attribution as pa

    faces = (held_out["face"][:, 0].permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    labels = np.stack([ar.region_label_map(p, size=FS, regions=synthetic_regions()) for p in synthetic_mesh(2)])
    names = [*synthetic_regions(), ar.OTHER]
    figs = [pa.plot_face_maps(faces[:2], at.spatial_maps(ig)[:2, 0], privacy="blur"),
            pa.plot_region_masks(faces[:2], labels, names, privacy="none"),
            pa.plot_frame_curves(at.frame_importance(ig)[:3]),
            pa.plot_logmel_maps(held_out["audio"][:2, 0].numpy(), at.logmel_maps(ig)[:2]),
            pa.plot_deltas(ig.relative_delta()),
            pa.plot_region_table(pd.DataFrame({"mouth": [0.6, 0.2], "brows": [0.1, 0.5]}, index=["happy", "angry"])),
            pa.plot_features(pd.DataFrame({"feature": ["a", "b"], "group": ["mouth", "blendshape"], "share": [0.7, 0.3]}))]
    assert all(len(f.axes) >= 1 for f in figs)
    assert len(figs[1].legends) == 1 and [t.get_text() for t in figs[1].legends[0].get_texts()] == names[:-1]
    import matplotlib.pyplot as plt

    plt.close("all")
