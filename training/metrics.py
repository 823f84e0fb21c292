"""Metrics: a confusion-matrix metric and an exact mAP metric for model.fit, and video-level
evaluation in numpy (single-label: top-k, mean class accuracy; multi-label: MMAction2's mean
average precision, F1)."""

import keras
import numpy as np
import tensorflow as tf
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


# --- multi-label ----------------------------------------------------------------------------


def average_precision(scores, targets):
    """Average precision of one class, as MMAction2's `mean_average_precision` computes it.

    Items are ranked by descending score; tied scores form one threshold, so a tie counts
    all its items at once (no order inside a tie matters). AP is the sum over thresholds of
    (recall gained) x (precision at that threshold): the same as scikit-learn's
    `average_precision_score` (no interpolation).

    Args:
        scores: float (N,).
        targets: (N,), 1 for a positive (any other value is a negative).

    Returns:
        float, or NaN when there is no positive.

    >>> average_precision([0.9, 0.8, 0.7], [1, 0, 1])
    0.8333333333333333
    """
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(targets) == 1
    if not positive.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    # The last position of each run of equal scores: the thresholds.
    ends = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(positive)[ends]
    precision = true_positives / (ends + 1)
    recall_gained = np.diff(np.r_[0, true_positives]) / true_positives[-1]
    return float(np.sum(recall_gained * precision))


def per_class_average_precision(scores, targets):
    """float (C,) average precision of each column of `scores` (N, C); NaN for a class
    without a positive among `targets` (N, C) multi-hot."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    return np.array([average_precision(scores[:, c], targets[:, c])
                     for c in range(scores.shape[1])], np.float64)


def mean_average_precision(scores, targets):
    """Mean of the per-class average precisions over the classes with a positive (MMAction2's
    `mean_average_precision`); NaN when no class has one."""
    values = per_class_average_precision(scores, targets)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def f1_scores(scores, targets, threshold=0.5):
    """(micro F1, macro F1) of `scores > threshold` against multi-hot `targets`, both (N, C).

    Micro counts every (item, class) decision together; macro averages the per-class F1 over
    the classes that have a positive or a prediction (a class with neither has no F1).
    """
    predicted = np.asarray(scores) > threshold
    actual = np.asarray(targets) == 1
    true_positives = (predicted & actual).sum(axis=0)
    predicted_count, actual_count = predicted.sum(axis=0), actual.sum(axis=0)
    denominators = predicted_count + actual_count
    micro = 2 * true_positives.sum() / denominators.sum() if denominators.sum() else 0.0
    defined = denominators > 0
    macro = (2 * true_positives[defined] / denominators[defined]).mean() if defined.any() \
        else 0.0
    return float(micro), float(macro)


def multi_label_video_metrics(clip_probabilities, labels, item_indices, threshold=0.5):
    """Averages clip sigmoid scores per item, then scores the items.

    Args:
        clip_probabilities: float (N, C), sigmoid per clip.
        labels: (N, C) multi-hot of each clip's item.
        item_indices: int (N,), which item each clip belongs to.
        threshold: float, a class is predicted when its averaged score is above it (F1).

    Returns:
        dict: mean_average_precision, per_class_ap (list, None for a class without a
        positive), positives (videos of each class), micro_f1, macro_f1, threshold, loss (binary cross-entropy of the averaged
        scores, mean over items and classes), clips, videos, clip_mean_average_precision
        (single clips ranked alone).
    """
    clip_probabilities = np.asarray(clip_probabilities, np.float64)
    labels = np.asarray(labels, np.float64)
    item_indices = np.asarray(item_indices, np.int64)
    items, inverse = np.unique(item_indices, return_inverse=True)
    sums = np.zeros((len(items), clip_probabilities.shape[1]))
    np.add.at(sums, inverse, clip_probabilities)
    video_probabilities = sums / np.bincount(inverse, minlength=len(items))[:, None]
    video_labels = np.zeros_like(video_probabilities)
    video_labels[inverse] = labels
    per_class = per_class_average_precision(video_probabilities, video_labels)
    micro, macro = f1_scores(video_probabilities, video_labels, threshold)
    clipped = np.clip(video_probabilities, 1e-12, 1 - 1e-12)
    loss = -(video_labels * np.log(clipped) + (1 - video_labels) * np.log(1 - clipped)).mean()
    return {
        "mean_average_precision": mean_average_precision(video_probabilities, video_labels),
        "per_class_ap": [None if np.isnan(value) else float(value) for value in per_class],
        "positives": [int(count) for count in (video_labels == 1).sum(axis=0)],
        "micro_f1": micro,
        "macro_f1": macro,
        "threshold": float(threshold),
        "loss": float(loss),
        "clips": int(len(labels)),
        "videos": int(len(items)),
        "clip_mean_average_precision": mean_average_precision(clip_probabilities, labels),
    }


@keras.saving.register_keras_serializable(package="training")
class MeanAveragePrecision(keras.metrics.Metric):
    """Exact mean average precision (`mean_average_precision`) of the clips seen in an epoch.

    AP needs every score at once, so the sigmoid scores and targets of the first `capacity`
    clips since the last reset are kept in variables (`scores`, `targets`, `count`; a callback
    reads them for the per-class AP). Give the validation split's clip count: validation is
    then exact, and the training value covers the epoch's first `capacity` clips. For one
    device only (a strategy would sum the buffers of its replicas).

    Args:
        num_classes: int.
        capacity: int, clips kept.
        name: str, the metric's name in logs.

    Example:

    >>> metric = MeanAveragePrecision(2, capacity=4)
    >>> metric.update_state(np.array([[1., 0.], [0., 1.], [1., 1.]]),
    ...                     np.array([[3., -1.], [-2., 1.], [0., 2.]]))
    >>> round(float(metric.result()), 3)
    1.0
    """

    def __init__(self, num_classes, capacity, name="mean_average_precision", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.capacity = int(capacity)
        shape = (self.capacity, self.num_classes)
        self.scores = self.add_variable(shape=shape, initializer="zeros", dtype="float32",
                                        name="scores")
        self.targets = self.add_variable(shape=shape, initializer="zeros", dtype="float32",
                                         name="targets")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="int32",
                                       name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        scores = tf.sigmoid(tf.cast(y_pred, tf.float32))
        taken = tf.minimum(tf.shape(scores)[0], self.capacity - self.count)
        rows = tf.range(taken)[:, None] + self.count
        self.scores.assign(tf.tensor_scatter_nd_update(self.scores, rows, scores[:taken]))
        self.targets.assign(tf.tensor_scatter_nd_update(
            self.targets, rows, tf.cast(y_true, tf.float32)[:taken]))
        self.count.assign_add(taken)

    def result(self):
        def exact(scores, targets, count):
            return np.float32(mean_average_precision(scores[:count], targets[:count]))

        value = tf.numpy_function(exact, [self.scores, self.targets, self.count], tf.float32,
                                  stateful=False)
        return tf.ensure_shape(value, ())

    def per_class(self):
        """float (C,) AP of each class over the kept clips (NaN: no positive among them)."""
        count = int(keras.ops.convert_to_numpy(self.count))
        return per_class_average_precision(keras.ops.convert_to_numpy(self.scores)[:count],
                                           keras.ops.convert_to_numpy(self.targets)[:count])

    def reset_state(self):
        self.scores.assign(ops.zeros_like(self.scores))
        self.targets.assign(ops.zeros_like(self.targets))
        self.count.assign(0)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "capacity": self.capacity}


def compile_metrics(num_classes, multi_label, validation_clips, single_device):
    """(metrics for compile, the metric TensorBoard draws each epoch, or None).

    Single-label: top-1, top-k and MeanClassAccuracy (its confusion matrix is drawn).
    Multi-label: MeanAveragePrecision holding the validation split's clips (its per-class AP
    is drawn); it keeps the clips of one device, so under a strategy only the final test
    evaluation reports mAP.
    """
    if multi_label:
        if not single_device:
            return [], None
        average_precision = MeanAveragePrecision(num_classes, capacity=validation_clips)
        return [average_precision], average_precision
    confusion = MeanClassAccuracy(num_classes)
    return [keras.metrics.CategoricalAccuracy(name="top1"),
            keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
            confusion], confusion
