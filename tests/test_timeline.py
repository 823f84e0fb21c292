"""Tests for training/timeline.py: where the windows go and which frames each one reads."""

import os

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


# Runs in a fresh interpreter (no TensorFlow: timeline needs none): the whole --timeline path
# of one video with a stand-in model, then the peak resident memory.
MEMORY_PROBE = """
import resource, sys
import os

import numpy as np
from training.timeline import item_timeline
manifest = {"sampling": {"frames": 8, "frame_stride": 1, "method": "uniform"},
            "resize": {"size": 96, "resize_short": None}}
scores = lambda clips: np.stack([clips.mean(axis=(1, 2, 3, 4)), clips.std(axis=(1, 2, 3, 4))], 1)
windows, _ = item_timeline(sys.argv[1], manifest, (8, 96, 96, 3), scores, ["a", "b"])
print(len(windows), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_noise_video(path, seconds, fps=5, size=96):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (size, size, 3), np.uint8) for _ in range(16)]
    for t in range(seconds * fps):
        writer.write(frames[t % 16])
    writer.release()
    return str(path)


@pytest.mark.slow
def test_timeline_memory_does_not_grow_with_the_videos_length(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    peaks = {}
    for minutes in (1, 10):
        video = write_noise_video(tmp_path / f"{minutes}min.avi", 60 * minutes)
        completed = subprocess.run([sys.executable, "-c", MEMORY_PROBE, video], cwd=root,
                                   env={**os.environ, "PYTHONPATH": root},
                                   capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, completed.stderr[-2000:]
        windows, peak_kb = map(int, completed.stdout.split())
        assert windows == (60 * minutes * 5 - 8) // 4 + 1  # every window was scored
        peaks[minutes] = peak_kb
    assert peaks[10] <= 1.5 * peaks[1], peaks


def test_a_dated_sensor_item_has_windows_in_dates_over_its_stored_values(tmp_path):
    """A uint16 item of a v2 run with dates: windows slide over the frames in date order,
    their clips keep the stored dtype, and each window names its first and last date."""
    from sequence_fixtures import dated_uint16_run_items

    items, run_manifest = dated_uint16_run_items(tmp_path, clip_frames=2)
    path, (array, days) = next(iter(items.items()))
    seen = []

    def probabilities_of(clips):
        seen.append(clips)
        return np.tile([[0.25, 0.75]], (len(clips), 1))

    windows, _ = timeline.item_timeline(path, run_manifest, (2, 8, 8, 3), probabilities_of,
                                ["low", "high"], top_k=1, window_seconds=3 / 25,
                                stride_seconds=2 / 25)
    dates = [f"2024-03-{10 + day:02d}" for day in sorted(days.tolist())]
    assert [(w["start_date"], w["end_date"]) for w in windows] == [
        (dates[0], dates[2]), (dates[2], dates[4]), (dates[4], dates[6])]
    assert all(clips.dtype == np.uint16 for clips in seen)
    assert windows[0]["top_k"] == [{"class": "high", "probability": 0.75}]
