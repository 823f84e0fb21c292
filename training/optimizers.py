"""Optimizers with a per-variable learning-rate multiplier: SGD, Adam and AdamW.

Keras 3 has one learning rate per optimizer. Fine-tuning wants a group's rate scaled (the
backbone at 0.1 of the head's, DeformConv3D's offset branch at 0.1 as in the DCNv2 paper and
mmcv), which is PyTorch's parameter groups. Scaling gradients is not the same thing: Adam
divides the gradient by its own running scale, so its first step is about `lr * sign(g)`
whatever the gradient's size. Here the rate itself is scaled: Keras calls
`update_step(gradient, variable, learning_rate)` once per variable (also under a
tf.distribute strategy), and these subclasses pass `learning_rate * multiplier` on, so the
whole update rule (momentum, Nesterov, Adam's moments and bias correction) sees the
group's rate. The decoupled weight decay of Keras (`variable -= lr * wd * variable`) is
applied before `update_step` with the optimizer's rate and is not scaled.

`lr_multipliers` maps variable paths (`layer2.0.conv1.0/kernel`) to multipliers; a path not
listed gets 1. It is part of `get_config`, and the classes are registered, so a model.keras
saved with its optimizer loads again (after `import training.optimizers`).
"""

import keras
from keras import ops

from training.keras_version import require_supported_keras

SERIALIZATION_PACKAGE = "video_training"


class _LearningRateMultipliers:
    """Mixin: scales the learning rate of each variable by `lr_multipliers[variable.path]`."""

    def __init__(self, *args, lr_multipliers=None, **kwargs):
        multipliers = dict(lr_multipliers or {})
        for path, value in multipliers.items():
            if not isinstance(path, str) or isinstance(value, bool) or \
                    not isinstance(value, (int, float)) or value < 0:
                raise ValueError("`lr_multipliers` must map variable paths to numbers >= 0. "
                                 f"Received: lr_multipliers={lr_multipliers!r}")
        if multipliers:
            # `_get_variable_index` below is a private method of the base optimizer.
            require_supported_keras("per-variable learning rates (train.lr_multipliers)")
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {path: float(value) for path, value in multipliers.items()}
        self._variable_multipliers = []

    def build(self, variables):
        super().build(variables)
        # One multiplier per variable index, the index update_step finds a variable by.
        self._variable_multipliers = [self.lr_multipliers.get(v.path, 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        multiplier = 1.0
        if self.lr_multipliers:
            multiplier = self._variable_multipliers[self._get_variable_index(variable)]
        if multiplier != 1.0:
            learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype),
                                         ops.cast(multiplier, variable.dtype))
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class MultiplierSGD(_LearningRateMultipliers, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with `lr_multipliers={variable path: multiplier}`.

    Example:

    >>> optimizer = MultiplierSGD(0.1, lr_multipliers={"dense/kernel": 0.1})
    >>> optimizer.get_config()["lr_multipliers"]
    {'dense/kernel': 0.1}
    """


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class MultiplierAdam(_LearningRateMultipliers, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with `lr_multipliers={variable path: multiplier}`."""


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class MultiplierAdamW(_LearningRateMultipliers, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with `lr_multipliers={variable path: multiplier}`."""


OPTIMIZERS = {"sgd": MultiplierSGD, "adam": MultiplierAdam, "adamw": MultiplierAdamW}


def build_optimizer(train, schedule, lr_multipliers=None):
    """The optimizer `train` (TrainConfig) names; `lr_multipliers` = {variable path:
    multiplier} (see above), from `training.trainer.learning_rate_multipliers`."""
    weight_decay = train.weight_decay or None
    clipnorm = train.gradient_clip_norm
    options = dict(clipnorm=clipnorm, lr_multipliers=lr_multipliers)
    if train.optimizer == "sgd":
        optimizer = OPTIMIZERS["sgd"](schedule, momentum=train.momentum, nesterov=train.nesterov,
                                      weight_decay=weight_decay, **options)
    elif train.optimizer == "adam":
        optimizer = OPTIMIZERS["adam"](schedule, weight_decay=weight_decay, **options)
    else:
        optimizer = OPTIMIZERS["adamw"](schedule, weight_decay=train.weight_decay, **options)
    if weight_decay:
        # Decay the kernels only: shrinking biases and normalisation scales does not regularise.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
