"""Extraction runs the landmarkers once per distinct frame: a still image is T copies of one
frame, a clip shorter than T repeats some frames, and the copies get that frame's results."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from femo.features.clip import ClipExtractor, ExtractConfig, distinct_frames, take
from femo.features.face import FaceTracker
from femo.features.pose import PoseTracker


class Counting:
    """Wraps a landmarker, counting calls of its detection methods."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        fn = getattr(self.inner, name)
        if not name.startswith("detect"):
            return fn

        def counted(*args, **kwargs):
            self.calls += 1
            return fn(*args, **kwargs)
        return counted


@pytest.mark.parametrize("indices, keep, spread", [
    ([0, 0, 0, 0], [0], [0, 0, 0, 0]),
    ([0, 0, 1, 1, 1, 2], [0, 2, 5], [0, 0, 1, 1, 1, 2]),
    ([3, 4, 5], [0, 1, 2], [0, 1, 2]),
    ([], [], []),
])
def test_distinct_frames_finds_runs_of_the_same_source_frame(indices, keep, spread):
    got_keep, got_spread = distinct_frames(np.array(indices, np.int64))
    assert got_keep.tolist() == keep and got_spread.tolist() == spread


def astronaut(size: int = 256) -> np.ndarray:
    from skimage.data import astronaut as picture

    return np.asarray(Image.fromarray(picture()[:300, 100:400]).resize((size, size)))


@pytest.fixture(scope="module")
def extractor():
    with ClipExtractor(ExtractConfig(num_frames=8)) as ex:
        ex.face._video = Counting(ex.face._video)
        ex.face._image = Counting(ex.face._image)
        ex.pose._lm = Counting(ex.pose._lm)
        yield ex


def test_a_still_costs_one_landmarker_call_and_gives_what_t_copies_give(tmp_path, extractor):
    path = tmp_path / "face.png"
    Image.fromarray(astronaut()).save(path)
    before = extractor.face._video.calls, extractor.pose._lm.calls
    arrays, flags, _ = extractor.extract(str(path))
    # the face landmarker: one blank frame that resets its tracking per clip, then the still once
    assert (extractor.face._video.calls - before[0], extractor.pose._lm.calls - before[1]) == (1 + 1, 1)
    assert arrays["face_found"].tolist() == [True] * 8
    for key in ("faces", "landmarks", "blendshapes", "head_pose", "face_box", "pose", "pose_found"):
        assert len(arrays[key]) == 8 and all(np.array_equal(a, arrays[key][0]) for a in arrays[key]), key
    # tracking the 8 copies one by one, as a video, gives the same arrays bit for bit
    copies = np.repeat(astronaut()[None], 8, axis=0)
    with FaceTracker(face_size=112) as face, PoseTracker(stride=4) as pose:
        every = {**face.track(copies, np.zeros(8)).arrays(), **pose.track(copies).arrays()}
    for key, value in every.items():
        np.testing.assert_array_equal(arrays[key], value, err_msg=key)


def test_a_short_frame_folder_runs_once_per_distinct_frame(tmp_path, extractor):
    folder = tmp_path / "clip"
    folder.mkdir()
    base = astronaut()
    for k in range(3):  # three frames, each shifted a little: 3 distinct frames for T = 8
        Image.fromarray(np.roll(base, 4 * k, axis=1)).save(folder / f"frame{k}.png")
    before = extractor.face._video.calls
    arrays, _, _ = extractor.extract(str(folder))
    assert extractor.face._video.calls - before == 1 + 3  # the tracking reset, then each distinct frame
    assert arrays["face_found"].all() and len(arrays["landmarks"]) == 8
    distinct = {arrays["landmarks"][i].tobytes() for i in range(8)}
    assert len(distinct) == 3  # the copies carry their frame's landmarks


def test_take_indexes_every_array_of_a_track():
    from femo.features.pose import PoseTrack

    track = PoseTrack(pose=np.arange(2 * 33 * 4, dtype=np.float32).reshape(2, 33, 4), pose_found=np.array([True, False]))
    out = take(track, np.array([0, 0, 1]))
    assert out.pose_found.tolist() == [True, True, False]
    np.testing.assert_array_equal(out.pose[2], track.pose[1])
