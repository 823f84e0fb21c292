"""What fine-tuning needs to know about a model: its stages and its parameter groups.

Stages come from the layer names (the same names the torchvision checkpoints load by):

| model | stage 0 (stem) | stages 1..N |
| --- | --- | --- |
| `r3d_18`, `mc3_18`, `r2plus1d_18` | `stem.*` | `layer1.*` .. `layer4.*` |
| `s3d` | `features.0` .. `features.3` | `features.4-6`, `features.7-12`, `features.13-15` (torchvision's pools at 4, 7, 13 open each) |
| `c3d` | none | conv groups 1..5 (`conv1a`, `conv2a`, `conv3a-b`, `conv4a-b`, `conv5a-b`) |
| `small3d`, `frames_as_channels` | none | conv groups 1..5 (`conv<i>`, `bn<i>`) |
| `movinet_a<N>`, `movinet_a<N>_stream` | `stem.*` | Model Garden's blocks 0..4 (`block<b>_layer<l>.*`) as stages 1..5 |

The classifier (the last layer with weights), `c3d`'s `fc6`, `fc7` and MoViNet's `head.project.*`
and `pre_logits` are in no stage.

Parameter groups, for per-group learning rates: `head` is the classifier's variables,
`offsets` the offset (and mask) branch of every `DeformConv3D` (`<layer>/offset_conv/*`),
`backbone` everything else.
"""

import re

import keras

from models.movinet import NUM_STAGES as MOVINET_NUM_STAGES
from models.movinet import VARIANTS as MOVINET_VARIANTS

OFFSET_BRANCH = "/offset_conv/"

_RESNET_STAGE = re.compile(r"^(?:(stem)|layer(\d+))\.")
_S3D_FEATURE = re.compile(r"^features\.(\d+)(?:\.|$)")
# S3D feature index -> stage: the stem (0-3), then a max pool opens each of stages 1-3.
_S3D_STAGE_STARTS = (0, 4, 7, 13)
_CONV_GROUP = re.compile(r"^(?:conv|bn)(\d+)[a-z]?(?:\.|$)")
_MOVINET_STAGE = re.compile(r"^(?:(stem)|block(\d+)_layer\d+)\.")
MOVINET_NAMES = tuple(MOVINET_VARIANTS)

NUM_STAGES = {"r3d_18": 4, "mc3_18": 4, "r2plus1d_18": 4, "s3d": 3, "c3d": 5, "small3d": 5,
              "frames_as_channels": 5, **{name: MOVINET_NUM_STAGES for name in MOVINET_NAMES}}


def stage_of(architecture, layer_name):
    """The stage (0 = stem, 1..`NUM_STAGES[architecture]`) a layer belongs to, or None.

    >>> stage_of("r3d_18", "layer2.0.conv1.0"), stage_of("r3d_18", "stem.1"), stage_of("r3d_18", "fc")
    (2, 0, None)
    """
    if architecture not in NUM_STAGES:
        raise ValueError(f"Unknown model name. Expected one of {list(NUM_STAGES)}. "
                         f"Received: architecture={architecture!r}")
    if architecture == "s3d":
        match = _S3D_FEATURE.match(layer_name)
        if not match:
            return None
        index = int(match.group(1))
        return sum(index >= start for start in _S3D_STAGE_STARTS) - 1
    if architecture in MOVINET_NAMES:
        match = _MOVINET_STAGE.match(layer_name)
        if not match:
            return None
        return 0 if match.group(1) else int(match.group(2)) + 1
    if architecture in ("c3d", "small3d", "frames_as_channels"):
        match = _CONV_GROUP.match(layer_name)
        return int(match.group(1)) if match else None
    match = _RESNET_STAGE.match(layer_name)
    if not match:
        return None
    return 0 if match.group(1) else int(match.group(2))


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
        stages: None (no stage frozen), 0 (the stem only) or N in 1..`NUM_STAGES` (the stem
            and stages 1..N); models without a stem freeze their first N conv groups.
        batch_norm: bool, freeze every BatchNormalization layer (gamma, beta and the moving
            statistics), like MMAction2's `norm_eval` with `requires_grad=False` on the norms.

    Returns:
        The names of the layers made non-trainable, in layer order.

    Raises:
        ValueError: `stages` out of range for the architecture.
    """
    limit = NUM_STAGES.get(architecture)
    if limit is None:
        raise ValueError(f"Unknown model name. Expected one of {list(NUM_STAGES)}. "
                         f"Received: architecture={architecture!r}")
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
