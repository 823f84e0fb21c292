"""Multi-view evaluation and prediction of a finished run, with the run's own preprocessing.

A view is one temporal clip x one spatial crop. `evaluate_run` averages the softmax over
C clips x S crops of every video of a split (MMAction2's multi-view testing; 10x3 is the
usual protocol) and scores the videos with the trainer's own `evaluate_video_level`.

- C = the stored clips_per_video and S = 1: the stored shards are read, exactly the clips
  training validated on (centre crop to the model's input size).
- Any other C x S: the source items are decoded again (the manifest's source root + the item
  ids stored in the shards) with `data_prep.load_clips` and `sample_frame_indices`, using the
  sampling and resize parameters of RUN_DIR/data_manifest.json.

Spatial crops follow MMAction2's ThreeCrop: S squares with the frame's short side, spread
evenly along its long side (first at the start, last at the end; S = 1 is the centre one).
Each square then goes through the run's own `resize_frame(size, resize_short)` and the
evaluation's centre crop to the model's input size, so every view has the scale training
saw. A square frame has one possible square, so its S crops are all equal (as in MMAction2).

`preprocess_item` is also what `predict.py` uses: with S = 1 it is exactly the preparation's
decode/sample/resize path followed by the evaluation's centre crop.
"""

import csv
import dataclasses
import functools
import json
import logging
import os
import re

import cv2
import numpy as np

import data_prep
from data_prep.decode import DecodeError, load_clips, resize_frame
from data_prep.errors import UserError
from data_prep.sampling import sample_frame_indices
from data_prep.workers import available_cores, worker_pool
from training.run_dir import RunDir

logger = logging.getLogger(__name__)

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


# --- the run ------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainedRun:
    """What evaluation and prediction need from a run directory."""

    run_dir: RunDir
    info: dict  # run.json
    manifest: dict  # data_manifest.json: sampling, resize, classes, splits
    class_names: list
    input_shape: tuple  # (F, crop, crop, band) the model takes

    @property
    def prepared_dir(self):
        return self.info["prepared_dir"]


def _read_json(path, what, run_path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"Expected a run directory written by train.py with {what} in it. "
                        f"Received: --run-dir {run_path}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"Expected {path} to be readable JSON. Received: {e}") from None


def open_trained_run(run_path, *, need_model=True):
    """Reads run.json, data_manifest.json and classes.txt of a run directory.

    Raises:
        UserError: not a run directory, or (with `need_model`) model.keras is missing.
    """
    if not os.path.isdir(run_path):
        raise UserError(f"Expected an existing run directory. Received: --run-dir {run_path}")
    run_dir = RunDir(run_path)
    info = _read_json(run_dir.run_info, "run.json", run_path)
    manifest = _read_json(run_dir.data_manifest, "data_manifest.json", run_path)
    if need_model and not os.path.isfile(run_dir.model):
        raise UserError(f"Expected a finished run with model.keras (train.py writes it after "
                        f"the last epoch). Received: --run-dir {run_path}")
    try:
        with open(run_dir.classes, encoding="utf-8") as f:
            class_names = [line.rstrip("\n") for line in f]
    except OSError:
        class_names = list(manifest["classes"])
    return TrainedRun(run_dir, info, manifest, class_names, tuple(info["input_shape"]))


def load_run_model(run):
    """model.keras of the run, loaded in safe mode (importing `models` registers its layers)."""
    import keras

    import models  # noqa: F401  (registers ClipNormalization and DeformConv3D)
    from training import metrics  # noqa: F401  (registers MeanClassAccuracy)

    return keras.saving.load_model(run.run_dir.model, compile=False, safe_mode=True)


def default_views(run):
    """evaluate.views of the run's config.yaml (the config's default when it has none)."""
    from training.config import load_config

    return load_config(run.run_dir.config).evaluate.views


# --- preprocessing (shared with predict.py) -----------------------------------------------


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


def preprocess_item(path, manifest, input_shape, *, num_clips=None, num_crops=1):
    """An item's views, decoded with the run's sampling and resize parameters.

    Args:
        path: str, a video file, a folder of frame images or a .npy array.
        manifest: dict, the run's data_manifest.json (sampling, resize).
        input_shape: (F, crop, crop, band) the model takes.
        num_clips: int, temporal clips C; None = the stored clips_per_video.
        num_crops: int, spatial crops S (see the module docstring).

    Returns:
        uint8 array (C * S, F, crop, crop, band), clip-major (clip 0's S crops first).

    Raises:
        DecodeError: the item does not decode.
        UserError: the item's band count differs from the model's.
    """
    sampling, resize = manifest["sampling"], manifest["resize"]
    num_clips = num_clips or int(manifest["clips_per_video"])
    frames, crop_size, _, bands = input_shape
    select = functools.partial(sample_frame_indices, num_frames=sampling["frames"],
                               method=sampling["method"], stride=sampling["frame_stride"],
                               num_clips=num_clips)
    size, resize_short = resize["size"], resize["resize_short"]
    if num_crops == 1:
        # Exactly the preparation's path: load_clips resizes as it decodes.
        _, clips = load_clips(path, select, size=size, resize_short=resize_short)
        views = clips[:, None]
    else:
        _, native = load_clips(path, select)  # (C, F, H, W, band) at the native size
        height, width = native.shape[2:4]
        side = min(height, width)
        offsets = crop_offsets(max(height, width), side, num_crops)
        views = np.empty(native.shape[:1] + (num_crops, frames, size, size, native.shape[-1]),
                         np.uint8)
        for crop, offset in enumerate(offsets):
            square = native[:, :, :, offset:offset + side] if width >= height else \
                native[:, :, offset:offset + side]
            for clip in range(native.shape[0]):
                for frame in range(frames):
                    resized = resize_frame(square[clip, frame], size, resize_short)
                    views[clip, crop, frame] = resized.reshape(size, size, -1)
    if views.shape[-1] != bands:
        raise UserError(f"Expected items with {bands} band(s), as the run was trained on. "
                        f"Received: band={views.shape[-1]} ({path})")
    views = center_crop_numpy(views, crop_size)
    return np.ascontiguousarray(views.reshape((-1, frames, crop_size, crop_size, bands)))


def clip_probabilities_function(model):
    """A tf.function from uint8 clips to float32 softmax probabilities."""
    import tensorflow as tf

    return tf.function(
        lambda clips: tf.nn.softmax(tf.cast(model(clips, training=False), tf.float32)),
        reduce_retracing=True,
    )


# --- evaluation ---------------------------------------------------------------------------


def split_items(prepared_dir, manifest, split):
    """(item_id, label) of every prepared item of a split, in item-index order.

    Read from the shards' `item_id`/`label` features of each item's first clip, so the items
    are exactly those training evaluated (skipped ones are not there).
    """
    import tensorflow as tf

    shards = [os.path.join(prepared_dir, shard) for shard in manifest["splits"][split]["shards"]]
    missing = [shard for shard in shards if not os.path.isfile(shard)]
    if missing:
        raise UserError(f"Expected the run's prepared shards (run.json prepared_dir) to list "
                        f"the items to decode again. Received: missing {missing[0]}")
    features = {"item_id": tf.io.FixedLenFeature([], tf.string),
                "label": tf.io.FixedLenFeature([], tf.int64),
                "item_index": tf.io.FixedLenFeature([], tf.int64),
                "clip_index": tf.io.FixedLenFeature([], tf.int64)}
    items = {}
    for records in tf.data.TFRecordDataset(shards).batch(256):
        parsed = tf.io.parse_example(records, features)
        for item_id, label, index, clip in zip(*(parsed[k].numpy() for k in (
                "item_id", "label", "item_index", "clip_index"))):
            if clip == 0:
                items[int(index)] = (item_id.decode(), int(label))
    return [items[index] for index in sorted(items)]


def decode_item_views(task):
    """Worker task: `(path, manifest, input_shape, num_clips, num_crops)` -> the item's views.

    Returns:
        ("views", uint8 array), ("skipped", reason) for an item that does not decode, or
        ("user_error", message) for a mistake that stops the evaluation (wrong band count).
        Errors travel as values: a worker process must not raise for a broken video.
    """
    path, manifest, input_shape, num_clips, num_crops = task
    try:
        return "views", preprocess_item(path, manifest, input_shape, num_clips=num_clips,
                                        num_crops=num_crops)
    except UserError as e:
        return "user_error", str(e)
    except (DecodeError, cv2.error, OSError) as e:
        return "skipped", str(e).strip().splitlines()[0]


def _decoded_views(tasks, workers):
    """Yield `decode_item_views(task)` in order: in this process, or in `workers` processes."""
    if workers <= 1:
        for task in tasks:
            yield decode_item_views(task)
        return
    with worker_pool(workers) as pool:
        yield from pool.map_ordered(decode_item_views, tasks, on_crash=lambda task: (
            "skipped", "the decoder crashed (its worker process died)"))


def _decoded_views_dataset(run, split, num_clips, num_crops, batch_size, skipped, failures, *,
                           workers=1, show_progress=False):
    """Batches (views, one-hot labels, item indices) of every item, decoded again.

    A UserError met while decoding ends the dataset and is appended to `failures`, for the
    caller to raise: raised inside the generator, tf.data would turn it into its own error.
    """
    import tensorflow as tf
    from tqdm import tqdm

    root = run.manifest["source"]["root"]
    items = split_items(run.prepared_dir, run.manifest, split)
    num_classes = len(run.class_names)
    frames, crop_size, _, bands = run.input_shape
    workers = max(1, min(workers or available_cores(), len(items)))

    def generate():
        tasks = ((os.path.join(root, item_id), run.manifest, run.input_shape, num_clips,
                  num_crops) for item_id, _ in items)
        results = _decoded_views(tasks, workers)
        progress = tqdm(total=len(items), desc=f"decoding {split} ({workers} worker(s))",
                        unit="video", disable=not show_progress, leave=False)
        with progress:
            for index, ((item_id, label), (kind, value)) in enumerate(zip(items, results)):
                progress.update()
                if kind == "user_error":
                    failures.append(UserError(value))
                    return
                if kind == "skipped":
                    logger.warning("Skipping %s: %s", item_id, value)
                    skipped.append({"path": item_id, "reason": value})
                    continue
                one_hot = np.zeros((len(value), num_classes), np.float32)
                one_hot[:, label] = 1.0
                yield value, one_hot, np.full(len(value), index, np.int32)

    signature = (tf.TensorSpec((None, frames, crop_size, crop_size, bands), tf.uint8),
                 tf.TensorSpec((None, num_classes), tf.float32),
                 tf.TensorSpec((None,), tf.int32))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.unbatch().batch(batch_size).prefetch(2)


def evaluate_run(run, model, split, views, *, batch_size=8, force_decode=False,
                 workers=None, show_progress=False):
    """Multi-view, video-level evaluation of a split.

    Args:
        run: TrainedRun.
        model: the run's keras model.
        split: str, a split of the run's prepared data.
        views: (C, S) temporal clips x spatial crops.
        batch_size: int, views per forward pass.
        force_decode: bool, decode the source items even when the shards hold the views
            (a check that both paths agree).
        workers: int or None, decoding processes when the items are decoded again; None
            uses every core this process may run on.
        show_progress: bool, a progress bar over the items decoded again.

    Returns:
        dict: top1, top5 (top-min(5, classes)), top5_k, mean_class_accuracy, loss,
        clip_top1 (one view alone), views ("CxS"), videos, clips (views scored), split,
        source ("shards" or "decoded"), skipped items, confusion_matrix (rows true).
    """
    from training import input_pipeline
    from training.trainer import evaluate_video_level

    if split not in run.manifest["splits"]:
        raise UserError(f"Expected a split of the run's data ({', '.join(run.manifest['splits'])})."
                        f" Received: --split {split}")
    num_clips, num_crops = views
    num_classes = len(run.class_names)
    skipped, failures = [], []
    stored = int(run.manifest["clips_per_video"])
    if (num_clips, num_crops) == (stored, 1) and not force_decode:
        source = "shards"
        data_prep.read_manifest(run.prepared_dir)  # a clear error if the shards are gone
        dataset = input_pipeline.eval_dataset(
            run.prepared_dir, split, clip_shape=run.manifest["clip_shape"],
            num_classes=num_classes, batch_size=batch_size, crop_size=run.input_shape[1],
            with_item_index=True)
    else:
        source = "decoded"
        root = run.manifest.get("source", {}).get("root")
        if not root or not os.path.isdir(root):
            raise UserError(f"Views {num_clips}x{num_crops} differ from the stored "
                            f"{stored}x1, so the source items are decoded again, but their "
                            f"root is gone; use --views {stored}x1. Received: root={root!r}")
        dataset = _decoded_views_dataset(run, split, num_clips, num_crops, batch_size, skipped,
                                         failures, workers=workers, show_progress=show_progress)
    try:
        results = evaluate_video_level(model, dataset, num_classes)
    except UserError:  # no clips at all: say why, if decoding failed on the first item
        if not failures:
            raise
    if failures:
        raise failures[0]
    results.update(split=split, views=f"{num_clips}x{num_crops}", source=source,
                   skipped=skipped)
    return results


def per_class_rows(confusion, class_names):
    """Rows (class_id, class, videos, correct, accuracy, precision, most_confused_with)."""
    confusion = np.asarray(confusion)
    rows = []
    for index, name in enumerate(class_names):
        videos = int(confusion[index].sum())
        correct = int(confusion[index, index])
        predicted = int(confusion[:, index].sum())
        errors = confusion[index].copy()
        errors[index] = 0
        confused = class_names[int(errors.argmax())] if errors.any() else ""
        rows.append({"class_id": index, "class": name, "videos": videos, "correct": correct,
                     "accuracy": round(correct / videos, 6) if videos else "",
                     "precision": round(correct / predicted, 6) if predicted else "",
                     "most_confused_with": confused})
    return rows


def output_paths(run, split, views_text, out=None):
    """(json, csv, png) paths: `--out FILE` and its siblings, or RUN_DIR/evaluation/."""
    if out is None:
        out = os.path.join(run.run_dir.path, "evaluation", f"{split}-{views_text}.json")
    stem = out[:-5] if out.endswith(".json") else out
    return out, f"{stem}-per_class.csv", f"{stem}-confusion.png"


def write_evaluation(results, class_names, paths):
    """Writes the JSON summary, the per-class CSV and the confusion-matrix PNG."""
    from training.visuals import confusion_matrix_image

    json_path, csv_path, png_path = paths
    directory = os.path.dirname(os.path.abspath(json_path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise UserError(f"Cannot create the output directory ({e.strerror}). "
                        f"Received: --out {json_path}") from None
    summary = {key: results[key] for key in (
        "top1", "top5", "top5_k", "mean_class_accuracy", "clip_top1", "loss", "views",
        "videos", "clips", "split", "source", "skipped", "confusion_matrix")}
    summary["classes"] = list(class_names)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    rows = per_class_rows(results["confusion_matrix"], class_names)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    image = confusion_matrix_image(results["confusion_matrix"], class_names)
    if not cv2.imwrite(png_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise UserError(f"Cannot write the confusion matrix image. Received: {png_path}")
    return summary
