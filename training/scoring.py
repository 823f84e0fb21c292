"""A trained model and how it scores videos: the softmax (multi-label: the sigmoid) averaged
over a video's clips.

Training's final evaluation, `evaluate.py` and `predict.py` all score through here, so a
video's score is computed one way: `clip_probabilities_function` (softmax of the logits, in
float32), averaged per item by `training.metrics.video_level_metrics`.
"""

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from core.errors import UserError
import models
from training.metrics import (MeanAveragePrecision, MeanClassAccuracy,  # noqa: F401  (registered)
                              multi_label_video_metrics, video_level_metrics)
from training.precision import choose_policy, model_with_policy


def load_run_model(run, policy=None):
    """model.keras of the run, loaded in safe mode (after `models.register_layers()`).

    A mixed-precision model computes in `policy`, by default what `auto` picks on this machine
    (training/precision.py): a bfloat16-trained run evaluates in float32 on a CPU without
    bfloat16 instructions, where bfloat16 would only be slower.
    """
    models.register_layers()
    model = keras.saving.load_model(run.run_dir.model, compile=False, safe_mode=True)
    return model_with_policy(model, policy or choose_policy("auto").policy)


def output_activation(logits, multi_label=False):
    """float32 probabilities of logits: softmax over classes, or a sigmoid per class for a
    multi-label model (each class on its own)."""
    logits = tf.cast(logits, tf.float32)
    return tf.sigmoid(logits) if multi_label else tf.nn.softmax(logits, axis=-1)


def clip_probabilities_function(model, multi_label=False):
    """A tf.function from uint8 clips to float32 probabilities (`output_activation`)."""
    return tf.function(
        lambda clips: output_activation(model(clips, training=False), multi_label),
        reduce_retracing=True,
    )


def evaluate_video_level(model, dataset, num_classes, multi_label=False, *, show_progress=False,
                         batches=None):
    """Video-level metrics: softmax (multi-label: sigmoid) averaged over every stored clip
    of each item; `video_level_metrics` or `multi_label_video_metrics`.

    Args:
        dataset: batches of (clips, one-hot (multi-hot) labels, item indices), e.g. from
            `input_pipeline.eval_dataset(..., with_item_index=True)`.
        show_progress: bool, a bar over the batches (for a terminal).
        batches: int or None, the bar's total.
    """
    probabilities = clip_probabilities_function(model, multi_label)
    all_probabilities, all_labels, all_items = [], [], []
    for clips, labels, items in tqdm(dataset, desc="test", unit="batch", total=batches,
                                     disable=not show_progress, leave=False):
        all_probabilities.append(probabilities(clips).numpy())
        labels = labels.numpy()
        all_labels.append(labels if multi_label else np.argmax(labels, axis=1))
        all_items.append(items.numpy())
    if not all_labels:
        raise UserError("The test split holds no clips to evaluate.")
    if multi_label:
        return multi_label_video_metrics(np.concatenate(all_probabilities),
                                         np.concatenate(all_labels), np.concatenate(all_items))
    return video_level_metrics(np.concatenate(all_probabilities), np.concatenate(all_labels),
                               np.concatenate(all_items), num_classes)
