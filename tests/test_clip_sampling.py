"""Tests for data_prep.clip_sampling: clip indices drawn in the graph, and decoding only them.

Every behaviour is checked eagerly and inside `tf.data.Dataset.map`."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from core.errors import UserError
from data_prep.clip_sampling import decode_frames, sample_clip_indices
from data_prep.sampling import sample_frame_indices
from data_prep.sequence_records import encode_frames
from sequence_fixtures import frame_indices_of, marked_frames

GRID = [(total, frames, method, stride, clips)
        for total, frames, (method, stride), clips in itertools.product(
            [1, 2, 3, 7, 8, 16, 17, 40, 301], [1, 4, 8],
            [("uniform", 1), ("stride", 1), ("stride", 2), ("stride", 3)], [1, 3, 5])]


def in_map(function, *args):
    """`function(*args)` evaluated inside Dataset.map (graph mode), as numpy."""
    dataset = tf.data.Dataset.from_tensors(tuple(tf.constant(a) for a in args))
    return next(iter(dataset.map(function))).numpy()


def test_evaluation_indices_equal_sample_frame_indices():
    for total, frames, method, stride, clips in GRID:
        expected = sample_frame_indices(total, frames, method=method, stride=stride,
                                        num_clips=clips)
        eager = sample_clip_indices(total, frames, method, stride, num_clips=clips)
        assert eager.dtype == tf.int32 and eager.shape == (clips, frames)
        np.testing.assert_array_equal(eager.numpy(), expected,
                                      err_msg=str((total, frames, method, stride, clips)))


@pytest.mark.parametrize("total,frames,method,stride,clips", GRID[::13])
def test_evaluation_indices_in_dataset_map(total, frames, method, stride, clips):
    graph = in_map(lambda t: sample_clip_indices(t, frames, method, stride, num_clips=clips),
                   np.int64(total))
    np.testing.assert_array_equal(graph, sample_frame_indices(
        total, frames, method=method, stride=stride, num_clips=clips))


def draw(total, frames, method, stride, seed, clips=1):
    return sample_clip_indices(total, frames, method, stride, training=True,
                               seed=tf.constant(seed, tf.int64), num_clips=clips).numpy()


@pytest.mark.parametrize("total,frames", [(16, 8), (17, 8), (40, 4), (301, 8), (8, 8)])
def test_training_uniform_takes_one_frame_of_each_segment(total, frames):
    low = (np.arange(frames) * total) // frames
    high = ((np.arange(frames) + 1) * total) // frames
    seen = set()
    for seed in range(40):
        indices = draw(total, frames, "uniform", 1, [seed, 3], clips=2)
        assert ((indices >= low) & (indices < high)).all(), indices
        seen.update(indices.ravel().tolist())
    # Random within segments: 80 draws per segment reach every frame of a short segment,
    # most of a 37-frame one.
    assert len(seen) >= (total if total <= 40 else 0.75 * total)


@pytest.mark.parametrize("total,frames,stride", [(40, 8, 2), (16, 8, 2), (301, 16, 4)])
def test_training_stride_is_a_window_at_a_random_start(total, frames, stride):
    span = (frames - 1) * stride + 1
    starts = set()
    for seed in range(30):
        indices = draw(total, frames, "stride", stride, [seed, 0])[0]
        assert (np.diff(indices) == stride).all() and 0 <= indices[0] <= total - span
        starts.add(int(indices[0]))
    assert len(starts) > min(5, total - span)


@pytest.mark.parametrize("total,frames,method,stride", [(3, 8, "uniform", 1),
                                                        (10, 8, "stride", 2), (1, 4, "stride", 3)])
def test_training_short_items_loop_with_their_step(total, frames, method, stride):
    step = 1 if method == "uniform" else stride
    for seed in range(10):
        indices = draw(total, frames, method, stride, [seed, 1])[0]
        assert ((indices >= 0) & (indices < total)).all()
        np.testing.assert_array_equal(indices, (indices[0] + step * np.arange(frames)) % total)


def test_training_same_seed_same_clip_new_seed_new_clip():
    first = draw(301, 8, "uniform", 1, [5, 9], clips=3)
    np.testing.assert_array_equal(first, draw(301, 8, "uniform", 1, [5, 9], clips=3))
    assert not np.array_equal(first, draw(301, 8, "uniform", 1, [5, 10], clips=3))
    assert not np.array_equal(first[0], first[1])  # clips drawn independently


@pytest.mark.parametrize("method,stride", [("uniform", 1), ("stride", 3)])
def test_training_indices_in_dataset_map_equal_eager(method, stride):
    graph = in_map(lambda t, s: sample_clip_indices(t, 8, method, stride, training=True,
                                                    seed=s),
                   np.int32(120), np.array([4, 2], np.int64))
    np.testing.assert_array_equal(graph, draw(120, 8, method, stride, [4, 2]))


def test_training_needs_a_seed_and_methods_are_checked():
    with pytest.raises(ValueError, match="seed"):
        sample_clip_indices(10, 4, training=True)
    with pytest.raises(UserError, match="method"):
        sample_clip_indices(10, 4, "dense")
    with pytest.raises(UserError, match="num_frames"):
        sample_clip_indices(10, 0)


@pytest.mark.parametrize("encoding,bands", [("jpeg", 3), ("jpeg", 1), ("png", 4), ("raw", 6)])
def test_decode_frames_decodes_the_chosen_frames(encoding, bands):
    frames = marked_frames(12, bands=bands)
    encoded = tf.constant(encode_frames(frames, encoding))
    indices = np.array([[0, 3, 11], [5, 5, 2]])
    eager = decode_frames(encoded, indices, encoding, channels=bands, height=16, width=20)
    assert eager.shape == (2, 3, 16, 20, bands) and eager.dtype == tf.uint8
    assert frame_indices_of(eager.numpy()).tolist() == indices.tolist()
    if encoding == "raw":
        np.testing.assert_array_equal(eager.numpy(), frames[indices])
    graph = in_map(lambda e, i: decode_frames(e, i, encoding, channels=bands, height=16,
                                              width=20), encoded, indices)
    np.testing.assert_array_equal(graph, eager.numpy())


def test_decode_frames_decodes_only_the_chosen_frames():
    # A corrupt frame that is not chosen is never decoded.
    encoded = encode_frames(marked_frames(4), "jpeg")
    encoded[2] = b"not a jpeg"
    decoded = decode_frames(tf.constant(encoded), [3, 0, 1], "jpeg")
    assert frame_indices_of(decoded.numpy()).tolist() == [3, 0, 1]
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode_frames(tf.constant(encoded), [2], "jpeg")


def test_decode_frames_checks_its_arguments():
    encoded = tf.constant(encode_frames(marked_frames(2), "raw"))
    with pytest.raises(ValueError, match="height"):
        decode_frames(encoded, [0], "raw")
    with pytest.raises(ValueError, match="encoding"):
        decode_frames(encoded, [0], "gif")
