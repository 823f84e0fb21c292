"""Tests for data_prep.false_colour: any clip as an 8-bit RGB picture."""

import numpy as np
import pytest

from core.errors import UserError
from data_prep.false_colour import (band_note, display_range, false_colour, parse_rgb_bands,
                                    shown_bands)


def test_8_bit_rgb_is_drawn_as_stored():
    clip = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3)).astype(np.uint8)
    np.testing.assert_array_equal(false_colour(clip), clip)
    assert display_range({"p2": [10] * 3, "p98": [20] * 3}, "uint8", 3) is None


def test_16_bit_bands_are_stretched_by_the_dataset_range():
    # Reflectances 14..557 (the Formosat-2 values) fill 0..255 instead of 0..2.
    clip = np.zeros((1, 2, 2, 4), np.uint16)
    clip[..., 3] = [[14, 100], [300, 557]]
    clip[..., 2] = 5000
    stretch = display_range({"p2": [0, 0, 0, 14], "p98": [1, 1, 10000, 557]}, "uint16", 4)
    picture = false_colour(clip, [3, 2, 1], stretch)
    assert picture.dtype == np.uint8 and picture.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(picture[0, ..., 0], [[0, 40], [134, 255]])
    assert (picture[..., 1] == 128).all() and (picture[..., 2] == 0).all()


def test_without_statistics_each_clip_stretches_by_its_own_percentiles_and_nan_is_black():
    clip = np.linspace(-1, 1, 100, dtype=np.float32).reshape(1, 10, 10, 1)
    clip[0, 0, 0, 0] = np.nan
    picture = false_colour(clip)
    assert picture.shape == (1, 10, 10, 3) and (picture[..., 0] == picture[..., 2]).all()
    assert picture[0, 0, 0].tolist() == [0, 0, 0]
    assert picture[0, -1, -1, 0] == 255 and picture[0, 0, 1, 0] == 0


@pytest.mark.parametrize("bands,rgb_bands,shown,note", [
    (3, None, [0, 1, 2], None), (1, None, [0, 0, 0], None),
    (2, None, [0, 0, 0], "showing band 0 of 2 as grey"),
    (13, None, [0, 1, 2], "showing bands 0-2 of 13 as RGB"),
    (13, [3, 2, 1], [3, 2, 1], "showing bands 3, 2, 1 of 13 as RGB"),
    (13, [7], [7, 7, 7], "showing band 7 of 13 as grey"),
])
def test_shown_bands_and_their_note(bands, rgb_bands, shown, note):
    assert shown_bands(bands, rgb_bands) == shown
    assert band_note(bands, rgb_bands) == note


@pytest.mark.parametrize("text", ["4,3", "a,b,c", "-1,2,3", ""])
def test_parse_rgb_bands_refuses_what_is_not_1_or_3_indices(text):
    with pytest.raises(UserError, match="rgb-bands"):
        parse_rgb_bands(text)


def test_a_band_outside_the_clip_is_refused():
    with pytest.raises(UserError, match="among 0..3"):
        shown_bands(4, [4, 2, 1])
