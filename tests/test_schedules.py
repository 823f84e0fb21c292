"""Tests for training.schedules: the curve against a plain-Python reference, and serialisation."""

import math

import keras
import numpy as np
import pytest

from training.schedules import WarmupSchedule


def reference_rate(step, peak, total, warmup, decay, boundaries, gamma, floor):
    if step < warmup:
        return peak * (step + 1) / warmup
    if decay == "cosine":
        progress = min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if decay == "step":
        return peak * gamma ** sum(step >= b for b in boundaries)
    return peak


@pytest.mark.parametrize(
    "peak, total, warmup, decay, boundaries, gamma, floor",
    [
        (0.1, 100, 0, "cosine", (), 0.1, 0.0),
        (0.1, 100, 10, "cosine", (), 0.1, 0.001),
        (0.05, 60, 5, "step", (20, 40), 0.1, 0.0),
        (0.01, 30, 3, "constant", (), 0.1, 0.0),
        (0.2, 7, 7, "cosine", (), 0.1, 0.0),
    ],
)
def test_schedule_matches_reference(peak, total, warmup, decay, boundaries, gamma, floor):
    schedule = WarmupSchedule(peak, total, warmup, decay, boundaries, gamma, floor)
    for step in range(0, total + 3):
        expected = reference_rate(step, peak, total, warmup, decay, boundaries, gamma, floor)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-7), step


def test_schedule_follows_optimizer_iterations_across_a_restore():
    schedule = WarmupSchedule(0.1, 50, 5)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer.build([variable])
    optimizer.iterations.assign(23)
    assert float(optimizer.learning_rate) == pytest.approx(float(schedule(23)))


def test_schedule_round_trips_through_config():
    schedule = WarmupSchedule(0.1, 50, 5, "step", [20, 30], 0.5, 0.0)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert again.get_config() == schedule.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"decay": "linear"}, "Expected decay to be one of cosine, step, constant"),
        ({"warmup_steps": 200}, "Expected 0 <= warmup_steps <= total_steps"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WarmupSchedule(0.1, 100, **kwargs)
