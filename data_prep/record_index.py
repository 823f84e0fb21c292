"""`data.layout: tfrecord`: records written by others (TF Model Garden's or DMVR's video
generators, `tf.train.SequenceExample` with per-frame jpegs under `image/encoded` and the id
under `clip/label/index`) train here with no `prepare`.

`index_records` reads the record files of each split once (one frame decoded per record, for
its size) and writes a v2 `manifest.json` that names them where they are, so every reader of
prepared data (`data_prep.reader.load_split`, evaluation, inspect) takes them like our own v2
shards. Nothing is copied or decoded again.
"""

import glob
import os

from core import storage
from core.errors import UserError
from data_prep.sequence_records import SEQUENCE_FORMAT_VERSION
from data_prep.shards import MANIFEST_NAME


def record_files(pattern, split):
    """The files a `data.lists` entry names: a path or a glob (Model Garden's input_path),
    several separated by commas; sorted, so the order (and the item indices) are stable.

    Raises:
        UserError: a pattern that matches no file.
    """
    files = []
    for part in str(pattern).split(","):
        part = part.strip() if storage.is_url(part) else os.path.expanduser(part.strip())
        storage.check_url(part, f"data.lists.{split}")
        matched = storage.glob(part) if glob.has_magic(part) else (
            [part] if storage.isfile(part) else [])
        if not matched:
            raise UserError(f"Expected data.lists.{split} to name TFRecord files (a path or a "
                            f"glob). Received: data.lists.{split}={part!r} matches no file")
        files.extend(path if storage.is_url(path) else os.path.abspath(path)
                     for path in matched)
    return files


def _class_names(classes_file, num_classes, labels_seen):
    if classes_file:
        try:
            text = storage.read_bytes(classes_file).decode("utf-8")
            names = [line.strip() for line in text.splitlines() if line.strip()]
        except OSError as error:
            raise UserError(f"Expected data.classes_file to be readable: {error.strerror}. "
                            f"Received: data.classes_file={classes_file!r}") from None
        return names
    count = num_classes or (max(labels_seen) + 1 if labels_seen else 0)
    return [str(index) for index in range(count)]


def index_records(out, lists, *, classes_file=None, num_classes=None, multi_label=False):
    """Write `out/manifest.json` (format v2) naming the record files of each split.

    Args:
        out: str, the directory the manifest goes to (`data.prepared_dir`).
        lists: dict {split: path or glob of TFRecord files}.
        classes_file: str or None, class names one a line (index = `clip/label/index`).
        num_classes: int or None, the class count without a classes file (names are the
            ids); with neither, the largest stored id + 1.
        multi_label: bool, labels are id lists (float multi-hot when read).

    Returns:
        dict, the manifest.

    Raises:
        UserError: no lists, a pattern without files, a split without frames, or labels
            outside the classes.
    """
    import tensorflow as tf

    from data_prep.sequence_records import parse_sequence_record

    if not lists:
        raise UserError("Expected data.lists naming the record files of each split for "
                        "layout tfrecord. Received: data.lists=None")
    splits, labels_seen, bands, sizes = {}, set(), set(), set()
    for split, pattern in lists.items():
        files = record_files(pattern, split)

        def summary(serialized):
            parsed = parse_sequence_record(serialized)
            first = tf.cond(parsed["num_frames"] > 0,
                            lambda: tf.shape(tf.io.decode_image(parsed["frames"][0],
                                                                expand_animations=False)),
                            lambda: tf.zeros([3], tf.int32))
            return parsed["num_frames"], parsed["labels"], first

        items, frames, per_label = 0, 0, {}
        records = tf.data.TFRecordDataset(files).map(summary,
                                                     num_parallel_calls=tf.data.AUTOTUNE)
        for num_frames, labels, shape in records.as_numpy_iterator():
            if num_frames == 0:  # a generator's record without frames: the reader skips it
                continue
            items += 1
            frames += int(num_frames)
            sizes.add((int(shape[0]), int(shape[1])))
            bands.add(int(shape[2]))
            for label in labels[:None if multi_label else 1]:
                labels_seen.add(int(label))
                per_label[int(label)] = per_label.get(int(label), 0) + 1
        if not items:
            raise UserError(f"Expected records with frames in data.lists.{split}. "
                            f"Received: {len(files)} file(s), no frames")
        splits[split] = {"videos": items, "frames_decoded": 0, "frames_stored": frames,
                         "shards": files, "per_label": per_label}
    if len(bands) != 1:
        raise UserError(f"Expected records of one band count. Received: bands={sorted(bands)}")
    classes = _class_names(classes_file, num_classes, labels_seen)
    outside = sorted(label for label in labels_seen if not 0 <= label < len(classes))
    if outside:
        raise UserError(f"Expected clip/label/index in [0, {len(classes)}). Received: "
                        f"labels={outside[:10]}")
    for info in splits.values():
        per_label = info.pop("per_label")
        info["items_per_class"] = {classes[label]: per_label[label] for label in sorted(per_label)}
    heights, widths = {size[0] for size in sizes}, {size[1] for size in sizes}
    manifest = {
        "format_version": SEQUENCE_FORMAT_VERSION,
        "classes": classes,
        "frame_shape": [heights.pop() if len(heights) == 1 else None,
                        widths.pop() if len(widths) == 1 else None, bands.pop()],
        "encoding": "jpeg",  # Model Garden decodes image/encoded with decode_jpeg
        # The records' smallest short side: what a crop may take.
        "resize": {"size": None, "resize_short": min(min(size) for size in sizes)},
        "fps": None,
        "max_frames": None,
        "source": {"layout": "tfrecord", "lists": dict(lists)},
        "items_per_shard": None,
        "splits": splits,
        "skipped": [],
    }
    if multi_label:
        manifest["multi_label"] = True
        manifest["num_classes"] = len(classes)
    storage.makedirs(out)
    storage.write_json(storage.join(out, MANIFEST_NAME), manifest)
    return manifest
