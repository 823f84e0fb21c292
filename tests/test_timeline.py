"""Tests for training/timeline.py: where the windows go and which frames each one reads."""

import numpy as np
import pytest

from core.errors import UserError
from training import timeline


@pytest.mark.parametrize("total, window, stride, expected", [
    (16, 8, 4, [0, 4, 8]),
    (17, 8, 4, [0, 4, 8, 9]),  # one more window ends at the last frame
    (8, 8, 4, [0]),
    (3, 8, 4, [0]),  # shorter than a window: one (looping) window
    (10, 4, 10, [0, 6]),
])
def test_window_starts_cover_the_whole_item(total, window, stride, expected):
    assert timeline.window_starts(total, window, stride) == expected


@pytest.mark.parametrize("sampling, span", [
    ({"frames": 4, "frame_stride": 1, "method": "uniform"}, 4),
    ({"frames": 4, "frame_stride": 2, "method": "uniform"}, 8),
    ({"frames": 4, "frame_stride": 3, "method": "stride"}, 10),
])
def test_clip_span(sampling, span):
    assert timeline.clip_span(sampling) == span


def test_window_indices_are_the_runs_sampling_shifted_to_each_window():
    sampling = {"frames": 4, "frame_stride": 2, "method": "stride"}
    starts, indices = timeline.window_indices(20, sampling, 7, 4)
    assert starts == [0, 4, 8, 12, 13]
    np.testing.assert_array_equal(indices[0], [0, 2, 4, 6])
    np.testing.assert_array_equal(indices - indices[:, :1], np.tile([0, 2, 4, 6], (5, 1)))
    np.testing.assert_array_equal(indices[:, 0], starts)
    assert indices.max() == 19


def test_short_item_loops_like_sample_frame_indices():
    sampling = {"frames": 4, "frame_stride": 1, "method": "uniform"}
    _, indices = timeline.window_indices(3, sampling, 8, 4)
    np.testing.assert_array_equal(indices, [[0, 1, 2, 0]])


@pytest.mark.parametrize("window_seconds, stride_seconds, expected", [
    (None, None, (8, 4)),
    (1.0, None, (25, 12)),
    (None, 0.2, (8, 5)),
    (0.32, 0.16, (8, 4)),
])
def test_resolve_window(window_seconds, stride_seconds, expected):
    manifest = {"sampling": {"frames": 8, "frame_stride": 1, "method": "uniform"}}
    assert timeline.resolve_window(manifest, 25.0, window_seconds, stride_seconds) == expected


@pytest.mark.parametrize("window_seconds, stride_seconds", [(0, None), (None, -1.0)])
def test_non_positive_lengths_are_user_errors(window_seconds, stride_seconds):
    with pytest.raises(UserError, match="Received: --window"):
        timeline.check_window_arguments(window_seconds, stride_seconds)


def write_counter_video(path, frames, size=(20, 16)):
    """An MJPG video whose frame t is a flat grey of level 8 * t (decodes to distinct frames)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for t in range(frames):
        writer.write(np.full((size[1], size[0], 3), (8 * t) % 256, np.uint8))
    writer.release()
    return str(path)


@pytest.mark.parametrize("frames, window, stride, method", [
    (17, 8, 4, "uniform"),   # an extra window ends at the last frame
    (16, 8, 4, "uniform"),   # the last regular window ends there itself
    (8, 8, 4, "stride"),     # exactly one window
    (5, 8, 4, "uniform"),    # shorter than a window: one looping window
    (30, 6, 5, "stride"),
])
def test_streamed_windows_equal_the_whole_item_decode(tmp_path, frames, window, stride, method):
    from data_prep.decode import load_clips

    path = write_counter_video(tmp_path / "counter.avi", frames)
    sampling = {"frames": 3, "frame_stride": 2 if method == "stride" else 1, "method": method}
    resize = {"size": 12, "resize_short": 14}
    found = {}

    def select(total):
        found["starts"], indices = timeline.window_indices(total, sampling, window, stride)
        return indices

    total, expected = load_clips(path, select, size=12, resize_short=14)
    expected = timeline.center_crop_numpy(expected, 10)
    batches = list(timeline.video_windows(path, sampling, resize, window, stride, 10,
                                          batch_size=2))
    assert all(len(clips) <= 2 for _, clips, _ in batches)
    assert [s for starts, _, _ in batches for s in starts] == found["starts"]
    np.testing.assert_array_equal(np.concatenate([c for _, c, _ in batches]), expected)
    assert batches[-1][2] == total == frames
