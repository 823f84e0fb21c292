"""An item's views (temporal clips x spatial crops), decoded with a run's own preprocessing.

A view is one temporal clip x one spatial crop. Spatial crops follow MMAction2's ThreeCrop:
S squares with the frame's short side, spread evenly along its long side (first at the
start, last at the end; S = 1 is the centre one). Each square then goes through the run's
own `resize_frame(size, resize_short)` and the evaluation's centre crop to the model's input
size, so every view has the scale training saw. A square frame has one possible square, so
its S crops are all equal (as in MMAction2).

`torchvision_views` is the other preprocessing, for torchvision's Kinetics weights used
without a run (`predict.py --model NAME --weights FILE`): consecutive frames, each resized
to torchvision's fixed (height, width), then centre-cropped.

`preprocess_item` is what `evaluate.py` (views other than the stored ones) and `predict.py`
use: with S = 1 it is exactly the preparation's decode/sample/resize path followed by the
evaluation's centre crop. Items keep their dtype (16-bit, float) and become the model's input
as the run's `clip_inputs` say (`as_run_inputs`: the run's 8-bit rule, invalid pixels filled,
the mask band), as the training pipeline made them from the records.
"""

import functools
import re

import cv2
import numpy as np

from core.errors import UserError
from data_prep.decode import item_kind, load_clips, resize_frame
from data_prep.reader import is_whole_items
from data_prep.sampling import sample_frame_indices
from data_prep.sequence_records import read_item_frames, to_uint8
from training.prepared_data import extra_input_bands

_VIEWS = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_views(text):
    """`"10x3"` -> (10, 3): temporal clips x spatial crops, both >= 1.

    Raises:
        UserError: not of the form CxS with positive integers.
    """
    match = _VIEWS.match(str(text))
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise UserError("Expected views as CLIPSxCROPS with positive integers, e.g. 10x3 "
                        f"(10 temporal clips x 3 spatial crops). Received: views={text!r}")
    return int(match.group(1)), int(match.group(2))


def crop_offsets(length, side, count):
    """Start positions of `count` windows of `side` pixels spread evenly over `length`.

    One window is centred; more go from the start to the end (MMAction2's ThreeCrop for 3).

    >>> crop_offsets(40, 24, 3)
    [0, 8, 16]
    """
    if count == 1:
        return [(length - side) // 2]
    return [index * (length - side) // (count - 1) for index in range(count)]


def center_crop_numpy(clips, crop_size):
    """The centre window of (..., H, W, band) frames; the same offsets as
    `input_pipeline.center_crop`, which the shards go through."""
    height, width = clips.shape[-3:-1]
    top, left = (height - crop_size) // 2, (width - crop_size) // 2
    return clips[..., top:top + crop_size, left:left + crop_size, :]


def check_bands(clips, bands, path):
    """Raises UserError unless the decoded clips (..., band) have the model's band count."""
    if clips.shape[-1] != bands:
        raise UserError(f"Expected items with {bands} band(s), as the run was trained on. "
                        f"Received: band={clips.shape[-1]} ({path})")


def read_whole_item(path, manifest, size, resize_short):
    """A non-video item of a v2 run, read as `prepare` stored it: its own dtype, the run's
    bands, validity band, nodata and 8-bit rule, frames in date order, `fps`/`max_frames`
    kept frames (`data_prep.sequence_records.ItemRead`)."""
    source = manifest.get("source") or {}
    rule = manifest.get("to_uint8")
    return read_item_frames(
        path, fps=manifest.get("fps"), max_frames=manifest.get("max_frames"), size=size,
        resize_short=resize_short, bands=source.get("bands"),
        validity_band=source.get("validity_band"),
        bands_per_date=source.get("bands_per_date"), nodata=manifest.get("nodata"),
        date_pattern=source.get("date_pattern"),
        to_uint8_rule=None if not rule else (rule["low"], rule["high"]))


def is_sensor_run_item(path, manifest):
    """True for a non-video item of a v2 run with clip inputs: read by `read_whole_item`."""
    return bool(is_whole_items(manifest) and manifest.get("clip_inputs")) \
        and item_kind(path) != "video"


def _whole_item_clips(path, manifest, select, size, resize_short):
    """The clips `select` picks from a sensor item's stored frames, as evaluation picks them
    from a record: (clips (C, F, H, W, band), valid (C, F, H, W) bool)."""
    item = read_whole_item(path, manifest, size, resize_short)
    indices = np.asarray(select(len(item.frames)))
    valid = np.ones(item.frames.shape[:3], bool) if item.masks is None else item.masks
    return item.frames[indices], valid[indices]


def as_run_inputs(views, manifest, path, valid=None):
    """Decoded views (..., band) of an item as the run's model takes them.

    A run trained on v2 data keeps `clip_inputs` in its data_manifest.json (see
    `training.prepared_data.clip_inputs_of`): the stored dtype, the fill of invalid
    pixels and the extra bands. Here an item's invalid pixels are its NaN and the manifest's
    `nodata` value (in any band), and where `valid` (..., H, W) is given, what it marks
    invalid (the item's masks as prepare read them). Day-of-year runs need the prepared
    records. Runs without `clip_inputs` take the views as they are.

    Raises:
        UserError: the item's dtype is not the run's, or the run takes day-of-year bands.
    """
    inputs = manifest.get("clip_inputs")
    if not inputs:
        return views
    rule = manifest.get("to_uint8")
    if rule and views.dtype != np.uint8:
        # The run's fixed 8-bit rule (the manifest's), as the preparation applied it.
        views = to_uint8(views, rule["low"], rule["high"])
    if views.dtype != np.dtype(inputs["dtype"]):
        raise UserError(f"Expected items of dtype {inputs['dtype']}, as the run was trained "
                        f"on. Received: dtype={views.dtype} ({path})")
    if inputs["day_of_year"] != "none":
        raise UserError(f"Expected prepared records for a run with day-of-year input bands "
                        f"(a raw item carries no dates here; evaluate the prepared split "
                        f"instead). Received: {path}")
    valid = np.ones(views.shape[:-1], bool) if valid is None else valid.copy()
    if views.dtype.kind == "f":
        valid &= ~np.isnan(views).any(axis=-1)
    if manifest.get("nodata") is not None:
        valid &= ~(views == manifest["nodata"]).any(axis=-1)
    if inputs["fill"] is not None:
        fill = np.asarray(inputs["fill"], np.float64)
        if views.dtype.kind in "iu":
            info = np.iinfo(views.dtype)
            fill = np.clip(np.rint(fill), info.min, info.max)
        views = np.where(valid[..., None], views, fill.astype(views.dtype))
    if inputs["mask_band"]:
        views = np.concatenate([views.astype(np.float32),
                                valid[..., None].astype(np.float32)], axis=-1)
    return views


def preprocess_item(path, manifest, input_shape, *, num_clips=None, num_crops=1):
    """An item's views, decoded with the run's sampling and resize parameters.

    Args:
        path: str, a video file, a folder of frame images or a .npy array.
        manifest: dict, the run's data_manifest.json (sampling, resize, clip_inputs).
        input_shape: (F, crop, crop, band) the model takes.
        num_clips: int, temporal clips C; None = the stored clips_per_video.
        num_crops: int, spatial crops S (see the module docstring).

    Returns:
        array (C * S, F, crop, crop, band) of the model's input dtype (uint8 for 8-bit
        video), clip-major (clip 0's S crops first).

    Raises:
        DecodeError: the item does not decode.
        UserError: the item's band count or dtype differs from the run's.
    """
    sampling, resize = manifest["sampling"], manifest["resize"]
    num_clips = num_clips or int(manifest["clips_per_video"])
    frames, crop_size, _, bands = input_shape
    extra = extra_input_bands(manifest["clip_inputs"]) if manifest.get("clip_inputs") else 0
    select = functools.partial(sample_frame_indices, num_frames=sampling["frames"],
                               method=sampling["method"], stride=sampling["frame_stride"],
                               num_clips=num_clips)
    size, resize_short = resize["size"], resize["resize_short"]
    valid = None
    if num_crops == 1 and is_sensor_run_item(path, manifest):
        # Sensor items: the v2 preparation's reader (values as measured, masks, date order).
        clips, valid = _whole_item_clips(path, manifest, select, size, resize_short)
        views, valid = clips[:, None], valid[:, None]
    elif num_crops == 1:
        # Exactly the preparation's path: load_clips resizes as it decodes.
        _, clips = load_clips(path, select, size=size, resize_short=resize_short)
        views = clips[:, None]
    else:
        _, native = load_clips(path, select)  # (C, F, H, W, band) at the native size
        height, width = native.shape[2:4]
        side = min(height, width)
        offsets = crop_offsets(max(height, width), side, num_crops)
        views = np.empty(native.shape[:1] + (num_crops, frames, size, size, native.shape[-1]),
                         native.dtype)
        for crop, offset in enumerate(offsets):
            square = native[:, :, :, offset:offset + side] if width >= height else \
                native[:, :, offset:offset + side]
            for clip in range(native.shape[0]):
                for frame in range(frames):
                    resized = resize_frame(square[clip, frame], size, resize_short)
                    views[clip, crop, frame] = resized.reshape(size, size, -1)
    check_bands(views, bands - extra, path)
    if valid is not None:
        valid = center_crop_numpy(valid[..., None], crop_size)[..., 0]
    views = as_run_inputs(center_crop_numpy(views, crop_size), manifest, path, valid)
    return np.ascontiguousarray(views.reshape((-1, frames, crop_size, crop_size, bands)))


def resize_to(frame, height, width):
    """One (H, W, band) frame resized to exactly (height, width), aspect not kept (as
    torchvision's `Resize((128, 171))`); INTER_AREA when shrinking, INTER_LINEAR otherwise,
    as `data_prep.decode.resize_frame` does."""
    if frame.shape[:2] == (height, width):
        return frame
    shrinking = height * width < frame.shape[0] * frame.shape[1]
    resized = cv2.resize(frame, (width, height),
                         interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return resized[:, :, None] if resized.ndim == 2 else resized


def torchvision_views(path, *, frames, resize, crop_size, num_clips=1):
    """An item's clips as torchvision's video eval transform makes them.

    Args:
        path: str, a video file, a folder of frame images or a .npy array.
        frames: int, consecutive frames per clip (16 for torchvision's Kinetics weights).
        resize: (height, width) every frame is resized to, e.g. (128, 171).
        crop_size: int, the centre crop after the resize, e.g. 112.
        num_clips: int, clips spread evenly over the item (one: the centre window).

    Returns:
        uint8 array (num_clips, frames, crop_size, crop_size, band), RGB.

    Raises:
        DecodeError: the item does not decode.
    """
    select = functools.partial(sample_frame_indices, num_frames=frames, method="stride",
                               stride=1, num_clips=num_clips)
    _, native = load_clips(path, select)  # (C, F, H, W, band) at the native size
    height, width = resize
    clips = np.stack([[resize_to(frame, height, width) for frame in clip] for clip in native])
    return np.ascontiguousarray(center_crop_numpy(clips, crop_size))
