"""AgeGenderNet port: reproduction of face-api.js's outputs, loader errors, random-weight shapes.

tests/data/age_gender_reference.json was recorded from the original face-api.js AgeGenderNet in
Node.js by benchmarks/reference/record_age_gender.py on four exact crops of scikit-image
pictures. Tests that need the published weights skip when `femo models fetch --face-weights`
has not provisioned them.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from femo.assets import MissingModelError, asset_path
from femo.models.age_gender import SEX_CLASSES, AgeGenderNet, load_age_gender
from femo.models.faceapi import TfjsFormatError

_spec = importlib.util.spec_from_file_location(
    "femo_reference_inputs", Path(__file__).resolve().parents[1] / "benchmarks" / "reference" / "inputs.py")
reference_inputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference_inputs)
REFERENCE = json.loads((Path(__file__).parent / "data" / "age_gender_reference.json").read_text())
AGE_TOL = 1e-3  # years; float32 port vs float32 original: measured max difference ~3e-5
PROB_TOL = 1e-5  # measured ~1e-6


def _provisioned() -> bool:
    try:
        asset_path("age_gender_model.bin")
        asset_path("age_gender_model-weights_manifest.json")
    except MissingModelError:
        return False
    return True


needs_weights = pytest.mark.skipif(not _provisioned(),
                                   reason="age/gender weights not provisioned: run `femo models fetch --face-weights`")


def _reference_batch() -> torch.Tensor:
    names = REFERENCE["inputs"]["names"]
    imgs = np.stack([reference_inputs.crop(REFERENCE["inputs"]["specs"][n], 112, gray=False) for n in names])
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, 112, 112) in [0, 1]


@needs_weights
def test_age_gender_reproduces_javascript_outputs():
    net = load_age_gender()
    x = net.preprocess(_reference_batch())
    with torch.no_grad():
        age, logits = net(x)
        feats = net.features(x)
    assert list(net.sex_classes) == REFERENCE["sex_classes"]
    assert age.numpy() == pytest.approx(np.array(REFERENCE["age"]), abs=AGE_TOL)
    assert torch.softmax(logits, 1).numpy() == pytest.approx(np.array(REFERENCE["sex_probs"]), abs=PROB_TOL)
    assert feats.numpy() == pytest.approx(np.array(REFERENCE["features"]), rel=1e-4, abs=1e-3)


@needs_weights
def test_age_gender_loads_from_folder_and_refuses_other_manifests(tmp_path):
    folder = asset_path("age_gender_model.bin").parent
    net = load_age_gender(folder)
    with torch.no_grad():
        age, logits = net(net.preprocess(torch.rand(2, 3, 64, 64)))
    assert age.shape == (2,) and logits.shape == (2, 2)
    # the expression net's weights are a valid TF.js manifest but not this architecture
    with pytest.raises(TfjsFormatError, match="not a face-api.js age/gender model"):
        load_age_gender(asset_path("face_expression_model-weights_manifest.json"))


def test_loader_names_the_fetch_command_when_cache_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("FEMO_CACHE", str(tmp_path))
    with pytest.raises(MissingModelError, match="femo models fetch --face-weights"):
        load_age_gender()
    with pytest.raises(FileNotFoundError, match="age_gender_model-weights_manifest.json"):
        load_age_gender(tmp_path)


@pytest.mark.parametrize("batch", [1, 3])
def test_random_net_shapes_and_preprocessing(batch):
    net = AgeGenderNet().eval()
    x = net.preprocess(torch.zeros(batch, 3, 200, 200))
    assert x.shape == (batch, 3, 112, 112)
    assert x[0, :, 0, 0] == pytest.approx(torch.tensor([-122.782, -117.001, -104.298]) / 255)
    with torch.no_grad():
        age, logits = net(x)
        assert net.features(x).shape == (batch, 512)
    assert age.shape == (batch,) and logits.shape == (batch, len(SEX_CLASSES))
