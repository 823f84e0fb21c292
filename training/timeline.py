"""Long videos: a run's clip window slid over an item, the top-k classes per window.

A window covers `window_frames` consecutive frames (by default the run's clip span: with
`sampling: stride`, (F - 1) * K + 1 frames; with `uniform`, F * K frames, K the frame
stride); its F frames are chosen inside the window by the run's own
`sample_frame_indices`, and the whole item is decoded once by the run's own `load_clips`
(resize as prepared) and centre-cropped as evaluation does (`views.center_crop_numpy`), so
a window is preprocessed exactly as a predicted clip. Windows start every `stride_frames`
(default half a window); when the last regular window stops short of the end, one more
window ends at the last frame, so the end of the video is always scored.
"""

import cv2
import numpy as np

from data_prep.decode import item_kind, load_clips
from core.errors import UserError
from data_prep.sampling import sample_frame_indices
from training.views import center_crop_numpy, check_bands

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

    Raises:
        DecodeError: the item does not decode.
        UserError: a bad window length or a band count that differs from the model's.
    """
    frames, crop_size, _, bands = input_shape
    fps = frames_per_second(path)
    window, stride = resolve_window(manifest, fps, window_seconds, stride_seconds)
    sampling, resize = manifest["sampling"], manifest["resize"]
    found = {}

    def select(total):
        found["starts"], indices = window_indices(total, sampling, window, stride)
        found["total"] = total
        return indices

    _, clips = load_clips(path, select, size=resize["size"], resize_short=resize["resize_short"])
    check_bands(clips, bands, path)
    clips = np.ascontiguousarray(center_crop_numpy(clips, crop_size))
    probabilities = np.concatenate([
        np.asarray(probabilities_of(clips[i:i + batch_size]))
        for i in range(0, len(clips), batch_size)])
    total = found["total"]
    timeline = []
    for start, row in zip(found["starts"], probabilities):
        order = row.argsort(kind="stable")[::-1][:top_k]
        timeline.append({
            "start_s": round(start / fps, 3),
            "end_s": round(min(start + window, total) / fps, 3),
            "top_k": [{"class": class_names[i], "probability": float(row[i])} for i in order],
        })
    return timeline, probabilities
