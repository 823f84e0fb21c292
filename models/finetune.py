"""Fine-tuning a built model: freezing stages and batch norms, per-group learning rates.

`fine_tune(model, name, ...)` is the one call a trainer makes: it freezes what is asked and
returns the learning-rate multiplier of every variable that has one. The model's stages
come from its row in `models.catalog.MODELS` (`Stages`: layer names -> stage 0, the stem,
and 1..N, by the same names the torchvision checkpoints load by; the list per model is in
docs/MODELS.md). The classifier (the last layer with weights) is in no stage.

Parameter groups (`models.catalog.PARAMETER_GROUPS`), for per-group learning rates: `head`
is the classifier's variables, `offsets` the offset (and mask) branch of every
`DeformConv3D` (`<layer>/offset_conv/*`), `backbone` everything else.
"""

import keras

from models.catalog import model_spec

OFFSET_BRANCH = "/offset_conv/"


def stage_of(architecture, layer_name):
    """The stage (0 = stem, 1..the row's `stages.count`) a layer belongs to, or None.

    >>> stage_of("r3d_18", "layer2.0.conv1.0"), stage_of("r3d_18", "stem.1"), stage_of("r3d_18", "fc")
    (2, 0, None)
    """
    return model_spec(architecture).stages.stage_of(layer_name)


def weighted_layers(model):
    """The model's layers that hold variables, in `model.layers` order."""
    return [layer for layer in model.layers if layer.weights]


def head_layer(model):
    """The classifier: the last layer with weights (the rule the checkpoint loaders use)."""
    return weighted_layers(model)[-1]


def variable_groups(model):
    """`{variable.path: group}` for every trainable-or-not variable of the model's layers.

    Groups are `models.catalog.PARAMETER_GROUPS`: `head`, `offsets` (DeformConv3D offset/mask branches),
    `backbone` (the rest).
    """
    head = head_layer(model)
    groups = {}
    for layer in model.layers:
        for variable in layer.weights:
            if layer is head:
                groups[variable.path] = "head"
            elif OFFSET_BRANCH in f"/{variable.path}":
                groups[variable.path] = "offsets"
            else:
                groups[variable.path] = "backbone"
    return groups


def freeze(model, architecture, *, stages=None, batch_norm=False):
    """Makes the stem and the first `stages` stages, and/or every BatchNormalization, frozen.

    A frozen layer is `trainable = False`: its weights get no update, and a frozen
    BatchNormalization normalises with its moving statistics and leaves them unchanged (Keras
    3 runs a non-trainable BatchNormalization in inference mode). Call before `compile`.

    Args:
        model: a `keras.Model` from `build_model`.
        architecture: its `build_model` name (which says how layer names map to stages).
        stages: None (no stage frozen), 0 (the stem only) or N in 1..`stages.count` (the stem
            and stages 1..N); models without a stem freeze their first N conv groups.
        batch_norm: bool, freeze every BatchNormalization layer (gamma, beta and the moving
            statistics), like MMAction2's `norm_eval` with `requires_grad=False` on the norms.

    Returns:
        The names of the layers made non-trainable, in layer order.

    Raises:
        ValueError: `stages` out of range for the architecture.
    """
    limit = model_spec(architecture).stages.count
    if stages is not None and (not isinstance(stages, int) or isinstance(stages, bool)
                               or not 0 <= stages <= limit):
        raise ValueError(f"`stages` must be None or an int in 0..{limit} for {architecture}. "
                         f"Received: stages={stages!r}")
    frozen = []
    for layer in model.layers:
        if not layer.weights:
            continue
        stage = stage_of(architecture, layer.name)
        in_frozen_stage = stages is not None and stage is not None and stage <= stages
        if in_frozen_stage or (batch_norm and isinstance(layer, keras.layers.BatchNormalization)):
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def learning_rate_multipliers(model, group_multipliers):
    """`{variable.path: multiplier}` of the trainable variables whose group has a multiplier
    other than 1 (`group_multipliers`: `{group: multiplier}`, see `variable_groups`)."""
    trainable = {variable.path for variable in model.trainable_variables}
    return {path: float(group_multipliers[group])
            for path, group in variable_groups(model).items()
            if path in trainable and float(group_multipliers.get(group, 1.0)) != 1.0}


def fine_tune(model, architecture, *, freeze_stages=None, freeze_batch_norm=False,
              lr_multipliers=None):
    """Freezes what is asked, then says which variables learn at another rate. Call before `compile`.

    Args:
        model: a `keras.Model` from `build_model`.
        architecture: its `build_model` name.
        freeze_stages: None, or the stages to freeze (see `freeze`'s `stages`).
        freeze_batch_norm: bool, freeze every BatchNormalization (see `freeze`).
        lr_multipliers: None or `{group: multiplier}` over `PARAMETER_GROUPS`; groups not
            given keep 1.

    Returns:
        `(frozen, multipliers)`: the names of the layers made non-trainable, in layer order,
        and `{variable.path: multiplier}` for the trainable variables whose multiplier is
        not 1 (frozen variables have none), for the optimizer.

    Raises:
        ValueError: `freeze_stages` out of range for the architecture.
    """
    frozen = []
    if freeze_stages is not None or freeze_batch_norm:
        frozen = freeze(model, architecture, stages=freeze_stages, batch_norm=freeze_batch_norm)
    return frozen, learning_rate_multipliers(model, lr_multipliers or {})
