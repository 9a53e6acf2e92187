"""femo.models.fer_vgg and the vgg options of femo.training.face_encoder: random erasing, bfloat16
training, half-precision export, loading by parameter names, the ``fer_vgg`` frame encoder and the
weights shipped in femo/resources."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from _fer_images import pattern as _pattern, write_manifest

from femo.models.fer_encoder import FER_ARCHS, FER_LABELS, arch_of, build_fer_net, load_fer_encoder, sha256_file
from femo.models.fer_vgg import FerVggNet
from femo.models.frames import build_frame_encoder
from femo.training.face_augment import random_erase
from femo.training.face_encoder import (EncoderTrainConfig, load_image_split, predict_probs, score_split,
                                        train_face_encoder)

VGG_WEIGHTS = FER_ARCHS["vgg"][1]


@pytest.fixture
def manifest(tmp_path):
    """FER2013 layout: 64 train / 21 public_test / 21 private_test synthetic images."""
    return write_manifest(tmp_path, {"train": 64, "public_test": 21, "private_test": 21}, seed=1)


@pytest.mark.parametrize("size", [48, 112])
def test_vgg_shapes_and_gray_input(size):
    net = build_fer_net("vgg").eval()
    x = torch.rand(3, 3, size, size)
    pre = net.preprocess(x)
    assert pre.shape == (3, 1, 48, 48)
    assert net.features(pre).shape == (3, 512) and net(pre).shape == (3, 7)
    gray = x[:, :1].expand(-1, 3, -1, -1)  # gray replicated to RGB reads as that gray
    ref = (torch.nn.functional.interpolate(x[:, :1], size=(48, 48), mode="bilinear", antialias=True,
                                           align_corners=False) - 0.5) / 0.25
    assert torch.allclose(net.preprocess(gray), ref, atol=1e-5)


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown encoder architecture 'resnet'"):
        build_fer_net("resnet")
    with pytest.raises(ValueError, match="unknown arch 'resnet'"):
        from femo.training.face_encoder import _new_state
        _new_state(EncoderTrainConfig(arch="resnet"), steps_per_epoch=1)


@pytest.mark.parametrize("p, expect_changed", [(0.0, 0), (1.0, 16)])
def test_erase_replaces_one_rectangle_per_chosen_image(p, expect_changed):
    img = torch.full((16, 1, 48, 48), 0.5)
    out = random_erase(img, torch.Generator().manual_seed(0), p)
    changed = (out != img).flatten(1)
    assert int(changed.any(1).sum()) == expect_changed
    if expect_changed:  # each change is one axis-aligned box of 2-20% of the image
        for mask in (out != img)[:, 0]:
            rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
            box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            assert int(mask.sum()) >= 0.9 * int(box) and int(box) <= 0.25 * 48 * 48


def test_bf16_vgg_run_exports_half_weights_that_reproduce_its_scores(manifest, tmp_path):
    cfg = EncoderTrainConfig(epochs=2, batch_size=16, lr=2e-3, ema_decay=0.5, threads=1, arch="vgg",
                             bf16=True, erase=0.5, rotation=0.0, scale=0.0, shift=0.0)
    result = train_face_encoder(manifest, tmp_path / "run", cfg, progress=False, command="femo encoder train")
    weights = tmp_path / "run" / "fer_encoder.pt"
    state = torch.load(weights, weights_only=True)
    assert arch_of(state) == "vgg" and state["fc.weight"].dtype == torch.float16
    record = json.loads(weights.with_suffix(".json").read_text())
    assert record["sha256"] == sha256_file(weights) and record["config"]["arch"] == "vgg"
    net = load_fer_encoder(weights)
    assert isinstance(net, FerVggNet) and net.fc.weight.dtype == torch.float32
    test = load_image_split(manifest, "private_test")
    assert score_split(net, test)["war"] == pytest.approx(result["private_test"]["war"])
    enc = build_frame_encoder("fer_vgg", weights=weights)
    assert enc.out_dim == 512 and enc(torch.rand(2, 3, 112, 112)).shape == (2, 512)
    assert not any(p.requires_grad for p in enc.parameters())
    tuned = build_frame_encoder("fer_vgg", weights=weights, freeze="last-block")
    assert {n.split(".")[3] for n, p in tuned.named_parameters() if p.requires_grad} == {"3"}


def test_bf16_selection_scores_close_to_float32(manifest):
    net = build_fer_net("vgg").eval()
    x = load_image_split(manifest, "public_test").x
    a, b = predict_probs(net, x), predict_probs(net, x, bf16=True)
    assert np.abs(a - b).max() < 0.05


@pytest.mark.skipif(not VGG_WEIGHTS.is_file(), reason="fer_vgg weights not trained into femo/resources")
def test_shipped_vgg_weights_match_their_record():
    record = json.loads(VGG_WEIGHTS.with_suffix(".json").read_text())
    assert sha256_file(VGG_WEIGHTS) == record["sha256"]
    assert VGG_WEIGHTS.stat().st_size < 20_000_000
    assert record["selection_split"] == "public_test" and record["n"]["train"] == 28_707
    assert record["config"]["arch"] == "vgg" and "femo encoder train" in record["command"]
    net = load_fer_encoder(arch="vgg")
    rng = np.random.default_rng(0)
    faces = torch.from_numpy(np.stack([_pattern(i, rng) for i in range(7)]))
    probs = predict_probs(net, faces)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5) and np.array_equal(probs, predict_probs(net, faces))
    feats = build_frame_encoder("fer_vgg")(faces.float().div(255).unsqueeze(1).expand(-1, 3, -1, -1))
    assert feats.shape == (7, 512) and torch.isfinite(feats).all()


def test_predict_runs_fer_vgg_with_the_same_features_as_eager(tmp_path, capfd):
    from femo.inference.frames import FastFrameEncoder

    net = build_fer_net("vgg")
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    enc = build_frame_encoder("fer_vgg", weights=path).eval()
    x = torch.rand(5, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want = enc(x).numpy()
    fast = FastFrameEncoder(enc, size=112, threads=1)
    assert fast.backend == "onnxruntime"  # the resize is matrix products, which export
    assert capfd.readouterr().out == ""  # the exporter prints nothing on stdout
    assert np.allclose(fast(x), want, atol=1e-4)


@pytest.mark.parametrize("size", [(112, 112), (64, 64), (49, 49), (30, 30), (224, 100)])
def test_gray48_equals_torch_antialiased_resize(size):
    """The matrix-product resize gives torch's antialiased bilinear resize (down and up, square or
    not) up to float rounding; 48x48 input passes unchanged."""
    import torch.nn.functional as F

    from femo.models.fer_vgg import gray48, resize_matrix

    x = torch.rand(3, 3, *size, generator=torch.Generator().manual_seed(0))
    gray = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    want = F.interpolate(gray, size=(48, 48), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(gray48(x), want, atol=1e-5, rtol=0)
    assert np.allclose(resize_matrix(size[0], 48).sum(1), 1.0)
    same = torch.rand(2, 3, 48, 48)
    torch.testing.assert_close(gray48(same), (same * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True))
