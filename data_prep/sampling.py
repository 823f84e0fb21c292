"""Which frames of an item make up its clips: a pure function of the item's length.

`sample_frame_indices` never looks at pixels, so the same call decides what to decode
(`data_prep.decode`) and documents exactly what was stored. It is deterministic: the random
choice among the stored clips happens later, in the reader, once per epoch.
"""

import numpy as np

from core.errors import UserError

SAMPLING_METHODS = ("uniform", "stride")


def positive_int(value, name):
    """`value` as an int, or UserError naming `name` when it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")
    return int(value)


def sample_frame_indices(num_frames_available, num_frames, *, method="uniform", stride=1,
                         num_clips=1):
    """Frame indices of `num_clips` clips of `num_frames` frames each.

    Args:
        num_frames_available: int, frames that actually decode in the item (T >= 1).
        num_frames: int, frames per clip (F >= 1).
        method: `"uniform"` spreads the F frames over the whole item: frame i of clip c is
            taken from the middle of segment i when T >= F (segment length T / F, clip c
            shifted by (c + 0.5) / num_clips of a segment, so the clips interleave and all
            cover the whole item). `"stride"` takes every `stride`-th frame: a window of
            (F - 1) * stride + 1 frames, the `num_clips` windows placed at the centres of
            `num_clips` equal parts of the possible start positions (one clip: the centre
            window). Defaults to `"uniform"`.
        stride: int, step between frames for `method="stride"` (K >= 1). Defaults to 1.
        num_clips: int, clips per item (N >= 1), in time order. Defaults to 1.

    Short items loop: when the item has fewer frames than a clip needs (T < F for
    `"uniform"`, T < (F - 1) * stride + 1 for `"stride"`), clip c starts at frame
    floor(c * T / N) and reads on with its step, wrapping around to frame 0 after the last
    frame (index modulo T). Motion speed is kept; the wrap shows as a cut.

    Returns:
        int64 array shaped (num_clips, num_frames), every value in [0, T).

    Raises:
        UserError: an argument is not a positive integer or `method` is unknown.

    Example:

    >>> sample_frame_indices(10, 4)
    array([[1, 3, 6, 8]])
    >>> sample_frame_indices(3, 4)
    array([[0, 1, 2, 0]])
    """
    total = positive_int(num_frames_available, "num_frames_available")
    num_frames = positive_int(num_frames, "num_frames")
    stride = positive_int(stride, "stride")
    num_clips = positive_int(num_clips, "num_clips")
    if method not in SAMPLING_METHODS:
        raise UserError(
            f"Expected `method` to be one of {list(SAMPLING_METHODS)}. Received: method={method!r}"
        )
    clip = np.arange(num_clips)[:, None]
    frame = np.arange(num_frames)[None, :]
    step = 1 if method == "uniform" else stride
    span = (num_frames - 1) * step + 1
    if total < span:
        starts = (clip * total) // num_clips
        return ((starts + frame * step) % total).astype(np.int64)
    if method == "uniform":
        # Integer arithmetic: floor((i + (c + 0.5) / N) * T / F) without float rounding.
        numerator = (2 * frame * num_clips + 2 * clip + 1) * total
        return (numerator // (2 * num_clips * num_frames)).astype(np.int64)
    positions = total - span + 1
    starts = ((2 * clip + 1) * positions) // (2 * num_clips)
    return (starts + frame * stride).astype(np.int64)
