"""Prepared data v2: one `tf.train.SequenceExample` per item, every frame stored once.

Format v1 (`data_prep.shards`) stores N fixed clips per item; v2 stores the whole item and
the input graph draws clips while training (`data_prep.clip_sampling`,
`data_prep.sequence_reader`). This module is the one home of the v2 record: its keys, how a
frame is encoded, how a record is written and parsed.

The keys are those of TF Model Garden's video input and DeepMind's DMVR generator (both
follow MediaPipe's media_sequence names), so records either of them writes read here, and
ours read there:

- sequence `image/encoded`: one bytes value per frame, in time order (Model Garden's
  `IMAGE_KEY`, `official/vision/dataloaders/video_input.py`; DMVR
  `examples/generate_from_file.py`).
- context `clip/label/index`: int64 list, the label id (several ids in a multi-label
  dataset; Model Garden's `LABEL_KEY`, parsed there as a `VarLenFeature`).
- context `clip/label/text`: bytes list, the class names of those ids (DMVR), optional.
- context `clip/media_id`: bytes, the item id (MediaPipe); DMVR writes `video/filename`
  instead, which the parser reads when `clip/media_id` is absent.
- context `image/format` (`jpeg`, `png`, `raw`), `image/height`, `image/width`,
  `image/channels`, `image/frame_rate` (frames per second as stored): MediaPipe's names.

Our additions (absent from their records; the parser has a default for each):

- `image/dtype` (bytes, `uint8`): the element type of a `raw` frame, so the "any sensor"
  work can add `uint16` and `float32` without a new format. Raw frames are C-order
  (H, W, band) little-endian bytes.
- `image/frame_count` (int64): frames stored; equals the length of `image/encoded`.
- `clip/item_index` (int64): the item's index in its split (evaluation averages per item).
- `video/height`, `video/width`, `video/frame_rate`, `video/frame_count`: the item as it
  was given, before resampling and resizing (0 when unknown, e.g. a frame folder's fps).

Serialisation is deterministic (`SerializeToString(deterministic=True)`, deterministic
encoders), so a rerun writes byte-identical records. `encode_frames` and
`select_item_frames` never import TensorFlow (they run in `prepare`'s worker processes);
TensorFlow is imported inside the functions that build or parse records.
"""

import dataclasses

import cv2
import numpy as np

from core.errors import UserError
from data_prep.decode import item_kind, load_clips

SEQUENCE_FORMAT_VERSION = 2

FRAME_ENCODINGS = ("jpeg", "png", "raw")
# Band counts each image codec can store (png grey/RGB/RGBA, jpeg grey/RGB).
IMAGE_CODEC_BANDS = {"png": (1, 3, 4), "jpeg": (1, 3)}
# Element types a raw frame can carry; issue 20 ("any sensor") extends this tuple.
RAW_DTYPES = ("uint8",)
JPEG_QUALITY = 90
PNG_COMPRESSION = 3

# Keys shared with TF Model Garden / DMVR / MediaPipe (see the module docstring).
IMAGE_KEY = "image/encoded"
LABEL_INDEX_KEY = "clip/label/index"
LABEL_TEXT_KEY = "clip/label/text"
MEDIA_ID_KEY = "clip/media_id"
FILENAME_KEY = "video/filename"
FORMAT_KEY = "image/format"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"
CHANNELS_KEY = "image/channels"
FRAME_RATE_KEY = "image/frame_rate"
# Ours.
DTYPE_KEY = "image/dtype"
FRAME_COUNT_KEY = "image/frame_count"
ITEM_INDEX_KEY = "clip/item_index"
SOURCE_HEIGHT_KEY = "video/height"
SOURCE_WIDTH_KEY = "video/width"
SOURCE_FRAME_RATE_KEY = "video/frame_rate"
SOURCE_FRAME_COUNT_KEY = "video/frame_count"


def default_encoding(bands):
    """`jpeg` for 1- and 3-band items (the TensorFlow convention), `raw` for any other."""
    return "jpeg" if bands in IMAGE_CODEC_BANDS["jpeg"] else "raw"


def check_encoding(encoding, bands, dtype="uint8"):
    """Raise `UserError` unless `encoding` can store `bands`-band frames of `dtype`."""
    if encoding not in FRAME_ENCODINGS:
        raise UserError(f"Expected `encoding` to be one of {list(FRAME_ENCODINGS)}. "
                        f"Received: encoding={encoding!r}")
    if str(dtype) not in RAW_DTYPES:
        raise UserError(f"Expected frames of dtype {' or '.join(RAW_DTYPES)}. "
                        f"Received: dtype={str(dtype)!r}")
    if encoding in IMAGE_CODEC_BANDS and bands not in IMAGE_CODEC_BANDS[encoding]:
        allowed = " or ".join(map(str, IMAGE_CODEC_BANDS[encoding]))
        raise UserError(f"Expected items with {allowed} bands for encoding {encoding!r}; use "
                        f"encoding 'raw' for {bands}-band items. Received: bands={bands}")


def encode_frame(frame, encoding):
    """One (H, W, band) frame as bytes: a jpeg (quality 90) or png file, or raw C-order bytes.

    RGB(A) in; OpenCV writes BGR(A), so the bands are swapped before encoding and a decoder
    (TensorFlow's, OpenCV's) gives back RGB(A).
    """
    if encoding == "raw":
        return np.ascontiguousarray(frame).astype(frame.dtype.newbyteorder("<")).tobytes()
    bands = frame.shape[2]
    if bands == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    elif bands == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGBA2BGRA)
    else:
        frame = frame[:, :, 0]
    if encoding == "png":
        ok, data = cv2.imencode(".png", frame, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    else:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {encoding} frame")
    return data.tobytes()


def encode_frames(frames, encoding):
    """Every frame of a uint8 (T, H, W, band) array, encoded: a list of T bytes values.

    Raises:
        UserError: the encoding cannot store these frames (see `check_encoding`).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise UserError(f"Expected frames shaped (T, H, W, band). Received: shape={frames.shape}")
    check_encoding(encoding, frames.shape[3], frames.dtype)
    return [encode_frame(frame, encoding) for frame in frames]


def select_item_frames(num_frames_available, source_fps=None, fps=None, max_frames=None):
    """Which of an item's T frames the v2 record keeps (a pure function, like
    `data_prep.sampling.sample_frame_indices`).

    Args:
        num_frames_available: int, frames that decode (T >= 1).
        source_fps: float or None, the item's frame rate (None or 0: unknown).
        fps: float or None, resample to this rate by keeping the frame nearest below each
            time k / fps; never adds frames (a target at or above `source_fps` keeps all).
            Needs `source_fps`; None keeps the rate.
        max_frames: int or None, then keep at most this many, evenly spaced (the centre frame
            of each of `max_frames` equal parts). None keeps them all.

    Returns:
        (int64 array of increasing frame indices in [0, T), the frame rate they are at
        (None when `source_fps` is unknown)).

    Raises:
        UserError: `fps` given for an item of unknown frame rate, or a bad argument.

    Example:

    >>> indices, rate = select_item_frames(10, 25.0, fps=12.5)
    >>> indices.tolist(), rate
    ([0, 2, 4, 6, 8], 12.5)
    """
    total = int(num_frames_available)
    if total < 1:
        raise UserError(f"Expected at least one frame. Received: num_frames_available={total}")
    source_fps = float(source_fps) if source_fps else None
    indices = np.arange(total, dtype=np.int64)
    rate = source_fps
    if fps is not None:
        if fps <= 0:
            raise UserError(f"Expected `fps` > 0. Received: fps={fps!r}")
        if source_fps is None:
            raise UserError("Expected items with a known frame rate to resample them to "
                            f"`fps`. Received: fps={fps!r} for an item without one")
        if fps < source_fps:
            # Frame k of the output shows time k / fps: the source frame shown at that time.
            count = int(np.floor((total - 1) * fps / source_fps)) + 1
            indices = np.floor(np.arange(count) * source_fps / fps + 1e-9).astype(np.int64)
            indices = np.minimum(indices, total - 1)
            rate = float(fps)
    if max_frames is not None:
        if isinstance(max_frames, bool) or int(max_frames) < 1:
            raise UserError(f"Expected `max_frames` >= 1. Received: max_frames={max_frames!r}")
        kept = len(indices)
        if kept > max_frames:
            positions = (2 * np.arange(max_frames) + 1) * kept // (2 * max_frames)
            indices = indices[positions]
            if rate is not None:
                rate = rate * max_frames / kept
    return indices, rate


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """The item as given, before resampling and resizing (0 when unknown)."""

    height: int = 0
    width: int = 0
    frame_rate: float = 0.0
    frame_count: int = 0


def _video_properties(path):
    """(frame rate, height, width) from a video's header (0 where the container has none)."""
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            return 0.0, 0, 0
        rate = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        return (rate if np.isfinite(rate) and rate > 0 else 0.0,
                int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
    finally:
        capture.release()


def read_item_frames(path, *, fps=None, max_frames=None, size=None, resize_short=None,
                     frame_template=None):
    """Decode the frames of one item that a v2 record keeps (runs in a worker; no TF).

    Args:
        path: str, a video file, frame folder or .npy item (`data_prep.decode`).
        fps, max_frames: see `select_item_frames`.
        size, resize_short: the resize of `data_prep.decode.resize_frame`; `resize_short`
            alone keeps the aspect ratio (no crop), the usual v2 setting.
        frame_template: a rawframe folder's `(template, first, total)`, or None.

    Returns:
        (uint8 array (T', H, W, band), frame rate of the kept frames (0.0 when unknown),
        `SourceInfo` of the item as given).

    Raises:
        DecodeError: the item does not decode (the caller skips it).
        UserError: `fps` for an item whose frame rate is unknown.
    """
    rate, height, width = _video_properties(path) if item_kind(path) == "video" and \
        frame_template is None else (0.0, 0, 0)
    chosen = {}

    def select(total):
        chosen["indices"], chosen["rate"] = select_item_frames(total, rate, fps, max_frames)
        return chosen["indices"]

    total, frames = load_clips(path, select, size=size, resize_short=resize_short,
                               frame_template=frame_template)
    if size is None and resize_short is None and not height:
        height, width = frames.shape[1:3]
    source = SourceInfo(height=int(height), width=int(width), frame_rate=float(rate),
                        frame_count=int(total))
    return frames, float(chosen["rate"] or 0.0), source


def sequence_example(encoded_frames, *, frame_shape, encoding, label, item_id, item_index=-1,
                     frame_rate=0.0, dtype="uint8", label_text=None, source=SourceInfo()):
    """One serialised v2 record (`tf.train.SequenceExample`) of a whole item.

    Args:
        encoded_frames: list of T >= 1 bytes values (`encode_frames`), in time order.
        frame_shape: (H, W, band) of every frame.
        encoding: `jpeg`, `png` or `raw`.
        label: int, or a tuple of ints (a multi-label item), stored as `clip/label/index`.
        item_id: str, the item's id (its path under the dataset root).
        item_index: int, its index in the split (-1: unknown).
        frame_rate: float, frames per second as stored (0: unknown).
        dtype: str, the element type of raw frames (`RAW_DTYPES`).
        label_text: None, or the class names of the label ids (`clip/label/text`).
        source: `SourceInfo`, the item before resampling and resizing.

    Returns:
        bytes, deterministic: the same arguments give the same bytes.

    Raises:
        UserError: no frames, or an encoding that cannot hold `frame_shape`.
    """
    import tensorflow as tf

    height, width, bands = (int(value) for value in frame_shape)
    check_encoding(encoding, bands, dtype)
    if not encoded_frames:
        raise UserError(f"Expected at least one frame in item {item_id!r}. Received: 0 frames")
    labels = [int(one) for one in label] if isinstance(label, (tuple, list)) else [int(label)]

    def ints(*values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    def floats(value):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))

    def strings(*values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[v.encode() if isinstance(v, str) else bytes(v) for v in values]))

    context = {
        LABEL_INDEX_KEY: ints(*labels),
        MEDIA_ID_KEY: strings(item_id),
        FORMAT_KEY: strings(encoding),
        DTYPE_KEY: strings(str(dtype)),
        HEIGHT_KEY: ints(height),
        WIDTH_KEY: ints(width),
        CHANNELS_KEY: ints(bands),
        FRAME_RATE_KEY: floats(frame_rate or 0.0),
        FRAME_COUNT_KEY: ints(len(encoded_frames)),
        ITEM_INDEX_KEY: ints(item_index),
        SOURCE_HEIGHT_KEY: ints(source.height),
        SOURCE_WIDTH_KEY: ints(source.width),
        SOURCE_FRAME_RATE_KEY: floats(source.frame_rate),
        SOURCE_FRAME_COUNT_KEY: ints(source.frame_count),
    }
    if label_text is not None:
        context[LABEL_TEXT_KEY] = strings(*label_text)
    frames = tf.train.FeatureList(feature=[strings(data) for data in encoded_frames])
    example = tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list={IMAGE_KEY: frames}))
    return example.SerializeToString(deterministic=True)


def context_features():
    """The `tf.io.parse_single_sequence_example` context spec: every key, with a default
    for those a Model Garden / DMVR record lacks (`clip/label/index` is required)."""
    import tensorflow as tf

    def scalar(dtype, default):
        return tf.io.FixedLenFeature([], dtype, default_value=default)

    return {
        LABEL_INDEX_KEY: tf.io.VarLenFeature(tf.int64),
        LABEL_TEXT_KEY: tf.io.VarLenFeature(tf.string),
        MEDIA_ID_KEY: scalar(tf.string, ""),
        FILENAME_KEY: scalar(tf.string, ""),
        FORMAT_KEY: scalar(tf.string, ""),
        DTYPE_KEY: scalar(tf.string, "uint8"),
        HEIGHT_KEY: scalar(tf.int64, 0),
        WIDTH_KEY: scalar(tf.int64, 0),
        CHANNELS_KEY: scalar(tf.int64, 0),
        FRAME_RATE_KEY: scalar(tf.float32, 0.0),
        FRAME_COUNT_KEY: scalar(tf.int64, -1),
        ITEM_INDEX_KEY: scalar(tf.int64, -1),
        SOURCE_HEIGHT_KEY: scalar(tf.int64, 0),
        SOURCE_WIDTH_KEY: scalar(tf.int64, 0),
        SOURCE_FRAME_RATE_KEY: scalar(tf.float32, 0.0),
        SOURCE_FRAME_COUNT_KEY: scalar(tf.int64, 0),
    }


def parse_sequence_record(serialized):
    """Parse one v2 record (ours, Model Garden's or DMVR's) without decoding any frame.

    Args:
        serialized: scalar string tensor, one serialised `tf.train.SequenceExample`.

    Returns:
        dict of tensors: `frames` string (T,) (the encoded frames), `num_frames` int32
        scalar (T), `labels` int64 (L,) (L = 1 unless multi-label), `label_text` string
        (L,) or (0,), `item_id` string (our `clip/media_id`, else DMVR's `video/filename`),
        `item_index` int64 (-1 when not stored), `format`, `dtype` strings, `height`,
        `width`, `channels` int64 (0 when not stored), `frame_rate` float32, and `source`:
        a dict of `height`, `width`, `frame_rate`, `frame_count`.
    """
    import tensorflow as tf

    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features(),
        # allow_missing: a record without frames (DMVR's generator writes one when ffmpeg
        # yields nothing) has no `image/encoded` list at all; it parses with T = 0.
        {IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)})
    frames = sequence[IMAGE_KEY]
    item_id = tf.where(tf.strings.length(context[MEDIA_ID_KEY]) > 0, context[MEDIA_ID_KEY],
                       context[FILENAME_KEY])
    return {
        "frames": frames,
        "num_frames": tf.shape(frames, out_type=tf.int32)[0],
        "labels": tf.sparse.to_dense(context[LABEL_INDEX_KEY]),
        "label_text": tf.sparse.to_dense(context[LABEL_TEXT_KEY]),
        "item_id": item_id,
        "item_index": context[ITEM_INDEX_KEY],
        "format": context[FORMAT_KEY],
        "dtype": context[DTYPE_KEY],
        "height": context[HEIGHT_KEY],
        "width": context[WIDTH_KEY],
        "channels": context[CHANNELS_KEY],
        "frame_rate": context[FRAME_RATE_KEY],
        "source": {"height": context[SOURCE_HEIGHT_KEY], "width": context[SOURCE_WIDTH_KEY],
                   "frame_rate": context[SOURCE_FRAME_RATE_KEY],
                   "frame_count": context[SOURCE_FRAME_COUNT_KEY]},
    }
