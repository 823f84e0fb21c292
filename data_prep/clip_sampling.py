"""Clips drawn in the input graph from a whole stored item (prepared data v2).

Two pure TensorFlow functions, usable eagerly and inside `tf.data.Dataset.map`:

- `sample_clip_indices` picks the frame indices of one or more clips from the item's length.
  In evaluation it returns exactly `data_prep.sampling.sample_frame_indices` (the v1 rule,
  the same integer arithmetic); in training it draws them with `tf.random.stateless_*`, so
  the same seed gives the same clips.
- `decode_frames` decodes only those frames of the item's encoded frame list.
"""

import tensorflow as tf

from core.errors import UserError
from data_prep.sampling import SAMPLING_METHODS, positive_int
from data_prep.sequence_records import FRAME_ENCODINGS, RAW_DTYPES


def sample_clip_indices(num_frames_available, num_frames, method="uniform", stride=1,
                        training=False, seed=None, num_clips=1):
    """Frame indices of `num_clips` clips of `num_frames` frames of an item of T frames.

    Args:
        num_frames_available: int or int scalar tensor, the item's frame count T >= 1.
        num_frames: int, frames per clip F.
        method: `"uniform"` (F equal segments, one frame from each) or `"stride"` (every
            `stride`-th frame of a window of (F - 1) * stride + 1 frames). Defaults to
            `"uniform"`.
        stride: int, step K of `"stride"`. Defaults to 1.
        training: bool. False: the deterministic clips of `sample_frame_indices` (uniform:
            the centre of each segment for one clip, interleaved offsets for several;
            stride: the `num_clips` evenly spaced windows, one clip the centre window).
            True: uniform takes a random frame of each segment, stride a window at a random
            start; each of the `num_clips` clips is drawn independently.
        seed: int32/int64 tensor shaped (2,), the stateless seed (required in training).
        num_clips: int, clips C. Defaults to 1.

    Short items loop as in `sample_frame_indices`: when T < F (uniform) or T < (F - 1) * K
    + 1 (stride), a clip starts at frame floor(c * T / C) (training: a random start in
    [0, T)) and keeps its step, wrapping to frame 0 (index modulo T).

    Returns:
        int32 tensor shaped (num_clips, num_frames), values in [0, T), in time order within
        each clip (except where a short item wraps).

    Raises:
        UserError: a non-positive count, an unknown method.
        ValueError: `training` without a seed.

    Example:

    >>> sample_clip_indices(10, 4).numpy().tolist()
    [[1, 3, 6, 8]]
    """
    num_frames = positive_int(num_frames, "num_frames")
    stride = positive_int(stride, "stride")
    num_clips = positive_int(num_clips, "num_clips")
    if method not in SAMPLING_METHODS:
        raise UserError(f"Expected `method` to be one of {list(SAMPLING_METHODS)}. "
                        f"Received: method={method!r}")
    if training and seed is None:
        raise ValueError("Expected a stateless `seed` (int tensor shaped (2,)) in training. "
                         "Received: seed=None")
    total = tf.cast(tf.convert_to_tensor(num_frames_available), tf.int64)
    tf.debugging.assert_positive(total, message="an item needs at least one frame")
    step = 1 if method == "uniform" else stride
    span = (num_frames - 1) * step + 1
    clip = tf.range(num_clips, dtype=tf.int64)[:, None]
    frame = tf.range(num_frames, dtype=tf.int64)[None, :]
    if training:
        # One draw per clip and frame; the clip's first column also places windows.
        fraction = tf.random.stateless_uniform((num_clips, num_frames), seed, dtype=tf.float64)
        short_starts = _scaled(fraction[:, :1], total)
    else:
        short_starts = (clip * total) // num_clips
    short = (short_starts + frame * step) % total
    if method == "uniform":
        if training:
            low = (frame * total) // num_frames
            length = ((frame + 1) * total) // num_frames - low
            full = low + _scaled(fraction, length)
        else:
            full = ((2 * frame * num_clips + 2 * clip + 1) * total) // (2 * num_clips * num_frames)
    else:
        positions = tf.maximum(total - span + 1, 1)
        starts = _scaled(fraction[:, :1], positions) if training else \
            ((2 * clip + 1) * positions) // (2 * num_clips)
        full = starts + frame * stride
    indices = tf.where(total < span, short, tf.broadcast_to(full, short.shape))
    return tf.cast(indices, tf.int32)


def _scaled(fraction, count):
    """floor(fraction * count) for fraction in [0, 1), kept below `count` (int64)."""
    value = tf.cast(tf.floor(fraction * tf.cast(count, tf.float64)), tf.int64)
    return tf.minimum(value, tf.maximum(count - 1, 0))


def decode_frames(encoded_frames, indices, encoding, *, channels=3, height=None, width=None,
                  dtype="uint8"):
    """Decode the frames `indices` of an item's encoded frames, and only those.

    Args:
        encoded_frames: string tensor (T,), one encoded frame each (a v2 record's
            `image/encoded`).
        indices: int tensor of any shape S (e.g. (F,) or (C, F)), values in [0, T).
        encoding: `"jpeg"`, `"png"` or `"raw"` (a Python string: one dataset, one codec).
        channels: int, bands of the output (jpeg 1 or 3, png 1, 3 or 4, raw any).
        height, width: int or int scalar tensors, the frame size; required for raw (the
            record's `image/height`, `image/width`), ignored otherwise.
        dtype: str, element type of raw frames (`RAW_DTYPES`). Defaults to `"uint8"`.

    Returns:
        uint8 tensor shaped S + (H, W, channels).

    Raises:
        ValueError: an unknown encoding or dtype, or raw without height and width.
    """
    if encoding not in FRAME_ENCODINGS:
        raise ValueError(f"Expected `encoding` to be one of {list(FRAME_ENCODINGS)}. "
                         f"Received: encoding={encoding!r}")
    if dtype not in RAW_DTYPES:
        raise ValueError(f"Expected `dtype` to be one of {list(RAW_DTYPES)}. "
                         f"Received: dtype={dtype!r}")
    indices = tf.convert_to_tensor(indices)
    chosen = tf.gather(encoded_frames, tf.reshape(indices, [-1]))
    if encoding == "raw":
        if height is None or width is None:
            raise ValueError("Expected `height` and `width` to decode raw frames. "
                             f"Received: height={height!r}, width={width!r}")
        values = tf.io.decode_raw(chosen, tf.dtypes.as_dtype(dtype), little_endian=True)
        frames = tf.reshape(values, tf.stack([-1, tf.cast(height, tf.int32),
                                              tf.cast(width, tf.int32), channels]))
    else:
        if encoding == "jpeg":
            def decode(data):
                return tf.io.decode_jpeg(data, channels=channels)
        else:
            def decode(data):
                return tf.io.decode_png(data, channels=channels, dtype=tf.uint8)
        frames = tf.map_fn(decode, chosen,
                           fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8))
    frames = tf.reshape(frames, tf.concat([tf.shape(indices), tf.shape(frames)[1:]], axis=0))
    return tf.ensure_shape(frames, indices.shape.concatenate([None, None, channels]))
