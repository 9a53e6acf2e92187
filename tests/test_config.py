"""femo.config: one source of defaults, typed `-o key=value` options refused when unknown."""
from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from femo import config
from femo.commands import extract as extract_cmd
from femo.commands import predict as predict_cmd
from femo.commands import train as train_cmd
from femo.config import DataConfig, ModelConfig, TrainConfig, parse_options
from femo.features.clip import ExtractConfig


def _parser(module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    return parser


@pytest.mark.parametrize("pairs, model, train", [
    (["layers=2", "lr=1e-3"], {"layers": 2}, {"lr": 1e-3}),
    (["amp=false", "augment=yes"], {}, {"amp": False, "augment": True}),
    (["frame_weights=none", "embedding_dim=32"], {"frame_weights": None, "embedding_dim": 32}, {}),
    (["modalities=face,audio", "weight-decay=0.01"], {"modalities": ("face", "audio")}, {"weight_decay": 0.01}),
])
def test_options_are_typed_by_their_field(pairs, model, train) -> None:
    assert parse_options(pairs, ModelConfig, TrainConfig) == [model, train]


@pytest.mark.parametrize("pairs, message", [
    (["layerz=2"], r"-o 'layerz=2': expected KEY=VALUE with KEY one of \[.*'layers'.*'weight_decay'"),
    (["layers"], r"expected KEY=VALUE"),
    (["layers=two"], r"option layers='two': expected int"),
    (["amp=maybe"], r"option amp='maybe': expected bool"),
])
def test_bad_options_are_refused(pairs, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_options(pairs, ModelConfig, TrainConfig)


def test_every_model_and_train_field_can_be_set_from_the_cli() -> None:
    names = [f.name for cls in (ModelConfig, TrainConfig) for f in fields(cls)]
    args = _parser(train_cmd).parse_args(["train", "S", "--out", "R", "-o", "heads=2", "-o", "grad_clip=0.5"])
    model, train = train_cmd.configs(args)
    assert (model.heads, train.grad_clip) == (2, 0.5)
    kinds = {f.name: str(f.type) for cls in (ModelConfig, TrainConfig) for f in fields(cls)}
    assert all(k.replace(" ", "").removesuffix("|None") in ("int", "float", "str", "bool", "tuple[str,...]")
               for k in kinds.values()), kinds  # every field type has a parser
    assert len(names) == len(set(names)), "a field name in both dataclasses would be ambiguous for -o"


def test_fusion_and_temporal_are_choices() -> None:
    parser = _parser(train_cmd)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "S", "--out", "R", "--temporal", "lstm"])
    assert parser.parse_args(["train", "S", "--out", "R", "--fusion", "late"]).fusion == "late"


def test_extract_and_predict_defaults_come_from_the_library() -> None:
    d = ExtractConfig()
    args = _parser(extract_cmd).parse_args(["extract", "m.csv", "--out", "s"])
    assert (args.frames, args.face_size, args.pose_stride, args.pitch, args.max_side) == (
        d.num_frames, d.face_size, d.pose_stride, d.pitch, d.max_side)
    assert (d.num_frames, d.face_size) == (DataConfig().num_frames, DataConfig().face_size)
    args = _parser(predict_cmd).parse_args(["predict", "v.mp4", "--run", "r"])
    assert (args.window, args.hop) == (config.WINDOW_SECONDS, config.HOP_SECONDS)


def test_notebook_smoke_epochs_are_the_demo_models() -> None:
    from pathlib import Path

    from femo.reports.demo import SMOKE
    from femo.reports.notebooks import notebook_parameters

    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "02_train.ipynb"
    assert notebook_parameters(notebook)["epochs"].default == SMOKE.epochs
