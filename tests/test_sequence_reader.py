"""Tests for data_prep.sequence_reader: v2 shards in, clips drawn while reading out."""

import numpy as np
import pytest
import tensorflow as tf

from core.errors import UserError
from data_prep.sampling import sample_frame_indices
from data_prep.sequence_reader import evaluation_views, training_clips
from sequence_fixtures import frame_indices_of, write_dmvr_style_records, write_v2_records

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
