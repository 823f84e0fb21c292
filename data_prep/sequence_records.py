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

- `image/dtype` (bytes, `uint8`): the element type of the frames (`RAW_DTYPES`): a `raw`
  frame's C-order (H, W, band) little-endian bytes, or a png's 8 or 16 bits.
- sequence `image/mask/encoded`: one png per frame (uint8, 1 band, H x W; 255 valid, 0
  invalid): which pixels hold a measurement (nodata, NaN, a mask band or mask file). Absent
  when the item has no validity to say (all valid).
- `image/valid_fraction` (float list, one per frame): the fraction of valid pixels of each
  frame (a pixel is valid when valid in every band). Absent: all ones.
- `image/date` (int64 list, one per frame): acquisition dates, days since 1970-01-01
  (`data_prep.dates`). Absent for undated items.
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
from data_prep.dates import DateError, date_order, item_dates
from data_prep.decode import (ITEM_MEMORY_BUDGET, DecodeError, item_kind, load_clips,
                              open_item_frames, resize_frame, resized_shape)

SEQUENCE_FORMAT_VERSION = 2

FRAME_ENCODINGS = ("jpeg", "png", "raw")
# Band counts each image codec can store (png grey/RGB/RGBA, jpeg grey/RGB).
IMAGE_CODEC_BANDS = {"png": (1, 3, 4), "jpeg": (1, 3)}
# Element types frames are stored in (a raw frame any of them; png uint8 and uint16).
RAW_DTYPES = ("uint8", "uint16", "int16", "float16", "float32")
# Element types each image codec can store.
IMAGE_CODEC_DTYPES = {"png": ("uint8", "uint16"), "jpeg": ("uint8",)}
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
MASK_KEY = "image/mask/encoded"
VALID_FRACTION_KEY = "image/valid_fraction"
DATE_KEY = "image/date"


def default_encoding(bands, dtype="uint8"):
    """How frames are stored unless asked otherwise: uint8 with 1 or 3 bands `jpeg` (the
    TensorFlow convention), uint16 with 1, 3 or 4 bands `png` (lossless, 16 bits), any
    other `raw` (every dtype, every band count).

    >>> default_encoding(3), default_encoding(3, "uint16"), default_encoding(13, "uint16")
    ('jpeg', 'png', 'raw')
    """
    dtype = str(dtype)
    if dtype == "uint8" and bands in IMAGE_CODEC_BANDS["jpeg"]:
        return "jpeg"
    if dtype == "uint16" and bands in IMAGE_CODEC_BANDS["png"]:
        return "png"
    return "raw"


def check_encoding(encoding, bands, dtype="uint8"):
    """Raise `UserError` unless `encoding` can store `bands`-band frames of `dtype`."""
    if encoding not in FRAME_ENCODINGS:
        raise UserError(f"Expected `encoding` to be one of {list(FRAME_ENCODINGS)}. "
                        f"Received: encoding={encoding!r}")
    if str(dtype) not in RAW_DTYPES:
        raise UserError(f"Expected frames of dtype {' or '.join(RAW_DTYPES)}. "
                        f"Received: dtype={str(dtype)!r}")
    if encoding in IMAGE_CODEC_DTYPES and str(dtype) not in IMAGE_CODEC_DTYPES[encoding]:
        raise UserError(f"Expected {' or '.join(IMAGE_CODEC_DTYPES[encoding])} frames for "
                        f"encoding {encoding!r}; use encoding 'raw' (or png for uint16) for "
                        f"{dtype} frames. Received: dtype={str(dtype)!r}")
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


def encode_mask(mask):
    """One frame's validity mask (bool (H, W)) as a png: 255 valid, 0 invalid."""
    ok, data = cv2.imencode(".png", np.where(mask, 255, 0).astype(np.uint8),
                            [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise RuntimeError("OpenCV could not encode a mask")
    return data.tobytes()


def decode_mask(data):
    """bool (H, W) of an `encode_mask` png (NumPy/OpenCV; the training graph has its own)."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) > 0


def decode_frame(data, encoding, frame_shape, dtype="uint8"):
    """One stored frame back as an (H, W, band) array of `dtype` (NumPy/OpenCV, no TF):
    what a reader outside the training graph uses, and the tests' reference."""
    height, width, bands = (int(v) for v in frame_shape)
    if encoding == "raw":
        values = np.frombuffer(data, dtype=np.dtype(str(dtype)).newbyteorder("<"))
        return values.astype(str(dtype)).reshape(height, width, bands)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image.ndim == 2:
        return image[:, :, None]
    code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    return cv2.cvtColor(image, code)


def encode_frames(frames, encoding):
    """Every frame of a (T, H, W, band) array, encoded: a list of T bytes values.

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


@dataclasses.dataclass
class ItemRead:
    """What `read_item_frames` gives prepare: one item's kept frames and what goes with them.

    Attributes:
        frames: array (T', H, W, band) in the stored dtype (uint8 for videos).
        frame_rate: float, frames per second of the kept frames (0.0 when unknown).
        source: `SourceInfo` of the item as given.
        masks: None (every pixel valid, nothing to store) or bool (T', H, W).
        valid_fraction: float32 (T',), valid pixels per frame.
        dates: None or int64 (T',) days since 1970, increasing.
        band_names: tuple of str or None (a raster's band descriptions).
        nodata: float or None: the value that marked invalid pixels.
        geo: None, or {"crs", "transform", "height", "width"} of the stored grid.
    """

    frames: np.ndarray
    frame_rate: float
    source: SourceInfo
    masks: np.ndarray | None = None
    valid_fraction: np.ndarray | None = None
    dates: np.ndarray | None = None
    band_names: tuple | None = None
    nodata: float | None = None
    geo: dict | None = None


def to_uint8(frames, low, high):
    """The opt-in fixed 8-bit rule: `clip(rint((v - low) / (high - low) * 255), 0, 255)`,
    `low` and `high` a number or one per band; NaN becomes 0 (it is masked invalid).

    >>> to_uint8(np.array([[[[0.0, 5000.0, 20000.0, np.nan]]]]), 0, 10000).tolist()
    [[[[0, 128, 255, 0]]]]
    """
    values = np.asarray(frames, dtype=np.float64)
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    scaled = np.rint((values - low) / (high - low) * 255.0)
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)


def _resize_mask(mask, size, resize_short):
    """A bool (H, W) mask resized as `resize_frame` resizes its frame (nearest pixel)."""
    height, width = mask.shape
    new_height, new_width = resized_shape(height, width, size, resize_short)
    values = mask.astype(np.uint8)
    if (new_height, new_width) != (height, width):
        values = cv2.resize(values, (new_width, new_height), interpolation=cv2.INTER_NEAREST)
    if size is not None:
        top, left = (new_height - size) // 2, (new_width - size) // 2
        values = values[top:top + size, left:left + size]
    return values > 0


def _stored_transform(transform, native, resized, size):
    """The affine transform of the stored grid: the native grid scaled to the resized one,
    then shifted by the centre crop."""
    a, b, c, d, e, f = transform
    scale_x, scale_y = native[1] / resized[1], native[0] / resized[0]
    top = (resized[0] - size) // 2 if size is not None else 0
    left = (resized[1] - size) // 2 if size is not None else 0
    a, b, d, e = a * scale_x, b * scale_y, d * scale_x, e * scale_y
    return [a, b, a * left + b * top + c, d, e, d * left + e * top + f]


def _frame_validity(frame, band_mask, mask_file, nodata, window):
    """bool (H, W): valid in every band (nodata, NaN, a validity band, a mask file)."""
    valid = np.ones(frame.shape[:2], bool)
    if band_mask is not None:
        valid &= band_mask != 0
    if mask_file is not None:
        image = cv2.imread(mask_file, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DecodeError(f"cannot decode mask {mask_file.rsplit('/', 1)[-1]}")
        if image.ndim == 3:
            image = image.max(axis=2)
        if window is not None:
            row, col, height, width = (int(v) for v in window)
            image = image[row:row + height, col:col + width]
        if image.shape != valid.shape:
            raise DecodeError(f"mask {mask_file.rsplit('/', 1)[-1]} is {image.shape[0]}x"
                              f"{image.shape[1]}, its frame {valid.shape[0]}x{valid.shape[1]}")
        valid &= image != 0
    if nodata is not None and not np.isnan(nodata):
        valid &= ~np.any(frame == nodata, axis=2)
    if frame.dtype.kind == "f":
        valid &= np.all(np.isfinite(frame), axis=2)
    return valid


def read_item_frames(path, *, fps=None, max_frames=None, size=None, resize_short=None,
                     frame_template=None, window=None, bands=None, validity_band=None,
                     bands_per_date=None, nodata=None, date_pattern=None, to_uint8_rule=None,
                     force_masks=False):
    """Decode the frames of one item that a v2 record keeps (runs in a worker; no TF).

    Videos are 8-bit RGB. Frame folders, `.npy` arrays and rasters keep their own dtype
    (`data_prep.decode.open_item_frames`), with a validity mask and dates when they have
    them; a dated item's frames are taken in date order.

    Args:
        path: str, a video file, frame folder, .npy or .tif item (`data_prep.decode`).
        fps, max_frames: see `select_item_frames`.
        size, resize_short: the resize of `data_prep.decode.resize_frame`; `resize_short`
            alone keeps the aspect ratio (no crop), the usual v2 setting.
        frame_template: a rawframe folder's `(template, first, total)`, or None.
        window: None or `(row_off, col_off, height, width)` of the item's raster: read only
            that patch (its georeference is the window's).
        bands, validity_band, bands_per_date: see `open_item_frames`.
        nodata: number or None: pixels equal to it in any band are invalid (None: the
            raster's own nodata, if any).
        date_pattern: str or None, see `data_prep.dates`.
        to_uint8_rule: None, or `(low, high)` (numbers or one per band): store uint8 by
            the fixed rule of `to_uint8`.
        force_masks: bool, give masks even for an item with nothing to say (all valid),
            so that every record of a dataset with masks carries them.

    Returns:
        `ItemRead`.

    Raises:
        DecodeError: the item does not decode, or its dates do not parse (skipped).
        UserError: `fps` for an item whose frame rate is unknown.
    """
    kind = "frames" if frame_template is not None else item_kind(path)
    if kind == "video":
        item = _read_video_item(path, fps, max_frames, size, resize_short)
        if force_masks:
            item.masks = np.ones(item.frames.shape[:3], bool)
        return item
    item = open_item_frames(path, bands=bands, validity_band=validity_band,
                            bands_per_date=bands_per_date, window=window,
                            frame_template=frame_template)
    try:
        dates = item_dates(path, item.count, item.frame_names, date_pattern)
    except DateError as error:
        raise DecodeError(str(error)) from None
    order = np.arange(item.count) if dates is None else date_order(dates)
    positions, rate = select_item_frames(item.count, None, fps, max_frames)
    chosen = order[positions]
    needed = np.unique(chosen)
    cost = len(needed) * item.frame_bytes
    if cost > ITEM_MEMORY_BUDGET:
        raise DecodeError(f"its {len(needed)} frames of {item.frame_bytes >> 10} KB take "
                          f"{cost >> 20} MB, more than the {ITEM_MEMORY_BUDGET >> 20} MB "
                          "allowed per item (--max-frames keeps fewer)")
    read = dict(zip(needed.tolist(), item.read(needed.tolist())))
    nodata = item.nodata if nodata is None else float(nodata)
    frames, masks = [], []
    for index in chosen.tolist():
        frame, band_mask = read[index]
        mask_file = item.mask_files[index] if item.mask_files else None
        valid = _frame_validity(frame, band_mask, mask_file, nodata, window)
        resized = resize_frame(frame, size, resize_short)
        valid = _resize_mask(valid, size, resize_short)
        if resized.dtype.kind == "f":  # resizing spreads a NaN to its neighbours
            valid &= np.all(np.isfinite(resized), axis=2)
        frames.append(resized)
        masks.append(valid)
    if len({frame.shape for frame in frames}) > 1:
        raise DecodeError("frame images differ in size or band count")
    frames, masks = np.stack(frames), np.stack(masks)
    if to_uint8_rule is not None:
        lengths = {len(bound) for bound in to_uint8_rule if np.ndim(bound)}
        if lengths and lengths != {frames.shape[-1]}:
            raise UserError(f"Expected a `to_uint8` rule of one low and high per stored band "
                            f"({frames.shape[-1]}). Received: {lengths.pop()} per bound")
        frames = to_uint8(frames, *to_uint8_rule)
    anything_invalid = not masks.all()
    # Masks for an item that can hold invalid pixels (float: NaN; a nodata value; a mask
    # band or files) or has some; prepare asks again with force_masks for the others when
    # its dataset turns out to have masks.
    with_masks = force_masks or anything_invalid or item.dtype.startswith("float") or \
        nodata is not None or validity_band is not None or any(item.mask_files or ())
    geo = None
    if item.crs is not None and item.transform is not None:
        native = (item.height, item.width)
        stored = resized_shape(item.height, item.width, size, resize_short)
        geo = {"crs": item.crs,
               "transform": _stored_transform(item.transform, native, stored, size),
               "height": int(frames.shape[1]), "width": int(frames.shape[2])}
    height, width = item.height, item.width
    if kind == "frames" and item.crs is None and (size is not None or resize_short is not None):
        height, width = 0, 0  # as format v2 always recorded a resized frame folder
    source = SourceInfo(height=int(height), width=int(width), frame_rate=0.0,
                        frame_count=int(item.count))
    return ItemRead(
        frames=frames, frame_rate=float(rate or 0.0), source=source,
        masks=masks if with_masks else None,
        valid_fraction=masks.reshape(len(masks), -1).mean(axis=1).astype(np.float32),
        dates=None if dates is None else dates[chosen].astype(np.int64),
        band_names=item.band_names,
        nodata=None if nodata is None or np.isnan(nodata) else float(nodata), geo=geo)


def _read_video_item(path, fps, max_frames, size, resize_short):
    """`read_item_frames` of a video: 8-bit RGB, as format v2 always stored them."""
    rate, height, width = _video_properties(path)
    chosen = {}

    def select(total):
        chosen["indices"], chosen["rate"] = select_item_frames(total, rate, fps, max_frames)
        return chosen["indices"]

    total, frames = load_clips(path, select, size=size, resize_short=resize_short)
    if size is None and resize_short is None and not height:
        height, width = frames.shape[1:3]
    source = SourceInfo(height=int(height), width=int(width), frame_rate=float(rate),
                        frame_count=int(total))
    return ItemRead(frames=frames, frame_rate=float(chosen["rate"] or 0.0), source=source,
                    valid_fraction=np.ones(len(frames), np.float32))


def sequence_example(encoded_frames, *, frame_shape, encoding, label, item_id, item_index=-1,
                     frame_rate=0.0, dtype="uint8", label_text=None, source=SourceInfo(),
                     encoded_masks=None, valid_fraction=None, dates=None):
    """One serialised v2 record (`tf.train.SequenceExample`) of a whole item.

    Args:
        encoded_frames: list of T >= 1 bytes values (`encode_frames`), in time order.
        frame_shape: (H, W, band) of every frame.
        encoding: `jpeg`, `png` or `raw`.
        label: int, or a tuple of ints (a multi-label item), stored as `clip/label/index`.
        item_id: str, the item's id (its path under the dataset root).
        item_index: int, its index in the split (-1: unknown).
        frame_rate: float, frames per second as stored (0: unknown).
        dtype: str, the element type of the frames (`RAW_DTYPES`).
        label_text: None, or the class names of the label ids (`clip/label/text`).
        source: `SourceInfo`, the item before resampling and resizing.
        encoded_masks: None, or T png masks (`encode_mask`): `image/mask/encoded`.
        valid_fraction: None, or T floats: `image/valid_fraction`.
        dates: None, or T ints, days since 1970-01-01: `image/date`.

    Returns:
        bytes, deterministic: the same arguments give the same bytes.

    Raises:
        UserError: no frames, an encoding that cannot hold `frame_shape`, or masks,
            fractions or dates that are not one per frame.
    """
    import tensorflow as tf

    height, width, bands = (int(value) for value in frame_shape)
    check_encoding(encoding, bands, dtype)
    if not encoded_frames:
        raise UserError(f"Expected at least one frame in item {item_id!r}. Received: 0 frames")
    labels = [int(one) for one in label] if isinstance(label, (tuple, list)) else [int(label)]

    def ints(*values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    def floats(*values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))

    for name, values in (("masks", encoded_masks), ("valid fractions", valid_fraction),
                         ("dates", dates)):
        if values is not None and len(values) != len(encoded_frames):
            raise UserError(f"Expected one of the {name} per frame of item {item_id!r} "
                            f"({len(encoded_frames)}). Received: {len(values)}")

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
    if valid_fraction is not None:
        context[VALID_FRACTION_KEY] = floats(*valid_fraction)
    if dates is not None:
        context[DATE_KEY] = ints(*dates)
    feature_lists = {IMAGE_KEY: tf.train.FeatureList(
        feature=[strings(data) for data in encoded_frames])}
    if encoded_masks is not None:
        feature_lists[MASK_KEY] = tf.train.FeatureList(
            feature=[strings(data) for data in encoded_masks])
    example = tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list=feature_lists))
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
        VALID_FRACTION_KEY: tf.io.VarLenFeature(tf.float32),
        DATE_KEY: tf.io.VarLenFeature(tf.int64),
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
        a dict of `height`, `width`, `frame_rate`, `frame_count`; `masks` string (T,) of
        png masks, or (0,) when the record has none (all valid); `valid_fraction` float32
        (T,) (ones when not stored); `dates` int64 (T,) days since 1970, or (0,) undated.
    """
    import tensorflow as tf

    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features(),
        # allow_missing: a record without frames (DMVR's generator writes one when ffmpeg
        # yields nothing) has no `image/encoded` list at all; it parses with T = 0.
        {IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True),
         MASK_KEY: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)})
    frames = sequence[IMAGE_KEY]
    num_frames = tf.shape(frames, out_type=tf.int32)[0]
    valid_fraction = tf.sparse.to_dense(context[VALID_FRACTION_KEY])
    # Ones when not stored; no tf.cond, so AutoGraph leaves the parser (a map fn) alone.
    missing = tf.maximum(num_frames - tf.size(valid_fraction, out_type=tf.int32), 0)
    valid_fraction = tf.concat([valid_fraction, tf.ones([missing], tf.float32)], axis=0)
    item_id = tf.where(tf.strings.length(context[MEDIA_ID_KEY]) > 0, context[MEDIA_ID_KEY],
                       context[FILENAME_KEY])
    return {
        "frames": frames,
        "num_frames": num_frames,
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
        "masks": sequence[MASK_KEY],
        "valid_fraction": valid_fraction,
        "dates": tf.sparse.to_dense(context[DATE_KEY]),
    }
