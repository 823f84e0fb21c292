"""Read v2 shards (`data_prep.sequence_records`) as clips drawn while reading.

Each record holds a whole item; every epoch draws fresh clips from it in the input graph
(`data_prep.clip_sampling`), decoding only the sampled frames:

- `training_clips`: shuffled items, one random clip each, `(clip, label)`.
- `evaluation_views`: items in file order, the C deterministic clips of each,
  `(clip, label, item_index)`, the views of one item consecutive.

Both are unbatched and end in uint8 (F, H, W, band) clips; records without frames are
skipped (their position still counts as an item index in evaluation); crops, flips and batching belong
to the training input pipeline. Randomness is stateless: one seed pair per element from a
seeded `tf.data.Dataset.random`, so the same seed gives the same clips, and a new epoch
(a new iteration of the dataset) draws new ones.
"""

import tensorflow as tf

from core.errors import UserError
from data_prep.clip_sampling import decode_frames, sample_clip_indices
from data_prep.sequence_records import LABEL_INDEX_KEY, parse_sequence_record

AUTOTUNE = tf.data.AUTOTUNE
# Folded into each element's seed pair so the clip choice is independent of the crop and
# flip the training pipeline derives from its own seed stream.
_SAMPLING_SALT = 0x5EC2


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


def _decode(parsed, indices, encoding, channels):
    return decode_frames(parsed["frames"], indices, encoding, channels=channels,
                         height=parsed["height"], width=parsed["width"],
                         dtype="uint8")


def training_clips(files, *, num_frames, method="uniform", stride=1, encoding="jpeg",
                   channels=3, seed=0, shuffle_buffer=64, repeat=False, multi_label=False,
                   num_classes=None, num_input_pipelines=1, input_pipeline_id=0):
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

    Returns:
        `tf.data.Dataset` of `(clip uint8 (F, H, W, channels), label)`; label int32 scalar
        (multi-label: float32 (num_classes,)). H and W are those of the stored frames.
    """
    _check_label_options(multi_label, num_classes)
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
        indices = sample_clip_indices(parsed["num_frames"], num_frames, method, stride,
                                      training=True, seed=sample_seed)[0]
        clip = _decode(parsed, indices, encoding, channels)
        return clip, _target(parsed["labels"], multi_label, num_classes)

    items = _with_frames(records.map(parse_sequence_record, num_parallel_calls=AUTOTUNE))
    return tf.data.Dataset.zip((items, seeds)).map(clip_of, num_parallel_calls=AUTOTUNE)


def evaluation_views(files, *, num_frames, num_clips=1, method="uniform", stride=1,
                     encoding="jpeg", channels=3, multi_label=False, num_classes=None):
    """The `num_clips` deterministic clips of every item, in file order.

    The clips are `data_prep.sampling.sample_frame_indices(T, num_frames, method=method,
    stride=stride, num_clips=num_clips)`, the v1 rule. The item index is the record's
    `clip/item_index`, or its position in the files when it has none (a Model Garden / DMVR
    record).

    Returns:
        `tf.data.Dataset` of `(clip uint8 (F, H, W, channels), label, item_index int32)`,
        `num_clips` consecutive elements per item; label as in `training_clips`.
    """
    _check_label_options(multi_label, num_classes)
    records = item_records(files, shuffle_files=False)

    def views_of(position, parsed):
        indices = sample_clip_indices(parsed["num_frames"], num_frames, method, stride,
                                      training=False, num_clips=num_clips)
        clips = _decode(parsed, indices, encoding, channels)
        label = _target(parsed["labels"], multi_label, num_classes)
        index = tf.where(parsed["item_index"] >= 0, parsed["item_index"], position)
        labels = tf.repeat(label[None], num_clips, axis=0)
        return clips, labels, tf.fill([num_clips], tf.cast(index, tf.int32))

    items = records.map(parse_sequence_record, num_parallel_calls=AUTOTUNE).enumerate()
    items = items.filter(lambda position, parsed: parsed["num_frames"] > 0)
    return items.map(views_of, num_parallel_calls=AUTOTUNE).unbatch()


def record_labels(files, batch_size=256):
    """Yields the `clip/label/index` ids of every record of `files` (one int64 numpy array
    per record, in file order), parsing only that context key: no frame is decoded."""
    spec = {LABEL_INDEX_KEY: tf.io.VarLenFeature(tf.int64)}
    records = tf.data.TFRecordDataset([str(path) for path in files],
                                      num_parallel_reads=AUTOTUNE)
    for batch in records.batch(batch_size):
        context, _, _ = tf.io.parse_sequence_example(batch, context_features=spec)
        yield from tf.RaggedTensor.from_sparse(context[LABEL_INDEX_KEY]).numpy()
