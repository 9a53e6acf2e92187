"""Frame encoders: names, weights sources (hub cache written by the test), freeze policies."""
from __future__ import annotations

import pytest
import torch
from torchvision.models import ResNet18_Weights, ResNet50_Weights, resnet18

from femo.assets import MissingModelError, asset_path
from femo.models.frames import (FRAME_ENCODERS, FREEZE_POLICIES, MissingWeightsError, build_frame_encoder)


def _n_trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp_path ($TORCH_HOME/hub/checkpoints)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def test_factory_refuses_unknown_names_and_policies():
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50, fer_xception, faceapi"):
        build_frame_encoder("vgg16")
    with pytest.raises(ValueError, match="frozen, last-block, full"):
        build_frame_encoder("resnet18", freeze="half")
    assert set(FREEZE_POLICIES) == {"frozen", "last-block", "full"}
    assert "faceapi" in FRAME_ENCODERS


@pytest.mark.parametrize(("name", "dim"), [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_resnet_shapes(name, dim):
    enc = build_frame_encoder(name, weights=None)
    with torch.no_grad():
        out = enc(torch.rand(2, 3, 32, 32))
    assert enc.out_dim == dim and enc.name == name
    assert out.shape == (2, dim)
    assert torch.isfinite(out).all()


def test_input_size_resizes_inside_the_module():
    enc = build_frame_encoder("resnet18", input_size=40)
    seen = []
    enc.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        enc(torch.rand(1, 3, 64, 64))
    assert seen == [(1, 3, 40, 40)]


def test_hub_cache_file_is_used_and_normalisation_comes_from_the_weights(hub_cache):
    torch.manual_seed(0)
    reference = resnet18(weights=None)
    torch.save(reference.state_dict(), hub_cache / "resnet18-f37072fd.pth")
    for weights in (ResNet18_Weights.IMAGENET1K_V1, "IMAGENET1K_V1", "ResNet18_Weights.DEFAULT"):
        enc = build_frame_encoder("resnet18", weights=weights)
        assert torch.equal(enc.backbone.net.conv1.weight, reference.conv1.weight)
        assert torch.equal(enc.backbone.net.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    transforms = ResNet18_Weights.IMAGENET1K_V1.transforms()
    assert enc.preprocess.mean.flatten().tolist() == pytest.approx(transforms.mean)
    assert enc.preprocess.std.flatten().tolist() == pytest.approx(transforms.std)
    x = torch.rand(2, 3, 32, 32)
    expected_in = (x - torch.tensor(transforms.mean).view(1, 3, 1, 1)) / torch.tensor(transforms.std).view(1, 3, 1, 1)
    reference.fc = torch.nn.Identity()
    with torch.no_grad():
        assert enc(x) == pytest.approx(reference.eval()(expected_in), abs=1e-5)


def test_missing_hub_file_names_the_file_and_folder(hub_cache):
    with pytest.raises(MissingWeightsError) as info:
        build_frame_encoder("resnet18", weights=ResNet18_Weights.IMAGENET1K_V1)
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and str(hub_cache) in message
    with pytest.raises(ValueError, match="ResNet18_Weights"):
        build_frame_encoder("resnet18", weights=ResNet50_Weights.IMAGENET1K_V2)
    with pytest.raises(FileNotFoundError, match="IMAGENET1K_V1"):
        build_frame_encoder("resnet18", weights="no_such_weights")


def test_local_checkpoint_path_and_corrupt_file(tmp_path):
    torch.manual_seed(1)
    reference = resnet18(weights=None, num_classes=7)  # another head: fc.* is ignored
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": reference.state_dict()}, path)
    enc = build_frame_encoder("resnet18", weights=path)
    assert torch.equal(enc.backbone.net.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pt"):
        build_frame_encoder("resnet18", weights=bad)
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="wrong.pt"):
        build_frame_encoder("resnet18", weights=wrong)


def test_freeze_policies_resnet():
    frozen = build_frame_encoder("resnet18", freeze="frozen")
    last = build_frame_encoder("resnet18", freeze="last-block")
    full = build_frame_encoder("resnet18", freeze="full")
    assert _n_trainable(frozen) == 0
    assert _n_trainable(last) == _n_params(last.backbone.net.layer4) == 8_393_728
    assert _n_trainable(full) == _n_params(full) == 11_176_512
    frozen.train()
    last.train()
    assert not any(m.training for m in frozen.backbone.modules())
    assert not last.backbone.net.bn1.training and not last.backbone.net.layer3.training
    assert last.backbone.net.layer4[0].bn1.training


def test_last_block_gradients_and_frozen_running_stats():
    enc = build_frame_encoder("resnet18", freeze="last-block").train()
    stats = enc.backbone.net.layer1[0].bn1.running_mean.clone()
    enc(torch.rand(2, 3, 32, 32)).sum().backward()
    assert enc.backbone.net.layer4[1].conv2.weight.grad is not None
    assert enc.backbone.net.layer1[0].conv1.weight.grad is None
    assert torch.equal(enc.backbone.net.layer1[0].bn1.running_mean, stats)


def test_frozen_encoder_still_passes_input_gradients():
    enc = build_frame_encoder("resnet18", freeze="frozen")
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    enc(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_input_shape_is_refused():
    enc = build_frame_encoder("resnet18")
    with pytest.raises(ValueError, match=r"\(N, 3, S, S\)"):
        enc(torch.rand(2, 32, 32, 3))


def _ports_provisioned() -> bool:
    try:
        for name in ("emotion_model.hdf5", "face_expression_model.bin", "face_expression_model-weights_manifest.json"):
            asset_path(name)
    except MissingModelError:
        return False
    return True


@pytest.mark.skipif(not _ports_provisioned(), reason="run `femo models fetch --face-weights`")
@pytest.mark.parametrize(("name", "dim", "last", "full"),
                         [("faceapi", 256, 238_464, 321_888), ("fer_xception", 128, 35_264, 48_880)])
def test_face_ports_as_frame_encoders(name, dim, last, full):
    enc = build_frame_encoder(name, freeze="frozen")
    with torch.no_grad():
        out = enc(torch.rand(3, 3, 48, 48))
    assert out.shape == (3, dim) and enc.out_dim == dim
    assert _n_trainable(enc) == 0
    assert _n_trainable(build_frame_encoder(name, freeze="last-block")) == last
    assert _n_trainable(build_frame_encoder(name, freeze="full")) == full
    with pytest.raises(ValueError, match="fixed input size"):
        build_frame_encoder(name, input_size=96)


def test_crop_cnn_trains_end_to_end_at_its_own_size(tmp_path):
    from femo.models.frames import CROP_CNN_SIZE

    enc = build_frame_encoder("crop_cnn", freeze="full")
    seen = []
    enc.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    x = torch.rand(4, 3, 112, 112, requires_grad=True)
    out = enc(x)
    assert out.shape == (4, enc.out_dim) == (4, 64) and seen == [(4, 3, CROP_CNN_SIZE, CROP_CNN_SIZE)]
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # attributions reach the 112-px crop
    assert _n_trainable(enc) == _n_params(enc) and 20_000 < _n_params(enc) < 40_000
    assert _n_trainable(build_frame_encoder("crop_cnn", freeze="frozen")) == 0
    last = build_frame_encoder("crop_cnn", freeze="last-block")
    assert _n_trainable(last) == _n_params(last.backbone.blocks[-1])
    assert len(enc.backbone.stages()) == 4


def test_crop_cnn_weights_file_round_trip_and_bad_path(tmp_path):
    torch.manual_seed(0)
    enc = build_frame_encoder("crop_cnn", freeze="full").eval()
    torch.save(enc.backbone.state_dict(), tmp_path / "crop.pt")
    again = build_frame_encoder("crop_cnn", weights=str(tmp_path / "crop.pt")).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(enc(x), again(x))
    with pytest.raises(FileNotFoundError, match="crop_cnn: weights must be None .random init. or a state dict file"):
        build_frame_encoder("crop_cnn", weights=str(tmp_path / "missing.pt"))


def test_a_frozen_crop_cnn_is_refused_as_random_features(tmp_path):
    from femo.config import ModelConfig
    from femo.training.defaults import FacePathError, resolve_face_path, untrained_frozen

    assert untrained_frozen(ModelConfig(frame_encoder="crop_cnn"))
    trained_end_to_end = ModelConfig(frame_encoder="crop_cnn", freeze="full")
    assert not untrained_frozen(trained_end_to_end)
    assert resolve_face_path(tmp_path, trained_end_to_end, auto=False, log=lambda m: None) == trained_end_to_end
    with pytest.raises(FacePathError, match="frozen crop_cnn with no pretrained weights"):
        resolve_face_path(tmp_path, ModelConfig(frame_encoder="crop_cnn"), auto=False, log=lambda m: None)
