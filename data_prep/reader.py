"""Read a prepared dataset: its manifest, and its shards as a `tf.data.Dataset`.

`load_split` is the one reader training and evaluation build on. TensorFlow is imported
inside it, so `read_manifest` (and `import data_prep`) stay light.
"""

from core import storage
from core.errors import UserError
from data_prep.manifest_checks import check_manifest
from data_prep.sequence_records import SEQUENCE_FORMAT_VERSION
from data_prep.shards import FORMAT_VERSION, MANIFEST_NAME, clip_parser, is_multi_label, \
    num_classes_of, split_shard_paths

# The keys each format version's manifest must have (docs/DESIGN.md).
_REQUIRED_KEYS = {
    FORMAT_VERSION: ("format_version", "classes", "clip_shape", "encoding", "clips_per_video",
                     "splits"),
    SEQUENCE_FORMAT_VERSION: ("format_version", "classes", "frame_shape", "encoding",
                              "splits"),
}


# What a manifest written before issue 20 ("any sensor") means by the keys it lacks.
SENSOR_DEFAULTS = {"dtype": "uint8", "band_names": None, "nodata": None, "mask": False,
                   "dated": False, "to_uint8": None}


def with_sensor_defaults(manifest):
    """The manifest with the stored-values keys an older prepare did not write, at what
    they meant then (uint8, no names, no nodata, no masks, no dates, no 8-bit rule);
    `statistics` and `geo` stay absent (readers fall back as before). A v1 manifest (stored
    8-bit clips, which the sensor keys never describe) is returned as it is."""
    if manifest.get("format_version") != SEQUENCE_FORMAT_VERSION:
        return manifest
    return {**SENSOR_DEFAULTS, **manifest}


def is_whole_items(manifest):
    """True for a v2 dataset (whole items; clips drawn while reading)."""
    return manifest.get("format_version") == SEQUENCE_FORMAT_VERSION


def clip_manifest(manifest, *, frames, sampling="uniform", frame_stride=1, num_clips=1):
    """The manifest as a reader of clips sees it: v1 unchanged; v2 with the clips drawn as
    asked (`clip_shape` [F, H, W, band] with H, W None where items differ, `sampling`,
    `clips_per_video` = `num_clips` evaluation views, `splits[s]["clips"]` = items x views).

    A run keeps this (RUN_DIR/data_manifest.json), so prediction and evaluation take the
    clips the run was trained on without the config.
    """
    if not is_whole_items(manifest):
        return manifest
    height, width, bands = manifest["frame_shape"]
    view = dict(manifest)
    view["clip_shape"] = [int(frames), height, width, bands]
    view["sampling"] = {"method": sampling, "frames": int(frames),
                        "frame_stride": int(frame_stride), "clips_per_video": int(num_clips)}
    view["clips_per_video"] = int(num_clips)
    view["splits"] = {split: {**info, "clips": info["videos"] * int(num_clips)}
                      for split, info in manifest["splits"].items()}
    return view


def read_manifest(prepared_dir):
    """The manifest of a prepared dataset directory.

    Raises:
        UserError: `prepared_dir/manifest.json` is missing (not prepared, or the run did not
            finish), not JSON, lacks a key, or has another format version.
    """
    path = storage.join(str(prepared_dir), MANIFEST_NAME)
    try:
        manifest = storage.read_json(path)
    except FileNotFoundError:
        raise UserError(f"Expected a prepared dataset (manifest.json written by `python -m "
                        f"data_prep prepare`) in {prepared_dir}; none there, or the run did "
                        f"not finish. Received: prepared_dir={str(prepared_dir)!r}") from None
    except (OSError, ValueError) as error:
        raise UserError(f"Expected {path} to be a readable JSON manifest. "
                        f"Received: {error}") from None
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        raise UserError(f"Expected the manifest keys {list(_REQUIRED_KEYS[FORMAT_VERSION])} "
                        f"(v1) or {list(_REQUIRED_KEYS[SEQUENCE_FORMAT_VERSION])} (v2) in "
                        f"{path}. Received: missing=['format_version']")
    version = manifest["format_version"]
    if version not in _REQUIRED_KEYS:
        raise UserError(f"Expected manifest format_version {FORMAT_VERSION} or "
                        f"{SEQUENCE_FORMAT_VERSION} in {path}; prepare the data again. "
                        f"Received: format_version={version!r}")
    required = _REQUIRED_KEYS[version]
    missing = [key for key in required if key not in manifest]
    if missing:
        raise UserError(f"Expected the manifest keys {list(required)} in {path}. "
                        f"Received: missing={missing}")
    manifest = with_sensor_defaults(manifest)
    check_manifest(manifest, path)  # hand-edited values named, not trusted
    return manifest


def load_split(prepared_dir, split, *, clip_selection="all", with_item_index=False,
               shuffle_shards=False, seed=None, num_parallel_reads=None,
               num_input_pipelines=1, input_pipeline_id=0, num_frames=None,
               sampling="uniform", frame_stride=1, num_clips=1, shuffle_buffer=64):
    """The clips of one split of a prepared dataset.

    Args:
        prepared_dir: str, a directory written by `python -m data_prep prepare`.
        split: str, a split name in the manifest (e.g. `"train"`, `"test"`).
        clip_selection: `"all"` yields every stored clip; `"random"` yields one stored clip
            per item, drawn again each epoch (temporal jitter). Defaults to `"all"`.
        with_item_index: bool, add the int32 item index (0 .. videos - 1) as a third element,
            to average clips per item. Defaults to False.
        shuffle_shards: bool, shuffle the shard order, anew each epoch. Defaults to False.
        seed: int or None, seeds the shard shuffle and the random clip choice.
        num_parallel_reads: int or None, shards read at once; None means
            `tf.data.AUTOTUNE`.
        num_input_pipelines: int, how many readers split the shard files between them (the
            workers of a multi-machine run). Defaults to 1.
        input_pipeline_id: int in [0, num_input_pipelines): this reader takes the shard files
            whose position in the manifest is congruent to it. Defaults to 0.
        num_frames, sampling, frame_stride, num_clips: v2 only (v1 stores its clips): the
            clips drawn from each whole item (`data_prep.sequence_reader`): F frames,
            `"uniform"` or `"stride"`, the stride, and with `clip_selection="all"` the C
            evaluation views per item. `num_frames` is required for v2.
        shuffle_buffer: int, v2 with `"random"`: items held by the reader's shuffle.

    Returns:
        `tf.data.Dataset` of `(clip, label)` or `(clip, label, item_index)`: clip uint8
        (F, H, W, band), label and item_index int32 scalars. Unbatched, not repeated. For a
        multi-label dataset (`manifest["multi_label"]`), label is a float32 multi-hot
        vector shaped (num_classes,).

    Raises:
        UserError: no manifest, an unknown split or `clip_selection`.

    Example (given a dataset prepared with 16 frames of 112 x 112 RGB):

    ```python
    dataset = load_split("data/prepared", "train", clip_selection="random")
    dataset.element_spec[0]  # TensorSpec(shape=(16, 112, 112, 3), dtype=tf.uint8)
    ```
    """
    import tensorflow as tf

    manifest = read_manifest(prepared_dir)
    if split not in manifest["splits"]:
        raise UserError(f"Expected a split among {sorted(manifest['splits'])} in "
                        f"{prepared_dir}. Received: split={split!r}")
    if clip_selection not in ("all", "random"):
        raise UserError(f"Expected `clip_selection` to be 'all' or 'random'. "
                        f"Received: clip_selection={clip_selection!r}")
    if num_parallel_reads is None:
        num_parallel_reads = tf.data.AUTOTUNE
    shards = split_shard_paths(prepared_dir, manifest, split)
    if is_whole_items(manifest):
        return _load_whole_items(manifest, shards, clip_selection, with_item_index, seed,
                                 num_input_pipelines, input_pipeline_id, num_frames,
                                 sampling, frame_stride, num_clips, shuffle_buffer)
    parse = clip_parser(manifest, with_item_index)
    clips_per_item = int(manifest["clips_per_video"])

    files = tf.data.Dataset.from_tensor_slices(tf.constant(shards, tf.string)
                                               if shards else tf.constant([], tf.string))
    if num_input_pipelines > 1:
        if not 0 <= input_pipeline_id < num_input_pipelines or len(shards) < num_input_pipelines:
            raise UserError(f"Expected at least one shard file per input pipeline and "
                            f"0 <= input_pipeline_id < {num_input_pipelines}. Received: "
                            f"{len(shards)} shard files, input_pipeline_id={input_pipeline_id}")
        files = files.shard(num_input_pipelines, input_pipeline_id)
    if shuffle_shards and shards:
        files = files.shuffle(len(shards), seed=seed, reshuffle_each_iteration=True)

    def read_shard(path):
        records = tf.data.TFRecordDataset(path)
        if clip_selection == "random":
            # An item's clips are consecutive records of one shard.
            records = records.batch(clips_per_item, drop_remainder=True)
        return records

    # A seeded read is repeatable: interleave in order even when the shards are shuffled
    # (out of order, a slow shard would change the sequence from run to run).
    records = files.interleave(read_shard, cycle_length=num_parallel_reads,
                               num_parallel_calls=num_parallel_reads,
                               deterministic=seed is not None or not shuffle_shards)
    if clip_selection == "random":
        choices = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        records = tf.data.Dataset.zip((records, choices)).map(
            lambda group, choice: group[tf.math.floormod(choice, clips_per_item)])
    return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def _load_whole_items(manifest, shards, clip_selection, with_item_index, seed,
                      num_input_pipelines, input_pipeline_id, num_frames, sampling,
                      frame_stride, num_clips, shuffle_buffer):
    """`load_split` of a v2 dataset: clips drawn from the whole items while reading."""
    from data_prep import sequence_reader

    if num_frames is None:
        raise UserError("Expected `num_frames` to read a v2 dataset (its clips are drawn "
                        "while reading). Received: num_frames=None")
    options = dict(num_frames=num_frames, method=sampling, stride=frame_stride,
                   encoding=manifest["encoding"], channels=manifest["frame_shape"][2],
                   multi_label=is_multi_label(manifest),
                   num_classes=num_classes_of(manifest))
    if clip_selection == "random":
        if with_item_index:
            raise UserError("Expected with_item_index only with clip_selection='all' on a v2 "
                            "dataset (training clips are drawn without it). Received: "
                            "clip_selection='random', with_item_index=True")
        # Shuffled by the reader, which holds records still encoded (cheap to hold).
        return sequence_reader.training_clips(
            shards, seed=0 if seed is None else seed, shuffle_buffer=shuffle_buffer,
            num_input_pipelines=num_input_pipelines, input_pipeline_id=input_pipeline_id,
            **options)
    views = sequence_reader.evaluation_views(shards, num_clips=num_clips, **options)
    if num_input_pipelines > 1:
        views = views.shard(num_input_pipelines, input_pipeline_id)
    if with_item_index:
        return views
    return views.map(lambda clip, label, index: (clip, label))
