"""Read v2 shards (`data_prep.sequence_records`) as clips drawn while reading.

Each record holds a whole item; every epoch draws fresh clips from it in the input graph
(`data_prep.clip_sampling`), decoding only the sampled frames:

- `training_clips`: shuffled items, one random clip each, `(clip, label)`.
- `evaluation_views`: items in file order, the C deterministic clips of each,
  `(clip, label, item_index)`, the views of one item consecutive.

Both are unbatched and end in (F, H, W, band) clips of the stored dtype; records without
frames are skipped (their position still counts as an item index in evaluation); crops,
flips and batching belong to the training input pipeline. `load_items` is the whole-items
reader of a manifest's split (`data_prep.load_split` for v2, with the options below).

What a clip holds beyond its stored frames (issue 20) is one JSON-able dict, the read
options (`read_options`, kept in a run's data_manifest.json as `clip_inputs`): the stored
`dtype`; whether records carry validity masks (`mask`) and dates (`dated`); `fill`, one value
per band put in invalid pixels (masked or NaN; the normalisation mean, so they become 0);
`min_valid_fraction` (frames below it are not sampled); `sample_by` (`index` or `date`);
and extra float bands appended after the stored ones: `mask_band` (the validity 0/1) and
`day_of_year` (`band`: day / 365.25; `sinusoidal`: its sin and cos). With extra bands the
clip is float32. Randomness is stateless: one seed pair per element from a
seeded `tf.data.Dataset.random`, so the same seed gives the same clips, and a new epoch
(a new iteration of the dataset) draws new ones.
"""

import tensorflow as tf

from core.errors import UserError
from data_prep.clip_sampling import (DECODED_DTYPES, day_of_year, decode_frames, decode_masks,
                                     eligible_frames, sample_clip_dates, sample_clip_indices)
from data_prep.sequence_records import LABEL_INDEX_KEY, parse_sequence_record
from data_prep.shards import is_multi_label, num_classes_of

AUTOTUNE = tf.data.AUTOTUNE
# Folded into each element's seed pair so the clip choice is independent of the crop and
# flip the training pipeline derives from its own seed stream.
_SAMPLING_SALT = 0x5EC2

SAMPLE_BY = ("index", "date")
DAY_OF_YEAR_INPUTS = {"none": 0, "band": 1, "sinusoidal": 2}  # -> extra bands
# What the options default to: an 8-bit item read as it always was.
READ_DEFAULTS = {"dtype": "uint8", "mask": False, "dated": False, "fill": None,
                 "min_valid_fraction": 0.0, "sample_by": "index", "mask_band": False,
                 "day_of_year": "none"}
_DAYS_PER_YEAR = 365.25


def read_options(manifest=None, **options):
    """The read options (see the module docstring) of a v2 manifest, with `options` over them.

    Args:
        manifest: dict or None, a v2 manifest: gives `dtype`, `mask` and `dated`.
        **options: any key of `READ_DEFAULTS`.

    Returns:
        dict with every key of `READ_DEFAULTS`.

    Raises:
        UserError: an unknown key or value, a fill of the wrong length, date sampling or a
            day-of-year input for undated items.

    Example:

    >>> read_options({"dtype": "uint16", "frame_shape": [8, 8, 2]}, mask_band=True)["dtype"]
    'uint16'
    """
    unknown = sorted(set(options) - set(READ_DEFAULTS))
    if unknown:
        raise UserError(f"Expected read options among {sorted(READ_DEFAULTS)}. "
                        f"Received: {unknown}")
    merged = dict(READ_DEFAULTS)
    for key in ("dtype", "mask", "dated"):
        if manifest and manifest.get(key) is not None:
            merged[key] = manifest[key]
    merged.update(options)
    if merged["dtype"] not in DECODED_DTYPES:
        raise UserError(f"Expected a stored dtype among {list(DECODED_DTYPES)}. "
                        f"Received: dtype={merged['dtype']!r}")
    if merged["sample_by"] not in SAMPLE_BY:
        raise UserError(f"Expected data.sample_by to be one of {list(SAMPLE_BY)}. "
                        f"Received: sample_by={merged['sample_by']!r}")
    if merged["day_of_year"] not in DAY_OF_YEAR_INPUTS:
        raise UserError(f"Expected data.day_of_year to be one of {list(DAY_OF_YEAR_INPUTS)}. "
                        f"Received: day_of_year={merged['day_of_year']!r}")
    fraction = merged["min_valid_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 <= fraction <= 1:
        raise UserError(f"Expected data.min_valid_fraction in [0, 1]. "
                        f"Received: min_valid_fraction={fraction!r}")
    merged["min_valid_fraction"] = float(fraction)
    if not merged["dated"] and (merged["sample_by"] == "date"
                                or merged["day_of_year"] != "none"):
        raise UserError("Expected dated items (prepared with --date-pattern or date "
                        "sidecars; the manifest says \"dated\": false) for data.sample_by: "
                        f"date or a day-of-year input. Received: sample_by="
                        f"{merged['sample_by']}, day_of_year={merged['day_of_year']}")
    bands = (manifest or {}).get("frame_shape", [None] * 3)[2]
    if merged["fill"] is not None:
        merged["fill"] = [float(v) for v in merged["fill"]]
        if bands is not None and len(merged["fill"]) != bands:
            raise UserError(f"Expected one fill value per stored band ({bands}). "
                            f"Received: fill={merged['fill']}")
    return merged


def extra_bands(options):
    """How many bands `options` append after the stored ones (mask, day of year)."""
    return int(bool(options["mask_band"])) + DAY_OF_YEAR_INPUTS[options["day_of_year"]]


def clip_dtype(options):
    """The dtype of the clips read with `options`: the stored one, float32 with extra bands."""
    return "float32" if extra_bands(options) else options["dtype"]


def _clip_indices(parsed, num_frames, method, stride, options, *, training, seed=None,
                  num_clips=1):
    """(num_clips, F) frame indices: by index or date, among the frames valid enough."""
    fraction = options["min_valid_fraction"]
    candidates = eligible_frames(parsed["valid_fraction"], fraction) if fraction else None
    if options["sample_by"] == "date":
        return sample_clip_dates(parsed["dates"], num_frames, training=training, seed=seed,
                                 num_clips=num_clips, candidates=candidates)
    if candidates is None:
        return sample_clip_indices(parsed["num_frames"], num_frames, method, stride,
                                   training=training, seed=seed, num_clips=num_clips)
    return tf.gather(candidates, sample_clip_indices(
        tf.size(candidates), num_frames, method, stride, training=training, seed=seed,
        num_clips=num_clips))


def _day_of_year_bands(dates, kind):
    """Day-of-year bands (..., k) of int64 dates (...): day / 365.25 or its sin and cos."""
    fraction = tf.cast(day_of_year(dates), tf.float32) / _DAYS_PER_YEAR
    if kind == "band":
        return fraction[..., None]
    angle = 2 * 3.141592653589793 * fraction
    return tf.stack([tf.sin(angle), tf.cos(angle)], axis=-1)


def assemble_clip(frames, valid, dates, options):
    """Stored frames (S.., H, W, B) -> the clip the model takes, as `options` say.

    Invalid pixels (`valid` False, or NaN in a float band) take the band's `fill` value;
    the mask and day-of-year bands follow the stored ones (float32 then).

    Args:
        frames: tensor (..., H, W, B) of the stored dtype.
        valid: bool tensor (..., H, W), or None (every pixel valid).
        dates: int tensor (...) of the frames' dates, or None (needed for a day-of-year
            input).
        options: dict, `read_options`.

    Returns:
        tensor (..., H, W, B + extra_bands(options)) of `clip_dtype(options)`.
    """
    need_validity = options["fill"] is not None or options["mask_band"]
    if need_validity:
        if valid is None:
            valid = tf.ones(tf.shape(frames)[:-1], tf.bool)
        if frames.dtype.is_floating:
            valid = tf.logical_and(valid, tf.logical_not(
                tf.reduce_any(tf.math.is_nan(frames), axis=-1)))
    if options["fill"] is not None and (valid is not None or frames.dtype.is_floating):
        fill = tf.constant(options["fill"], tf.float64)
        if frames.dtype.is_integer:
            fill = tf.clip_by_value(tf.round(fill), frames.dtype.min, frames.dtype.max)
        frames = tf.where(valid[..., None], frames, tf.cast(fill, frames.dtype))
    if not extra_bands(options):
        return frames
    bands = [tf.cast(frames, tf.float32)]
    if options["mask_band"]:
        bands.append(tf.cast(valid, tf.float32)[..., None])
    if options["day_of_year"] != "none":
        values = _day_of_year_bands(dates, options["day_of_year"])
        bands.append(values[..., None, None, :] * tf.ones_like(bands[0][..., :1]))
    return tf.concat(bands, axis=-1)


def item_records(files, *, shuffle_files=False, seed=None, num_parallel_reads=None,
                 num_input_pipelines=1, input_pipeline_id=0):
    """The serialised records of `files` (TFRecord paths), one per item.

    Args:
        files: list of str, v2 shard files (or Model Garden / DMVR TFRecords).
        shuffle_files: bool, shuffle the file order anew each epoch (seeded by `seed`).
        seed: int or None.
        num_parallel_reads: int or None (None: `tf.data.AUTOTUNE`), files read at once; the
            interleave stays deterministic so a seeded run repeats.
        num_input_pipelines, input_pipeline_id: this reader takes the files whose position
            is congruent to `input_pipeline_id` (multi-worker runs).

    Returns:
        `tf.data.Dataset` of scalar strings.

    Raises:
        UserError: no files, or fewer files than input pipelines.
    """
    files = [str(path) for path in files]
    if not files:
        raise UserError("Expected at least one v2 record file. Received: files=[]")
    if num_input_pipelines > 1 and (not 0 <= input_pipeline_id < num_input_pipelines
                                    or len(files) < num_input_pipelines):
        raise UserError(f"Expected at least one record file per input pipeline and "
                        f"0 <= input_pipeline_id < {num_input_pipelines}. Received: "
                        f"{len(files)} files, input_pipeline_id={input_pipeline_id}")
    if num_parallel_reads is None:
        num_parallel_reads = AUTOTUNE
    paths = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))
    if num_input_pipelines > 1:
        paths = paths.shard(num_input_pipelines, input_pipeline_id)
    if shuffle_files:
        paths = paths.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    return paths.interleave(tf.data.TFRecordDataset, cycle_length=num_parallel_reads,
                            num_parallel_calls=num_parallel_reads, deterministic=True)


def _target(labels, multi_label, num_classes):
    """int32 label id (the first of `clip/label/index`), or a float32 multi-hot vector."""
    if multi_label:
        # Ids are distinct, so the summed one-hot rows are the multi-hot vector.
        return tf.reduce_sum(tf.one_hot(labels, num_classes, dtype=tf.float32), axis=0)
    return tf.cast(labels[0], tf.int32)


def _check_label_options(multi_label, num_classes):
    if multi_label and not num_classes:
        raise UserError(f"Expected `num_classes` for a multi-label dataset. "
                        f"Received: num_classes={num_classes!r}")


def _with_frames(items):
    """Drops records without frames (a generator that failed on a video can write one):
    there is no clip to draw from them."""
    return items.filter(lambda parsed: parsed["num_frames"] > 0)


def _decode(parsed, indices, encoding, channels, options):
    """The clip(s) of frames `indices`: decoded, invalid pixels filled, extra bands added."""
    frames = decode_frames(parsed["frames"], indices, encoding, channels=channels,
                           height=parsed["height"], width=parsed["width"],
                           dtype=options["dtype"])
    valid = None
    if options["mask"] and (options["fill"] is not None or options["mask_band"]):
        valid = decode_masks(parsed["masks"], indices, tf.shape(frames)[-3],
                             tf.shape(frames)[-2])
    dates = tf.gather(parsed["dates"], indices) if options["day_of_year"] != "none" else None
    return assemble_clip(frames, valid, dates, options)


def training_clips(files, *, num_frames, method="uniform", stride=1, encoding="jpeg",
                   channels=3, seed=0, shuffle_buffer=64, repeat=False, multi_label=False,
                   num_classes=None, num_input_pipelines=1, input_pipeline_id=0,
                   options=None):
    """One fresh random clip per item and epoch.

    Args:
        files: list of str, v2 record files.
        num_frames, method, stride: the clip (`sample_clip_indices`).
        encoding: `"jpeg"`, `"png"` or `"raw"`, how the frames are stored (the manifest's;
            `"jpeg"` for Model Garden / DMVR records).
        channels: int, bands per frame.
        seed: int, seeds the file order, the shuffle and every clip choice.
        shuffle_buffer: int, items (serialised, still encoded) held by the shuffle.
        repeat: bool, repeat forever; each pass draws new clips.
        multi_label, num_classes: a multi-label dataset yields float32 multi-hot labels
            (num_classes,).
        num_input_pipelines, input_pipeline_id: see `item_records`.
        options: dict or None, the read options (`read_options`; None: its defaults).

    Returns:
        `tf.data.Dataset` of `(clip (F, H, W, channels + extra bands), label)`, the clip of
        `clip_dtype(options)` (uint8 by default); label int32 scalar (multi-label: float32
        (num_classes,)). H and W are those of the stored frames.
    """
    _check_label_options(multi_label, num_classes)
    options = read_options(**(options or {}))
    records = item_records(files, shuffle_files=True, seed=seed,
                           num_input_pipelines=num_input_pipelines,
                           input_pipeline_id=input_pipeline_id)
    records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(
        2, drop_remainder=True)

    def clip_of(parsed, element_seed):
        sample_seed = tf.random.experimental.stateless_fold_in(element_seed, _SAMPLING_SALT)
        indices = _clip_indices(parsed, num_frames, method, stride, options, training=True,
                                seed=sample_seed)[0]
        clip = _decode(parsed, indices, encoding, channels, options)
        return clip, _target(parsed["labels"], multi_label, num_classes)

    items = _with_frames(records.map(parse_sequence_record, num_parallel_calls=AUTOTUNE))
    return tf.data.Dataset.zip((items, seeds)).map(clip_of, num_parallel_calls=AUTOTUNE)


def evaluation_views(files, *, num_frames, num_clips=1, method="uniform", stride=1,
                     encoding="jpeg", channels=3, multi_label=False, num_classes=None,
                     options=None):
    """The `num_clips` deterministic clips of every item, in file order.

    The clips are `data_prep.sampling.sample_frame_indices(T, num_frames, method=method,
    stride=stride, num_clips=num_clips)`, the v1 rule (by default: the read `options` may
    sample among the frames valid enough, or by date; see `training_clips`). The item index is the record's
    `clip/item_index`, or its position in the files when it has none (a Model Garden / DMVR
    record).

    Returns:
        `tf.data.Dataset` of `(clip (F, H, W, channels + extra bands), label, item_index
        int32)`, `num_clips` consecutive elements per item; clip and label as in
        `training_clips`.
    """
    _check_label_options(multi_label, num_classes)
    options = read_options(**(options or {}))
    records = item_records(files, shuffle_files=False)

    def views_of(position, parsed):
        indices = _clip_indices(parsed, num_frames, method, stride, options, training=False,
                                num_clips=num_clips)
        clips = _decode(parsed, indices, encoding, channels, options)
        label = _target(parsed["labels"], multi_label, num_classes)
        index = tf.where(parsed["item_index"] >= 0, parsed["item_index"], position)
        labels = tf.repeat(label[None], num_clips, axis=0)
        return clips, labels, tf.fill([num_clips], tf.cast(index, tf.int32))

    items = records.map(parse_sequence_record, num_parallel_calls=AUTOTUNE).enumerate()
    items = items.filter(lambda position, parsed: parsed["num_frames"] > 0)
    return items.map(views_of, num_parallel_calls=AUTOTUNE).unbatch()


def load_items(manifest, shards, *, num_frames, clip_selection="all", with_item_index=False,
               seed=None, sampling="uniform", frame_stride=1, num_clips=1, shuffle_buffer=64,
               num_input_pipelines=1, input_pipeline_id=0, options=None):
    """The clips of a v2 split (its `shards`), as `data_prep.load_split` reads them, with
    the read `options` (None: those of the manifest, `read_options(manifest)`).

    Args:
        manifest: dict, the v2 manifest (encoding, frame_shape, dtype, classes, ...).
        shards: list of str, the split's record files.
        num_frames, sampling, frame_stride, num_clips, shuffle_buffer: the clips drawn.
        clip_selection: `"random"` (training: one fresh clip per item, shuffled) or `"all"`
            (the `num_clips` evaluation views of every item, in order).
        with_item_index: bool, `"all"` only: add the item index.
        seed: int or None; num_input_pipelines, input_pipeline_id: see `item_records`.
        options: dict or None, read options.

    Returns:
        `tf.data.Dataset` of `(clip, label)` or `(clip, label, item_index)`.

    Raises:
        UserError: `with_item_index` with `"random"`, bad options.
    """
    options = read_options(manifest, **(options or {}))
    common = dict(num_frames=num_frames, method=sampling, stride=frame_stride,
                  encoding=manifest["encoding"], channels=manifest["frame_shape"][2],
                  multi_label=is_multi_label(manifest), num_classes=num_classes_of(manifest),
                  options=options)
    if clip_selection == "random":
        if with_item_index:
            raise UserError("Expected with_item_index only with clip_selection='all' on a v2 "
                            "dataset (training clips are drawn without it). Received: "
                            "clip_selection='random', with_item_index=True")
        return training_clips(shards, seed=0 if seed is None else seed,
                              shuffle_buffer=shuffle_buffer,
                              num_input_pipelines=num_input_pipelines,
                              input_pipeline_id=input_pipeline_id, **common)
    views = evaluation_views(shards, num_clips=num_clips, **common)
    if num_input_pipelines > 1:
        views = views.shard(num_input_pipelines, input_pipeline_id)
    if with_item_index:
        return views
    return views.map(lambda clip, label, index: (clip, label))


def record_labels(files, batch_size=256):
    """Yields the `clip/label/index` ids of every record of `files` (one int64 numpy array
    per record, in file order), parsing only that context key: no frame is decoded."""
    spec = {LABEL_INDEX_KEY: tf.io.VarLenFeature(tf.int64)}
    records = tf.data.TFRecordDataset([str(path) for path in files],
                                      num_parallel_reads=AUTOTUNE)
    for batch in records.batch(batch_size):
        context, _, _ = tf.io.parse_sequence_example(batch, context_features=spec)
        yield from tf.RaggedTensor.from_sparse(context[LABEL_INDEX_KEY]).numpy()
