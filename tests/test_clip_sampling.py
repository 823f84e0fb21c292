"""Tests for data_prep.clip_sampling: clip indices drawn in the graph, and decoding only them.

Every behaviour is checked eagerly and inside `tf.data.Dataset.map`."""

import datetime
import itertools

import cv2

import numpy as np
import pytest
import tensorflow as tf

from core.errors import UserError
from data_prep.clip_sampling import (DECODED_DTYPES, day_of_year, decode_frames, decode_masks,
                                     eligible_frames, sample_clip_dates, sample_clip_indices)
from data_prep.sampling import sample_frame_indices
from data_prep.sequence_records import RAW_DTYPES, encode_frames
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


def raw_bytes(frames):
    return [np.ascontiguousarray(f).astype(f.dtype.newbyteorder("<")).tobytes() for f in frames]


@pytest.mark.parametrize("dtype", DECODED_DTYPES)
def test_raw_frames_of_every_dtype_decode_bit_identical(dtype):
    rng = np.random.default_rng(1)
    if np.dtype(dtype).kind == "f":
        frames = (rng.normal(size=(4, 3, 5, 6)) * 1e4).astype(dtype)
        frames[1, 0, 0, 2] = np.nan
    else:
        info = np.iinfo(dtype)
        frames = rng.integers(info.min, info.max, (4, 3, 5, 6), endpoint=True).astype(dtype)
    decoded = decode_frames(tf.constant(raw_bytes(frames)), [3, 1], "raw", channels=6,
                            height=3, width=5, dtype=dtype).numpy()
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded.view(f"u{frames.itemsize}"),
                                  frames[[3, 1]].view(f"u{frames.itemsize}"))


def test_the_decoder_knows_every_stored_dtype():
    assert set(RAW_DTYPES) <= set(DECODED_DTYPES)


@pytest.mark.parametrize("bands", [1, 3, 4])
def test_png_frames_keep_16_bits(bands):
    frames = np.random.default_rng(bands).integers(0, 65536, (3, 4, 5, bands)).astype(np.uint16)
    # OpenCV writes BGR(A): swap as the writer does, so the decoder gives the bands back.
    swap = {1: lambda f: f[..., 0], 3: lambda f: f[..., ::-1],
            4: lambda f: f[..., [2, 1, 0, 3]]}[bands]
    encoded = [cv2.imencode(".png", swap(f))[1].tobytes() for f in frames]
    decoded = decode_frames(tf.constant(encoded), [2, 0], "png", channels=bands,
                            dtype="uint16").numpy()
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, frames[[2, 0]])


@pytest.mark.parametrize("encoding,dtype", [("jpeg", "uint16"), ("png", "float32"),
                                            ("raw", "float64")])
def test_decode_frames_refuses_a_dtype_the_encoding_cannot_hold(encoding, dtype):
    with pytest.raises(ValueError, match="dtype"):
        decode_frames(tf.constant([b""]), [0], encoding, height=1, width=1, dtype=dtype)


def test_decode_masks_reads_pngs_or_says_all_valid():
    masks = np.random.default_rng(0).random((4, 3, 5)) > 0.5
    encoded = tf.constant([cv2.imencode(".png", np.where(m, 255, 0).astype(np.uint8))[1]
                           .tobytes() for m in masks])
    np.testing.assert_array_equal(decode_masks(encoded, [[1, 3]], 3, 5).numpy(),
                                  masks[[[1, 3]]])
    graph = in_map(lambda e, i: decode_masks(e, i, 3, 5), encoded, np.array([2, 0]))
    np.testing.assert_array_equal(graph, masks[[2, 0]])
    none = decode_masks(tf.constant([], tf.string), [0, 1], 3, 5).numpy()
    assert none.shape == (2, 3, 5) and none.all()


@pytest.mark.parametrize("fractions,threshold,expected", [
    ([1.0, 0.2, 0.9, 0.5], 0.0, [0, 1, 2, 3]),
    ([1.0, 0.2, 0.9, 0.5], 0.5, [0, 2, 3]),
    ([0.1, 0.2], 0.9, [0, 1]),  # none passes: every frame stays eligible
])
def test_eligible_frames(fractions, threshold, expected):
    assert eligible_frames(fractions, threshold).numpy().tolist() == expected
    assert in_map(lambda f: eligible_frames(f, threshold),
                  np.array(fractions, np.float32)).tolist() == expected


def test_date_clips_spread_over_the_time_span():
    # Irregular dates: a dense spring, a sparse autumn. By index, 4 frames of a uniform
    # clip fall mostly in spring; by date, they spread over the year.
    dates = np.array([0, 3, 6, 9, 12, 15, 18, 21, 200, 300, 364])
    by_date = sample_clip_dates(dates, 4).numpy()[0]
    assert dates[by_date].tolist() == [21, 200, 200, 300]  # targets 45.5, 136.5, 227.5, 318.5
    assert (dates[sample_clip_indices(len(dates), 4).numpy()[0]] < 200).sum() == 3
    # Candidates restrict the choice; several evaluation clips interleave.
    assert sample_clip_dates(dates, 2, candidates=[0, 1, 10]).numpy().tolist() == [[1, 10]]
    assert sample_clip_dates(dates, 1, num_clips=2).numpy().tolist() == [[7], [9]]  # 91, 273


def test_training_date_clips_are_random_in_their_part_and_seeded():
    dates = np.arange(0, 400, 4)
    seen = set()
    for seed in range(20):
        chosen = sample_clip_dates(dates, 4, training=True,
                                   seed=tf.constant([seed, 1], tf.int64)).numpy()[0]
        # The span 0..396 in 4 parts of 99 days; the nearest date is at most 2 days off.
        assert all(99 * k - 2 <= day <= 99 * (k + 1) + 2 for k, day in enumerate(dates[chosen]))
        seen.add(tuple(chosen))
    assert len(seen) > 10
    again = sample_clip_dates(dates, 4, training=True, seed=tf.constant([3, 1], tf.int64))
    np.testing.assert_array_equal(again, sample_clip_dates(
        dates, 4, training=True, seed=tf.constant([3, 1], tf.int64)))
    graph = in_map(lambda d: sample_clip_dates(d, 4), dates)
    np.testing.assert_array_equal(graph, sample_clip_dates(dates, 4))


def test_day_of_year_matches_the_calendar():
    days = np.arange(-30000, 40000, 7)
    expected = [(datetime.date(1970, 1, 1) + datetime.timedelta(int(d))).timetuple().tm_yday
                for d in days]
    assert day_of_year(days).numpy().tolist() == expected
