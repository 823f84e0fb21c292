"""Tests for data_prep.sampling.sample_frame_indices against slow, obviously right loops."""

import math

import numpy as np
import pytest

from core.errors import UserError
from data_prep.sampling import sample_frame_indices


def reference_indices(total, num_frames, method, stride, num_clips):
    """The documented rule, written out one index at a time with floats."""
    step = 1 if method == "uniform" else stride
    span = (num_frames - 1) * step + 1
    clips = []
    for c in range(num_clips):
        if total < span:
            start = math.floor(c * total / num_clips)
            clips.append([(start + i * step) % total for i in range(num_frames)])
        elif method == "uniform":
            clips.append([math.floor((i + (c + 0.5) / num_clips) * total / num_frames + 1e-9)
                          for i in range(num_frames)])
        else:
            start = math.floor((c + 0.5) * (total - span + 1) / num_clips + 1e-9)
            clips.append([start + i * stride for i in range(num_frames)])
    return np.array(clips)


@pytest.mark.parametrize("method", ["uniform", "stride"])
@pytest.mark.parametrize("total", [1, 3, 7, 16, 17, 100, 301])
@pytest.mark.parametrize("num_frames,stride,num_clips",
                         [(1, 1, 1), (4, 2, 1), (8, 1, 3), (16, 4, 2), (5, 3, 10)])
def test_matches_reference(method, total, num_frames, stride, num_clips):
    got = sample_frame_indices(total, num_frames, method=method, stride=stride,
                               num_clips=num_clips)
    assert got.shape == (num_clips, num_frames)
    assert got.dtype == np.int64
    assert got.min() >= 0 and got.max() < total
    np.testing.assert_array_equal(got, reference_indices(total, num_frames, method, stride,
                                                          num_clips))


def test_uniform_spreads_over_whole_item():
    np.testing.assert_array_equal(sample_frame_indices(100, 4), [[12, 37, 62, 87]])


def test_uniform_clips_interleave_in_time_order():
    clips = sample_frame_indices(100, 4, num_clips=2)
    np.testing.assert_array_equal(clips, [[6, 31, 56, 81], [18, 43, 68, 93]])


def test_stride_takes_every_kth_frame_centred():
    np.testing.assert_array_equal(sample_frame_indices(20, 4, method="stride", stride=3),
                                  [[5, 8, 11, 14]])


def test_stride_clips_are_spaced_over_the_item():
    clips = sample_frame_indices(100, 4, method="stride", stride=2, num_clips=3)
    assert list(clips[:, 0]) == [15, 47, 78]
    assert (np.diff(clips, axis=1) == 2).all()


@pytest.mark.parametrize("method,stride", [("uniform", 1), ("stride", 2)])
def test_short_items_loop(method, stride):
    clips = sample_frame_indices(3, 5, method=method, stride=stride, num_clips=1)
    expected = [0, 1, 2, 0, 1] if method == "uniform" else [0, 2, 1, 0, 2]
    np.testing.assert_array_equal(clips, [expected])


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_frames_available=0, num_frames=4), "num_frames_available=0"),
    (dict(num_frames_available=10, num_frames=0), "num_frames=0"),
    (dict(num_frames_available=10, num_frames=4, stride=0), "stride=0"),
    (dict(num_frames_available=10, num_frames=4, num_clips=-1), "num_clips=-1"),
    (dict(num_frames_available=10, num_frames=2.5), "num_frames=2.5"),
    (dict(num_frames_available=10, num_frames=4, method="random"), "method='random'"),
])
def test_bad_arguments_raise_user_error(kwargs, message):
    with pytest.raises(UserError, match=f"Received: {message}"):
        sample_frame_indices(**kwargs)
