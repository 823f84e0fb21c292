"""training.metrics against hand-counted cases and the loop reference (tests/metric_reference)."""

import math

import numpy as np
import pytest

from metric_reference import (reference_average_precision, reference_mean_average_precision,
                              reference_video_metrics)
from training.metrics import (MeanAveragePrecision, MeanClassAccuracy, average_precision,
                              f1_scores, mean_average_precision, multi_label_video_metrics,
                              per_class_average_precision, video_level_metrics)

# 6 classes, 4 items (indices 7, 3, 9, 5, clips interleaved), labels 0, 2, 5, 1.
TIE = [0.3, 0.3, 0.1, 0.1, 0.1, 0.1]  # 0 and 1 tie for first, 2..5 tie for third
CLIPS = [
    (7, 0, [0.6, 0.1, 0.1, 0.1, 0.05, 0.05]),
    (3, 2, TIE),
    (5, 1, [0.5, 0.3, 0.05, 0.05, 0.05, 0.05]),
    (7, 0, [0.4, 0.2, 0.1, 0.1, 0.1, 0.1]),
    (9, 5, TIE),
    (5, 1, [0.1, 0.7, 0.05, 0.05, 0.05, 0.05]),
]
# Counted by hand. Item 7: mean [.5, .15, ...], right. Item 3 (label 2): the tie goes to
# class 0, wrong; its top 5 is 0, 1, 2, 3, 4, so top-5 right. Item 9 (label 5): wrong, and
# class 5 loses the tie for the top 5. Item 5 (label 1): mean [.3, .5, ...], right.
EXPECTED = {"top1": 2 / 4, "top5": 3 / 4, "top5_k": 5,
            # classes present: 0 (1 of 1), 1 (1 of 1), 2 (0 of 1), 5 (0 of 1)
            "mean_class_accuracy": 2 / 4,
            "loss": -(math.log(0.5) + math.log(0.1) + math.log(0.1) + math.log(0.5)) / 4,
            "clips": 6, "videos": 4,
            # clip argmax: 0 right, 0 (tie) wrong, 0 wrong, 0 right, 0 wrong, 1 right
            "clip_top1": 3 / 6}


def hand_case():
    items, labels, probabilities = zip(*CLIPS)
    return np.array(probabilities), np.array(labels), np.array(items)


def test_hand_counted_case_ties_included():
    probabilities, labels, items = hand_case()
    results = video_level_metrics(probabilities, labels, items, 6)
    for key, value in EXPECTED.items():
        assert results[key] == pytest.approx(value), key
    confusion = np.array(results["confusion_matrix"])
    assert confusion.sum() == 4
    assert confusion[0, 0] == confusion[1, 1] == confusion[2, 0] == confusion[5, 0] == 1


def test_loop_reference_agrees_with_the_hand_count():
    results = reference_video_metrics(*hand_case(), 6)
    for key, value in EXPECTED.items():
        assert results[key] == pytest.approx(value), key


@pytest.mark.parametrize("num_classes, videos, clips_per_video, seed", [
    (3, 5, 1, 0), (4, 9, 3, 1), (7, 20, 2, 2), (10, 31, 4, 3)])
def test_random_cases_match_the_loop_reference(num_classes, videos, clips_per_video, seed):
    rng = np.random.default_rng(seed)
    video_labels = rng.integers(0, num_classes, videos)
    # Probabilities on a coarse grid, so that ties are common.
    logits = rng.integers(0, 4, (videos * clips_per_video, num_classes)).astype(np.float64)
    probabilities = logits / logits.sum(axis=1, keepdims=True).clip(1)
    items = np.repeat(rng.permutation(100)[:videos], clips_per_video)
    order = rng.permutation(len(items))
    labels = np.repeat(video_labels, clips_per_video)
    probabilities, labels, items = probabilities[order], labels[order], items[order]
    results = video_level_metrics(probabilities, labels, items, num_classes)
    expected = reference_video_metrics(probabilities, labels, items, num_classes)
    for key, value in expected.items():
        if key == "confusion_matrix":
            assert results[key] == value
        else:
            assert results[key] == pytest.approx(value), key


def test_mean_class_accuracy_over_batches_counts_like_a_hand_tally():
    metric = MeanClassAccuracy(4)
    true = [0, 1, 2, 2, 0, 1, 1]
    predicted = [0, 1, 2, 0, 0, 2, 1]  # class 3 never appears: it does not count
    eye = np.eye(4, dtype="float32")
    metric.update_state(eye[true[:4]], eye[predicted[:4]])
    metric.update_state(eye[true[4:]], eye[predicted[4:]])
    # recall: class 0 2/2, class 1 2/3, class 2 1/2
    assert float(metric.result()) == pytest.approx((1 + 2 / 3 + 1 / 2) / 3, rel=1e-6)
    tally = np.zeros((4, 4))
    for t, p in zip(true, predicted):
        tally[t, p] += 1
    np.testing.assert_array_equal(np.asarray(metric.confusion), tally)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_mean_class_accuracy_takes_the_first_of_tied_scores():
    metric = MeanClassAccuracy(3)
    metric.update_state(np.eye(3)[[1, 0]], np.array([[0.4, 0.4, 0.2], [0.5, 0.5, 0.0]]))
    # Both predictions are class 0: class 1 recall 0, class 0 recall 1.
    assert float(metric.result()) == pytest.approx(0.5)
    np.testing.assert_array_equal(np.asarray(metric.confusion),
                                  [[1, 0, 0], [1, 0, 0], [0, 0, 0]])


# --- multi-label ----------------------------------------------------------------------------

# (scores, targets, AP counted by hand). Ranked by descending score; a tie is one threshold.
AVERAGE_PRECISION_CASES = [
    ([0.9, 0.8, 0.7], [1, 0, 1], (1 + 2 / 3) / 2),
    ([0.1, 0.2, 0.3, 0.4], [1, 1, 1, 1], 1.0),
    ([0.4, 0.3, 0.2, 0.1], [0, 0, 0, 1], 1 / 4),
    # A tie of a positive and a negative at the top: threshold 0.9 takes both (precision
    # 1/2, recall 1/2), then 0.5 adds the second positive (precision 2/3): (1/2 + 2/3) / 2.
    ([0.9, 0.9, 0.5], [1, 0, 1], (1 / 2 + 2 / 3) / 2),
    # The same scores with the tie's order swapped in the input: the same AP.
    ([0.9, 0.9, 0.5], [0, 1, 1], (1 / 2 + 2 / 3) / 2),
    # Every score equal: one threshold, precision = the positive fraction.
    ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 1 / 2),
    # Ties in the middle: 0.8 (1 of 1), 0.6 x3 (one positive: 2 of 4), 0.2 (3 of 5).
    ([0.8, 0.6, 0.6, 0.6, 0.2], [1, 0, 1, 0, 1], (1 + 2 / 4 + 3 / 5) / 3),
]


@pytest.mark.parametrize("scores, targets, expected", AVERAGE_PRECISION_CASES)
def test_average_precision_matches_hand_counts_and_the_loop_reference(scores, targets,
                                                                       expected):
    assert average_precision(scores, targets) == pytest.approx(expected)
    assert reference_average_precision(scores, targets) == pytest.approx(expected)


def test_average_precision_without_a_positive_is_nan():
    assert math.isnan(average_precision([0.3, 0.2], [0, 0]))


def test_mean_average_precision_skips_classes_without_a_positive():
    scores = np.array([[0.9, 0.9, 0.1], [0.8, 0.9, 0.2], [0.7, 0.5, 0.3]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    # class 0: 0.9 (1/1), 0.8 (1/2), 0.7 (2/3) -> (1 + 2/3) / 2; class 1: tie 0.9 (1 of 2),
    # 0.5 (2 of 3) -> (1/2 + 2/3) / 2; class 2: no positive, left out.
    expected = ((1 + 2 / 3) / 2 + (1 / 2 + 2 / 3) / 2) / 2
    assert mean_average_precision(scores, targets) == pytest.approx(expected)
    assert reference_mean_average_precision(scores.tolist(), targets.tolist()) == \
        pytest.approx(expected)
    assert math.isnan(per_class_average_precision(scores, targets)[2])


@pytest.mark.parametrize("seed", range(4))
def test_mean_average_precision_matches_the_loop_reference_on_random_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (30, 5)) / 4  # few distinct values: many ties
    targets = (rng.random((30, 5)) < 0.3).astype(int)
    targets[:, 4] = 0  # a class without a positive
    assert mean_average_precision(scores, targets) == pytest.approx(
        reference_mean_average_precision(scores.tolist(), targets.tolist()))


def test_f1_scores_at_a_threshold():
    scores = np.array([[0.9, 0.6, 0.1], [0.2, 0.7, 0.1], [0.8, 0.3, 0.1]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    # class 0: predicted items 0, 2, true 0 -> tp 1, F1 2/3; class 1: predicted 0, 1, true
    # 1, 2 -> tp 1, F1 1/2; class 2: neither, no F1. Micro: tp 2, 4 predicted, 3 true.
    micro, macro = f1_scores(scores, targets, 0.5)
    assert micro == pytest.approx(2 * 2 / (4 + 3))
    assert macro == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_multi_label_video_metrics_average_clips_per_item():
    # items 4 and 1, two clips each; averaged: item 4 [0.8, 0.3], item 1 [0.4, 0.6].
    clips = [[0.9, 0.2], [0.2, 0.5], [0.7, 0.4], [0.6, 0.7]]
    labels = [[1, 0], [0, 1], [1, 0], [0, 1]]
    results = multi_label_video_metrics(clips, labels, [4, 1, 4, 1])
    assert results["mean_average_precision"] == pytest.approx(1.0)
    assert results["per_class_ap"] == [1.0, 1.0]
    assert results["positives"] == [1, 1]
    assert (results["videos"], results["clips"]) == (2, 4)
    assert (results["micro_f1"], results["macro_f1"]) == (1.0, 1.0)
    expected_loss = -(math.log(0.8) + math.log(0.7) + math.log(0.6) + math.log(0.6)) / 4
    assert results["loss"] == pytest.approx(expected_loss)
    # Clip by clip, class 1 ranks 0.7 (positive), 0.5 (positive), 0.4, 0.2: also exact.
    assert results["clip_mean_average_precision"] == pytest.approx(
        reference_mean_average_precision(clips, labels))


def test_mean_average_precision_metric_is_exact_and_keeps_capacity_clips():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(10, 3)).astype(np.float32)
    targets = (rng.random((10, 3)) < 0.5).astype(np.float32)
    targets[0] = 1.0  # every class has a positive among the first 6
    metric = MeanAveragePrecision(3, capacity=6)
    metric.update_state(targets[:4], logits[:4])
    metric.update_state(targets[4:], logits[4:])  # only 2 of these 6 are kept
    scores = 1 / (1 + np.exp(-logits[:6].astype(np.float64)))
    assert float(metric.result()) == pytest.approx(mean_average_precision(scores, targets[:6]),
                                                   abs=1e-6)
    np.testing.assert_allclose(metric.per_class(),
                               per_class_average_precision(scores, targets[:6]), atol=1e-6)
    metric.reset_state()
    metric.update_state(targets[6:], logits[6:])
    scores = 1 / (1 + np.exp(-logits[6:].astype(np.float64)))
    assert float(metric.result()) == pytest.approx(mean_average_precision(scores, targets[6:]),
                                                   abs=1e-6)
