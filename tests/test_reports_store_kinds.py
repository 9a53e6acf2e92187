"""Every report on every kind of store: audio only (speech corpora) and still images (face corpora).

Two tiny stores are built from real media written here: 16 wav utterances of 4 speakers in 2
speaker folds with a ``sex`` column (an audio-only corpus like RAVDESS speech), and 12 still
images with an official train / val / test split, no subject ids and no demographics (an image
corpus like FER2013), 11 of them a real photo's face and one with no face at all. The data report
runs on both in the default test run (and is checked for privacy: no absolute path, no clip id,
a blurred face); every notebook runs on both with tiny parameters in the slow run.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from femo.data.manifest import ManifestMeta, write_manifest
from femo.data.media import write_wav
from femo.reports import demo, execute

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
#: The smallest settings of every notebook (each applies to the notebooks that declare it).
TINY = {"n_examples": 2, "epochs": 1, "n_boot": 20, "retrain": False, "top_k": 4,
        "per_emotion": 1, "planted_clips": 1, "ig_steps": 4, "randomisation_clips": 1, "randomisation_steps": 2,
        "compare_drop": False, "reference_clips": 4, "min_subjects": 2}
AUDIO_CLASSES = ("happy", "sad", "angry", "neutral")
IMAGE_CLASSES = ("happy", "sad", "surprise")


def _speech(freq: float, seconds: float = 1.0, sr: int = 16_000) -> np.ndarray:
    """A voiced-looking harmonic tone with a little noise: (N,) float32."""
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 5)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.3 * wave + 0.01 * np.random.default_rng(int(freq)).normal(size=t.size)).astype(np.float32)


def audio_manifest(root: Path) -> Path:
    """16 wav clips: 4 speakers (2 female, 2 male) x 4 emotions; folds by speaker."""
    rows = []
    for s in range(4):
        for c, label in enumerate(AUDIO_CLASSES):
            clip = f"spk{s}_utt{c}"
            write_wav(root / "audio" / f"{clip}.wav", _speech(120 + 40 * c + 10 * s))
            rows.append({"clip_id": clip, "path": f"audio/{clip}.wav", "label": label, "subject": f"spk{s}",
                         "fold": s % 2 + 1, "sex": "female" if s >= 2 else "male"})  # both sexes in each fold
    return write_manifest(pd.DataFrame(rows), root / "manifest.csv",
                          ManifestMeta(dataset="tiny_speech", classes=AUDIO_CLASSES))


def image_manifest(root: Path) -> Path:
    """12 stills, official split 6 / 3 / 3, each its own subject: 11 faces and 1 image with no face."""
    from PIL import Image
    from skimage.data import astronaut

    face = astronaut()[20:260, 120:360]  # (240, 240, 3) the face and shoulders
    splits = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    rows = []
    for i, split in enumerate(splits):
        clip = f"person_{i:02d}_photo"
        img = np.random.default_rng(i).integers(0, 255, face.shape, dtype=np.uint8) if i == 4 else face
        img = img[:, ::-1] if i % 2 else img
        Image.fromarray(np.ascontiguousarray(img)).save(root / f"{clip}.jpg")
        rows.append({"clip_id": clip, "path": f"{clip}.jpg", "label": IMAGE_CLASSES[i % 3], "subject": clip,
                     "split": split})
    return write_manifest(pd.DataFrame(rows), root / "manifest.csv",
                          ManifestMeta(dataset="tiny_faces", classes=IMAGE_CLASSES))


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """{kind: manifest} of the two tiny corpora, each extracted into its store beside it."""
    out = {}
    for kind, build in (("audio", audio_manifest), ("image", image_manifest)):
        root = tmp_path_factory.mktemp(kind)
        manifest = build(root)
        demo.resolve_data(manifest, log=lambda _: None)  # extract once, outside the kernels
        out[kind] = manifest
    return out


def _finite_numbers(obj, where=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _finite_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _finite_numbers(v, f"{where}[{i}]")
    elif isinstance(obj, float):
        assert math.isfinite(obj), f"{where} = {obj}"
        yield where, obj


def _no_private_text(folder: Path, manifest: Path) -> None:
    """The saved notebook, HTML, config and metrics hold no absolute local path and no clip id."""
    ids = pd.read_csv(manifest)["clip_id"].tolist()
    for path in [*folder.glob("*.ipynb"), *folder.glob("*.html"), folder / "config.json", folder / "metrics.json"]:
        text = path.read_text()
        for root in {str(manifest.parent), str(manifest.parent.resolve()), str(Path.home())}:
            assert root not in text, f"{path.name} shows the local path {root}"
        assert not re.search(r"(?<![\w.~+/=-])/(tmp|home|root|work)/", text), f"{path.name} shows an absolute path"
        leaked = [i for i in ids if re.search(rf"(?<![\w-]){re.escape(i)}(?![\w-])", text)]
        assert not leaked, f"{path.name} shows clip ids {leaked[:3]}"


def _detail(gray: np.ndarray) -> float:
    """Mean horizontal gradient over the contrast of a (H, W) gray image: small when blurred."""
    return float(np.abs(np.diff(gray, axis=1)).mean() / (gray.std() + 1e-6))


def _run(manifest: Path, reports: Path, only: list[str] | None = None, **extra) -> dict[str, dict]:
    found, index = execute.run_reports(notebooks_dir=NOTEBOOKS_DIR, reports_dir=reports, data=str(manifest),
                                       only=only, tag="kinds", overrides={**_tiny_for(only), **extra},
                                       log=lambda _: None)
    errors = {r.name: r.error for r in found if r.error}
    assert not errors, errors
    assert index.is_file()
    return {r.name: r.metrics for r in found}


def _tiny_for(only: list[str] | None) -> dict:
    """TINY restricted to the parameters the selected notebooks (None: all) declare."""
    from femo.reports.notebooks import notebook_parameters

    declared = set().union(*(notebook_parameters(p) for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")
                             if only is None or p.stem[:2] in only))
    return {k: v for k, v in TINY.items() if k in declared}


def test_data_report_on_audio_only_store_says_what_is_missing(stores, tmp_path: Path) -> None:
    found, _ = execute.run_reports(notebooks_dir=NOTEBOOKS_DIR, reports_dir=tmp_path, data=str(stores["audio"]),
                                   only=["01"], tag="a", overrides=_tiny_for(["01"]), log=lambda _: None)
    assert found[0].error == "", found[0].error
    m = found[0].metrics
    list(_finite_numbers(m))
    assert m["modalities"] == ["audio"] and m["n_ok"] == 16 and m["n_visual"] == 0 and m["n_no_face"] == 0
    assert m["audio_rate"] == 1.0 and m["group_columns"] == ["sex"] and m["privacy"] == "blur"
    assert any(line.startswith("no video or images") for line in m["lacks"])
    assert not any(line.startswith(("no subjects", "no demographic", "no audio")) for line in m["lacks"])
    _no_private_text(found[0].folder, stores["audio"])


def test_data_report_on_image_store_counts_stills_misses_and_blurs_faces(stores, tmp_path: Path) -> None:
    from PIL import Image

    found, _ = execute.run_reports(notebooks_dir=NOTEBOOKS_DIR, reports_dir=tmp_path, data=str(stores["image"]),
                                   only=["01"], tag="i", overrides=_tiny_for(["01"]), log=lambda _: None)
    assert found[0].error == "", found[0].error
    m = found[0].metrics
    assert m["modalities"] == ["face", "landmarks"] and m["n_ok"] == 12 and m["n_visual"] == 12
    assert m["n_still"] == 12 and m["n_frames_repeated"] == 0
    assert m["n_no_face"] == 1  # the faceless image stays in the store, face masked, and is counted
    assert {line.split(":")[0] for line in m["lacks"]} == {"no audio", "no subjects", "no demographic columns (none of sex, gender, age, age_group, race, ethnicity, culture, skin_tone, perceived_*)"}
    _no_private_text(found[0].folder, stores["image"])
    # the face crops shown are blurred: far less fine detail than the crops in the store
    shown = np.asarray(Image.open(found[0].folder / "figures" / "sample_faces.png").convert("L"), float)
    from femo.data.store import read_clip, read_index

    store = demo.store_for(stores["image"])
    clip = read_index(store).query("face_ratio > 0")["clip_id"].iloc[0]
    crop = read_clip(store, clip)["faces"][0].mean(-1)
    assert _detail(shown) < 0.6 * _detail(crop)


@pytest.mark.slow
def test_privacy_none_shows_paths_as_they_are(stores, tmp_path: Path) -> None:
    found, _ = execute.run_reports(notebooks_dir=NOTEBOOKS_DIR, reports_dir=tmp_path, data=str(stores["image"]),
                                   only=["01"], tag="n", overrides={**_tiny_for(["01"]), "privacy": "none"},
                                   log=lambda _: None)
    html = (found[0].folder / "01_data.html").read_text()
    assert found[0].metrics["privacy"] == "none" and str(stores["image"].parent.resolve()) in html


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("kind", ["audio", "image"])
def test_every_report_runs_on_store_kind(stores, kind: str, tmp_path: Path) -> None:
    # 06 (label quality) scores clips out of fold, so it needs folds: not the image store's official split
    metrics = _run(stores[kind], tmp_path, only=None if kind == "audio" else ["01", "02", "03", "04", "05"])
    assert {"01_data", "02_train", "03_modality_ablation", "04_bias_audit", "05_attribution"} <= set(metrics)
    for name, m in metrics.items():
        list(_finite_numbers(m, name))
    train = metrics["02_train"]
    assert train["uar_ci"][0] <= train["uar"] + 1e-9 or train["fold"] == 0
    if kind == "audio":
        assert train["modalities"] == ["audio"] and set(train["masked_modalities"]) == {"face", "landmarks"}
        assert "sex" in json.dumps(metrics["04_bias_audit"]["groups"])
    else:
        assert set(train["modalities"]) == {"face", "landmarks"} and train["masked_modalities"] == ["audio"]
        assert train["ci_clustered_by_subject"] is False and "split == test" in train["protocol"]
    for folder in tmp_path.glob("*_kinds"):
        if (folder / "report.json").is_file():
            _no_private_text(folder, stores[kind])
