"""Learning-rate schedules: linear warmup, then cosine decay, steps, or a constant.

The schedule is a function of the optimizer's step count (`optimizer.iterations`), which
BackupAndRestore saves and restores with the optimizer; so a resumed run continues the curve
exactly where it stopped (a per-epoch callback that sets the rate from `epoch` would restart
it, since Keras calls it with the restored epoch only if told `initial_epoch`).
"""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="training")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak_learning_rate`, then `decay` until `total_steps`.

    Args:
        peak_learning_rate: float, the rate at the end of warmup.
        total_steps: int, optimizer steps in the whole run.
        warmup_steps: int, steps of linear warmup from `peak / warmup_steps` (default 0).
        decay: `"cosine"` (to `min_learning_rate` at `total_steps`), `"step"` (multiply by
            `gamma` at each of `boundaries`, in steps) or `"constant"`.
        boundaries: increasing step counts for `"step"`.
        gamma: float, the factor per boundary.
        min_learning_rate: float, the cosine floor.

    Example:

    >>> schedule = WarmupSchedule(0.1, total_steps=100, warmup_steps=10)
    >>> round(float(schedule(9)), 6), float(schedule(100))
    (0.1, 0.0)
    """

    def __init__(self, peak_learning_rate, total_steps, warmup_steps=0, decay="cosine",
                 boundaries=(), gamma=0.1, min_learning_rate=0.0):
        if decay not in ("cosine", "step", "constant"):
            raise ValueError(
                f"Expected decay to be one of cosine, step, constant. Received: decay={decay}"
            )
        if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(
                "Expected 0 <= warmup_steps <= total_steps and total_steps >= 1. Received: "
                f"warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.boundaries = [int(b) for b in boundaries]
        self.gamma = float(gamma)
        self.min_learning_rate = float(min_learning_rate)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.peak_learning_rate
        if self.decay == "cosine":
            decay_steps = max(self.total_steps - self.warmup_steps, 1)
            progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
            cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
            rate = self.min_learning_rate + (peak - self.min_learning_rate) * cosine
        elif self.decay == "step":
            rate = ops.convert_to_tensor(peak, "float32")
            for boundary in self.boundaries:
                rate = ops.where(step >= boundary, rate * self.gamma, rate)
        else:
            rate = ops.convert_to_tensor(peak, "float32")
        if self.warmup_steps > 0:
            # (step + 1): the first update already moves the weights a little.
            warmup = peak * (step + 1.0) / self.warmup_steps
            rate = ops.where(step < self.warmup_steps, warmup, rate)
        return rate

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "boundaries": list(self.boundaries),
            "gamma": self.gamma,
            "min_learning_rate": self.min_learning_rate,
        }


def schedule_from_config(train, steps_per_epoch):
    """Builds the WarmupSchedule a TrainConfig describes, converting epochs to steps."""
    return WarmupSchedule(
        peak_learning_rate=train.learning_rate,
        total_steps=train.epochs * steps_per_epoch,
        warmup_steps=int(round(train.warmup_epochs * steps_per_epoch)),
        decay=train.schedule,
        boundaries=[epoch * steps_per_epoch for epoch in train.step_epochs],
        gamma=train.step_gamma,
        min_learning_rate=train.min_learning_rate,
    )
