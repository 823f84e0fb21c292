"""Clips drawn in the input graph from a whole stored item (prepared data v2).

Two pure TensorFlow functions, usable eagerly and inside `tf.data.Dataset.map`:

- `sample_clip_indices` picks the frame indices of one or more clips from the item's length.
  In evaluation it returns exactly `data_prep.sampling.sample_frame_indices` (the v1 rule,
  the same integer arithmetic); in training it draws them with `tf.random.stateless_*`, so
  the same seed gives the same clips.
- `decode_frames` decodes only those frames of the item's encoded frame list, in the
  item's stored dtype (`DECODED_DTYPES`), and `decode_masks` their validity masks.

For series with clouds and irregular acquisitions (issue 20): `eligible_frames` keeps the
frames valid enough to be sampled, `sample_clip_dates` spreads a clip's frames over the
item's time span rather than over its frame indices, and `day_of_year` turns stored dates
(days since 1970-01-01) into the day of the year, a seasonal input.
"""

import tensorflow as tf

from core.errors import UserError
from data_prep.sampling import SAMPLING_METHODS, positive_int
from data_prep.sequence_records import FRAME_ENCODINGS

# Every dtype a v2 record may store (the issue-20 contract's `RAW_DTYPES`); png also holds
# uint16, jpeg only uint8.
DECODED_DTYPES = ("uint8", "uint16", "int16", "float16", "float32")
_PNG_DTYPES = ("uint8", "uint16")


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
        tensor of `dtype` shaped S + (H, W, channels), the stored values unchanged.

    Raises:
        ValueError: an unknown encoding or dtype, a dtype the encoding cannot hold (jpeg:
            uint8; png: uint8, uint16), or raw without height and width.
    """
    if encoding not in FRAME_ENCODINGS:
        raise ValueError(f"Expected `encoding` to be one of {list(FRAME_ENCODINGS)}. "
                         f"Received: encoding={encoding!r}")
    if dtype not in DECODED_DTYPES:
        raise ValueError(f"Expected `dtype` to be one of {list(DECODED_DTYPES)}. "
                         f"Received: dtype={dtype!r}")
    allowed = {"jpeg": ("uint8",), "png": _PNG_DTYPES}.get(encoding, DECODED_DTYPES)
    if dtype not in allowed:
        raise ValueError(f"Expected a dtype among {list(allowed)} for {encoding} frames. "
                         f"Received: dtype={dtype!r}")
    tf_dtype = tf.dtypes.as_dtype(dtype)
    indices = tf.convert_to_tensor(indices)
    chosen = tf.gather(encoded_frames, tf.reshape(indices, [-1]))
    if encoding == "raw":
        if height is None or width is None:
            raise ValueError("Expected `height` and `width` to decode raw frames. "
                             f"Received: height={height!r}, width={width!r}")
        values = tf.io.decode_raw(chosen, tf_dtype, little_endian=True)
        frames = tf.reshape(values, tf.stack([-1, tf.cast(height, tf.int32),
                                              tf.cast(width, tf.int32), channels]))
    else:
        if encoding == "jpeg":
            def decode(data):
                return tf.io.decode_jpeg(data, channels=channels)
        else:
            def decode(data):
                return tf.io.decode_png(data, channels=channels, dtype=tf_dtype)
        frames = tf.map_fn(decode, chosen,
                           fn_output_signature=tf.TensorSpec([None, None, channels], tf_dtype))
    frames = tf.reshape(frames, tf.concat([tf.shape(indices), tf.shape(frames)[1:]], axis=0))
    return tf.ensure_shape(frames, indices.shape.concatenate([None, None, channels]))


def decode_masks(encoded_masks, indices, height, width):
    """The validity masks of the frames `indices` (a v2 record's `image/mask/encoded`).

    Args:
        encoded_masks: string tensor (T,) of 1-band png masks (255 valid, 0 invalid), or
            (0,) when the item stores none (then every pixel is valid).
        indices: int tensor of any shape S, values in [0, T).
        height, width: int or int scalar tensors, the frame size.

    Returns:
        bool tensor shaped S + (H, W), True where the pixel is valid.
    """
    indices = tf.convert_to_tensor(indices)
    flat = tf.reshape(indices, [-1])
    size = tf.stack([tf.size(flat), tf.cast(height, tf.int32), tf.cast(width, tf.int32)])

    def decoded():
        chosen = tf.gather(encoded_masks, flat)
        masks = tf.map_fn(lambda data: tf.io.decode_png(data, channels=1)[..., 0], chosen,
                          fn_output_signature=tf.TensorSpec([None, None], tf.uint8))
        return tf.reshape(masks > 0, size)

    masks = tf.cond(tf.size(encoded_masks) > 0, decoded, lambda: tf.ones(size, tf.bool))
    masks = tf.reshape(masks, tf.concat([tf.shape(indices), size[1:]], axis=0))
    return tf.ensure_shape(masks, indices.shape.concatenate([None, None]))


def eligible_frames(valid_fraction, min_valid_fraction=0.0):
    """The indices of the frames that may be sampled: those whose valid fraction is at least
    `min_valid_fraction`, or every frame when none is (a clip is still drawn).

    Args:
        valid_fraction: float tensor (T,), one value per frame (a record's
            `image/valid_fraction`).
        min_valid_fraction: float in [0, 1]. 0 keeps every frame.

    Returns:
        int32 tensor (T',), increasing, T' >= 1 for T >= 1.

    Example:

    >>> eligible_frames([1.0, 0.2, 0.9, 0.5], 0.6).numpy().tolist()
    [0, 2]
    """
    valid_fraction = tf.cast(tf.convert_to_tensor(valid_fraction), tf.float32)
    everything = tf.range(tf.size(valid_fraction), dtype=tf.int32)
    if not min_valid_fraction:
        return everything
    passing = tf.cast(tf.where(valid_fraction >= min_valid_fraction)[:, 0], tf.int32)
    return tf.cond(tf.size(passing) > 0, lambda: passing, lambda: everything)


def sample_clip_dates(dates, num_frames, *, training=False, seed=None, num_clips=1,
                      candidates=None):
    """Frame indices of clips whose F frames are spread over the item's time span by date.

    The span [first date, last date] of the candidate frames is cut into F equal parts;
    each clip frame is the candidate acquired nearest to a target date in its part (ties: the
    earlier frame). In evaluation the targets are the parts' interleaved centres, as
    `sample_clip_indices` places uniform clips; in training a random date in each part.

    Args:
        dates: int tensor (T,), days since 1970-01-01, one per stored frame.
        num_frames: int, frames per clip F.
        training, seed, num_clips: as `sample_clip_indices`.
        candidates: int tensor (T',) of frame indices that may be chosen (see
            `eligible_frames`); None: every frame.

    Returns:
        int32 tensor (num_clips, num_frames), values in [0, T).

    Example:

    >>> sample_clip_dates([0, 1, 2, 3, 40, 80], 3).numpy().tolist()
    [[3, 4, 5]]
    """
    num_frames = positive_int(num_frames, "num_frames")
    num_clips = positive_int(num_clips, "num_clips")
    if training and seed is None:
        raise ValueError("Expected a stateless `seed` (int tensor shaped (2,)) in training. "
                         "Received: seed=None")
    dates = tf.cast(tf.convert_to_tensor(dates), tf.float64)
    if candidates is None:
        candidates = tf.range(tf.size(dates), dtype=tf.int32)
    candidates = tf.cast(candidates, tf.int32)
    candidate_dates = tf.gather(dates, candidates)
    first, last = tf.reduce_min(candidate_dates), tf.reduce_max(candidate_dates)
    frame = tf.range(num_frames, dtype=tf.float64)[None, :]
    if training:
        fraction = (frame + tf.random.stateless_uniform(
            (num_clips, num_frames), seed, dtype=tf.float64)) / num_frames
    else:
        clip = tf.range(num_clips, dtype=tf.float64)[:, None]
        fraction = (2 * frame * num_clips + 2 * clip + 1) / (2 * num_clips * num_frames)
    targets = first + fraction * (last - first)
    distance = tf.abs(candidate_dates[None, None, :] - targets[..., None])
    return tf.gather(candidates, tf.argmin(distance, axis=-1, output_type=tf.int32))


def day_of_year(days):
    """The day of the year (1 = 1 January) of dates given as days since 1970-01-01.

    Proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`), in integer tensor
    arithmetic, so it runs inside the input graph.

    Args:
        days: int tensor of any shape.

    Returns:
        int32 tensor of the same shape, values in [1, 366].

    Example:

    >>> day_of_year([0, 59, 19783, 20088]).numpy().tolist()  # 1970-01-01, 03-01, 2024-03-01, 12-31
    [1, 60, 61, 366]
    """
    days = tf.cast(tf.convert_to_tensor(days), tf.int64)
    shifted = days + 719468  # days since 0000-03-01
    era = tf.math.floordiv(shifted, 146097)
    day_of_era = shifted - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524
                   - day_of_era // 146096) // 365
    day_from_march = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    # From 1 March: 306 days to 1 January; January and February belong to the next year.
    in_next_year = day_from_march >= 306
    year = year_of_era + era * 400 + tf.cast(in_next_year, tf.int64)
    leap = tf.logical_and(tf.equal(year % 4, 0),
                          tf.logical_or(tf.not_equal(year % 100, 0), tf.equal(year % 400, 0)))
    days_before_march = 59 + tf.cast(leap, tf.int64)
    day = tf.where(in_next_year, day_from_march - 306, day_from_march + days_before_march)
    return tf.cast(day + 1, tf.int32)
