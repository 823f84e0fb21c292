"""Live classification (`predict.py --stream SOURCE`): frames from a camera, a device, a video
file, a FIFO or a network URL, the run's clip window scored every few frames.

SOURCE is a camera index (`0`), a device path (`/dev/video0`), `-` (standard input, a
stream such as MPEG-TS piped in: FFmpeg's `pipe:0`), or anything OpenCV's FFmpeg backend
opens: a file, a FIFO another program writes (e.g. `ffmpeg ... -f mpegts FIFO`), an
`rtsp://`, `http://`, `udp://` or `file:` URL. Each frame goes through the run's own
preprocessing as it arrives (`timeline.read_frames`: resize as prepared, RGB, centre crop)
into a ring buffer of one clip span (the window `predict.py --timeline` slides); every
`every` frames, once the buffer is full, the run's F frames are sampled from it as the
timeline samples a window and the model scores them. Memory is one window of cropped
frames, whatever the stream's length.

A causal MoViNet stream variant (`movinet_a<N>_stream`, `is_stream_model`) takes another path,
`state_predictions`: each preprocessed frame is one step of `MovinetStream` with its carried
states (one frame in, the logits of every frame so far out), and every `every` frames the
current logits are printed. Memory is the states, whatever the stream's length.
"""

import collections
import os
import time

import cv2
import numpy as np

from core.errors import UserError
from data_prep.sampling import sample_frame_indices
from models.movinet import VARIANTS, MovinetStream
from training.scoring import output_activation
from training.timeline import read_frames

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://",
                   "srt://", "file:")


def open_source(source):
    """A cv2.VideoCapture of SOURCE (see the module docstring).

    Raises:
        UserError: SOURCE is not a URL and does not exist, or OpenCV cannot open it.
    """
    text = str(source).strip()
    if text.isdigit():
        capture = cv2.VideoCapture(int(text))
    elif text == "-":
        capture = cv2.VideoCapture("pipe:0", cv2.CAP_FFMPEG)
    elif text.startswith("/dev/video"):
        capture = cv2.VideoCapture(text, cv2.CAP_V4L2)
    else:
        if not text.lower().startswith(NETWORK_SCHEMES) and not os.path.exists(text):
            raise UserError("Expected --stream a camera index, a device, a video file, a FIFO "
                            f"or a URL (rtsp://, http://, ...). Received: --stream {source} "
                            "(no such file)")
        # A FIFO blocks here until its writer starts; FFmpeg then probes the stream's head.
        capture = cv2.VideoCapture(text, cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise UserError(f"OpenCV cannot open --stream {source} (not a camera, video or stream "
                        "its FFmpeg backend reads)")
    return capture


class ClipWindow:
    """The last `window_frames` preprocessed frames and the run's clip sampled from them.

    Args:
        sampling: dict, the run's manifest sampling (method, frames, frame_stride).
        window_frames: int, frames the clip spans (`timeline.clip_span`).
    """

    def __init__(self, sampling, window_frames):
        self.frames = collections.deque(maxlen=window_frames)
        self.inside = sample_frame_indices(window_frames, int(sampling["frames"]),
                                           method=sampling["method"],
                                           stride=int(sampling["frame_stride"]))[0]

    def push(self, frame):
        self.frames.append(frame)

    @property
    def full(self):
        return len(self.frames) == self.frames.maxlen

    def clip(self):
        """uint8 (1, F, crop, crop, band): the run's frames of the window."""
        return np.stack([self.frames[i] for i in self.inside])[None]


def is_stream_model(model):
    """True for a causal MoViNet stream variant, which `state_predictions` steps frame by frame."""
    return model.name in VARIANTS and VARIANTS[model.name][1]


def _preprocessed_frames(capture, manifest, input_shape):
    """The capture's frames through the run's preprocessing (resize as prepared, RGB, crop)."""
    _, crop_size, _, bands = input_shape
    resize = manifest["resize"]
    for frame in read_frames(capture, resize["size"], resize["resize_short"], crop_size):
        if frame.shape[-1] != bands:
            raise UserError(f"Expected a stream with {bands} band(s), as the run was "
                            f"trained on. Received: band={frame.shape[-1]}")
        yield frame


def _prediction(capture, read, probabilities, class_names, top_k, *, started, now, latency_s,
                frames_per_second):
    """One prediction's dict (see `stream_predictions`)."""
    order = probabilities.argsort(kind="stable")[::-1][:top_k]
    position = capture.get(cv2.CAP_PROP_POS_MSEC)
    return {
        "frame": read,
        "time_s": round(position / 1000.0 if position and position > 0 else now - started, 3),
        "top_k": [{"class": class_names[i], "probability": float(probabilities[i])}
                  for i in order],
        "latency_ms": round(latency_s * 1000.0, 2),
        "frames_per_second": round(frames_per_second, 1),
    }


def stream_predictions(capture, manifest, input_shape, probabilities_of, class_names, *,
                       window_frames, every, top_k=5, max_frames=None):
    """Scores the stream of an opened capture until it ends (or `max_frames` frames).

    Args:
        capture: an opened cv2.VideoCapture (`open_source`).
        manifest: dict, the run's data_manifest.json (sampling, resize).
        input_shape: (F, crop, crop, band) the model takes.
        probabilities_of: callable, uint8 clips (1, F, crop, crop, band) -> (1, classes).
        class_names: list of str.
        window_frames: int, the clip span in frames.
        every: int, frames between two predictions.
        max_frames: int or None, stop after this many frames.

    Yields:
        dict per prediction: `frame` (frames read so far), `time_s` (the stream's position:
        the frame's timestamp, or the wall time since the start for live sources),
        `top_k` [{"class", "probability"}], `latency_ms` (the model's call),
        `frames_per_second` (frames read per second since the previous prediction).
    """
    window = ClipWindow(manifest["sampling"], window_frames)
    started = last_time = time.perf_counter()
    read, last_read = 0, 0
    try:
        for frame in _preprocessed_frames(capture, manifest, input_shape):
            window.push(frame)
            read += 1
            if window.full and (read - window_frames) % every == 0:
                clip = window.clip()
                start = time.perf_counter()
                probabilities = np.asarray(probabilities_of(clip))[0]
                now = time.perf_counter()
                yield _prediction(capture, read, probabilities, class_names, top_k,
                                  started=started, now=now, latency_s=now - start,
                                  frames_per_second=(read - last_read) / max(now - last_time,
                                                                             1e-9))
                last_time, last_read = now, read
            if max_frames is not None and read >= max_frames:
                return
    finally:
        capture.release()


def state_predictions(capture, manifest, input_shape, model, class_names, *, every, top_k=5,
                      max_frames=None, multi_label=False):
    """Steps a MoViNet stream model one frame at a time with its states, until the capture ends
    (or `max_frames` frames).

    Args:
        capture: an opened cv2.VideoCapture (`open_source`).
        manifest: dict, the run's data_manifest.json (resize).
        input_shape: (F, crop, crop, band) the model takes (F does not matter here).
        model: a `movinet_a<N>_stream` model (`is_stream_model`).
        class_names: list of str.
        every: int, frames between two predictions (frames `every`, `2 * every`, ...).
        max_frames: int or None, stop after this many frames.
        multi_label: bool, a sigmoid per class instead of the softmax.

    Yields:
        dict per prediction, as `stream_predictions`'s, from the logits of every frame so
        far; `latency_ms` is the mean step (one frame) since the previous prediction.
    """
    stepper = MovinetStream(model)
    states = stepper.init_states(batch_size=1)
    started = last_time = time.perf_counter()
    read, last_read, stepping = 0, 0, 0.0
    try:
        for frame in _preprocessed_frames(capture, manifest, input_shape):
            start = time.perf_counter()
            logits, states = stepper(frame[None, None], states)
            stepping += time.perf_counter() - start
            read += 1
            if read % every == 0:
                probabilities = np.asarray(output_activation(logits, multi_label))[0]
                now = time.perf_counter()
                yield _prediction(capture, read, probabilities, class_names, top_k,
                                  started=started, now=now,
                                  latency_s=stepping / (read - last_read),
                                  frames_per_second=(read - last_read) / max(now - last_time,
                                                                             1e-9))
                last_time, last_read, stepping = now, read, 0.0
            if max_frames is not None and read >= max_frames:
                return
    finally:
        capture.release()


def format_prediction(prediction):
    """One line: position, frame, top-k classes, latency and frames/s."""
    shown = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in prediction["top_k"])
    return (f"{prediction['time_s']:9.2f}s  frame {prediction['frame']:<7d} {shown}  "
            f"({prediction['latency_ms']:.1f} ms, {prediction['frames_per_second']:.1f} "
            "frames/s)")
