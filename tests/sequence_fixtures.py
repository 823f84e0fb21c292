"""Small v2 records for the tests: ours (data_prep.sequence_records) and records written the
way DMVR's generator writes them, for the interoperability tests.

Frame t of item i is solid: band 0 holds 10 * t + 1 (the frame index survives jpeg), band 1
holds 40 * i (the item), the other bands 128.
"""

import numpy as np
import tensorflow as tf

from data_prep.sequence_records import encode_frames, sequence_example


def marked_frames(num_frames, item=0, height=16, width=20, bands=3):
    frames = np.full((num_frames, height, width, bands), 128, np.uint8)
    frames[..., 0] = (10 * np.arange(num_frames) + 1)[:, None, None]
    if bands > 1:
        frames[..., 1] = 40 * item
    return frames


def frame_indices_of(clip):
    """The frame index of every frame of (..., H, W, bands) marked frames (see above)."""
    return np.rint((clip[..., 0].astype(np.float64).mean(axis=(-1, -2)) - 1) / 10).astype(int)


def write_v2_records(path, lengths, *, encoding="jpeg", labels=None, bands=3, first_index=0):
    """One of our records per item, item i with `lengths[i]` frames; returns the path."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for offset, length in enumerate(lengths):
            index = first_index + offset
            frames = marked_frames(length, index, bands=bands)
            label = labels[offset] if labels is not None else index % 3
            writer.write(sequence_example(
                encode_frames(frames, encoding), frame_shape=frames.shape[1:],
                encoding=encoding, label=label, item_id=f"item{index}.avi", item_index=index,
                frame_rate=25.0))
    return str(path)


def dmvr_style_example(jpeg_frames, label_index, label_name, filename, start=0.0, end=1.0):
    """A SequenceExample built as DMVR's `examples/generate_from_file.py`
    (`generate_sequence_example`) builds it, with their keys and their helper calls."""
    sequence = tf.train.SequenceExample()
    sequence.context.feature["clip/label/index"].int64_list.value[:] = (label_index,)
    sequence.context.feature["clip/label/text"].bytes_list.value[:] = (label_name.encode(),)
    for image in jpeg_frames:
        sequence.feature_lists.feature_list["image/encoded"].feature.add(
        ).bytes_list.value[:] = [image]
    sequence.context.feature["video/filename"].bytes_list.value[:] = (filename.encode(),)
    sequence.context.feature["clip/start/timestamp"].int64_list.value[:] = (int(1e6 * start),)
    sequence.context.feature["clip/end/timestamp"].int64_list.value[:] = (int(1e6 * end),)
    return sequence


def write_dmvr_style_records(path, lengths, labels=None):
    """Item i of `lengths[i]` marked frames, jpeg-encoded by TensorFlow (as ffmpeg's
    image2pipe would hand DMVR's generator jpeg files), label i % 3 unless given."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for index, length in enumerate(lengths):
            frames = marked_frames(length, index)
            jpegs = [tf.io.encode_jpeg(frame, quality=95).numpy() for frame in frames]
            label = labels[index] if labels is not None else index % 3
            writer.write(dmvr_style_example(jpegs, label, f"class{label}",
                                            f"videos/item{index}.mp4").SerializeToString())
    return str(path)


def write_issue20_records(path, items, *, encoding="raw", label=0):
    """Records with the issue-20 keys, written here as the contract says (so the read side
    is tested without the write side): `items` is a list of dicts with `frames` (T, H, W, B)
    of any dtype and optional `masks` (T, H, W) bool, `valid_fraction` (T,), `dates` (T,)
    days since 1970-01-01, `label`. Returns the path."""
    import cv2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for index, item in enumerate(items):
            frames = np.asarray(item["frames"])
            if encoding == "raw":
                encoded = [np.ascontiguousarray(f).astype(f.dtype.newbyteorder("<")).tobytes()
                           for f in frames]
            else:  # png, 1 band (RGB(A) would need OpenCV's BGR swap)
                encoded = [cv2.imencode(".png", f[..., 0])[1].tobytes() for f in frames]
            example = tf.train.SequenceExample.FromString(sequence_example(
                encoded, frame_shape=frames.shape[1:], encoding=encoding,
                label=item.get("label", label), item_id=f"item{index}", item_index=index,
                frame_rate=0.0))
            context = example.context.feature
            context["image/dtype"].bytes_list.value[:] = [str(frames.dtype).encode()]
            if "valid_fraction" in item:
                context["image/valid_fraction"].float_list.value[:] = list(item["valid_fraction"])
            if "dates" in item:
                context["image/date"].int64_list.value[:] = [int(d) for d in item["dates"]]
            if "masks" in item:
                masks = example.feature_lists.feature_list["image/mask/encoded"]
                for mask in item["masks"]:
                    masks.feature.add().bytes_list.value[:] = [
                        cv2.imencode(".png", np.where(mask, 255, 0).astype(np.uint8))[1].tobytes()]
            writer.write(example.SerializeToString())
    return str(path)


def band_statistics(items):
    """The manifest's `statistics` of items (dicts with `frames`, optional `masks`), computed
    over every valid pixel (the write side samples; these tests' items are small)."""
    values = np.concatenate([
        np.asarray(item["frames"], np.float64)[
            item["masks"] if "masks" in item else np.ones(np.shape(item["frames"])[:3], bool)]
        for item in items])
    return {"split": "train", "count": np.sum(~np.isnan(values), axis=0).tolist(),
            "mean": np.nanmean(values, axis=0).tolist(), "std": np.nanstd(values, axis=0).tolist(),
            "min": np.nanmin(values, axis=0).tolist(), "max": np.nanmax(values, axis=0).tolist(),
            "p2": np.nanpercentile(values, 2, axis=0).tolist(),
            "p98": np.nanpercentile(values, 98, axis=0).tolist(),
            "valid_fraction": np.mean(~np.isnan(values), axis=0).tolist()}


def write_prepared_v2(directory, splits, *, classes, encoding="raw", **manifest):
    """A prepared v2 dataset written by hand as the issue-20 contract describes it:
    `splits` maps a split name to its items (see `write_issue20_records`); `manifest` adds
    keys (dtype, mask, dated, ...). Statistics of the train split are added unless given.
    Returns the directory."""
    import json
    import os

    os.makedirs(directory, exist_ok=True)
    first = next(iter(splits.values()))[0]["frames"]
    entries = {}
    for split, items in splits.items():
        shard = f"{split}-00000-of-00001.tfrecord"
        write_issue20_records(os.path.join(directory, shard), items, encoding=encoding)
        entries[split] = {"shards": [shard], "videos": len(items), "clips": len(items),
                          "frames_stored": sum(len(item["frames"]) for item in items)}
    content = {"format_version": 2, "classes": list(classes),
               "frame_shape": list(np.shape(first)[1:]), "encoding": encoding,
               "resize": {"size": None, "resize_short": None}, "fps": None,
               "max_frames": None, "source": {"layout": "test"}, "items_per_shard": 64,
               "splits": entries, "skipped": [], "dtype": str(np.asarray(first).dtype),
               "statistics": band_statistics(splits["train"]), **manifest}
    with open(os.path.join(directory, "manifest.json"), "w") as file:
        json.dump(content, file)
    return str(directory)


def dated_uint16_run_items(tmp_path, *, clip_frames, frames=7, size=10, bands=3):
    """Raw uint16 .npy items (2 classes x 2) with nodata 0 pixels and shuffled dates in
    `<item>.dates.json`, prepared to v2 with `nodata=0`, and the data manifest a run on them
    keeps (`clip_inputs` included). Returns ({path: (array, days)}, run manifest)."""
    import json

    from data_prep.prepare import prepare_dataset
    from data_prep.reader import clip_manifest, read_manifest
    from data_prep.source_spec import SourceSpec
    from training.config import config_from_dict
    from training.prepared_data import clip_inputs_of

    rng = np.random.default_rng(0)
    items = {}
    for label in ("low", "high"):
        for index in range(2):
            array = rng.integers(1, 10000, (frames, size, size, bands)).astype(np.uint16)
            array[:, 2:4, 2:4, 1] = 0  # nodata: these pixels are invalid in every band
            path = tmp_path / "items" / label / f"{index}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, array)
            days = rng.permutation(frames)  # acquisitions not in file order
            with open(str(path)[:-4] + ".dates.json", "w") as file:
                json.dump([f"2024-03-{10 + day:02d}" for day in days.tolist()], file)
            items[str(path)] = (array, days)
    out = str(tmp_path / "prepared")
    prepare_dataset(SourceSpec("folders", str(tmp_path / "items"), nodata=0), out, None, size,
                    format="v2", workers=1, show_progress=False)
    manifest = read_manifest(out)
    config = config_from_dict({"data": {"layout": "folders", "root": str(tmp_path / "items"),
                                        "prepared_dir": out, "frames": clip_frames,
                                        "size": size, "nodata": 0}})
    run_manifest = clip_manifest(manifest, frames=clip_frames)
    run_manifest["clip_inputs"] = clip_inputs_of(config, manifest)
    return items, run_manifest
