"""Tests for training/visuals.py: sizes, captions, labels and legends of the pictures."""

import numpy as np
import pytest

from training import visuals

WHITE = 255


def ink_rows(image):
    """Indices of rows that hold anything but white."""
    return np.flatnonzero((image < 250).any(axis=(1, 2)))


@pytest.mark.parametrize("frames, height, columns, shape", [
    (4, 16, None, (96, 4 * 96 + 3 * 2, 3)),
    (16, 14, 8, (2 * 98 + 2, 8 * 98 + 7 * 2, 3)),  # scale 7: 98 px frames
    (3, 112, 8, (112, 3 * 112 + 2 * 2, 3)),  # already large: not enlarged
])
def test_frame_strip_enlarges_frames_to_at_least_96_pixels(frames, height, columns, shape):
    clip = np.random.default_rng(0).integers(0, 256, (frames, height, height, 3), np.uint8)
    strip = visuals.frame_strip(clip, columns=columns)
    assert strip.shape == shape
    scale = max(1, -(-96 // height))
    # Nearest neighbour: each source pixel becomes a scale x scale block of the same value.
    np.testing.assert_array_equal(strip[:scale, :scale], np.broadcast_to(clip[0, 0, 0],
                                                                          (scale, scale, 3)))


def test_captioned_adds_a_band_with_the_text_above():
    image = np.zeros((50, 40, 3), np.uint8)
    out = visuals.captioned(image, ["true: a_long_class_name", "predicted: other (0.42)"])
    assert out.shape[0] == 50 + 2 * 20 + 6 and out.shape[1] > 40  # widened for the text
    band = out[:46]
    assert (band < 128).any()  # text was drawn
    np.testing.assert_array_equal(out[46:, :40], image)


@pytest.mark.parametrize("classes, cell", [(2, 34), (8, 34), (101, 14)])
def test_confusion_matrix_has_title_and_class_names_on_both_axes(classes, cell):
    names = [f"class_{i:03d}" for i in range(classes)]
    matrix = np.eye(classes, dtype=np.int64) * 3
    image = visuals.confusion_matrix_image(matrix, names, title="test, views 10x3, top-1 1.0")
    name_width = visuals._text_width(names[0], 0.35 if cell < 22 else 0.45)
    # header (title + key) + upright column names + the grid; row names + the grid
    assert image.shape[0] == 60 + name_width + 8 + classes * cell + 10
    assert image.shape[1] >= name_width + 12 + classes * cell + 10
    assert ink_rows(image[:30]).size  # the title line
    top, left = 60 + name_width + 8, name_width + 12
    columns_block = image[60:top, left:left + classes * cell]
    rows_block = image[top:top + classes * cell, :left]
    for block, along in ((columns_block, 1), (rows_block, 0)):
        # every class's column (row) of the label block holds text
        inked = (block < 200).any(axis=2).any(axis=1 - along)
        per_class = inked[:classes * cell].reshape(classes, cell).any(axis=1)
        assert per_class.all()
    # the diagonal is dark blue (rate 1), the rest white (a corner: the count is centred)
    grid = image[top:top + classes * cell, left:left + classes * cell]
    blue, white = visuals._rate_colour(1.0), (WHITE,) * 3
    for row, column, colour in ((0, 0, blue), (1, 1, blue), (0, 1, white), (1, 0, white)):
        assert tuple(grid[row * cell + 3, column * cell + 3]) == colour


def test_offset_field_has_a_legend_below_the_frame():
    frame = np.full((16, 16, 3), 100, np.uint8)
    offsets = np.zeros((4, 4, 27, 3))
    offsets[..., 2] = 1.0  # one feature pixel to the right everywhere
    image = visuals.offset_field_image(frame, offsets)
    assert image.shape[0] > 192 + 60
    assert (image[192:] < 128).any()  # legend text
    legend = image[192:]
    reds = (legend[..., 0] > 200) & (legend[..., 1] < 120)
    greens = (legend[..., 1] > 150) & (legend[..., 0] < 60)
    assert reds.any() and greens.any()  # the |dt| colour scale


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_offset_field_of_diverged_offsets_draws_the_finite_ones(bad):
    frame = np.full((16, 16, 3), 100, np.uint8)
    offsets = np.zeros((4, 4, 27, 3))
    offsets[..., 2] = 1.0
    offsets[0, 0, :, 1] = bad  # a diverged run's offsets: no arrow there, no error
    image = visuals.offset_field_image(frame, offsets)
    assert image.shape[0] > 192 and image.dtype == np.uint8


def test_training_curves_have_three_charts_and_survive_a_repeated_epoch():
    history = [{"epoch": e, "loss": 2.0 - e, "val_loss": 2.1 - e, "top1": 0.2 * e,
                "val_top1": 0.1 * e, "learning_rate": 0.01} for e in (0, 1, 1)]
    steps = np.arange(20)
    image = visuals.training_curves_image(history, (steps / 10, steps * 0.001), title="demo")
    assert image.shape[1] == 3 * 460 and image.shape[0] == 260 + 26 + 6
    for index in range(3):
        chart = image[32:, index * 460:(index + 1) * 460]
        blue = (chart[..., 0] < 60) & (chart[..., 2] > 150)
        assert blue.any()  # a train / learning-rate line in each


def test_timeline_image_rows_are_the_top_classes():
    probabilities = np.full((6, 20), 0.01)
    probabilities[:3, 4] = 0.9
    probabilities[3:, 7] = 0.9
    names = [f"c{i}" for i in range(20)]
    image = visuals.timeline_image(probabilities, np.arange(6) * 0.5, np.arange(6) * 0.5 + 1,
                                   names, title="video.avi")
    # rows = classes ever in a window's top 3: 4, 7 and the first ties (0, 1)
    assert image.shape[0] == 40 + 30 + 4 * 24 + 50
    left = visuals._text_width("c0", 0.45) + 16
    first_row = image[70:94, left:]
    assert tuple(first_row[12, 5]) == visuals._rate_colour(0.9)  # c4 early


def test_frame_strip_draws_other_bands_in_false_colour():
    clip = np.zeros((2, 16, 16, 5), np.uint16)
    clip[..., 4] = 1000
    clip[1, ..., 4] = 3000
    options = visuals.picture_options({"p2": [0] * 5, "p98": [1, 1, 1, 1, 3000]}, "uint16", 5,
                                      [4])
    strip = visuals.frame_strip(clip, **options)
    assert strip.dtype == np.uint8
    assert strip[0, 0].tolist() == [85] * 3 and strip[0, -1].tolist() == [255] * 3


def test_picture_options_keep_8_bit_values_also_as_float_and_check_the_bands():
    options = visuals.picture_options(None, "uint8", 3)
    clip = np.full((1, 4, 4, 4), 200, np.float32)  # 3 stored bands + a mask band
    assert visuals.frame_strip(clip, **options)[0, 0].tolist() == [200] * 3
    with pytest.raises(visuals.UserError, match="0..2"):
        visuals.picture_options(None, "uint8", 3, [3])
