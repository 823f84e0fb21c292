"""Decode an item (video file, folder of frame images, .npy array or raster) to frames.

Every function returns channels-last arrays shaped (T, H, W, band) and resizes each
frame as soon as it is decoded, so a long video never sits in memory at full resolution.
Two rules of values:

- the 8-bit rules below (`load_clips`, `decode_frame_folder`, `decode_array`): uint8
  frames, what format v1 stores (its clips stay as they were);
- the item's own values (`open_item_frames`, format v2): uint8, uint16, int16, float16 and
  float32 frames are read in their own dtype and never rescaled; `.tif`/`.tiff` frames and
  single-file rasters (`RASTER_EXTENSIONS`, multi-date stacks with `bands_per_date`) are
  read with rasterio (`data_prep.rasters`), any band count.

Item kinds:
- video file: named by one of `VIDEO_EXTENSIONS` (avi, mp4, mkv, webm, mov, ...; see
  `is_media_item`), in any codec OpenCV's FFmpeg backend decodes (h264, hevc, mpeg4, mjpeg,
  ffv1, ...). Always 3 bands, RGB order. The frame count is what actually
  decodes; `CAP_PROP_FRAME_COUNT` is only a hint (see `load_clips`).
- folder of frame images (png, jpg, bmp, tif, webp): natural sort order (2.png before
  10.png). Grey images keep 1 band, colour images are RGB (3 bands), with alpha RGBA (4).
  16-bit images are scaled to 8 bits (value / 257).
- frames named by a template (MMAction2 rawframes, `load_clips(..., frame_template=...)`):
  the folder's files `template.format(first + i)` for i in 0 .. total - 1, total given by the
  list; other files (optical-flow frames, extras) are never read.
- `.npy` array shaped (T, H, W, band) (or (T, H, W), read as one band), any band count:
  uint8 is used as is; floats whose finite values all lie in [0, 1] are multiplied by 255;
  any other float or integer array is min-max scaled per band over the whole item to
  [0, 255]; NaN becomes 0. Values are rounded to the nearest integer. Only the needed
  frames are read (memory-mapped) and the statistics are gathered a chunk at a time; an
  item whose needed frames exceed ITEM_MEMORY_BUDGET is a DecodeError (skipped).

A file named `<frame stem>.mask.png` in a frame folder is that frame's validity mask
(`MASK_SUFFIX`), never a frame.

Broken items raise `DecodeError` with a short reason; `data_prep.prepare` skips them.
This module never imports TensorFlow for a local path: it runs in the worker processes
(only `is_media_item` of a URL, asked while listing a source, goes through `core.storage`).
"""

import dataclasses
import os
import re

import cv2
import numpy as np

from core import storage
from data_prep import rasters

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# What a video item may be called. FFmpeg decodes more than video (its `ansi` decoder renders
# a text file as frames), so a file is an item only by one of these names, never by whether
# FFmpeg opens it.
VIDEO_EXTENSIONS = (".avi", ".mp4", ".m4v", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m2v",
                    ".wmv", ".asf", ".flv", ".3gp", ".ogv", ".ts", ".mts", ".m2ts", ".vob",
                    ".gif", ".y4m", ".h264", ".264", ".hevc", ".h265")
ARRAY_EXTENSIONS = (".npy",)
RASTER_EXTENSIONS = rasters.RASTER_EXTENSIONS  # a single .tif file is an item (a raster)
MASK_SUFFIX = ".mask.png"  # `<frame stem>.mask.png` beside a frame: its validity mask
# The element types frames keep in format v2 (`data_prep.sequence_records.RAW_DTYPES`).
NATIVE_DTYPES = ("uint8", "uint16", "int16", "float16", "float32")
# A .npy item's needed frames may take this much memory to decode (float64 while scaling).
ITEM_MEMORY_BUDGET = 1 << 30
ARRAY_CHUNK_BYTES = 16 << 20  # frames read at a time for an item's scaling statistics


class DecodeError(Exception):
    """An item that cannot be decoded (zero-byte, truncated, not a video, ...)."""


def item_kind(path):
    """`"frames"` for a directory, `"array"` for a .npy file, `"raster"` for a .tif/.tiff
    file, otherwise `"video"`."""
    if os.path.isdir(path):
        return "frames"
    if path.lower().endswith(".npy"):
        return "array"
    if path.lower().endswith(RASTER_EXTENSIONS):
        return "raster"
    return "video"


def is_media_file(name):
    """True for a file named as a video, an array or a raster (`VIDEO_EXTENSIONS`,
    `ARRAY_EXTENSIONS`, `RASTER_EXTENSIONS`)."""
    return name.lower().endswith(VIDEO_EXTENSIONS + ARRAY_EXTENSIONS + RASTER_EXTENSIONS)


def is_media_item(path):
    """True for what can be an item: a directory (frame folder; `path` may be a URL), or a
    file `is_media_file` accepts; False for anything else (notes.txt, README, a lone png, a
    .json sidecar)."""
    # The name first: under a URL each isdir is a request, and most items are named files.
    return is_media_file(path) or storage.isdir(path)


def natural_sort_key(name):
    """Sort key that orders digit runs by value: `2.png` before `10.png`."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def resized_shape(height, width, size, resize_short=None):
    """(height, width) after the resize step, before the centre crop (`size=None` with
    `resize_short`: the short side resized, no crop; both None: unchanged)."""
    if size is None and resize_short is None:
        return height, width
    if resize_short is None:
        return size, size
    scale = resize_short / min(height, width)
    # The short side is exactly resize_short; the long side rounds but never drops below it.
    if height <= width:
        return resize_short, max(resize_short, int(round(width * scale)))
    return max(resize_short, int(round(height * scale))), resize_short


def resize_frame(frame, size, resize_short=None):
    """Resize one (H, W, band) frame: short side to `resize_short` then centre crop
    `size`×`size`, or straight to `size`×`size` when `resize_short` is None.

    `size=None` keeps the aspect ratio: the short side goes to `resize_short` and nothing is
    cropped (whole-item records, format v2); with `resize_short` None too the frame is
    returned unchanged. INTER_AREA when shrinking (no aliasing),
    INTER_LINEAR when enlarging. Works for any band count (OpenCV's INTER_AREA handles at
    most 4 channels, so wider frames are resized in groups of 4 bands).
    """
    if size is None and resize_short is None:
        return frame
    height, width = frame.shape[:2]
    new_height, new_width = resized_shape(height, width, size, resize_short)
    if (new_height, new_width) != (height, width):
        shrinking = new_height * new_width < height * width
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        bands = frame.shape[2]
        # OpenCV resizes no float16: through float32, back to float16 (exact for its values).
        source = frame.astype(np.float32) if frame.dtype == np.float16 else frame
        groups = [source[:, :, start:start + 4] for start in range(0, bands, 4)]
        resized = [cv2.resize(group, (new_width, new_height), interpolation=interpolation)
                   for group in groups]
        resized = [r.astype(frame.dtype, copy=False) for r in resized]
        # cv2.resize drops a channel axis of length 1.
        resized = [r[:, :, None] if r.ndim == 2 else r for r in resized]
        frame = resized[0] if len(resized) == 1 else np.concatenate(resized, axis=2)
    if size is None:
        return frame
    top = (new_height - size) // 2
    left = (new_width - size) // 2
    return np.ascontiguousarray(frame[top:top + size, left:left + size])


def _check_readable_file(path):
    try:
        file_size = os.path.getsize(path)
    except OSError as error:
        raise DecodeError(f"cannot read file ({error.strerror})") from None
    if file_size == 0:
        raise DecodeError("zero-byte file")


def _open_video(path):
    _check_readable_file(path)
    # One decoding thread per worker: the workers are the parallelism.
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if not capture.isOpened():
        capture.release()
        raise DecodeError("not a video OpenCV/FFmpeg can open")
    return capture


def _bgr_to_rgb(frame):
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _decode_video_pass(path, size, resize_short, keep):
    """Decode every frame; retrieve, resize and keep those for which `keep(i)` is true.

    Returns (frames that decoded, {index: frame}). `grab()` decodes; `retrieve()` adds the
    colour conversion, so frames nobody needs cost only the decode.
    """
    capture = _open_video(path)
    kept = {}
    count = 0
    try:
        while capture.grab():
            if keep(count):
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    break
                kept[count] = _bgr_to_rgb(resize_frame(frame, size, resize_short))
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise DecodeError("no frame decodes (truncated or not a video)")
    return count, kept


def decode_video(path, *, size=None, resize_short=None):
    """Decode every frame of a video file.

    Args:
        path: str, the video file.
        size: int or None, output side S (frames are resized as they decode); None keeps the
            native size. Defaults to None.
        resize_short: int or None, resize the short side to this then centre-crop S×S; None
            resizes straight to S×S. Defaults to None.

    Returns:
        uint8 array shaped (T, H, W, 3), RGB, T = the frames that actually decode.

    Raises:
        DecodeError: the file is empty, cannot be opened, or no frame decodes.

    Example (given UCF101's 164-frame video):

    ```python
    frames = decode_video("v_ApplyEyeMakeup_g08_c01.avi", size=112, resize_short=128)
    frames.shape, frames.dtype  # ((164, 112, 112, 3), dtype('uint8'))
    ```
    """
    count, kept = _decode_video_pass(path, size, resize_short, keep=lambda index: True)
    return np.stack([kept[index] for index in range(count)])


def _frame_files(path):
    names = [name for name in os.listdir(path)
             if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
             and not name.lower().endswith(MASK_SUFFIX)]
    if not names:
        raise DecodeError("folder holds no frame images")
    return [os.path.join(path, name) for name in sorted(names, key=natural_sort_key)]


def _read_image(path):
    _check_readable_file(path)
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DecodeError(f"cannot decode image {os.path.basename(path)}")
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DecodeError(f"unsupported image dtype {image.dtype} in {os.path.basename(path)}")
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def _read_frames(files, indices, size, resize_short, same_native_shape=False):
    """Read and resize `files[i]` for i in `indices`; with `same_native_shape`, frames of
    different sizes before resizing are an error too (a rawframe template must name the
    frames of one video, not a mix of streams)."""
    frames = []
    first_shape = None
    for index in indices:
        image = _read_image(files[index])
        if same_native_shape and first_shape is None:
            first_shape, first_name = image.shape, os.path.basename(files[index])
        elif same_native_shape and image.shape != first_shape:
            raise DecodeError(
                f"frame images differ in size or band count ({first_name} "
                f"{'x'.join(map(str, first_shape))}, {os.path.basename(files[index])} "
                f"{'x'.join(map(str, image.shape))})")
        frames.append(resize_frame(image, size, resize_short))
    if len({frame.shape for frame in frames}) > 1:
        raise DecodeError("frame images differ in size or band count")
    return np.stack(frames)


def template_frame_files(path, frame_template):
    """The frame files a rawframe list names: `template.format(first + i)`, i < total.

    Args:
        path: str, the frame folder.
        frame_template: `(filename_template, first, total)`, e.g. `("img_{:05}.jpg", 1, 127)`.

    Raises:
        DecodeError: not a folder, `total` < 1, or a named file is not in the folder.
    """
    template, first, total = frame_template
    if not os.path.isdir(path):
        raise DecodeError("not a frame folder")
    if total < 1:
        raise DecodeError(f"the list gives total_frames {total}")
    names = [template.format(first + index) for index in range(total)]
    present = set(os.listdir(path))
    # One listdir instead of a stat per frame; a template with a subfolder is stat'ed.
    absent = [name for name in names
              if (name not in present if "/" not in name
                  else not os.path.isfile(os.path.join(path, name)))]
    if absent:
        raise DecodeError(f"{len(absent)} of the {total} frames {template} from {first} are "
                          f"not in the folder (first: {absent[0]})")
    return [os.path.join(path, name) for name in names]


def decode_frame_folder(path, *, size=None, resize_short=None, indices=None):
    """Read a folder of frame images in natural sort order.

    Args:
        path: str, the folder.
        size, resize_short: as in `decode_video`.
        indices: optional sequence of frame indices to read (others are not opened).

    Returns:
        uint8 array shaped (T or len(indices), H, W, band).

    Raises:
        DecodeError: no images, an image does not decode, or the frames differ in shape.
    """
    files = _frame_files(path)
    if indices is None:
        indices = range(len(files))
    return _read_frames(files, indices, size, resize_short)


def _array_kind(dtype):
    if dtype == np.uint8:
        return "uint8"
    if dtype == np.bool_ or not (np.issubdtype(dtype, np.floating)
                                 or np.issubdtype(dtype, np.integer)):
        raise DecodeError(f"unsupported array dtype {dtype}")
    return "scaled"


def _scaling(array, chunk_bytes=ARRAY_CHUNK_BYTES):
    """(unit, low, high) of a (T, H, W, band) array, read a few frames at a time: `unit` if
    its finite values all lie in [0, 1] (floats only), else each band's finite min and max
    (0 and 0 for a band without one)."""
    frame_bytes = max(1, int(np.prod(array.shape[1:])) * 8)
    step = max(1, chunk_bytes // frame_bytes)
    bands = array.shape[-1]
    low, high = np.full(bands, np.inf), np.full(bands, -np.inf)
    for start in range(0, array.shape[0], step):
        values = np.asarray(array[start:start + step], dtype=np.float64)
        finite = np.isfinite(values)
        axes = tuple(range(values.ndim - 1))
        low = np.minimum(low, np.min(values, axis=axes, initial=np.inf, where=finite))
        high = np.maximum(high, np.max(values, axis=axes, initial=-np.inf, where=finite))
    unit = bool(np.issubdtype(array.dtype, np.floating)
                and min(low.min(initial=0.0), 0.0) >= 0.0 and max(high.max(initial=0.0), 0.0) <= 1.0)
    return unit, np.where(np.isfinite(low), low, 0.0), high


def _scale_frames(frames, unit, low, high):
    values = frames.astype(np.float64)
    values = np.where(np.isfinite(values), values, np.nan)
    if unit:
        scaled = values * 255.0
    else:
        spread = np.where(high > low, high - low, 1.0)
        scaled = (values - low) / spread * 255.0
    scaled = np.nan_to_num(scaled, nan=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def scale_array_to_uint8(array):
    """Scale a (T, H, W, band) array to uint8 (rules in the module docstring)."""
    if _array_kind(array.dtype) == "uint8":
        return array
    return _scale_frames(np.asarray(array), *_scaling(array))


def load_array(path):
    """Open a .npy item memory-mapped, checked to be (T, H, W, band) (or (T, H, W))."""
    _check_readable_file(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DecodeError(f"not a readable .npy array ({error})") from None
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or min(array.shape) == 0:
        raise DecodeError(f"expected an array shaped (T, H, W, band); got shape {array.shape}")
    return array


def decode_array(path, *, size=None, resize_short=None, indices=None,
                 budget_bytes=ITEM_MEMORY_BUDGET):
    """Read a .npy item as uint8 (T or len(indices), H, W, band) (scaling in module docs).

    Only the frames in `indices` are read from the memory map (the scaling statistics are
    gathered a few frames at a time), so an item costs about its needed frames in float64,
    never the whole file several times over; more than `budget_bytes` for them is a
    DecodeError (the item is skipped) rather than a MemoryError that takes the run down.
    """
    array = load_array(path)
    kind = _array_kind(array.dtype)
    needed = np.arange(array.shape[0]) if indices is None else np.asarray(indices)
    cost = len(needed) * int(np.prod(array.shape[1:])) * (1 if kind == "uint8" else 8)
    if cost > budget_bytes:
        raise DecodeError(f"its {len(needed)} needed frames of {array.shape[1:]} take "
                          f"{cost >> 20} MB to decode, more than the {budget_bytes >> 20} MB "
                          "allowed per item")
    frames = np.asarray(array[needed])
    if kind != "uint8":
        # Scaled over the whole item, so a clip's values do not depend on its frames.
        frames = _scale_frames(frames, *_scaling(array))
    return np.stack([resize_frame(frame, size, resize_short) for frame in frames])


def count_frames(path):
    """Frames in a frame folder or .npy item (videos are counted by decoding them)."""
    kind = item_kind(path)
    if kind == "frames":
        return len(_frame_files(path))
    if kind == "array":
        return load_array(path).shape[0]
    if kind == "raster":
        return open_item_frames(path).count
    count, _ = _decode_video_pass(path, None, None, keep=lambda index: False)
    return count


def load_clips(path, select_indices, *, size=None, resize_short=None, frame_template=None):
    """Decode only the frames an item's clips need.

    Args:
        path: str, a video file, frame folder or .npy file.
        select_indices: callable(T) -> int array of frame indices (any shape), e.g.
            `functools.partial(sample_frame_indices, num_frames=16, num_clips=3)`.
        size, resize_short: as in `decode_video`.
        frame_template: None, or `(filename_template, first, total)` for a rawframe folder:
            T = total (the list's count, trusted as MMAction2 trusts it) and only the
            sampled frames' files are read (see `template_frame_files`).

    Returns:
        (T, frames) with T the frames that decode and frames a uint8 array shaped
        `select_indices(T).shape + (H, W, band)`.

    For videos, `CAP_PROP_FRAME_COUNT` guesses T so one decoding pass keeps just the frames
    the clips need; when the frames that really decode differ from the guess (OpenCV is off
    by a few frames for many files), a second pass decodes again with the true indices. An
    unusable guess (0 or -1) keeps every resized frame instead, still in one pass.
    """
    if frame_template is not None:
        files = template_frame_files(path, frame_template)
        indices = np.asarray(select_indices(len(files)))
        needed = np.unique(indices)
        frames = _read_frames(files, needed, size, resize_short, same_native_shape=True)
        return len(files), frames[np.searchsorted(needed, indices)]
    kind = item_kind(path)
    if kind == "raster":  # the 8-bit rules have no meaning for a sensor's raster
        raise DecodeError("a single-file raster item is read by format v2 only "
                          "(prepare --format v2)")
    if kind != "video":
        total = count_frames(path)
        indices = np.asarray(select_indices(total))
        needed = np.unique(indices)
        decode = decode_frame_folder if kind == "frames" else decode_array
        frames = decode(path, size=size, resize_short=resize_short, indices=needed)
        return total, frames[np.searchsorted(needed, indices)]

    capture = _open_video(path)
    guess = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    if guess > 0:
        wanted = set(np.unique(select_indices(guess)).tolist())
        total, kept = _decode_video_pass(path, size, resize_short, keep=wanted.__contains__)
        if total != guess:
            wanted = set(np.unique(select_indices(total)).tolist())
            total, kept = _decode_video_pass(path, size, resize_short,
                                             keep=wanted.__contains__)
    else:
        total, kept = _decode_video_pass(path, size, resize_short, keep=lambda index: True)
    indices = np.asarray(select_indices(total))
    frames = np.stack([kept[index] for index in indices.ravel().tolist()])
    return total, frames.reshape(indices.shape + frames.shape[1:])


# --- format v2: frames in the item's own dtype ---------------------------------------------


@dataclasses.dataclass
class ItemFrames:
    """An item opened to read its frames in their own dtype (`open_item_frames`).

    Attributes:
        count: int, frames of the item (dates of a stack).
        dtype: str, their element type (one of `NATIVE_DTYPES`).
        reader: callable(list of frame indices) -> list of (frames (H, W, B) in `dtype`,
            validity band (H, W) or None).
        frame_names: list of the frame files' names (frame folders), else None.
        mask_files: list with each frame's `<stem>.mask.png` path or None (frame folders),
            else None.
        band_names: tuple of B str (a raster's band descriptions) or None.
        nodata: float or None, the raster's own nodata value.
        crs: str (WKT) or None; transform: 6-tuple of the (windowed) grid or None;
        height, width: int, the frames' size as read (the window's when windowed).
    """

    count: int
    dtype: str
    reader: object
    frame_names: list | None = None
    mask_files: list | None = None
    band_names: tuple | None = None
    nodata: float | None = None
    crs: str | None = None
    transform: tuple | None = None
    height: int = 0
    width: int = 0
    frame_bytes: int = 0  # one frame as read, all bands (0: unknown)

    def read(self, indices):
        """[(frame, validity band or None)] of the frames `indices`, in that order."""
        return self.reader(list(indices))


def _check_native_dtype(dtype, what):
    if str(np.dtype(dtype)) not in NATIVE_DTYPES:
        raise DecodeError(f"unsupported dtype {np.dtype(dtype)} in {what} (stored dtypes: "
                          f"{', '.join(NATIVE_DTYPES)}; convert it to one of them)")
    return str(np.dtype(dtype))


def _band_plan(available, bands, validity_band):
    """(0-based bands kept, validity band index or None) of a frame of `available` bands
    given 0-based `bands` (None: every band but the validity band)."""
    if validity_band is not None and not 0 <= validity_band < available:
        raise DecodeError(f"validity band {validity_band} is not in 0..{available - 1}")
    if bands is None:
        kept = [band for band in range(available) if band != validity_band]
    else:
        kept = []
        for band in bands:
            if isinstance(band, str) or not 0 <= int(band) < available:
                raise DecodeError(f"band {band!r} is not among the frame's {available} bands "
                                  "(0-based indices; names only for rasters with band "
                                  "descriptions)")
            kept.append(int(band))
    if not kept:
        raise DecodeError("no band left besides the validity band")
    return kept, validity_band


def _split_bands(values, kept, validity_band):
    frame = np.ascontiguousarray(values[:, :, kept])
    return frame, (None if validity_band is None else values[:, :, validity_band])


def _window_slice(array, window):
    if window is None:
        return array
    row, col, height, width = (int(v) for v in window)
    if row < 0 or col < 0 or row + height > array.shape[0] or col + width > array.shape[1]:
        raise DecodeError(f"window {tuple(window)} is outside the {array.shape[0]}x"
                          f"{array.shape[1]} frame")
    return array[row:row + height, col:col + width]


def _raster_bands(info, bands, validity_band, bands_per_date=None):
    """Bands to read from a raster (kept + validity last) and where each lands."""
    try:
        per_date = bands_per_date or info.count
        if validity_band is not None and not 0 <= validity_band < per_date:
            raise DecodeError(f"validity band {validity_band} is not in 0..{per_date - 1}")
        if bands is None:
            kept = [band for band in range(per_date) if band != validity_band]
        else:
            kept = rasters.select_bands(info, bands, bands_per_date)
    except rasters.RasterReadError as error:
        raise DecodeError(str(error)) from None
    if not kept:
        raise DecodeError("no band left besides the validity band")
    read = kept + ([validity_band] if validity_band is not None else [])
    return read, list(range(len(kept))), (len(kept) if validity_band is not None else None)


def _read_native_image(path, window):
    """One frame file as (H, W, band) in its own dtype: rasterio for .tif, else OpenCV."""
    _check_readable_file(path)
    if path.lower().endswith(RASTER_EXTENSIONS):
        try:
            return rasters.read_raster(path, window=window)
        except rasters.RasterReadError as error:
            raise DecodeError(f"cannot read {os.path.basename(path)}: {error}") from None
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DecodeError(f"cannot decode image {os.path.basename(path)}")
    if image.ndim == 2:
        image = image[:, :, None]
    elif image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return _window_slice(image, window)


def _open_frame_folder(path, bands, validity_band, window, frame_template):
    files = (template_frame_files(path, frame_template) if frame_template is not None
             else _frame_files(path))
    masks = []
    for file in files:
        mask = os.path.splitext(file)[0] + MASK_SUFFIX
        masks.append(mask if os.path.isfile(mask) else None)
    first = files[0]
    info = None
    if first.lower().endswith(RASTER_EXTENSIONS):
        try:
            info = rasters.raster_info(first)
        except rasters.RasterReadError as error:
            raise DecodeError(f"cannot read {os.path.basename(first)}: {error}") from None
    state = {}

    def reader(indices):
        out = []
        for index in indices:
            values = _read_native_image(files[index], window)
            if "plan" not in state:
                state["dtype"] = _check_native_dtype(values.dtype, os.path.basename(first))
                if info is not None:
                    read, _, _ = _raster_bands(info, bands, validity_band)
                    state["plan"] = (read[:len(read) - (validity_band is not None)],
                                     validity_band)
                else:
                    state["plan"] = _band_plan(values.shape[2], bands, validity_band)
                state["shape"] = values.shape
            # Sizes may differ when the frames are resized alike (as v2 always allowed),
            # except in a rawframe template's folder (the frames of one video).
            same = values.shape == state["shape"] if frame_template is not None \
                else values.shape[2:] == state["shape"][2:]
            if not same or str(values.dtype) != state["dtype"]:
                raise DecodeError(f"frame images differ in size, band count or dtype "
                                  f"({os.path.basename(files[index])})")
            out.append(_split_bands(values, *state["plan"]))
        return out

    # The dtype (and band plan) comes from the first frame read; read it now so `dtype` is
    # known before any frame is chosen.
    head = reader([0])[0][0]
    names = None
    if info is not None:
        kept = state["plan"][0]
        names = tuple(info.band_names[band] for band in kept) if any(info.band_names) else None
    transform = rasters.window_transform(info, window) if info is not None else None
    return ItemFrames(count=len(files), dtype=state["dtype"], reader=reader,
                      frame_names=[os.path.basename(file) for file in files],
                      mask_files=masks, band_names=names,
                      nodata=info.nodata if info is not None else None,
                      crs=info.crs if info is not None else None, transform=transform,
                      height=head.shape[0], width=head.shape[1], frame_bytes=head.nbytes)


def _open_array(path, bands, validity_band, window):
    array = load_array(path)
    dtype = _check_native_dtype(array.dtype, os.path.basename(path))
    kept, validity = _band_plan(array.shape[3], bands, validity_band)

    def reader(indices):
        # The window is cut from the memory map: only its pixels are read.
        return [_split_bands(np.asarray(_window_slice(array[index], window)), kept, validity)
                for index in indices]

    height, width = array.shape[1:3] if window is None else (int(window[2]), int(window[3]))
    return ItemFrames(count=array.shape[0], dtype=dtype, reader=reader, height=height,
                      width=width, frame_bytes=height * width * array.shape[3] *
                      array.dtype.itemsize)


def _open_raster(path, bands, validity_band, window, bands_per_date):
    _check_readable_file(path)
    try:
        info = rasters.raster_info(path)
        count = rasters.stack_frame_count(info, bands_per_date)
    except rasters.RasterReadError as error:
        raise DecodeError(str(error)) from None
    dtype = _check_native_dtype(info.dtype, os.path.basename(path))
    read, kept, validity = _raster_bands(info, bands, validity_band, bands_per_date)
    per_date = bands_per_date or info.count

    def reader(indices):
        try:
            values = rasters.read_stack_frames(path, indices, per_date, bands=read,
                                               window=window)
        except rasters.RasterReadError as error:
            raise DecodeError(str(error)) from None
        return [_split_bands(frame, kept, validity) for frame in values]

    names = tuple(info.band_names[band] for band in read[:len(kept)])         if any(info.band_names) else None
    height, width = (info.height, info.width) if window is None else (int(window[2]),
                                                                     int(window[3]))
    return ItemFrames(count=count, dtype=dtype, reader=reader, band_names=names,
                      nodata=info.nodata, crs=info.crs,
                      transform=rasters.window_transform(info, window), height=height,
                      width=width, frame_bytes=height * width * len(read) *
                      np.dtype(dtype).itemsize)


def open_item_frames(path, *, bands=None, validity_band=None, bands_per_date=None,
                     window=None, frame_template=None):
    """Open a frame folder, `.npy` or raster item to read its frames in their own dtype.

    Args:
        path: str, the item (videos are read by `load_clips`: always uint8 RGB).
        bands: None (every band) or a list of 0-based indices (or, for rasters, band
            descriptions) to keep, in that order.
        validity_band: int or None, 0-based band of each frame that is a validity mask
            (nonzero = valid); it is read apart and never among the kept bands.
        bands_per_date: int or None, a single raster holds T = count / N dates of N bands
            (date-major); None: the raster is one date.
        window: None or `(row_off, col_off, height, width)`: read only those pixels.
        frame_template: a rawframe folder's `(template, first, total)`, or None.

    Returns:
        `ItemFrames`.

    Raises:
        DecodeError: unreadable item, unsupported dtype, unknown band, window outside.
    """
    kind = item_kind(path)
    if frame_template is not None or kind == "frames":
        if not os.path.isdir(path):
            raise DecodeError("not a frame folder")
        return _open_frame_folder(path, bands, validity_band, window, frame_template)
    if kind == "array":
        return _open_array(path, bands, validity_band, window)
    if kind == "raster":
        return _open_raster(path, bands, validity_band, window, bands_per_date)
    raise DecodeError("a video is read by load_clips (8-bit RGB), not open_item_frames")
