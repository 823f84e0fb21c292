"""`python -m data_prep prepare`: decode items into clip shards, on Apache Beam, resumably.

This module resolves the source layout, validates the arguments, plans the shards and
writes the manifest; `data_prep.pipeline` runs the decoding and the shard writing as a Beam
pipeline (Beam's local runner by default, or any runner given with `--runner=...`).
`prepare_item` is the per-item work: decode, sample, resize and png/jpeg-encode with
OpenCV, in a process that never imports TensorFlow.

Determinism and resuming: each split's items are ordered by a hash of their id (a fixed
pseudo-random order, so every shard mixes classes) and cut into shards of `items_per_shard`
items. A shard is published by renaming `.tmp-<name>.tfrecord` once complete, then its JSON
sidecar (counts, skipped items, a fingerprint of its items and the preparation parameters)
is written. A rerun with the same arguments keeps every shard whose tfrecord and matching
sidecar exist and every finished item file under `out/.work`, deletes temporary files,
redoes the rest, and so writes byte-identical shards to an uninterrupted run, whatever the
runner and the worker count. `manifest.json` is removed at the start and written last.
"""

import argparse
import collections
import contextlib
import dataclasses
import functools
import hashlib
import logging
import math
import os
import time

import cv2
import numpy as np

from core import storage
from core.errors import UserError
from core.lock import hold_output_lock
from core.tensorflow_env import import_tensorflow_quietly
from data_prep.band_statistics import combine_partials, finish_statistics, item_partial
from data_prep.decode import DecodeError, load_clips
from data_prep.sampling import SAMPLING_METHODS, sample_frame_indices
from data_prep.sequence_records import (SEQUENCE_FORMAT_VERSION, default_encoding, encode_frame,
                                       encode_frames, encode_mask, read_item_frames)
from data_prep.shards import (FORMAT_VERSION, MANIFEST_NAME, remove_temporary_files,
                              shard_name)
from data_prep.source_spec import (SourceSpec, add_source_arguments,
                                   source_spec_from_arguments, to_uint8_bounds)
from data_prep.sources import LAYOUTS, MAX_ABSENT_LISTED, resolve_source
from data_prep.workers import available_cores, quiet_video_logs

logger = logging.getLogger(__name__)

ENCODINGS = ("raw", "png", "jpeg")
# `--format`: v1 stores N fixed clips per item (tf.train.Example), v2 every frame of an item
# once (data_prep.sequence_records) and the clips are drawn while training.
FORMATS = ("v1", "v2")
# v2 shards are sized before any item is decoded: assume items of this many frames, stored
# at about an eighth of their raw bytes (jpeg at quality 90).
_V2_ASSUMED_FRAMES = 250
_V2_ASSUMED_RATIO = 8
# Band counts each image codec can store (png grey/RGB/RGBA, jpeg grey/RGB).
ENCODING_BANDS = {"png": (1, 3, 4), "jpeg": (1, 3)}
# The SourceSpec options of sensor data: how values are read, checked and stored (format v2).
SENSOR_OPTIONS = ("nodata", "validity_band", "date_pattern", "bands", "bands_per_date",
                  "to_uint8")
# Default shard size: about this many bytes of raw clips (assuming 3 bands).
TARGET_SHARD_BYTES = 64 * 1024 * 1024
MAX_ITEMS_PER_SHARD = 1024
# Under `out`: the item files a run leaves for its shard writers and for a rerun
# (data_prep.pipeline); removed just before the manifest is written.
WORK_DIR = ".work"


@dataclasses.dataclass(frozen=True)
class ItemTask:
    """Everything a worker needs to turn one item into its clips (picklable, no TF)."""

    path: str
    item_id: str
    frames: int
    size: int
    resize_short: int | None
    sampling: str
    frame_stride: int
    clips_per_video: int
    encoding: str
    frame_template: tuple | None = None  # rawframes: (template, first index, total)
    format: str = "v1"
    fps: float | None = None  # v2: resample to this frame rate (None: keep every frame)
    max_frames: int | None = None  # v2: at most this many frames, evenly spaced
    # v2 sensor data (SourceSpec fields of the same names; data_prep.decode.open_item_frames)
    window: tuple | None = None  # (row_off, col_off, height, width) of the item's raster
    nodata: float | None = None
    validity_band: int | None = None
    date_pattern: str | None = None
    bands: tuple | None = None
    bands_per_date: int | None = None
    to_uint8: tuple | None = None  # (low, high): numbers or one per band
    statistics: bool = False  # v2: the item is in the training split: return its partial
    force_masks: bool = False  # v2: store masks even when every pixel is valid


def prepare_item(task):
    """Decode, sample and resize one item (runs in a worker process).

    Returns:
        dict: `ok` True with `frames_available`, `band`, and `clips` (uint8 array
        (N, F, S, S, band)) or `encoded` (N lists of F png/jpeg bytes); or `ok` False with
        `reason` (the item is skipped), or with `encoding_error` (a user mistake).
    """
    if task.format == "v2":
        return _prepare_whole_item(task)
    select = functools.partial(sample_frame_indices, num_frames=task.frames,
                               method=task.sampling, stride=task.frame_stride,
                               num_clips=task.clips_per_video)
    try:
        total, clips = load_clips(task.path, select, size=task.size,
                                  resize_short=task.resize_short,
                                  frame_template=task.frame_template)
    except (DecodeError, cv2.error) as error:
        return {"ok": False, "reason": str(error).strip().splitlines()[0][:300]}
    except MemoryError:  # this item's size: skipped like a broken one
        return {"ok": False, "reason": "out of memory while decoding it"}
    band = int(clips.shape[-1])
    result = {"ok": True, "frames_available": int(total), "band": band}
    if task.encoding == "raw":
        result["clips"] = clips
        return result
    if band not in ENCODING_BANDS[task.encoding]:
        return {"ok": False, "encoding_error": (
            f"Expected items with {' or '.join(map(str, ENCODING_BANDS[task.encoding]))} "
            f"bands for --encoding {task.encoding}; use --encoding raw for {band}-band items. "
            f"Received: band={band} ({task.item_id})")}
    result["encoded"] = [[encode_frame(frame, task.encoding) for frame in clip]
                         for clip in clips]
    return result


def _prepare_whole_item(task):
    """The v2 half of `prepare_item`: every kept frame of the item, encoded.

    Returns:
        dict: `ok` True with `frames_available` (frames of the item as given), `band`,
        `dtype`, `encoded` (T' bytes values), `encoding` (`task.encoding`, or the default
        for the band count and dtype when it is None), `frame_shape` (H, W, band),
        `frame_rate`, `source` (`SourceInfo`), `masks` (T' png masks or None),
        `valid_fraction` (T' floats or None), `dates` (T' ints or None), `band_names`,
        `nodata`, `geo` and `statistics` (`band_statistics.item_partial`, or None outside
        the training split); or `ok` False as `prepare_item` says.
    """
    try:
        item = read_item_frames(
            task.path, fps=task.fps, max_frames=task.max_frames,
            size=None if task.resize_short else task.size, resize_short=task.resize_short,
            frame_template=task.frame_template, window=task.window, nodata=task.nodata,
            validity_band=task.validity_band, date_pattern=task.date_pattern,
            bands=None if task.bands is None else list(task.bands),
            bands_per_date=task.bands_per_date, to_uint8_rule=task.to_uint8,
            force_masks=task.force_masks)
    except (DecodeError, cv2.error) as error:
        return {"ok": False, "reason": str(error).strip().splitlines()[0][:300]}
    except UserError as error:  # --fps without a frame rate, a to_uint8 rule per band
        return {"ok": False, "encoding_error": f"{error} ({task.item_id})"}
    frames = item.frames
    band = int(frames.shape[-1])
    dtype = str(frames.dtype)
    encoding = task.encoding or default_encoding(band, dtype)
    try:
        encoded = encode_frames(frames, encoding)
    except UserError as error:
        return {"ok": False, "encoding_error": f"{error} ({task.item_id})"}
    with_masks = item.masks is not None
    return {"ok": True, "frames_available": int(item.source.frame_count) or len(frames),
            "band": band, "dtype": dtype, "encoded": encoded, "encoding": encoding,
            "frame_shape": tuple(int(n) for n in frames.shape[1:]),
            "frame_rate": item.frame_rate, "source": item.source,
            "masks": [encode_mask(mask) for mask in item.masks] if with_masks else None,
            "valid_fraction": item.valid_fraction.tolist() if with_masks else None,
            "dates": None if item.dates is None else item.dates.tolist(),
            "band_names": None if item.band_names is None else list(item.band_names),
            "nodata": item.nodata, "geo": item.geo,
            "statistics": item_partial(frames, item.masks, item_id=task.item_id)
            if task.statistics else None}


def _task_for_item(item, frames, size, resize_short, sampling, frame_stride, clips_per_video,
                   encoding, format="v1", fps=None, max_frames=None, sensor=None,
                   statistics_items=frozenset()):
    sensor = dict(sensor or {})
    return ItemTask(item.path, item.item_id, frames, size, resize_short, sampling,
                    frame_stride, clips_per_video, encoding, item.frame_template, format,
                    fps, max_frames, window=getattr(item, "window", None),
                    statistics=id(item) in statistics_items, **sensor)


@dataclasses.dataclass
class _ShardPlan:
    split: str
    index: int
    count: int
    items: list
    tfrecord: str
    sidecar: str
    fingerprint: str


def _positive(value, name, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")
    return int(value)


def _choose(value, name, choices):
    if value not in choices:
        raise UserError(f"Expected `{name}` to be one of {list(choices)}. "
                        f"Received: {name}={value!r}")
    return value


def _make_output_directory(out, name="out"):
    """Create `out` (a user's path): failing is a user mistake, said in one line."""
    try:
        storage.makedirs(out)
        if not storage.is_url(out) and not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as error:
        raise UserError(f"Expected `{name}` to be a directory that can be created and written: "
                        f"{error.strerror}. Received: {name}={out!r}") from None


def default_items_per_shard(frames, size, clips_per_video):
    """Items per shard for about `TARGET_SHARD_BYTES` of raw 3-band clips."""
    item_bytes = clips_per_video * frames * size * size * 3
    return max(1, min(MAX_ITEMS_PER_SHARD, TARGET_SHARD_BYTES // item_bytes))


def default_items_per_shard_v2(side):
    """Items per v2 shard for about `TARGET_SHARD_BYTES`, before any item is decoded (an
    item of `_V2_ASSUMED_FRAMES` 3-band `side`×`side` frames, jpeg-sized)."""
    item_bytes = _V2_ASSUMED_FRAMES * side * side * 3 // _V2_ASSUMED_RATIO
    return max(1, min(MAX_ITEMS_PER_SHARD, TARGET_SHARD_BYTES // max(1, item_bytes)))


def _shard_order(items):
    # Fixed pseudo-random order: shards mix classes, and adding one item moves no other.
    return sorted(items, key=lambda item: hashlib.sha256(item.item_id.encode()).hexdigest())


def _plan_shards(out, source, parameters, items_per_shard):
    plans = []
    for split, items in source.splits.items():
        split_dir = storage.join(out, split)
        ordered = _shard_order(items)
        count = math.ceil(len(ordered) / items_per_shard)
        for index in range(count):
            chunk = ordered[index * items_per_shard:(index + 1) * items_per_shard]
            # A rawframe item's template and frame count are part of it (a single-label
            # item of another layout keeps its old identity, so old shards are reused).
            identity = {"parameters": parameters, "classes": source.classes,
                        "items": [[item.item_id, item.label] if item.frame_template is None
                                  else [item.item_id, item.label, list(item.frame_template)]
                                  for item in chunk]}
            digest = hashlib.sha256(repr(identity).encode()).hexdigest()
            name = shard_name(index, count)
            plans.append(_ShardPlan(split, index, count, chunk,
                                    storage.join(split_dir, name + ".tfrecord"),
                                    storage.join(split_dir, name + ".json"), digest))
    return plans


def _clean_split_dirs(out, plans, splits):
    """Delete temporary files, shards of other plans (an earlier, different run) and item
    files of shards that are not pending any more."""
    expected = {storage.basename(path) for plan in plans
                for path in (plan.tfrecord, plan.sidecar)}
    for split in splits:
        split_dir = storage.join(out, split)
        removed = remove_temporary_files(split_dir)
        if removed:
            logger.info("Removed %d temporary file(s) an interrupted run left in %s",
                        len(removed), split_dir)
        for name in storage.listdir(split_dir) if storage.isdir(split_dir) else ():
            if name.startswith("shard-") and name.endswith((".tfrecord", ".json")) \
                    and name not in expected:
                storage.remove(storage.join(split_dir, name))


def _item_dir(out, plan, make_task):
    """Where the pipeline keeps `plan`'s item files: named by the shard and by what its
    items are decoded with, so a rerun reuses them only for the same work."""
    first = make_task(plan.items[0])
    digest = hashlib.sha256(repr((plan.fingerprint, first.force_masks)).encode()).hexdigest()
    name = storage.basename(plan.tfrecord)[:-len(".tfrecord")]
    return storage.join(out, WORK_DIR, plan.split, f"{name}.{digest[:16]}")


def _clean_work_dir(out, keep):
    """Delete the item folders under out/.work that are not in `keep` (other parameters,
    or shards since published), and what a killed run left half-written."""
    root = storage.join(out, WORK_DIR)
    if not storage.isdir(root):
        return
    for split in storage.listdir(root):
        split_dir = storage.join(root, split)
        if not storage.isdir(split_dir):
            continue
        for name in storage.listdir(split_dir):
            path = storage.join(split_dir, name)
            if path not in keep:
                storage.rmtree(path)
            else:
                remove_temporary_files(path)


def _remove_temporary_files_on_error(out, splits, exc_type, exc, traceback):
    """However a run stops early (Ctrl-C may land anywhere), leave nothing half-written."""
    if exc_type is not None:
        for split in splits:
            remove_temporary_files(storage.join(out, split))
    return False


def _finished_sidecar(plan):
    """The sidecar of a shard a previous run completed with these parameters, or None."""
    if not (storage.isfile(plan.tfrecord) and storage.isfile(plan.sidecar)):
        return None
    try:
        sidecar = storage.read_json(plan.sidecar)
    except (OSError, ValueError):
        return None
    complete = isinstance(sidecar, dict) and {"fingerprint", "first_item_index", "videos",
                                              "clips", "band", "frames_decoded",
                                              "skipped"} <= set(sidecar)
    return sidecar if complete and sidecar["fingerprint"] == plan.fingerprint else None


def _summary_table(manifest, stats):
    absent = manifest.get("absent")
    stored = "clips" if "clip_shape" in manifest else "frames_stored"  # v1 / v2
    rows = [("split", "items", stored.replace("_", " "), "skipped", "shards")
            + (("absent",) if absent else ())]
    for split, info in manifest["splits"].items():
        skipped = sum(1 for entry in manifest["skipped"] if entry.get("split") == split)
        rows.append((split, info["videos"], info[stored], skipped, len(info["shards"]))
                    + ((absent["splits"].get(split, 0),) if absent else ()))
    widths = [max(len(str(row[column])) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(str(cell).rjust(width) if column else str(cell).ljust(width)
                       for column, (cell, width) in enumerate(zip(row, widths)))
             for row in rows]
    seconds = max(stats["seconds"], 1e-9)
    lines.append(
        f"decoded {stats['frames_decoded']} frames of {stats['items_done']} items in "
        f"{stats['seconds']:.1f} s: {stats['frames_decoded'] / seconds:.0f} frames/s, "
        f"{stats['items_done'] / seconds:.1f} items/s ({stats['workers']}, "
        f"{stats['shards_reused']} of {stats['shards']} shard(s) reused"
        + (f", {stats['items_reused']} item file(s) reused" if stats["items_reused"] else "")
        + ")")
    if absent:
        lines.append(f"{absent['count']} listed item(s) not on disk were left out "
                     f"(--only-present; the manifest's `absent` lists "
                     f"{len(absent['items'])} of them)")
    ignored = manifest.get("ignored")
    if ignored:
        lines.append(f"{ignored['count']} file(s) that are not videos, frame folders or "
                     f"arrays were left out (first: {ignored['items'][0]['path']}; the "
                     f"manifest's `ignored` lists {len(ignored['items'])} of them)")
    return "\n".join(lines)


def sensor_options(spec):
    """The sensor options (`SENSOR_OPTIONS`) `spec` sets, as prepare uses them: `to_uint8`
    as `(low, high)` (numbers or one tuple per band), `bands` as a tuple."""
    sensor = {name: getattr(spec, name) for name in SENSOR_OPTIONS
              if getattr(spec, name) is not None}
    if "to_uint8" in sensor:
        low, high = to_uint8_bounds(sensor["to_uint8"])
        sensor["to_uint8"] = (tuple(low), tuple(high)) if isinstance(low, list) \
            else (float(low), float(high))
    if "bands" in sensor:
        sensor["bands"] = tuple(sensor["bands"])
    return sensor


def statistics_split_of(splits):
    """The split the statistics come from: `train`, else the first split."""
    return "train" if "train" in splits else next(iter(splits))


def whole_item_parameters(encoding, resize, fps, max_frames, sensor, statistics_split):
    """The v2 preparation parameters every shard's fingerprint holds (`verify --repair`
    rebuilds them from a manifest with this same function)."""
    parameters = {"format_version": SEQUENCE_FORMAT_VERSION, "encoding": encoding,
                  "resize": resize, "fps": fps, "max_frames": max_frames}
    if sensor:  # only when set, so the shards of an 8-bit dataset keep their identity
        parameters["sensor"] = {name: list(value) if isinstance(value, tuple) else value
                                for name, value in sensor.items()}
    parameters["statistics_split"] = statistics_split
    return parameters


def prepare_dataset(spec, out, frames, size, *, resize_short=None, clips_per_video=1,
                    sampling="uniform", frame_stride=1, workers=None, encoding=None,
                    strict=False, show_progress=True, items_per_shard=None, format=None,
                    fps=None, max_frames=None, pipeline_args=None):
    """Decode a dataset into TFRecord clip shards under `out` and return its manifest.

    Args:
        spec: `data_prep.source_spec.SourceSpec`, where the items are and how the lists
            read (layout, root or a root per split, lists, multi_label, ...); recorded as
            the manifest's `source`.
        out: str, the prepared dataset directory (created; reruns resume in it).
        frames: int, frames per clip F.
        size: int, stored frame side S (clips are (F, S, S, band)).
        resize_short: int or None, resize the short side to this (>= size) then centre-crop
            S×S; None resizes straight to S×S. Defaults to None.
        clips_per_video: int, clips N stored per item. Defaults to 1.
        sampling: `"uniform"` or `"stride"` (see `sample_frame_indices`).
        frame_stride: int, step K for `"stride"` sampling. Defaults to 1.
        workers: int or None, workers of Beam's local runner (each decodes in a sandbox
            process of its own); None uses every core. Ignored with a `--runner` in
            `pipeline_args`.
        encoding: `"raw"`, `"png"` or `"jpeg"`, or None: `"raw"` for v1, and for v2
            `sequence_records.default_encoding` (jpeg for 8-bit 1- and 3-band items, png
            for 16-bit 1-, 3- and 4-band items, raw for others). Defaults to None.
        strict: bool, turn any skipped item into an error. Defaults to False.
        show_progress: bool, show a tqdm progress bar. Defaults to True.
        items_per_shard: int or None, items per shard; None aims at ~64 MiB shards.
        format: `"v2"` (every frame of an item once, one `tf.train.SequenceExample`;
            clips are drawn while training, so `frames`, `clips_per_video`, `sampling` and
            `frame_stride` are ignored and may be None) or `"v1"` (N stored clips of F
            frames per item). None (the default): v2, or v1 when `frames` is given (the
            v1 call `prepare_dataset(spec, out, 16, 112)` keeps its meaning).
        fps: float or None, v2: resample each video to this frame rate (never adding
            frames). Defaults to None (keep every frame).
        max_frames: int or None, v2: keep at most this many frames, evenly spaced.
            Defaults to None.
        pipeline_args: list of str or None, Apache Beam pipeline options
            (`["--runner=PortableRunner", "--job_endpoint=host:port", ...]`, docs/DATA.md);
            None runs Beam's local runner with `workers` workers. Defaults to None.

    The spec's sensor options (`nodata`, `validity_band`, `date_pattern`, `bands`,
    `bands_per_date`, `to_uint8`; format v2 only) say how values are read and checked; a
    v2 manifest records the stored `dtype`, `band_names`, `nodata`, `mask`, `dated`,
    `to_uint8`, the training split's per-band `statistics` and the items' `geo`
    (docs/DATA.md, "Sensor data").

    Returns:
        dict, the manifest written to `out/manifest.json` (docs/DESIGN.md).

    Raises:
        UserError: bad arguments, source layout errors (missing files, entries outside
            `root`), an encoding that cannot hold the items' band count, items with
            different band counts, no item that decodes, or any skip with `strict=True`.

    Example (given a folder of RGB videos, one sub-folder per class):

    ```python
    manifest = prepare_dataset(SourceSpec("folders", "videos/"), "data/prepared", 16, 112)
    manifest["clip_shape"]  # [16, 112, 112, 3]
    ```
    """
    if format is None:
        format = "v2" if frames is None else "v1"
    format = _choose(format, "format", FORMATS)
    whole_items = format == "v2"
    if whole_items:  # the clip options are training options then
        frames, clips_per_video, sampling, frame_stride = None, None, None, None
        if fps is not None and (isinstance(fps, bool) or not isinstance(
                fps, (int, float, np.number)) or not fps > 0):
            raise UserError(f"Expected `fps` to be a positive number. Received: fps={fps!r}")
        fps = None if fps is None else float(fps)
        max_frames = _positive(max_frames, "max_frames", allow_none=True)
        if encoding is not None:
            encoding = _choose(encoding, "encoding", ENCODINGS)
    else:
        if fps is not None or max_frames is not None:
            raise UserError(f"Expected `fps` and `max_frames` only with format v2 (v1 stores "
                            f"clips). Received: fps={fps!r}, max_frames={max_frames!r}")
        frames = _positive(frames, "frames")
        clips_per_video = _positive(clips_per_video, "clips_per_video")
        sampling = _choose(sampling, "sampling", SAMPLING_METHODS)
        frame_stride = _positive(frame_stride, "frame_stride")
        encoding = _choose("raw" if encoding is None else encoding, "encoding", ENCODINGS)
    size = _positive(size, "size")
    resize_short = _positive(resize_short, "resize_short", allow_none=True)
    if resize_short is not None and resize_short < size:
        raise UserError(f"Expected `resize_short` >= `size` ({size}) so the centre crop fits. "
                        f"Received: resize_short={resize_short}")
    if not isinstance(spec, SourceSpec):
        raise UserError(f"Expected a SourceSpec as the source. Received: spec={spec!r}")
    _choose(spec.layout, "layout", LAYOUTS)
    workers = _positive(workers, "workers", allow_none=True) or available_cores()
    if items_per_shard is None:
        items_per_shard = default_items_per_shard_v2(resize_short or size) if whole_items \
            else default_items_per_shard(frames, size, clips_per_video)
    items_per_shard = _positive(items_per_shard, "items_per_shard")
    pipeline_args = tuple(pipeline_args or ())
    if pipeline_args:
        from data_prep.pipeline import check_pipeline_arguments

        check_pipeline_arguments(pipeline_args)
    if out is None:
        raise UserError("Expected `out`, the prepared dataset directory. Received: out=None")
    for name, path in [("out", out)] + [("root", root) for root in spec.roots()]:
        storage.check_url(str(path or ""), f"`{name}`")  # gs://, or a scheme TF knows

    for root in spec.roots():
        if spec.layout == "folders" and _inside(out, root or "."):
            raise UserError(f"Expected --out outside --root for the folders layout (inside, "
                            f"it would be read as a class folder). Received: out={out!r}, "
                            f"root={root!r}")
    source = resolve_source(spec)
    if strict and source.skipped:
        first = source.skipped[0]
        raise UserError(f"Expected every listed item to exist (--strict); "
                        f"{len(source.skipped)} are missing. Received: {first['path']}: "
                        f"{first['reason']}")
    for entry in source.skipped:
        logger.warning("Skipping %s (%s): %s", entry["path"], entry["split"], entry["reason"])
    sensor = sensor_options(spec)
    if sensor and not whole_items:
        name = next(iter(sensor))
        raise UserError(f"Expected `{name}` only with format v2 (v1 stores 8-bit clips by its "
                        f"old rules; prepare with --format v2). Received: {name}="
                        f"{sensor[name]!r}")
    statistics_split = statistics_split_of(source.splits)
    statistics_items = frozenset(id(item) for item in source.splits[statistics_split]) \
        if whole_items else frozenset()

    resize_parameters = {"size": size, "resize_short": resize_short}
    if whole_items:
        # v2 with resize_short keeps the aspect ratio (no crop): the crop makes clips one size.
        resize_parameters = {"size": None if resize_short else size,
                             "resize_short": resize_short}
        parameters = whole_item_parameters(encoding, resize_parameters, fps, max_frames,
                                           sensor, statistics_split)
    else:
        parameters = {"format_version": FORMAT_VERSION, "encoding": encoding,
                      "sampling": {"method": sampling, "frames": frames,
                                   "frame_stride": frame_stride,
                                   "clips_per_video": clips_per_video},
                      "resize": resize_parameters}
    job = _Job(
        out=out, source=source, parameters=parameters,
        make_task=functools.partial(
            _task_for_item, frames=frames, size=size, resize_short=resize_short,
            sampling=sampling, frame_stride=frame_stride, clips_per_video=clips_per_video,
            encoding=encoding, format=format, fps=fps, max_frames=max_frames, sensor=sensor,
            statistics_items=statistics_items),
        items_per_shard=items_per_shard, strict=strict, workers=workers,
        show_progress=show_progress, pipeline_args=pipeline_args)
    _make_output_directory(out)
    # One writer per output (core/lock.py); an object store has no lock: docs/DATA.md.
    with contextlib.nullcontext() if storage.is_url(out) else hold_output_lock(out):
        return _prepare(job)


def _inside(path, root):
    """Whether `path` is `root` or lies under it (local: through symlinks too)."""
    if storage.is_url(path) or storage.is_url(root):
        path, root = storage.normpath(str(path)), storage.normpath(str(root))
        return path == root or path.startswith(root.rstrip("/") + "/")
    real_root = os.path.realpath(root)
    return os.path.commonpath([os.path.realpath(path), real_root]) == real_root


@dataclasses.dataclass(frozen=True)
class _Job:
    """One validated `prepare_dataset` call: what to write, where and how."""

    out: str
    source: object  # data_prep.sources.Source
    parameters: dict  # format_version, encoding, sampling, resize: part of every fingerprint
    make_task: object  # item -> ItemTask
    items_per_shard: int
    strict: bool
    workers: int
    show_progress: bool
    pipeline_args: tuple = ()  # Beam pipeline options; () runs the local runner


def _prepare(job):
    """The part of `prepare_dataset` that writes; runs while holding the output's lock."""
    out, source = job.out, job.source
    for split in source.splits:  # before the old manifest goes: a failure here loses nothing
        split_dir = storage.join(out, split)
        if storage.isfile(split_dir):
            raise UserError(f"Expected `out/{split}` to be a directory (split {split}'s shards "
                            "go there), not a file: move the file or choose another --out. "
                            f"Received: out/{split}={split_dir!r}")
        _make_output_directory(split_dir, name=f"out/{split}")
    manifest_path = storage.join(out, MANIFEST_NAME)
    storage.remove(manifest_path)  # Written again last: present means complete.
    plans = _plan_shards(out, source, job.parameters, job.items_per_shard)
    _clean_split_dirs(out, plans, source.splits)

    finished = {plan.tfrecord: _finished_sidecar(plan) for plan in plans}
    _check_one_band_and_dtype(plans, finished)
    sidecars, state = _write_shards(job, plans, finished)
    _check_one_band_and_dtype(plans, sidecars)
    if any(sidecar.get("mask") for sidecar in sidecars.values()) and \
            any(sidecar.get("unmasked") for sidecar in sidecars.values()):
        sidecars, state = _write_masks_everywhere(job, plans, sidecars, state)

    band = next((sidecars[plan.tfrecord]["band"] for plan in plans
                 if sidecars[plan.tfrecord]["band"] is not None), None)
    if band is None:
        reasons = "; ".join(f"{entry['path']}: {entry['reason']}"
                            for sidecar in sidecars.values() for entry in sidecar["skipped"][:3])
        raise UserError(f"Expected at least one item that decodes. Received: {reasons}")
    manifest = _manifest(job, plans, sidecars, band)
    storage.rmtree(storage.join(out, WORK_DIR))
    storage.write_json(manifest_path, manifest)
    stats = {"seconds": state["seconds"], "frames_decoded": state["frames_decoded"],
             "items_done": state["items_done"], "workers": state["workers"],
             "shards": len(plans), "shards_reused": len(plans) - state["pending_shards"],
             "items_reused": state["items_reused"]}
    logger.info("Prepared %s\n%s", out, _summary_table(manifest, stats))
    return manifest


def _check_one_band_and_dtype(plans, sidecars):
    """Every written shard holds items of the first one's band count and dtype."""
    from data_prep.pipeline import band_mismatch, dtype_mismatch

    first = None
    for plan in plans:
        sidecar = sidecars[plan.tfrecord]
        if not sidecar or sidecar["band"] is None:
            continue
        if first is None:
            first = sidecar
        elif sidecar["band"] != first["band"]:
            raise UserError(band_mismatch(first["band"], sidecar["band"],
                                          sidecar.get("first_item", plan.tfrecord)))
        elif sidecar.get("dtype", "uint8") != first.get("dtype", "uint8"):
            raise UserError(dtype_mismatch(first.get("dtype", "uint8"),
                                           sidecar.get("dtype", "uint8"),
                                           sidecar.get("first_item", plan.tfrecord)))


def _write_masks_everywhere(job, plans, sidecars, state):
    """Write again the shards holding records without masks, with all-valid masks: in a
    dataset with masks every record carries them (known only once items were decoded:
    one float item with NaN among clean ones)."""
    logger.info("Some items have invalid pixels: writing masks for the items without")
    force = dataclasses.replace(job, make_task=lambda item: dataclasses.replace(
        job.make_task(item), force_masks=True))
    again = {plan.tfrecord: None if sidecars[plan.tfrecord].get("unmasked")
             else sidecars[plan.tfrecord] for plan in plans}
    sidecars, second = _write_shards(force, plans, again)
    for key in ("frames_decoded", "items_done", "seconds", "items_reused"):
        second[key] += state[key]
    return sidecars, second


def _workers_text(job, items):
    """`2 worker(s)` on the local runner, else the runner given."""
    from data_prep.pipeline import given_runner

    return given_runner(job.pipeline_args) or f"{min(job.workers, items) or 1} worker(s)"


def _write_shards(job, plans, finished):
    """Write every plan whose shard is not `finished`, with the Beam pipeline of
    `data_prep.pipeline`.

    Returns:
        (sidecars by tfrecord path, state): state holds the frames decoded, items done,
        workers used, shards without a finished sidecar and seconds taken.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from data_prep import pipeline

    shards, works, earlier = {}, [], collections.defaultdict(list)
    finished_kept = {}
    for plan in plans:  # in each split's shard order
        key = f"{plan.split}/{storage.basename(plan.tfrecord)}"
        if finished[plan.tfrecord] is None:
            item_dir = _item_dir(job.out, plan, job.make_task)
            shards[key] = pipeline.ShardJob(
                key, plan.split, plan.tfrecord, plan.sidecar, plan.fingerprint, item_dir,
                tuple((item.item_id, item.label) for item in plan.items),
                tuple(earlier[plan.split]))
            works.extend(pipeline.ItemWork(key, position,
                                           pipeline.item_file(item_dir, position),
                                           job.make_task(item))
                         for position, item in enumerate(plan.items))
        else:
            finished_kept[key] = finished[plan.tfrecord]["videos"]
        earlier[plan.split].append(key)
    _clean_work_dir(job.out, keep={shard.item_dir for shard in shards.values()})
    state = {"frames_decoded": 0, "items_done": len(works), "items_reused": 0,
             "workers": _workers_text(job, len(works)), "pending_shards": len(shards),
             "seconds": 0.0}
    if works:
        quiet_video_logs()
        options = pipeline.pipeline_options(job.pipeline_args, job.workers)
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            # However the run stops (Ctrl-C may land anywhere), nothing half-written stays.
            stack.push(functools.partial(_remove_temporary_files_on_error, job.out,
                                         job.source.splits))
            bar = stack.enter_context(tqdm(total=len(works), unit="item", desc="prepare",
                                           disable=not job.show_progress, leave=False))
            if job.show_progress:
                stack.enter_context(logging_redirect_tqdm())  # warnings print above the bar
            reused = pipeline.run(
                shards, works, finished_kept, storage.join(job.out, WORK_DIR), job.strict,
                options, decode=prepare_item,
                # the local runner's workers share this machine's cores
                opencv_threads=1 if pipeline.given_runner(job.pipeline_args) else max(
                    1, available_cores() // job.workers),
                progress=lambda done: bar.update(min(done, bar.total) - bar.n),
                # the local runner writes shards in this process: TensorFlow loads while
                # the first items decode
                while_starting=import_tensorflow_quietly)
        state["seconds"] = time.perf_counter() - start
        state["items_reused"] = reused
    sidecars = {plan.tfrecord: finished[plan.tfrecord] or _finished_sidecar(plan)
                for plan in plans}
    unwritten = [plan.tfrecord for plan in plans if sidecars[plan.tfrecord] is None]
    if unwritten:
        raise UserError(f"Expected every shard written; {len(unwritten)} were not (a worker "
                        f"stopped early): rerun the same command to finish them. Received: "
                        f"{unwritten[0]}")
    for plan in plans:
        if finished[plan.tfrecord] is None:
            sidecar = sidecars[plan.tfrecord]
            state["frames_decoded"] += sidecar["frames_decoded"]
            for entry in sidecar["skipped"]:
                logger.warning("Skipping %s: %s", entry["path"], entry["reason"])
    # A reused shard numbers its items from where the shards before it ended: if one of
    # those changed since (its files changed), write it again so indices stay contiguous.
    renumber, next_index = [], collections.Counter()
    for plan in plans:
        sidecar = sidecars[plan.tfrecord]
        if sidecar["first_item_index"] != next_index[plan.split]:
            renumber.append(plan.tfrecord)
        next_index[plan.split] += sidecar["videos"]
    if renumber:
        again = {path: None if path in renumber else sidecar
                 for path, sidecar in sidecars.items()}
        sidecars, second = _write_shards(job, plans, again)
        for key in ("frames_decoded", "items_done", "seconds", "items_reused"):
            state[key] += second[key]
    return sidecars, state


def _manifest(job, plans, sidecars, band):
    """The manifest of the written shards (docs/DESIGN.md)."""
    whole_items = job.parameters["format_version"] == SEQUENCE_FORMAT_VERSION
    splits = {}
    skipped = list(job.source.skipped)  # items missing before decoding (Kinetics)
    for split in job.source.splits:
        split_plans = [plan for plan in plans if plan.split == split]
        split_sidecars = [sidecars[plan.tfrecord] for plan in split_plans]
        splits[split] = {
            "videos": sum(sidecar["videos"] for sidecar in split_sidecars),
            "clips": sum(sidecar["clips"] for sidecar in split_sidecars),
            "frames_decoded": sum(sidecar["frames_decoded"] for sidecar in split_sidecars),
            "shards": [f"{plan.split}/{storage.basename(plan.tfrecord)}"
                       for plan in split_plans],
        }
        if whole_items:  # an item is one record: "clips" would only repeat "videos"
            del splits[split]["clips"]
            splits[split]["frames_stored"] = sum(sidecar.get("frames_stored", 0)
                                                 for sidecar in split_sidecars)
        skipped.extend(entry for sidecar in split_sidecars for entry in sidecar["skipped"])
    if whole_items:
        sidecars_all = list(sidecars.values())
        encodings = {sidecar["encoding"] for sidecar in sidecars_all if sidecar.get("encoding")}
        sizes = {tuple(size) for sidecar in sidecars_all
                 for size in sidecar.get("frame_sizes", [])}
        heights, widths = {size[0] for size in sizes}, {size[1] for size in sizes}
        manifest = {
            "format_version": SEQUENCE_FORMAT_VERSION,
            "classes": job.source.classes,
            # null where the items differ (resize_short keeps each item's aspect ratio)
            "frame_shape": [heights.pop() if len(heights) == 1 else None,
                            widths.pop() if len(widths) == 1 else None, band],
            "encoding": (encodings.pop() if len(encodings) == 1 else
                         job.parameters["encoding"] or (band and default_encoding(
                             band, next((sidecar["dtype"] for sidecar in sidecars_all
                                         if sidecar.get("dtype")), "uint8")))),
            "resize": job.parameters["resize"],
            "fps": job.parameters["fps"],
            "max_frames": job.parameters["max_frames"],
        }
        manifest.update(_sensor_manifest(job, plans, sidecars, band))
    else:
        sampling, resize = job.parameters["sampling"], job.parameters["resize"]
        manifest = {
            "format_version": FORMAT_VERSION,
            "classes": job.source.classes,
            "clip_shape": [sampling["frames"], resize["size"], resize["size"], band],
            "encoding": job.parameters["encoding"],
            "clips_per_video": sampling["clips_per_video"],
            "sampling": sampling,
            "resize": resize,
        }
    manifest.update({
        "source": job.source.description,
        "items_per_shard": job.items_per_shard,
        "splits": splits,
        "skipped": skipped,
    })
    if job.source.multi_label:
        manifest["multi_label"] = True
        manifest["num_classes"] = len(job.source.classes)
    if job.source.description.get("only_present"):
        absent = list(job.source.absent)  # bounded, all counted
        manifest["absent"] = {
            "count": len(absent),
            "splits": dict(collections.Counter(entry["split"] for entry in absent)),
            "items": absent[:MAX_ABSENT_LISTED]}
    if job.source.ignored:
        # Files that are not media (notes.txt beside the videos): counted, never items.
        ignored = job.source.ignored
        manifest["ignored"] = {
            "count": len(ignored),
            "splits": dict(collections.Counter(entry["split"] for entry in ignored)),
            "items": ignored[:MAX_ABSENT_LISTED]}
    _add_items_per_class(manifest, job.source, plans, skipped)
    return manifest


def _sensor_manifest(job, plans, sidecars, band):
    """The v2 manifest's keys about stored values: dtype, band names, nodata, mask, dated,
    to_uint8, geo and the training split's `statistics`."""
    written = [sidecar for sidecar in sidecars.values() if sidecar.get("videos")]
    dtypes = {sidecar.get("dtype", "uint8") for sidecar in written}
    if len(dtypes) > 1:
        raise UserError(f"Expected one dtype in {job.out}; its shards hold {sorted(dtypes)}. "
                        f"Received: out={job.out!r}")
    names = next((sidecar["band_names"] for sidecar in written if sidecar.get("band_names")),
                 None)
    nodata = next((sidecar["nodata"] for sidecar in written
                   if sidecar.get("nodata") is not None), None)
    rule = (job.parameters.get("sensor") or {}).get("to_uint8")
    if rule is not None and band:
        low, high = rule
        rule = {"low": [float(v) for v in (low if isinstance(low, list) else [low] * band)],
                "high": [float(v) for v in (high if isinstance(high, list) else [high] * band)]}
    facts = {
        "dtype": dtypes.pop() if dtypes else "uint8",
        "band_names": names,
        "nodata": nodata,
        "mask": any(sidecar.get("mask") for sidecar in written),
        "dated": any(sidecar.get("dated") for sidecar in written),
        "to_uint8": rule,
    }
    geo = {}
    for sidecar in written:
        geo.update(sidecar.get("geo", {}))
    if geo:
        facts["geo"] = dict(sorted(geo.items()))
    split = job.parameters.get("statistics_split")
    partials = [sidecars[plan.tfrecord].get("statistics") for plan in plans
                if plan.split == split]
    partials = [partial for partial in partials if partial]
    if partials:
        facts["statistics"] = finish_statistics(combine_partials(partials), split)
    return facts


def _add_items_per_class(manifest, source, plans, skipped):
    """`splits[split]["items_per_class"]`: {class name: prepared items} for the classes
    present (in label order), so `inspect` need not read every record to know them."""
    left_out = {(entry.get("split"), entry["path"]) for entry in skipped}
    for split, info in manifest["splits"].items():
        counts = collections.Counter()
        for plan in plans:
            for item in plan.items:
                if plan.split == split and (split, item.item_id) not in left_out:
                    counts.update(item.label if isinstance(item.label, tuple)
                                  else (item.label,))
        info["items_per_class"] = {source.classes[label]: counts[label]
                                   for label in sorted(counts)}


def _run(args):
    if args.config:
        # The experiment YAML has one reader, training.config (data_prep cannot import it).
        raise UserError(f"prepare reads no experiment YAML; prepare a config's data with "
                        f"`python train.py --config {args.config} --prepare-only` (override "
                        f"keys with --set data.KEY=VALUE). Received: --config {args.config}")
    clip_flags = [name for name in ("frames", "clips_per_video", "sampling", "frame_stride")
                  if getattr(args, name) is not None]
    # v2 is the default; a v1 command (it names the clips: --frames ...) keeps its meaning.
    fmt = args.format or ("v1" if clip_flags else "v2")
    for required in ("layout", "root", "out", "size") + (("frames",) if fmt == "v1" else ()):
        if getattr(args, required) is None:
            raise UserError(f"prepare needs --{required}. Received: {required}=None")
    spec = source_spec_from_arguments(args)
    flags = {"resize_short": args.resize_short, "clips_per_video": args.clips_per_video,
             "sampling": args.sampling, "frame_stride": args.frame_stride,
             "workers": args.workers, "encoding": args.encoding, "strict": args.strict or None,
             "items_per_shard": args.items_per_shard, "format": fmt, "fps": args.fps,
             "max_frames": args.max_frames}
    if fmt == "v2" and clip_flags:
        flag = "--" + clip_flags[0].replace("_", "-")
        raise UserError(f"Expected {flag} only with --format v1: v2 stores whole items and "
                        f"the clips are drawn while training (data.frames, data.sampling, "
                        f"data.frame_stride). Received: {flag} {getattr(args, clip_flags[0])}")
    arguments = {key: value for key, value in flags.items() if value is not None}
    manifest = prepare_dataset(spec, args.out, args.frames, args.size,
                               show_progress=not args.no_progress,
                               pipeline_args=getattr(args, "pipeline_args", None), **arguments)
    name = MANIFEST_NAME
    shape = (f"clip shape {manifest['clip_shape']}" if "clip_shape" in manifest else
             f"whole items, frame shape {manifest['frame_shape']}, {manifest['encoding']} "
             f"{manifest.get('dtype', 'uint8')}")
    print(f"wrote {storage.join(args.out, name)}: "
          f"{len(manifest['classes'])} classes, {shape}, "
          f"{len(manifest['skipped'])} skipped"
          + (f", {manifest['absent']['count']} absent (--only-present)"
             if "absent" in manifest else "")
          + (f", {manifest['ignored']['count']} not media (ignored)"
             if "ignored" in manifest else ""))
    return 0


def register(subparsers):
    """Adds the `prepare` sub-command to an argparse `subparsers` object."""
    parser = subparsers.add_parser(
        "prepare", help="decode videos into TFRecord clip shards",
        description="Decode a dataset into TFRecord shards of uint8 (F, H, W, band) clips. "
                    "To prepare an experiment YAML's data: `python train.py --config FILE "
                    "--prepare-only`.")
    parser.add_argument("--config", help=argparse.SUPPRESS)  # moved: train.py --prepare-only
    add_source_arguments(parser, LAYOUTS)  # --layout, --root, --list, ... (SourceSpec)
    parser.add_argument("--out", help="prepared dataset directory")
    parser.add_argument("--format", choices=FORMATS,
                        help="v2 (default): every frame of an item, clips drawn while "
                             "training; v1: N clips of F frames per item (the default when "
                             "--frames, --clips-per-video, --sampling or --frame-stride is "
                             "given)")
    parser.add_argument("--fps", type=float, help="v2: resample videos to this frame rate")
    parser.add_argument("--max-frames", type=int,
                        help="v2: keep at most this many frames per item, evenly spaced")
    parser.add_argument("--frames", type=int, help="v1: frames per clip F")
    parser.add_argument("--size", type=int, help="stored frame side S")
    parser.add_argument("--resize-short", type=int,
                        help="resize the short side to R then centre-crop S×S "
                             "(default: resize straight to S×S)")
    parser.add_argument("--clips-per-video", type=int, help="clips stored per item (default 1)")
    parser.add_argument("--sampling", choices=SAMPLING_METHODS, help="default uniform")
    parser.add_argument("--frame-stride", type=int, help="K for --sampling stride (default 1)")
    parser.add_argument("--workers", type=int,
                        help="workers of Beam's local runner, each decoding in a process of "
                             "its own (default: all cores); with --runner, the runner's "
                             "options say")
    parser.add_argument("--encoding", choices=ENCODINGS,
                        help="frame storage (default: raw for v1; for v2 jpeg for 8-bit 1- "
                             "and 3-band items, png for 16-bit 1-, 3- and 4-band items, raw "
                             "otherwise)")
    parser.add_argument("--items-per-shard", type=int,
                        help="items per shard (default: about 64 MiB of clips)")
    parser.add_argument("--strict", action="store_true", help="make any skipped item an error")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run)
    return parser
