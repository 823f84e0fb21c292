"""Multi-view evaluation and prediction of a finished run, with the run's own preprocessing.

A view is one temporal clip x one spatial crop. `evaluate_run` averages the softmax over
C clips x S crops of every video of a split (MMAction2's multi-view testing; 10x3 is the
usual protocol) and scores the videos with `training.scoring.evaluate_video_level`, as
training does.

- C = the stored clips_per_video and S = 1: the stored shards are read, exactly the clips
  training validated on (centre crop to the model's input size).
- v2 (whole items, `format_version` 2): any C x S comes from the shards: the C evenly
  spaced clips of each item drawn as the run drew them (frames, sampling, stride), each in
  S crops along the long side (`input_pipeline.spatial_crops`); nothing is decoded again.
- v1, any other C x S: the source items are decoded again (the manifest's source root + the item
  ids stored in the shards) with `data_prep.load_clips` and `sample_frame_indices`, using the
  sampling and resize parameters of RUN_DIR/data_manifest.json.

The views themselves come from `training.views`; the scores from `training.scoring`.
"""

import csv
import logging
import math
import os

import cv2
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from core import storage
from core.atomic import atomic_write, write_json_atomically
from core.errors import UserError
import data_prep
from data_prep.decode import DecodeError
from data_prep.shards import is_multi_label, read_record_fields, split_shard_paths
from data_prep.sources import split_root
from data_prep.workers import ITEM_TIMEOUT_SECONDS, available_cores, worker_pool
from training import input_pipeline
from training.config import load_config
from training.scoring import evaluate_video_level
from training.views import preprocess_item
from training.visuals import confusion_matrix_image

logger = logging.getLogger(__name__)


def default_views(run):
    """evaluate.views of the run's config.yaml (the config's default when it has none)."""
    return load_config(run.run_dir.config).evaluate.views


# --- evaluation ---------------------------------------------------------------------------


def split_items(prepared_dir, manifest, split):
    """(item_id, label) of every prepared item of a split, in item-index order (in a
    multi-label dataset label is the list of the item's class ids).

    Read from the shards' `item_id`/`label` features of each item's first clip, so the items
    are exactly those training evaluated (skipped ones are not there).
    """
    shards = split_shard_paths(prepared_dir, manifest, split)
    missing = [shard for shard in shards if not storage.isfile(shard)]
    if missing:
        raise UserError(f"Expected the run's prepared shards (run.json prepared_dir) to list "
                        f"the items to decode again. Received: missing {missing[0]}")
    items = {}
    multi_label = is_multi_label(manifest)
    keys = ("item_id", "labels" if multi_label else "label", "item_index", "clip_index")
    for fields in read_record_fields(shards, keys):
        for item_id, label, index, clip in zip(*(fields[key] for key in keys)):
            if clip == 0:
                label = [int(c) for c in label] if multi_label else int(label)
                items[int(index)] = (item_id.decode(), label)
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
    except MemoryError:  # this item's size: skipped like a broken one
        return "skipped", "out of memory while decoding it"


def _decoded_views(tasks, workers, item_timeout=ITEM_TIMEOUT_SECONDS, decode=None):
    """Yield `decode(task)` (default `decode_item_views`) in order, in `workers` processes
    (one too: a decoder that crashes, hangs past `item_timeout` seconds or runs out of
    memory then costs its item only, skipped with the reason)."""
    with worker_pool(workers) as pool:
        yield from pool.map_ordered(decode or decode_item_views, tasks,
                                    on_crash=lambda task, reason: ("skipped", reason),
                                    item_timeout=item_timeout)


def _decoded_views_dataset(run, split, num_clips, num_crops, batch_size, skipped, failures, *,
                           workers=1, show_progress=False, item_timeout=ITEM_TIMEOUT_SECONDS):
    """Batches (views, one-hot labels, item indices) of every item, decoded again.

    A UserError met while decoding ends the dataset and is appended to `failures`, for the
    caller to raise: raised inside the generator, tf.data would turn it into its own error.
    """
    root = split_root(run.manifest["source"], split)
    items = split_items(run.prepared_dir, run.manifest, split)
    num_classes = len(run.class_names)
    frames, crop_size, _, bands = run.input_shape
    workers = max(1, min(workers or available_cores(), len(items)))

    def generate():
        tasks = ((os.path.join(root, item_id), run.manifest, run.input_shape, num_clips,
                  num_crops) for item_id, _ in items)
        results = _decoded_views(tasks, workers, item_timeout)
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
                one_hot[:, label] = 1.0  # a list of ids (multi-label) sets each of them
                yield value, one_hot, np.full(len(value), index, np.int32)

    signature = (tf.TensorSpec((None, frames, crop_size, crop_size, bands), tf.uint8),
                 tf.TensorSpec((None, num_classes), tf.float32),
                 tf.TensorSpec((None,), tf.int32))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.unbatch().batch(batch_size).prefetch(2)


def evaluate_run(run, model, split, views, *, batch_size=8, force_decode=False,
                 workers=None, show_progress=False, item_timeout=ITEM_TIMEOUT_SECONDS):
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
        show_progress: bool, a progress bar over the items decoded again, or over the
            batches read from the shards.
        item_timeout: float, seconds an item decoded again may take before its decoder is
            killed and the item skipped (a hung decoder).

    Returns:
        dict: top1, top5 (top-min(5, classes)), top5_k, mean_class_accuracy, loss,
        clip_top1 (one view alone), views ("CxS"), videos, clips (views scored), split,
        source ("shards" or "decoded"), skipped items, confusion_matrix (rows true). For a
        multi-label run (sigmoid scores averaged over the views) the metrics are those of
        `training.metrics.multi_label_video_metrics` instead.
    """
    if split not in run.manifest["splits"]:
        raise UserError(f"Expected a split of the run's data ({', '.join(run.manifest['splits'])})."
                        f" Received: --split {split}")
    num_clips, num_crops = views
    num_classes = len(run.class_names)
    skipped, failures = [], []
    stored = int(run.manifest["clips_per_video"])
    whole_items = data_prep.is_whole_items(run.manifest)
    if whole_items or ((num_clips, num_crops) == (stored, 1) and not force_decode):
        source = "shards"
        data_prep.read_manifest(run.prepared_dir)  # a clear error if the shards are gone
        sampling = run.manifest["sampling"]
        dataset = input_pipeline.eval_dataset(
            run.prepared_dir, split, clip_shape=run.manifest["clip_shape"],
            num_classes=num_classes, batch_size=batch_size, crop_size=run.input_shape[1],
            with_item_index=True, sampling=sampling["method"],
            frame_stride=sampling["frame_stride"], num_clips=num_clips if whole_items
            else None, num_crops=num_crops if whole_items else 1,
            clip_inputs=run.manifest.get("clip_inputs"))
    else:
        source = "decoded"
        root = run.manifest.get("source", {}).get("root")
        if isinstance(root, str) and storage.is_url(root):
            raise UserError(f"Views {num_clips}x{num_crops} differ from the stored "
                            f"{stored}x1, so the source items would be decoded again, but "
                            f"they lie behind a URL and are decoded again only from a local "
                            f"(or mounted) root; use --views {stored}x1, or prepare with "
                            f"--format v2 (views drawn from the shards). Received: root={root!r}")
        if not root or not os.path.isdir(root):
            raise UserError(f"Views {num_clips}x{num_crops} differ from the stored "
                            f"{stored}x1, so the source items are decoded again, but their "
                            f"root is gone; use --views {stored}x1. Received: root={root!r}")
        dataset = _decoded_views_dataset(run, split, num_clips, num_crops, batch_size, skipped,
                                         failures, workers=workers, show_progress=show_progress,
                                         item_timeout=item_timeout)
    try:
        # Decoding again has its own bar (over videos); reading shards gets one here.
        results = evaluate_video_level(
            model, dataset, num_classes, is_multi_label(run.manifest),
            show_progress=show_progress and source == "shards",
            batches=math.ceil((run.manifest["splits"][split]["videos"] * num_clips * num_crops
                               if whole_items else run.manifest["splits"][split]["clips"])
                              / batch_size))
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


def _write_summary_and_rows(json_path, summary, csv_path, rows):
    """The JSON summary and the per-class CSV, in the output directory (created if needed)."""
    directory = os.path.dirname(os.path.abspath(json_path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise UserError(f"Cannot create the output directory ({e.strerror}). "
                        f"Received: --out {json_path}") from None
    write_json_atomically(json_path, summary)
    with atomic_write(csv_path) as temporary, \
            open(temporary, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_evaluation(results, class_names, paths):
    """Writes the JSON summary, the per-class CSV and the confusion-matrix PNG."""
    json_path, csv_path, png_path = paths
    summary = {key: results[key] for key in (
        "top1", "top5", "top5_k", "mean_class_accuracy", "clip_top1", "loss", "views",
        "videos", "clips", "split", "source", "skipped", "confusion_matrix")}
    summary["classes"] = list(class_names)
    _write_summary_and_rows(json_path, summary, csv_path,
                            per_class_rows(results["confusion_matrix"], class_names))
    title = (f"{results['split']}, views {results['views']}, {results['videos']} videos, "
             f"video top-1 {results['top1']:.4f}")
    image = confusion_matrix_image(results["confusion_matrix"], class_names, title=title)
    ok, encoded = cv2.imencode(os.path.splitext(png_path)[1] or ".png",
                               cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"Cannot encode the confusion matrix image. Received: {png_path}")
    try:  # written like the JSON: whole or not at all
        with atomic_write(png_path) as temporary, open(temporary, "wb") as f:
            f.write(encoded.tobytes())
    except OSError as e:  # a write's ENOSPC names no file: this one is the image's
        raise OSError(e.errno, e.strerror, e.filename or png_path) from e
    return summary


# --- multi-label ----------------------------------------------------------------------------


def multi_label_rows(results, class_names):
    """Rows (class_id, class, videos (positives), average_precision) of a multi-label run."""
    return [{"class_id": index, "class": name, "videos": positives,
             "average_precision": round(value, 6) if value is not None else ""}
            for index, (name, positives, value) in enumerate(
                zip(class_names, results["positives"], results["per_class_ap"]))]


def write_multi_label_evaluation(results, class_names, paths):
    """Writes the JSON summary (mean_average_precision, F1, per-class AP) and the per-class AP
    CSV of a multi-label evaluation; no confusion matrix (a video has several labels)."""
    json_path, csv_path, _ = paths
    summary = {key: results[key] for key in (
        "mean_average_precision", "micro_f1", "macro_f1", "threshold",
        "clip_mean_average_precision", "loss", "views", "videos", "clips", "split", "source",
        "skipped", "per_class_ap", "positives")}
    summary["multi_label"] = True
    summary["classes"] = list(class_names)
    _write_summary_and_rows(json_path, summary, csv_path, multi_label_rows(results, class_names))
    return summary
