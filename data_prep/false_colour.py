"""Clips of any band count and dtype as 8-bit RGB pictures: false colour.

A multispectral clip has no natural colour: three chosen bands are drawn as red, green and
blue (one band as grey), each stretched linearly from its 2nd to its 98th percentile over
the dataset (the manifest's `statistics` `p2`, `p98`) to 0..255, so a 16-bit reflectance of
14..557 shows as a picture, not as black. 8-bit RGB clips are drawn as stored. Pure numpy:
`inspect`'s contact sheets, TensorBoard's clips and predict's pictures share it.
"""

import warnings

import numpy as np

from core.errors import UserError


def parse_rgb_bands(text):
    """`"4,3,2"` -> [4, 3, 2] (0-based band indices; one index: grey).

    Raises:
        UserError: not 1 or 3 comma-separated integers >= 0.

    >>> parse_rgb_bands("4,3,2")
    [4, 3, 2]
    """
    try:
        bands = [int(part) for part in str(text).split(",")]
    except ValueError:
        bands = []
    if len(bands) not in (1, 3) or min(bands) < 0:
        raise UserError("Expected --rgb-bands as 1 or 3 comma-separated 0-based band indices, "
                        f"e.g. 4,3,2. Received: {text!r}")
    return bands


def shown_bands(bands, rgb_bands=None):
    """The band indices drawn as (red, green, blue) of a clip with `bands` bands.

    Default: the first three, or band 0 as grey for fewer than three bands.

    Raises:
        UserError: an index outside the clip's bands.

    >>> shown_bands(10), shown_bands(2), shown_bands(13, [3])
    ([0, 1, 2], [0, 0, 0], [3, 3, 3])
    """
    chosen = list(rgb_bands) if rgb_bands is not None else ([0, 1, 2] if bands >= 3 else [0])
    if any(not 0 <= band < bands for band in chosen):
        raise UserError(f"Expected RGB bands among 0..{bands - 1} (the clip has {bands} "
                        f"bands). Received: rgb_bands={chosen}")
    return chosen * 3 if len(chosen) == 1 else chosen


def band_note(bands, rgb_bands=None):
    """Which bands a picture shows, in words, when that is not simply RGB or grey (else None).

    >>> band_note(10), band_note(3), band_note(13, [3, 2, 1])
    ('showing bands 0-2 of 10 as RGB', None, 'showing bands 3, 2, 1 of 13 as RGB')
    """
    chosen = shown_bands(bands, rgb_bands)
    if rgb_bands is None:
        if bands in (1, 3):
            return None
        if bands == 2:
            return "showing band 0 of 2 as grey"
        return f"showing bands 0-2 of {bands} as RGB"
    if len(set(chosen)) == 1 and len(rgb_bands) == 1:
        return f"showing band {chosen[0]} of {bands} as grey"
    return f"showing bands {', '.join(map(str, chosen))} of {bands} as RGB"


def display_range(statistics, dtype="uint8", bands=3):
    """Per-band (low, high) lists a picture is stretched by, or None to draw values as they
    are: 8-bit 3-band data is drawn unstretched; otherwise the manifest's p2 .. p98 (None
    when it has no statistics: each picture then stretches by its own percentiles)."""
    if dtype == "uint8" and bands == 3:
        return None
    if not statistics or "p2" not in statistics or "p98" not in statistics:
        return None
    return list(statistics["p2"]), list(statistics["p98"])


def false_colour(clip, rgb_bands=None, stretch=None):
    """A (..., band) array of any dtype as uint8 RGB (..., 3).

    Args:
        clip: array (..., band): a frame, a clip, a batch of clips.
        rgb_bands: list of 1 or 3 band indices, or None (`shown_bands`).
        stretch: None, or (low, high): per-band lists (indexed by band) mapped to 0 and 255.
            None: uint8 values are drawn as they are; any other dtype is stretched by the
            clip's own 2nd and 98th percentiles per shown band.

    Returns:
        uint8 array (..., 3); NaN (an invalid pixel) is drawn black.

    >>> false_colour(np.array([[[100, 200, 300]]], "uint16"), stretch=([100] * 3, [300] * 3))
    array([[[  0, 128, 255]]], dtype=uint8)
    """
    clip = np.asarray(clip)
    chosen = shown_bands(clip.shape[-1], rgb_bands)
    values = clip[..., chosen]
    if stretch is None and values.dtype == np.uint8:
        return np.ascontiguousarray(values)
    values = values.astype(np.float64)
    if stretch is None:
        flat = values.reshape(-1, 3)
        with warnings.catch_warnings():  # a band of NaN only: drawn black, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanpercentile(flat, [2, 98], axis=0)
        low, high = np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=1.0)
    else:
        low = np.asarray(stretch[0], np.float64)[chosen]
        high = np.asarray(stretch[1], np.float64)[chosen]
    span = np.where(high > low, high - low, 1.0)
    scaled = np.clip((values - low) / span, 0, 1) * 255
    return np.rint(np.nan_to_num(scaled, nan=0.0)).astype(np.uint8)
