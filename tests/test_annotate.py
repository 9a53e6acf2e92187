"""`femo annotate` end to end on drawn faces: a manifest (stills, a video, a blank image) and a
feature store (stored crops, a clip without a face, a failed clip)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from femo.annotate import ANNOTATION_COLUMNS, annotate
from femo.annotate.perceived import AgeSexEstimator
from femo.assets import MissingModelError, asset_path
from femo.cli import main
from femo.data.media import write_video
from femo.data.store import CLIP_KEYS, StoreMeta, write_clip, write_index, write_meta
from femo.data.synth_face import FaceRenderer, FaceStyle, expression
from femo.features.face import FaceTracker, empty_face_track
from femo.models.age_gender import AgeGenderNet

SKINS = {"light": (236, 200, 175), "medium": (190, 140, 100), "dark": (110, 75, 50)}


def _provisioned() -> bool:
    try:
        for name in ("face_landmarker.task", "age_gender_model.bin", "age_gender_model-weights_manifest.json"):
            asset_path(name)
    except MissingModelError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _provisioned(), reason="run `femo models fetch --face-weights` first")


def _face(skin: tuple[int, int, int], smile: float = 0.0, size: int = 256) -> np.ndarray:
    style = FaceStyle(face_w=0.26, face_h=0.33, eye_dx=0.1, skin=skin, hair=(40, 30, 20),
                      background=(120, 150, 180), long_hair=False, wrinkles=False, headwear="none")
    return FaceRenderer(style, size).frame(expression("happy", smile))


class CountingEstimator(AgeSexEstimator):
    """The real estimator, counting the crops it sees (to check resumption)."""

    calls = 0

    def frames(self, crops):
        CountingEstimator.calls += len(crops)
        return super().frames(crops)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("annotate_manifest")
    rows = []
    for name, skin in SKINS.items():
        Image.fromarray(_face(skin)).save(folder / f"{name}.png")
        rows.append({"clip_id": name, "path": f"{name}.png", "label": "happy", "subject": name})
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(folder / "blank.png")
    rows.append({"clip_id": "blank", "path": "blank.png", "label": "sad", "subject": "blank"})
    frames = np.stack([_face(SKINS["medium"], smile=s) for s in (0.0, 0.5, 1.0, 1.0)])
    frames[1] = 128  # one sampled frame without a face
    write_video(folder / "video.mp4", frames, fps=4)
    rows.append({"clip_id": "video", "path": "video.mp4", "label": "happy", "subject": "v"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def test_manifest_annotation_reads_faces_and_leaves_faceless_clips_empty(manifest, tmp_path):
    out = tmp_path / "annotated.csv"
    table = annotate(manifest, out, num_frames=4, progress=False).set_index("clip_id")
    assert set(ANNOTATION_COLUMNS) <= set(table.columns)
    assert pd.read_csv(out)["clip_id"].tolist() == ["light", "medium", "dark", "blank", "video"]
    faces = table.loc[["light", "medium", "dark"]]
    assert (faces["perceived_frames"] == 1).all() and (faces["annotate_reason"] == "").all()
    assert faces["perceived_age"].between(0, 100).all()
    assert faces["perceived_sex"].isin(["female", "male"]).all()
    assert faces["perceived_sex_confidence"].between(0.5, 1).all()
    # skin tone follows the drawn colour: lighter skin, larger angle
    assert faces.loc["light", "ita"] > faces.loc["medium", "ita"] + 15 > faces.loc["dark", "ita"] + 30
    assert faces.loc["light", "ita_skin_group"] == "lighter" and faces.loc["dark", "ita_skin_group"] == "darker"
    assert (faces["face_found_rate"] == 1.0).all() and (faces["face_score"] > 0.5).all()
    blank = table.loc["blank"]
    assert math.isnan(blank["perceived_age"]) and blank["perceived_sex"] == "" and math.isnan(blank["ita"])
    assert blank["annotate_reason"] == "no face found in any of the 1 sampled frames"
    assert blank["face_found_rate"] == 0.0 and blank["face_score"] < 0.5
    video = table.loc["video"]
    assert video["face_found_rate"] == pytest.approx(0.75) and video["perceived_frames"] == 3


def test_resume_keeps_annotated_rows(manifest, tmp_path):
    out = tmp_path / "annotated.csv"
    first = annotate(manifest, out, num_frames=4, progress=False, estimator=CountingEstimator())
    CountingEstimator.calls = 0
    again = annotate(manifest, out, num_frames=4, progress=False, estimator=CountingEstimator())
    assert CountingEstimator.calls == 0
    pd.testing.assert_frame_equal(first.reset_index(drop=True), again.reset_index(drop=True), check_dtype=False)


def _store(folder, crops_by_clip: dict[str, np.ndarray | None]):
    meta = StoreMeta(classes=("happy", "sad"), num_frames=4, face_size=112)
    write_meta(folder, meta)
    rows = []
    for cid, crops in crops_by_clip.items():
        if crops is None:  # a clip whose extraction failed
            rows.append({"clip_id": cid, "label": "sad", "subject": cid, "status": "failed",
                         "error": "corrupt file", "file": ""})
            continue
        track = empty_face_track(4, 112)
        arrays = {**track.arrays(), "times": np.arange(4, dtype=np.float32)}
        found = crops.reshape(4, -1).any(1)
        arrays["faces"][:] = crops
        arrays["face_found"][:] = found
        arrays.update(pose=np.zeros((4, 33, 4), np.float32), pose_found=np.zeros(4, bool),
                      logmel=np.zeros((64, 0), np.float32), mfcc=np.zeros((20, 0), np.float32),
                      prosody=np.zeros((0, 4), np.float32), has_audio=np.array(False))
        assert set(arrays) == set(CLIP_KEYS)
        write_clip(folder, cid, arrays)
        rows.append({"clip_id": cid, "label": "happy", "subject": cid, "status": "ok", "error": "",
                     "file": f"clips/{cid}.npz"})
    write_index(folder, pd.DataFrame(rows))


def _crops(skin) -> np.ndarray:
    """(4, 112, 112, 3): the aligned crop femo's tracker cuts from a drawn face, twice, and two empty frames."""
    with FaceTracker(rescue=False) as tracker:
        crop = tracker.track(_face(skin)[None]).faces[0]
    return np.stack([crop, crop, np.zeros_like(crop), np.zeros_like(crop)])


def test_store_annotation_uses_stored_crops(tmp_path):
    store = tmp_path / "store"
    _store(store, {"a": _crops(SKINS["light"]), "b": _crops(SKINS["dark"]),
                   "none": np.zeros((4, 112, 112, 3), np.uint8), "bad": None})
    table = annotate(store, tmp_path / "out.csv", progress=False).set_index("clip_id")
    assert table.loc["a", "face_found_rate"] == 0.5 and table.loc["a", "perceived_frames"] == 2
    assert table.loc["a", "perceived_age_sd"] == pytest.approx(0.0, abs=1e-4)  # two identical crops
    assert table.loc["a", "ita"] > table.loc["b", "ita"] + 30
    assert table.loc["a", "ita_frames"] >= 1
    assert table.loc["none", "annotate_reason"] == "no face found in any of the 4 sampled frames"
    assert table.loc["bad", "annotate_reason"] == "extraction failed: corrupt file"
    assert math.isnan(table.loc["bad", "perceived_age"]) and table.loc["bad", "perceived_frames"] == 0


def test_random_weights_give_no_plausible_age(manifest, tmp_path):
    """A sanity check that the published weights matter: random ones give a near-constant age."""
    table = annotate(manifest, tmp_path / "r.csv", progress=False, resume=False,
                     estimator=AgeSexEstimator(AgeGenderNet().eval()))
    assert table["perceived_age"].dropna().abs().max() < 5  # an untrained regression head stays near 0


def test_cli_writes_the_table_and_refuses_bad_input(manifest, tmp_path, capsys):
    out = tmp_path / "cli.csv"
    assert main(["annotate", str(manifest), "--out", str(out), "--frames", "2"]) == 0
    assert "5 rows, 4 with a face, 1 without" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == 5
    assert main(["annotate", str(tmp_path), "--out", str(tmp_path / "x.csv")]) == 1
    assert "not a feature store" in capsys.readouterr().err
    assert main(["annotate", str(manifest), "--out", str(manifest)]) == 2
