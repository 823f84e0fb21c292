"""The on-disk format of a prepared dataset: file names, the manifest's version, the records.

One module writes and parses the records, so the writer (`data_prep.prepare`) and every
reader (`data_prep.reader`, `training.input_pipeline`, `training.evaluation`) agree by
construction. A record is one `tf.train.Example` per clip (docs/DESIGN.md): `clip` (bytes
list: raw uint8 (F, H, W, band) bytes, or one png/jpeg per frame), `label` (multi-label: `labels`, an id
list), `item_id`, `item_index`, `clip_index`. Shards are published whole (`core.atomic`).

TensorFlow is imported inside the functions that build or parse records: the worker
processes of `data_prep.prepare` and `import data_prep` stay without it.
"""

from core import storage
from core.atomic import TEMPORARY_PREFIX

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LEGACY_TEMPORARY_SUFFIX = ".tmp"  # `<name>.tfrecord.tmp`, from before core.atomic


def shard_name(index, count):
    """`shard-00003-of-00012` (no extension)."""
    return f"shard-{index:05d}-of-{count:05d}"


def remove_temporary_files(directory):
    """Delete what an interrupted run left half-written in `directory`; returns the names."""
    removed = []
    if storage.isdir(directory):
        for name in sorted(storage.listdir(directory)):
            if name.startswith(TEMPORARY_PREFIX) or name.endswith(LEGACY_TEMPORARY_SUFFIX):
                storage.remove(storage.join(directory, name))
                removed.append(name)
    return removed


def clip_example(clip_frames, label, item_id, item_index, clip_index):
    """One serialised `tf.train.Example`.

    Args:
        clip_frames: uint8 array (F, H, W, band) (stored raw), or a list of F encoded images.
        label: int; in a multi-label dataset a tuple of label ids, stored as the int64 list
            `labels` (and no `label`).
        item_index, clip_index: ints. item_id: str.

    Returns:
        bytes, deterministic (map keys sorted) so a rerun writes identical shards.
    """
    import tensorflow as tf

    if isinstance(clip_frames, list):
        clip_bytes = clip_frames
    else:
        clip_bytes = [clip_frames.tobytes(order="C")]
    if isinstance(label, tuple):
        label_feature = {"labels": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[int(one) for one in label]))}
    else:
        label_feature = {"label": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[int(label)]))}
    feature = {
        "clip": tf.train.Feature(bytes_list=tf.train.BytesList(value=clip_bytes)),
        **label_feature,
        "item_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[item_id.encode()])),
        "item_index": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(item_index)])),
        "clip_index": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(clip_index)])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def split_shard_paths(prepared_dir, manifest, split):
    """The shard files of `split`: the manifest's names under `prepared_dir` (a local path
    or a URL; an indexed record's absolute path or URL as it is)."""
    return [storage.join(str(prepared_dir), name)
            for name in manifest["splits"][split]["shards"]]


def is_multi_label(manifest):
    """True for a dataset prepared with `multi_label` (records hold a `labels` id list)."""
    return bool(manifest.get("multi_label", False))


def num_classes_of(manifest):
    """The class count of a prepared dataset (`num_classes`, else the length of `classes`)."""
    return int(manifest.get("num_classes", len(manifest["classes"])))


def record_features(keys, clip_shape=None, encoding="raw"):
    """The `tf.io.parse_example` spec of the record keys `keys`.

    Args:
        keys: iterable of record keys (`clip`, `label`, `labels` (multi-label datasets),
            `item_id`, `item_index`, `clip_index`).
        clip_shape, encoding: the manifest's, needed for `clip` (F encoded images, or one
            raw string).
    """
    import tensorflow as tf

    spec = {"label": tf.io.FixedLenFeature([], tf.int64),
            "labels": tf.io.VarLenFeature(tf.int64),
            "item_id": tf.io.FixedLenFeature([], tf.string),
            "item_index": tf.io.FixedLenFeature([], tf.int64),
            "clip_index": tf.io.FixedLenFeature([], tf.int64)}
    if "clip" in keys:
        spec["clip"] = tf.io.FixedLenFeature([], tf.string) if encoding == "raw" \
            else tf.io.FixedLenFeature([clip_shape[0]], tf.string)
    return {key: spec[key] for key in keys}


def clip_parser(manifest, with_item_index):
    """A function from one serialised record to `(clip, label[, item_index])` tensors.

    clip is uint8 (F, H, W, band) (decoded from png/jpeg if so stored), label and
    item_index int32 scalars; in a multi-label dataset label is a float32 multi-hot
    `(num_classes,)`.
    """
    import tensorflow as tf

    frames, height, width, bands = manifest["clip_shape"]
    encoding = manifest["encoding"]
    multi_label = is_multi_label(manifest)
    label_key = "labels" if multi_label else "label"
    keys = ("clip", label_key, "item_index") if with_item_index else ("clip", label_key)
    features = record_features(keys, manifest["clip_shape"], encoding)

    def decode_frame(data):
        # decode_image handles png and jpeg; expand_animations=False keeps it 3-D.
        return tf.io.decode_image(data, channels=bands, dtype=tf.uint8,
                                  expand_animations=False)

    def parse(serialized):
        parsed = tf.io.parse_single_example(serialized, features)
        if encoding == "raw":
            clip = tf.reshape(tf.io.decode_raw(parsed["clip"], tf.uint8),
                              [frames, height, width, bands])
        else:
            clip = tf.map_fn(decode_frame, parsed["clip"],
                             fn_output_signature=tf.TensorSpec([None, None, bands], tf.uint8))
            clip = tf.ensure_shape(clip, [frames, height, width, bands])
        if multi_label:
            # Ids are distinct, so the summed one-hot rows are the multi-hot vector.
            label = tf.reduce_sum(tf.one_hot(parsed["labels"].values, num_classes_of(manifest),
                                             dtype=tf.float32), axis=0)
        else:
            label = tf.cast(parsed["label"], tf.int32)
        if with_item_index:
            return clip, label, tf.cast(parsed["item_index"], tf.int32)
        return clip, label

    return parse


def read_record_fields(shards, keys, batch_size=256, num_parallel_reads=None):
    """Yields dicts of numpy arrays (one entry per record) of the fields `keys` of `shards`,
    `batch_size` records at a time (`labels`: an object array of int64 arrays); in file order unless `num_parallel_reads` > 1 (or
    `tf.data.AUTOTUNE`) reads several files at once."""
    import tensorflow as tf

    features = record_features(keys)
    records_dataset = tf.data.TFRecordDataset(shards, num_parallel_reads=num_parallel_reads)
    for records in records_dataset.batch(batch_size):
        parsed = tf.io.parse_example(records, features)
        # A list feature (`labels`) parses sparse: one int64 array per record.
        yield {key: tf.RaggedTensor.from_sparse(parsed[key]).numpy()
               if isinstance(parsed[key], tf.sparse.SparseTensor) else parsed[key].numpy()
               for key in keys}


class ShardWriter:
    """A TFRecord file written under `.tmp-<name>` and renamed to `path` only when complete.

    Use as a context manager: leaving the block normally publishes the shard; an exception
    (or Ctrl-C) deletes the temporary file. A SIGKILL leaves `.tmp-<name>`, which the next
    run deletes with `remove_temporary_files`.
    """

    def __init__(self, path):
        self.path = path
        self._atomic = storage.atomic_write(path)  # a URL too: TFRecordWriter writes it
        self._writer = None

    def __enter__(self):
        import tensorflow as tf

        temporary = self._atomic.__enter__()
        self._writer = tf.io.TFRecordWriter(temporary)
        return self

    def write(self, record):
        self._writer.write(record)

    def __exit__(self, exc_type, exc, traceback):
        try:
            self._writer.close()
        except BaseException as error:
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise
        return self._atomic.__exit__(exc_type, exc, traceback)
