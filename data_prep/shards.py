"""Write clip shards: one `tf.train.Example` per clip, each shard renamed into place whole.

Record format (docs/DESIGN.md): `clip` (bytes list: raw uint8 (F, H, W, band) bytes, or one
png/jpeg per frame), `label` (multi-label: `labels`, an id list), `item_id`, `item_index`,
`clip_index`. Only the parent process of `data_prep.prepare` imports this module;
TensorFlow is imported when a shard is written.
"""

import json
import os

TEMPORARY_SUFFIX = ".tmp"


def shard_name(index, count):
    """`shard-00003-of-00012` (no extension)."""
    return f"shard-{index:05d}-of-{count:05d}"


def write_json_atomically(path, value):
    """Write JSON under a temporary name, fsync, then rename over `path`."""
    temporary = path + TEMPORARY_SUFFIX
    try:
        with open(temporary, "w") as file:
            json.dump(value, file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def remove_temporary_files(directory, prefix=""):
    """Delete what an interrupted run left half-written in `directory`; returns the names.

    Only names starting with `prefix`: other parts may be writing into the same directory.
    """
    removed = []
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            if name.startswith(prefix) and name.endswith(TEMPORARY_SUFFIX):
                os.remove(os.path.join(directory, name))
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


class ShardWriter:
    """A TFRecord file written under `<path>.tmp` and renamed to `path` only when complete.

    Use as a context manager: leaving the block normally publishes the shard; an exception
    (or Ctrl-C) deletes the temporary file. A SIGKILL leaves `<path>.tmp`, which the next
    run deletes with `remove_temporary_files`.
    """

    def __init__(self, path):
        self.path = path
        self.temporary = path + TEMPORARY_SUFFIX
        self._writer = None

    def __enter__(self):
        import tensorflow as tf

        self._writer = tf.io.TFRecordWriter(self.temporary)
        return self

    def write(self, record):
        self._writer.write(record)

    def __exit__(self, exc_type, exc, traceback):
        published = False
        try:
            self._writer.close()
            if exc_type is None:
                with open(self.temporary, "rb") as file:
                    os.fsync(file.fileno())
                os.replace(self.temporary, self.path)
                published = True
        finally:
            if not published and os.path.exists(self.temporary):
                os.remove(self.temporary)
        return False
