"""Long videos: a run's clip window slid over an item, the top-k classes per window.

A window covers `window_frames` consecutive frames (by default the run's clip span: with
`sampling: stride`, (F - 1) * K + 1 frames; with `uniform`, F * K frames, K the frame
stride); its F frames are chosen inside the window by the run's own
`sample_frame_indices`, and the whole item is decoded once by the run's own `load_clips`
(resize as prepared) and centre-cropped as evaluation does (`views.center_crop_numpy`), so
a window is preprocessed exactly as a predicted clip. Windows start every `stride_frames`
(default half a window); when the last regular window stops short of the end, one more
window ends at the last frame, so the end of the video is always scored.

A video is decoded as a stream (`video_windows`): frames pass through a ring buffer of one
window, each window is cut out when its last frame arrives and scored in batches of
`batch_size`, so memory holds one window of frames and one batch of clips whatever the
video's length (an hour of video as much as a minute). Frame folders and .npy arrays,
already whole on disk or in memory, are read by `load_clips` as before.
"""

import collections


import cv2
import numpy as np

from core.errors import UserError
from data_prep.dates import iso_date
from data_prep.decode import DecodeError, item_kind, load_clips, resize_frame
from data_prep.sampling import sample_frame_indices
from training.prepared_data import extra_input_bands
from training.views import (as_run_inputs, center_crop_numpy, check_bands, is_sensor_run_item,
                            read_whole_item)

DEFAULT_FPS = 25.0  # frame folders and .npy arrays carry no rate


def clip_span(sampling):
    """Frames one clip of the run covers (see the module docstring)."""
    frames, stride = int(sampling["frames"]), int(sampling["frame_stride"])
    if sampling["method"] == "stride":
        return (frames - 1) * stride + 1
    return frames * stride


def window_starts(total, window_frames, stride_frames):
    """First frame of each window over `total` frames, in order.

    >>> window_starts(16, 8, 4)
    [0, 4, 8]
    >>> window_starts(11, 8, 4)
    [0, 3]
    >>> window_starts(5, 8, 4)
    [0]
    """
    if total <= window_frames:
        return [0]
    starts = list(range(0, total - window_frames + 1, stride_frames))
    if starts[-1] + window_frames < total:
        starts.append(total - window_frames)
    return starts


def window_indices(total, sampling, window_frames, stride_frames):
    """(starts, int64 (windows, F) frame indices) for `load_clips`; short items loop as
    `sample_frame_indices` loops them."""
    starts = window_starts(total, window_frames, stride_frames)
    inside = sample_frame_indices(min(total, window_frames), int(sampling["frames"]),
                                  method=sampling["method"],
                                  stride=int(sampling["frame_stride"]))[0]
    return starts, np.asarray([start + inside for start in starts], np.int64)


def frames_per_second(path):
    """The video's frame rate (DEFAULT_FPS for frame folders, arrays or an unknown rate)."""
    if item_kind(path) != "video":
        return DEFAULT_FPS
    capture = cv2.VideoCapture(path)
    fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    capture.release()
    return float(fps) if fps and np.isfinite(fps) and fps > 0 else DEFAULT_FPS


def check_window_arguments(window_seconds=None, stride_seconds=None):
    """Raises UserError unless each given length (seconds) is positive."""
    for name, value in (("--window-seconds", window_seconds),
                        ("--window-stride", stride_seconds)):
        if value is not None and not value > 0:
            raise UserError(f"Expected {name} > 0 (seconds). Received: {name} {value}")


def resolve_window(manifest, fps, window_seconds=None, stride_seconds=None):
    """(window_frames, stride_frames) from seconds, or the run's clip span and half of it.

    Raises:
        UserError: a given length is not positive.
    """
    check_window_arguments(window_seconds, stride_seconds)
    window = (max(1, round(window_seconds * fps)) if window_seconds is not None
              else clip_span(manifest["sampling"]))
    stride = (max(1, round(stride_seconds * fps)) if stride_seconds is not None
              else max(1, window // 2))
    return window, stride


def item_timeline(path, manifest, input_shape, probabilities_of, class_names, *, top_k=5,
                  window_seconds=None, stride_seconds=None, batch_size=16):
    """The item's windows with their top-k classes.

    Args:
        path: str, a video file, frame folder or .npy array.
        manifest: dict, the run's data_manifest.json.
        input_shape: (F, crop, crop, band) the model takes.
        probabilities_of: callable, uint8 clips (N, F, crop, crop, band) -> (N, classes)
            softmax (`scoring.clip_probabilities_function`).
        class_names: list of str.
        top_k: int, classes kept per window.
        window_seconds, stride_seconds: float or None (see `resolve_window`).

    Returns:
        (timeline, probabilities): timeline a list of `{"start_s", "end_s", "top_k":
        [{"class", "probability"}]}` in time order, probabilities float (windows, classes).
        A dated item's windows (a sensor item of a v2 run with dates) also have
        `"start_date"` and `"end_date"` (ISO dates of their first and last frames).

    Raises:
        DecodeError: the item does not decode.
        UserError: a bad window length or a band count that differs from the model's.
    """
    frames, crop_size, _, bands = input_shape
    fps = frames_per_second(path)
    window, stride = resolve_window(manifest, fps, window_seconds, stride_seconds)
    sampling, resize = manifest["sampling"], manifest["resize"]
    dates = None  # days since 1970 of each frame, for a dated sensor item
    if item_kind(path) == "video":
        starts, probabilities, total = [], [], 0
        for batch_starts, clips, total in video_windows(path, sampling, resize, window, stride,
                                                        crop_size, batch_size):
            check_bands(clips, bands, path)
            starts.extend(batch_starts)
            probabilities.append(np.asarray(probabilities_of(clips)))
        probabilities = np.concatenate(probabilities)
    elif is_sensor_run_item(path, manifest):
        # Values, masks and date order as prepare stored them; windows over stored frames.
        item = read_whole_item(path, manifest, resize["size"], resize["resize_short"])
        total = len(item.frames)
        starts, indices = window_indices(total, sampling, window, stride)
        valid = np.ones(item.frames.shape[:3], bool) if item.masks is None else item.masks
        clips = center_crop_numpy(item.frames[indices], crop_size)
        valid = center_crop_numpy(valid[indices][..., None], crop_size)[..., 0]
        check_bands(clips, bands - extra_input_bands(manifest["clip_inputs"]), path)
        clips = np.ascontiguousarray(as_run_inputs(clips, manifest, path, valid))
        probabilities = np.concatenate([
            np.asarray(probabilities_of(clips[i:i + batch_size]))
            for i in range(0, len(clips), batch_size)])
        dates = item.dates
    else:
        found = {}

        def select(total):
            found["starts"], indices = window_indices(total, sampling, window, stride)
            return indices

        total, clips = load_clips(path, select, size=resize["size"],
                                  resize_short=resize["resize_short"])
        check_bands(clips, bands, path)
        clips = np.ascontiguousarray(center_crop_numpy(clips, crop_size))
        probabilities = np.concatenate([
            np.asarray(probabilities_of(clips[i:i + batch_size]))
            for i in range(0, len(clips), batch_size)])
        starts = found["starts"]
    timeline = []
    for start, row in zip(starts, probabilities):
        order = row.argsort(kind="stable")[::-1][:top_k]
        end = min(start + window, total)
        entry = {"start_s": round(start / fps, 3), "end_s": round(end / fps, 3)}
        if dates is not None:  # acquisition dates say more than frames at 25 fps
            entry.update(start_date=iso_date(dates[start]), end_date=iso_date(dates[end - 1]))
        entry["top_k"] = [{"class": class_names[i], "probability": float(row[i])}
                          for i in order]
        timeline.append(entry)
    return timeline, probabilities


def read_frames(capture, size, resize_short, crop_size=None):
    """The frames of an opened cv2.VideoCapture, one at a time, as the run's preparation
    makes them (resize as prepared, RGB) and centre-cropped to `crop_size` if given."""
    while True:
        ok, frame = capture.read()
        if not ok or frame is None:
            return
        frame = cv2.cvtColor(resize_frame(frame, size, resize_short), cv2.COLOR_BGR2RGB)
        yield frame if crop_size is None else center_crop_numpy(frame, crop_size)


def video_windows(path, sampling, resize, window_frames, stride_frames, crop_size,
                  batch_size=16):
    """A video's timeline windows, decoded as a stream, in batches.

    Yields:
        (starts: list of int, uint8 clips (n <= batch_size, F, crop, crop, band), frames
        decoded so far); the last batch's count is the video's frame total. The windows and
        their frames are exactly `window_indices(total, ...)`'s, found without knowing the
        total in advance: a regular window (start a multiple of the stride) is complete when
        its last frame arrives; the extra window ending at the last frame, or the one
        looping window of a video shorter than a window, comes from the ring buffer at the end.

    Raises:
        DecodeError: the file does not open or no frame decodes.
    """
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise DecodeError("not a video OpenCV/FFmpeg can open")
    inside = sample_frame_indices(window_frames, int(sampling["frames"]),
                                  method=sampling["method"],
                                  stride=int(sampling["frame_stride"]))[0]
    ring = collections.deque(maxlen=window_frames)
    starts, clips, total, last_start = [], [], 0, None
    try:
        for frame in read_frames(capture, resize["size"], resize["resize_short"], crop_size):
            ring.append(frame)
            total += 1
            start = total - window_frames
            if start >= 0 and start % stride_frames == 0:
                starts.append(start)
                clips.append(np.stack([ring[i] for i in inside]))
                last_start = start
                if len(clips) == batch_size:
                    yield starts, np.stack(clips), total
                    starts, clips = [], []
    finally:
        capture.release()
    if total == 0:
        raise DecodeError("no frame decodes (truncated or not a video)")
    if total < window_frames:  # one window over the whole video, looping as sampling loops
        looped = window_indices(total, sampling, window_frames, stride_frames)[1][0]
        starts.append(0)
        clips.append(np.stack([ring[i] for i in looped]))
    elif last_start + window_frames < total:  # one more window ends at the last frame
        starts.append(total - window_frames)
        clips.append(np.stack([ring[i] for i in inside]))
    if clips:
        yield starts, np.stack(clips), total
