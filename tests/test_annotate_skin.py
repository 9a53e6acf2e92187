"""ITA skin tone and the perceived-age bins: exact values on images whose colour is known."""
from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.color import rgb2lab

from femo.annotate.perceived import AGE_GROUPS, age_group, empty_perceived, summarise
from femo.annotate.skin import SKIN_REGIONS, ita_category, ita_from_lab, ita_group, measure_skin, skin_mask


def _mesh(size: int = 200) -> np.ndarray:
    """(478, 2) pixel points: every region's loop on a circle in its own part of the image."""
    pts = np.full((478, 2), size / 2, np.float32)
    centres = {"cheek_left": (0.3, 0.6), "cheek_right": (0.7, 0.6), "forehead": (0.5, 0.2)}
    for name, loop in SKIN_REGIONS.items():
        angles = np.linspace(0, 2 * np.pi, len(loop), endpoint=False)
        cx, cy = centres[name]
        pts[list(loop)] = np.stack([(cx + 0.1 * np.cos(angles)) * size, (cy + 0.1 * np.sin(angles)) * size], 1)
    return pts


@pytest.mark.parametrize("rgb", [(235, 200, 180), (200, 150, 120), (150, 105, 80), (90, 60, 45)])
def test_ita_of_a_uniform_skin_colour_matches_cielab(rgb):
    image = np.zeros((200, 200, 3), np.uint8)
    mask = skin_mask(image.shape[:2], _mesh())
    image[mask] = rgb  # only the skin regions carry the colour: the rest must not leak in
    lab = rgb2lab(np.array([[rgb]], np.uint8))[0, 0]  # independent CIELAB (D65) conversion
    expected = math.degrees(math.atan((lab[0] - 50) / lab[2]))
    measured = measure_skin(image, _mesh())
    assert measured.ita == pytest.approx(expected, abs=0.3)
    assert measured.lightness == pytest.approx(lab[0], abs=0.3)
    assert measured.pixels == mask.sum()  # a uniform region has no shadows or highlights to trim


def test_shadows_and_highlights_are_trimmed():
    rng = np.random.default_rng(0)
    image = np.zeros((200, 200, 3), np.uint8)
    mask = skin_mask(image.shape[:2], _mesh())
    image[mask] = (200, 150, 120)
    spots = mask & (rng.random(mask.shape) < 0.08)
    image[spots] = 255  # specular highlights
    clean = measure_skin(np.where(mask[..., None], (200, 150, 120), 0).astype(np.uint8), _mesh())
    assert measure_skin(image, _mesh()).ita == pytest.approx(clean.ita, abs=0.5)


def test_tiny_face_gives_no_measure():
    assert measure_skin(np.zeros((200, 200, 3), np.uint8), _mesh() * 0.02) is None


@pytest.mark.parametrize(("ita", "category", "group"), [
    (60.0, "very_light", "lighter"), (55.0, "light", "lighter"), (41.5, "light", "lighter"),
    (41.0, "intermediate", "medium"), (28.0, "tan", "medium"), (10.5, "tan", "medium"),
    (10.0, "brown", "darker"), (-29.0, "brown", "darker"), (-30.0, "dark", "darker"), (float("nan"), "", "")])
def test_ita_bins(ita, category, group):
    assert ita_category(ita) == category
    assert ita_group(ita) == group


def test_ita_limits():
    assert ita_from_lab(70.0, 0.0) == 90.0 and ita_from_lab(30.0, 0.0) == -90.0
    assert ita_from_lab(50.0, 20.0) == pytest.approx(0.0)


@pytest.mark.parametrize(("age", "group"), [(0.5, "0-12"), (12.99, "0-12"), (13.0, "13-19"), (19.9, "13-19"),
                                            (20.0, "20-39"), (39.9, "20-39"), (40.0, "40-59"), (60.0, "60+"),
                                            (95.0, "60+")])
def test_age_bins_follow_utkface(age, group):
    assert age_group(age) == group
    assert list(age_group(np.array([age, 30.0]))) == [group, "20-39"]
    assert group in AGE_GROUPS


def test_clip_summary_averages_frames_and_reports_agreement():
    row = summarise(np.array([18.0, 22.0, 23.0, 25.0]), np.array([0.9, 0.7, 0.8, 0.2]))
    assert row["perceived_age"] == pytest.approx(22.0)
    assert row["perceived_age_sd"] == pytest.approx(np.std([18, 22, 23, 25]))
    assert row["perceived_age_group"] == "20-39"
    assert row["perceived_age_group_confidence"] == pytest.approx(0.75)  # the 18-year-old frame disagrees
    assert row["perceived_sex"] == "female" and row["perceived_sex_confidence"] == pytest.approx(0.65)
    assert summarise(np.array([40.0]), np.array([0.1]))["perceived_sex"] == "male"
    empty = empty_perceived()
    assert math.isnan(empty["perceived_age"]) and empty["perceived_sex"] == "" and empty["perceived_frames"] == 0
    with pytest.raises(ValueError, match="at least one face frame"):
        summarise(np.array([]), np.array([]))
