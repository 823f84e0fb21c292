"""A trained model and how it scores videos: the softmax averaged over a video's clips.

Training's final evaluation, `evaluate.py` and `predict.py` all score through here, so a
video's score is computed one way: `clip_probabilities_function` (softmax of the logits, in
float32), averaged per item by `training.metrics.video_level_metrics`.
"""

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import models  # noqa: F401  (registers ClipNormalization and DeformConv3D for loading)
from data_prep.errors import UserError
from training.metrics import MeanClassAccuracy, video_level_metrics  # noqa: F401  (registers it)


def load_run_model(run):
    """model.keras of the run, loaded in safe mode (importing `models` registers its layers)."""
    return keras.saving.load_model(run.run_dir.model, compile=False, safe_mode=True)


def clip_probabilities_function(model):
    """A tf.function from uint8 clips to float32 softmax probabilities."""
    return tf.function(
        lambda clips: tf.nn.softmax(tf.cast(model(clips, training=False), tf.float32)),
        reduce_retracing=True,
    )


def evaluate_video_level(model, dataset, num_classes, *, show_progress=False, batches=None):
    """Video-level metrics: softmax averaged over every stored clip of each item.

    Args:
        dataset: batches of (clips, one-hot labels, item indices), e.g. from
            `input_pipeline.eval_dataset(..., with_item_index=True)`.
        show_progress: bool, a bar over the batches (for a terminal).
        batches: int or None, the bar's total.
    """
    probabilities = clip_probabilities_function(model)
    all_probabilities, all_labels, all_items = [], [], []
    for clips, labels, items in tqdm(dataset, desc="test", unit="batch", total=batches,
                                     disable=not show_progress, leave=False):
        all_probabilities.append(probabilities(clips).numpy())
        all_labels.append(np.argmax(labels.numpy(), axis=1))
        all_items.append(items.numpy())
    if not all_labels:
        raise UserError("The test split holds no clips to evaluate.")
    return video_level_metrics(np.concatenate(all_probabilities), np.concatenate(all_labels),
                               np.concatenate(all_items), num_classes)
