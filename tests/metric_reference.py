"""Slow, obviously right video-level metrics in plain Python loops: the reference the metric
code (training.metrics) and the trainer's results are checked against.

Ranking: by descending probability, a tie going to the lower class index.
"""

import math

import numpy as np
import tensorflow as tf


def ranked_classes(probabilities):
    return sorted(range(len(probabilities)), key=lambda c: (-probabilities[c], c))


def reference_video_metrics(clip_probabilities, labels, item_indices, num_classes):
    clips_of, label_of = {}, {}
    for probabilities, label, item in zip(clip_probabilities, labels, item_indices):
        clips_of.setdefault(int(item), []).append([float(p) for p in probabilities])
        label_of[int(item)] = int(label)
    k = min(5, num_classes)
    top1 = topk = loss = 0.0
    confusion = [[0] * num_classes for _ in range(num_classes)]
    for item, clips in clips_of.items():
        mean = [sum(clip[c] for clip in clips) / len(clips) for c in range(num_classes)]
        ranked = ranked_classes(mean)
        label = label_of[item]
        top1 += ranked[0] == label
        topk += label in ranked[:k]
        loss -= math.log(max(mean[label], 1e-12))
        confusion[label][ranked[0]] += 1
    recalls = [confusion[c][c] / sum(confusion[c]) for c in range(num_classes)
               if sum(confusion[c])]
    clip_hits = sum(ranked_classes([float(p) for p in probabilities])[0] == int(label)
                    for probabilities, label in zip(clip_probabilities, labels))
    videos = len(clips_of)
    return {"top1": top1 / videos, "top5": topk / videos, "top5_k": k,
            "mean_class_accuracy": sum(recalls) / len(recalls), "loss": loss / videos,
            "clips": len(labels), "videos": videos, "clip_top1": clip_hits / len(labels),
            "confusion_matrix": confusion}


def reference_metrics_of(model, dataset, num_classes):
    """`reference_video_metrics` of `model`'s clip softmax over batches of
    (clips, one-hot labels, item indices)."""
    probabilities, labels, items = [], [], []
    for clips, one_hot, item in dataset:
        probabilities.append(tf.nn.softmax(model(clips, training=False)).numpy())
        labels.append(one_hot.numpy().argmax(1))
        items.append(item.numpy())
    return reference_video_metrics(np.concatenate(probabilities), np.concatenate(labels),
                                   np.concatenate(items), num_classes)


def reference_average_precision(scores, targets):
    """Average precision by its definition, one threshold at a time: for every distinct score t
    (highest first), precision and recall of "score >= t" (a tie is in or out together);
    AP = sum of (recall gained at t) x (precision at t). NaN without a positive."""
    positives = sum(1 for target in targets if target == 1)
    if positives == 0:
        return float("nan")
    total, previous_recall = 0.0, 0.0
    for threshold in sorted(set(float(s) for s in scores), reverse=True):
        chosen = [target for score, target in zip(scores, targets) if float(score) >= threshold]
        hits = sum(1 for target in chosen if target == 1)
        recall = hits / positives
        total += (recall - previous_recall) * hits / len(chosen)
        previous_recall = recall
    return total


def reference_mean_average_precision(scores, targets):
    """Mean over the classes (columns) that have a positive of `reference_average_precision`."""
    values = [reference_average_precision([row[c] for row in scores], [row[c] for row in targets])
              for c in range(len(scores[0]))]
    values = [value for value in values if not math.isnan(value)]
    return sum(values) / len(values) if values else float("nan")
