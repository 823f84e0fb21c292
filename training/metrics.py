"""Metrics: a confusion-matrix metric for model.fit, and video-level evaluation in numpy."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="training")
class MeanClassAccuracy(keras.metrics.Metric):
    """Mean over classes of per-class recall, from a running confusion matrix.

    The matrix (`self.confusion`, rows = true class, columns = predicted) is kept as a
    variable so a callback can draw it after validation without another pass over the data.

    Args:
        num_classes: int.
        name: str, the metric's name in logs.

    Example:

    >>> metric = MeanClassAccuracy(3)
    >>> metric.update_state(np.eye(3)[[0, 1, 2, 2]], np.eye(3)[[0, 1, 2, 0]])
    >>> round(float(metric.result()), 3)
    0.833
    """

    def __init__(self, num_classes, name="mean_class_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes), initializer="zeros", dtype="float32",
            name="confusion",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        true = ops.argmax(y_true, axis=-1)
        predicted = ops.argmax(y_pred, axis=-1)
        flat = ops.cast(true * self.num_classes + predicted, "int32")
        counts = ops.bincount(flat, minlength=self.num_classes * self.num_classes)
        counts = ops.reshape(ops.cast(counts[: self.num_classes ** 2], "float32"),
                             (self.num_classes, self.num_classes))
        self.confusion.assign_add(counts)

    def result(self):
        per_class_total = ops.sum(self.confusion, axis=1)
        correct = ops.diagonal(self.confusion)
        present = ops.cast(per_class_total > 0, "float32")
        recall = ops.divide_no_nan(correct, per_class_total)
        return ops.divide_no_nan(ops.sum(recall * present), ops.sum(present))

    def reset_state(self):
        self.confusion.assign(ops.zeros_like(self.confusion))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def video_level_metrics(clip_probabilities, labels, item_indices, num_classes):
    """Averages clip softmax per item, then scores the items.

    Args:
        clip_probabilities: float (N, C), softmax per clip.
        labels: int (N,), 0-based class of each clip's item.
        item_indices: int (N,), which item each clip belongs to.
        num_classes: int.

    Returns:
        dict: top1, top5 (top-min(5, C)), mean_class_accuracy, loss (cross-entropy of the
        averaged probabilities), clips, videos, clip_top1 (accuracy of single clips), and the
        confusion matrix (list of lists, rows true).
    """
    clip_probabilities = np.asarray(clip_probabilities, np.float64)
    labels = np.asarray(labels, np.int64)
    item_indices = np.asarray(item_indices, np.int64)
    items, inverse = np.unique(item_indices, return_inverse=True)
    sums = np.zeros((len(items), num_classes))
    np.add.at(sums, inverse, clip_probabilities)
    counts = np.bincount(inverse, minlength=len(items))[:, None]
    video_probabilities = sums / counts
    video_labels = np.zeros(len(items), np.int64)
    video_labels[inverse] = labels
    k = min(5, num_classes)
    ranked = np.argsort(-video_probabilities, axis=1, kind="stable")
    top1 = ranked[:, 0] == video_labels
    topk = (ranked[:, :k] == video_labels[:, None]).any(axis=1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (video_labels, ranked[:, 0]), 1)
    present = confusion.sum(axis=1) > 0
    recall = np.diag(confusion)[present] / confusion.sum(axis=1)[present]
    picked = video_probabilities[np.arange(len(items)), video_labels]
    return {
        "top1": float(top1.mean()),
        "top5": float(topk.mean()),
        "top5_k": k,
        "mean_class_accuracy": float(recall.mean()),
        "loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
        "clips": int(len(labels)),
        "videos": int(len(items)),
        "clip_top1": float((clip_probabilities.argmax(axis=1) == labels).mean()),
        "confusion_matrix": confusion.tolist(),
    }
