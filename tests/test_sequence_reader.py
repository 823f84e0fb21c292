"""Tests for data_prep.sequence_reader: v2 shards in, clips drawn while reading out."""

import numpy as np
import pytest
import tensorflow as tf

from core.errors import UserError
from data_prep.sampling import sample_frame_indices
from data_prep.sequence_reader import (clip_dtype, evaluation_views, extra_bands, load_items,
                                       read_options, training_clips)
from sequence_fixtures import (frame_indices_of, write_dmvr_style_records,
                               write_issue20_records, write_v2_records)

LENGTHS = [20, 3, 25, 9, 14, 8]


@pytest.fixture
def shards(tmp_path):
    return [write_v2_records(tmp_path / "a.tfrecord", LENGTHS[:3], encoding="raw"),
            write_v2_records(tmp_path / "b.tfrecord", LENGTHS[3:], encoding="raw",
                             first_index=3)]


def item_of(clip):
    return int(round(clip[..., 1].mean() / 40))


def epoch(dataset):
    return [(clip.numpy(), label.numpy()) for clip, label in dataset]


def test_training_clips_are_fresh_clips_of_each_item(shards):
    dataset = training_clips(shards, num_frames=8, encoding="raw", seed=3)
    assert dataset.element_spec[0].shape.as_list() == [8, None, None, 3]
    first = epoch(dataset)
    assert sorted(item_of(clip) for clip, _ in first) == list(range(6))
    for clip, label in first:
        item = item_of(clip)
        assert clip.shape == (8, 16, 20, 3) and clip.dtype == np.uint8
        assert label == item % 3
        total = LENGTHS[item]
        indices = frame_indices_of(clip)
        if total >= 8:  # one frame of each of the 8 segments
            segment = (np.arange(8) * total) // 8, ((np.arange(8) + 1) * total) // 8
            assert ((indices >= segment[0]) & (indices < segment[1])).all()
        else:  # a short item loops
            np.testing.assert_array_equal(indices, (indices[0] + np.arange(8)) % total)
    # Same seed, same epochs; the next epoch draws other clips.
    again = training_clips(shards, num_frames=8, encoding="raw", seed=3)
    for (clip, label), (clip2, label2) in zip(first, epoch(again)):
        np.testing.assert_array_equal(clip, clip2)
        assert label == label2
    second = epoch(dataset)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, second))


def test_training_clips_stride_and_repeat(shards):
    dataset = training_clips(shards, num_frames=4, method="stride", stride=2, encoding="raw",
                             seed=0, repeat=True)
    for clip, _ in dataset.take(14):
        indices = frame_indices_of(clip.numpy())
        total = LENGTHS[item_of(clip.numpy())]
        np.testing.assert_array_equal(indices, (indices[0] + 2 * np.arange(4)) % total)


def test_evaluation_views_follow_sample_frame_indices(shards):
    dataset = evaluation_views(shards, num_frames=8, num_clips=3, encoding="raw")
    elements = [tuple(part.numpy() for part in element) for element in dataset]
    assert len(elements) == 3 * len(LENGTHS)
    for position, (clip, label, item_index) in enumerate(elements):
        item = position // 3
        assert item_index == item and label == item % 3 and item_of(clip) == item
        expected = sample_frame_indices(LENGTHS[item], 8, num_clips=3)[position % 3]
        np.testing.assert_array_equal(frame_indices_of(clip), expected)


def test_multi_label_records_give_multi_hot_labels(tmp_path):
    path = write_v2_records(tmp_path / "m.tfrecord", [5, 6], encoding="png",
                            labels=[(0, 2), (1,)])
    labels = [label.numpy().tolist() for _, label in
              training_clips([path], num_frames=2, encoding="png", seed=0, multi_label=True,
                             num_classes=3)]
    assert sorted(labels) == [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
    with pytest.raises(UserError, match="num_classes"):
        training_clips([path], num_frames=2, multi_label=True)


def test_dmvr_style_records_read_with_no_prepare(tmp_path):
    path = write_dmvr_style_records(tmp_path / "dmvr-00000-of-00001", [12, 7, 20])
    views = [tuple(part.numpy() for part in element)
             for element in evaluation_views([path], num_frames=4, num_clips=2)]
    assert [int(index) for _, _, index in views] == [0, 0, 1, 1, 2, 2]
    assert [int(label) for _, label, _ in views] == [0, 0, 1, 1, 2, 2]
    expected = sample_frame_indices(7, 4, num_clips=2)
    np.testing.assert_array_equal(frame_indices_of(views[2][0]), expected[0])
    clips = epoch(training_clips([path], num_frames=4, seed=1))
    assert sorted(item_of(clip) for clip, _ in clips) == [0, 1, 2]


def test_multi_worker_readers_split_the_files(shards):
    parts = [sorted(item_of(clip) for clip, _ in epoch(training_clips(
        shards, num_frames=2, encoding="raw", num_input_pipelines=2, input_pipeline_id=worker)))
        for worker in (0, 1)]
    assert parts == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(UserError, match="input pipeline"):
        training_clips(shards[:1], num_frames=2, num_input_pipelines=2)


def test_records_without_frames_are_skipped(tmp_path):
    path = write_dmvr_style_records(tmp_path / "dmvr", [5, 0, 6])
    indices = [int(index) for _, _, index in evaluation_views([path], num_frames=2)]
    assert indices == [0, 2]
    assert sorted(item_of(clip.numpy()) for clip, _ in
                  training_clips([path], num_frames=2, seed=0)) == [0, 2]


# --- issue 20: stored dtypes, validity, dates ------------------------------------------------

def series(dtype, frames=6, height=4, width=5, bands=2, seed=0):
    """A (T, H, W, B) series of `dtype`, frame t's band 0 offset by 1000 * t."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 900, (frames, height, width, bands))
    values[..., 0] += 1000 * np.arange(frames)[:, None, None]
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float16", "float32"])
def test_clips_keep_the_stored_dtype_and_values(tmp_path, dtype):
    frames = series(dtype)
    if dtype == "float32":
        frames[2, 1, 1, 0] = np.nan
    path = write_issue20_records(tmp_path / "a", [{"frames": frames}])
    options = {"dtype": dtype}
    (clip, _, _), = [tuple(t.numpy() for t in e) for e in evaluation_views(
        [path], num_frames=6, encoding="raw", channels=2, options=options)]
    assert clip.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(clip.view(f"u{clip.itemsize}"),
                                  frames.view(f"u{frames.itemsize}"))
    clip, _ = next(iter(training_clips([path], num_frames=3, encoding="raw", channels=2,
                                       options=options)))
    assert clip.dtype == tf.dtypes.as_dtype(dtype) and clip.shape == (3, 4, 5, 2)


def test_masked_and_nan_pixels_take_the_fill_and_the_mask_band(tmp_path):
    frames = series("float32", frames=3)
    frames[0, 0, 0, 1] = np.nan
    masks = np.ones((3, 4, 5), bool)
    masks[1, 2, 3] = False
    path = write_issue20_records(tmp_path / "a", [{"frames": frames, "masks": masks}])
    options = {"dtype": "float32", "mask": True, "fill": [-1.0, -2.0], "mask_band": True}
    (clip, _, _), = [tuple(t.numpy() for t in e) for e in evaluation_views(
        [path], num_frames=3, encoding="raw", channels=2, options=options)]
    assert clip.shape == (3, 4, 5, 3) and clip.dtype == np.float32
    invalid = ~masks
    invalid[0, 0, 0] = True
    np.testing.assert_array_equal(clip[..., 2], np.where(invalid, 0.0, 1.0))
    np.testing.assert_array_equal(clip[invalid][:, :2], [[-1.0, -2.0]] * 2)
    np.testing.assert_array_equal(clip[~invalid][:, :2], frames[~invalid])


def test_integer_fill_is_rounded_into_the_dtype(tmp_path):
    frames = series("uint16", frames=2)
    masks = np.ones((2, 4, 5), bool)
    masks[1, 0, 0] = False
    path = write_issue20_records(tmp_path / "a", [{"frames": frames, "masks": masks}])
    options = {"dtype": "uint16", "mask": True, "fill": [700.6, -5.0]}
    clip, _ = next(iter(training_clips([path], num_frames=2, encoding="raw", channels=2,
                                       options=options)))
    clip = clip.numpy()
    assert clip.dtype == np.uint16
    filled = clip[clip[..., 0] == 701]  # training clips are in time order: frame 1 is last
    assert filled.tolist() == [[701, 0]]


def test_frames_below_the_valid_fraction_are_not_sampled(tmp_path):
    frames = series("uint16", frames=8)
    fractions = [1, 0.1, 1, 0.2, 1, 0.3, 1, 0.95]
    path = write_issue20_records(tmp_path / "a", [{"frames": frames,
                                                   "valid_fraction": fractions}])
    options = {"dtype": "uint16", "min_valid_fraction": 0.9}
    for seed in range(5):
        clip, _ = next(iter(training_clips([path], num_frames=4, encoding="raw", channels=2,
                                           seed=seed, options=options)))
        indices = clip.numpy()[..., 0].min(axis=(1, 2)) // 1000
        assert set(indices.tolist()) <= {0, 2, 4, 6, 7}
    # Without a threshold, the clips are the v1 rule's.
    (clip, _, _), = [tuple(t.numpy() for t in e) for e in evaluation_views(
        [path], num_frames=4, encoding="raw", channels=2, options={"dtype": "uint16"})]
    assert (clip[..., 0].min(axis=(1, 2)) // 1000).tolist() == \
        sample_frame_indices(8, 4)[0].tolist()


def test_sampling_by_date_and_day_of_year_bands(tmp_path):
    frames = series("uint16", frames=6)
    dates = [19723, 19724, 19725, 19726, 19900, 20088]  # 2024-01-01 ... 2024-12-31
    path = write_issue20_records(tmp_path / "a", [{"frames": frames, "dates": dates}])
    options = {"dtype": "uint16", "dated": True, "sample_by": "date",
               "day_of_year": "band"}
    (clip, _, _), = [tuple(t.numpy() for t in e) for e in evaluation_views(
        [path], num_frames=3, encoding="raw", channels=2, options=options)]
    assert clip.shape == (3, 4, 5, 3) and clip.dtype == np.float32
    chosen = (clip[..., 0].min(axis=(1, 2)) // 1000).astype(int)
    assert chosen.tolist() == [3, 4, 5]  # targets 19784.8, 19905.5, 20026.2 (by index: 0, 2, 4)
    expected_days = {3: 4, 4: 178, 5: 366}
    np.testing.assert_allclose(clip[:, 0, 0, 2],
                               [expected_days[i] / 365.25 for i in chosen.tolist()],
                               rtol=1e-6)
    options["day_of_year"] = "sinusoidal"
    clip, _ = next(iter(training_clips([path], num_frames=3, encoding="raw", channels=2,
                                       options=options)))
    np.testing.assert_allclose(clip[..., 2] ** 2 + clip[..., 3] ** 2, 1, rtol=1e-5)


@pytest.mark.parametrize("options,message", [
    ({"sample_by": "date"}, "dated"),
    ({"day_of_year": "band"}, "dated"),
    ({"sample_by": "time"}, "sample_by"),
    ({"min_valid_fraction": 1.5}, "min_valid_fraction"),
    ({"fill": [1.0]}, "fill"),
    ({"dtype": "int64"}, "dtype"),
    ({"colour": 1}, "read options"),
])
def test_read_options_are_checked(options, message):
    with pytest.raises(UserError, match=message):
        read_options({"frame_shape": [4, 4, 2]}, **options)


def test_read_options_follow_the_manifest():
    manifest = {"frame_shape": [4, 4, 3], "dtype": "uint16", "mask": True, "dated": True}
    options = read_options(manifest, mask_band=True, day_of_year="sinusoidal")
    assert (options["dtype"], options["mask"], options["dated"]) == ("uint16", True, True)
    assert extra_bands(options) == 3 and clip_dtype(options) == "float32"
    plain = read_options({"frame_shape": [4, 4, 3]})
    assert extra_bands(plain) == 0 and clip_dtype(plain) == "uint8"


def test_load_items_reads_a_split_as_the_manifest_says(tmp_path):
    frames = series("uint16", frames=5)
    path = write_issue20_records(tmp_path / "a", [{"frames": frames, "label": 1}])
    manifest = {"encoding": "raw", "frame_shape": [4, 5, 2], "dtype": "uint16",
                "classes": ["a", "b"]}
    clip, label, index = next(iter(load_items(manifest, [path], num_frames=5,
                                              with_item_index=True)))
    assert clip.dtype == tf.uint16 and int(label) == 1 and int(index) == 0
    np.testing.assert_array_equal(clip.numpy(), frames)
    clip, label = next(iter(load_items(manifest, [path], num_frames=2,
                                       clip_selection="random", seed=1)))
    assert clip.shape == (2, 4, 5, 2)
    with pytest.raises(UserError, match="with_item_index"):
        load_items(manifest, [path], num_frames=2, clip_selection="random",
                   with_item_index=True)
