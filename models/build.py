"""`build_model`: the one entry point from a model name and options to a `keras.Model`.

The YAML `model:` section maps onto it directly: `name` plus options. Every model takes raw
uint8 clips `(batch, frames, height, width, bands)`, normalises them in its first layer
(`ClipNormalization`) and returns logits `(batch, num_classes)` (no softmax).
"""

import logging
import os

import keras

from models.c3d import NUM_GROUPS as C3D_NUM_GROUPS
from models.c3d import c3d
from models.catalog import (COMMON_OPTIONS, DEFORMABLE_OPTIONS, MODEL_OPTIONS,
                            check_model_choice)
from models.frames_as_channels import frames_as_channels
from models.movinet import MOVINET_MEAN, MOVINET_STD
from models.movinet import (movinet_a0, movinet_a0_stream, movinet_a1, movinet_a1_stream, movinet_a2,
                            movinet_a2_stream)
from models.preprocessing import ClipNormalization, default_mean_std, per_band_values
from models.pretrained import TORCHVISION_KINETICS_MEAN, TORCHVISION_KINETICS_STD, load_weights, weights_format
from models.resnet3d import NUM_STAGES, mc3_18, r2plus1d_18, r3d_18
from models.s3d import s3d
from models.small3d import NUM_GROUPS as SMALL3D_NUM_GROUPS
from models.small3d import small3d

logger = logging.getLogger(__name__)


class _Architecture:
    """How to build one named model: its builder, default dropout and deformable units.

    `deformable_units` is how many 1-based `deformable_stages` exist (residual stages or conv
    groups); `None` means the model has no deformable variant. The options it accepts are
    `models.catalog.MODEL_OPTIONS[name]` (the table the config checks without Keras); `flags`
    are the model's own boolean options there, passed to the builder only when given.
    """

    def __init__(self, name, builder, default_dropout, deformable_units, mean_std=None):
        self.builder = builder
        self.mean_std = mean_std  # (mean, std) for every band, when the model has its own default
        self.default_dropout = default_dropout
        self.deformable_units = deformable_units
        self.flags = tuple(o for o in MODEL_OPTIONS[name]
                           if o not in COMMON_OPTIONS + DEFORMABLE_OPTIONS)

    def option_names(self):
        names = list(COMMON_OPTIONS)
        if self.deformable_units is not None:
            names += list(DEFORMABLE_OPTIONS)
        return names + list(self.flags)


ARCHITECTURES = {
    "small3d": _Architecture("small3d", small3d, 0.2, SMALL3D_NUM_GROUPS),
    "frames_as_channels": _Architecture("frames_as_channels", frames_as_channels, 0.2, None),
    "c3d": _Architecture("c3d", c3d, 0.5, C3D_NUM_GROUPS),
    "r3d_18": _Architecture("r3d_18", r3d_18, 0.0, NUM_STAGES),
    "mc3_18": _Architecture("mc3_18", mc3_18, 0.0, NUM_STAGES),
    "r2plus1d_18": _Architecture("r2plus1d_18", r2plus1d_18, 0.0, NUM_STAGES),
    "s3d": _Architecture("s3d", s3d, 0.2, None),
    # MoViNets take [0, 1] inputs like Model Garden's (its checkpoints expect them).
    "movinet_a0": _Architecture("movinet_a0", movinet_a0, 0.2, None, (MOVINET_MEAN, MOVINET_STD)),
    "movinet_a1": _Architecture("movinet_a1", movinet_a1, 0.2, None, (MOVINET_MEAN, MOVINET_STD)),
    "movinet_a2": _Architecture("movinet_a2", movinet_a2, 0.2, None, (MOVINET_MEAN, MOVINET_STD)),
    "movinet_a0_stream": _Architecture("movinet_a0_stream", movinet_a0_stream, 0.2, None,
                                       (MOVINET_MEAN, MOVINET_STD)),
    "movinet_a1_stream": _Architecture("movinet_a1_stream", movinet_a1_stream, 0.2, None,
                                       (MOVINET_MEAN, MOVINET_STD)),
    "movinet_a2_stream": _Architecture("movinet_a2_stream", movinet_a2_stream, 0.2, None,
                                       (MOVINET_MEAN, MOVINET_STD)),
}


def _check_input_shape(input_shape):
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_shape)
    ):
        raise ValueError(
            "`input_shape` must be 4 positive ints (frames, height, width, bands). "
            f"Received: input_shape={input_shape!r}"
        )
    return tuple(input_shape)


def _check_deformable_options(options, units):
    stages = options.get("deformable_stages") or ()
    if isinstance(stages, int) and not isinstance(stages, bool):
        stages = (stages,)
    if not isinstance(stages, (list, tuple)) or not all(
        isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= units for s in stages
    ):
        raise ValueError(
            f"`deformable_stages` must be a list of 1-based stage numbers in 1..{units}. "
            f"Received: deformable_stages={options.get('deformable_stages')!r}"
        )
    offset_groups = options.get("offset_groups", 1)
    if not isinstance(offset_groups, int) or isinstance(offset_groups, bool) or offset_groups < 1:
        raise ValueError(
            f"`offset_groups` must be a positive int. Received: offset_groups={offset_groups!r}"
        )
    modulated = options.get("modulated", False)
    if not isinstance(modulated, bool):
        raise ValueError(f"`modulated` must be true or false. Received: modulated={modulated!r}")
    return {
        "deformable_stages": tuple(sorted(set(stages))),
        "offset_groups": offset_groups,
        "modulated": modulated,
    }


def build_model(name, num_classes, input_shape, weights=None, **options):
    """Builds the named video classifier.

    Args:
        name: str, one of `MODEL_NAMES`: `"small3d"`, `"frames_as_channels"`, `"c3d"`,
            `"r3d_18"`, `"mc3_18"`, `"r2plus1d_18"`, `"s3d"` (needs clips of at least
            13 frames and 209 x 209 pixels), `"movinet_a0"`, `"movinet_a1"`, `"movinet_a2"`
            and their causal `"movinet_a<N>_stream"` variants (models/movinet.py).
        num_classes: int, number of output logits.
        input_shape: 4 ints `(frames, height, width, bands)` of one clip; any band count.
        weights: None (fresh initialisation, the default) or the path of weights to start
            from, told apart by content: a torchvision state_dict `.pth` (torch's zip or
            legacy format; the ResNets, whose layer names are torchvision's), or a `.keras`
            model or `.weights.h5` of the same architecture from one of our runs (any input
            size the architecture allows), or a TF Model Garden MoViNet `tf.train.Checkpoint`
            (its prefix, `.index` file or directory) for the `movinet_*` models. With a
            torchvision file, `mean`/`std` default to torchvision's Kinetics-400 statistics
            (`models.pretrained.TORCHVISION_KINETICS_*`) for 3 bands. A checkpoint with `num_classes` classes loads its head too; with
            another class count the backbone loads and the head stays fresh (logged). See
            docs/MODELS.md, "Pretrained weights".
        **options: model options; every model accepts
            - `mean`, `std`: per-band normalisation in 0-255 units, one number or one per
              band. Defaults: ImageNet's `(123.675, 116.28, 103.53)` /
              `(58.395, 57.12, 57.375)` for 3 bands, 127.5 / 127.5 for any other count;
              0 / 255 for the MoViNets (Model Garden's [0, 1] input).
            - `dropout`: float in [0, 1), dropout before the classifier (model default).
            and every model except `frames_as_channels` and `s3d` accepts
            - `deformable_stages`: list of 1-based residual stages (resnets) or conv groups
              (`c3d`, `small3d`) whose 3x3x3 convolutions become `DeformConv3D`. Default: none.
            - `offset_groups`: int, offset groups of those layers. Default: 1.
            - `modulated`: bool, modulated (DCNv2) deformable convolutions. Default: false.
            and `small3d` accepts
            - `frame_differences`: bool, feed the differences of consecutive frames rather
              than the frames (needs at least 2 frames). Default: true.

    Returns:
        A `keras.Model` named `name`: input uint8 `(batch, frames, height, width, bands)`,
        output float logits `(batch, num_classes)`.

    Raises:
        ValueError: for an unknown name or option, or an invalid value; the message lists
            what exists.
        models.torch_checkpoint.CheckpointError: (a `UserError`) for weights that cannot be
            read or do not fit the architecture; the message names the file and the first
            key or shape that does not fit.

    Example:

    >>> model = build_model("small3d", 8, (16, 64, 64, 3))
    >>> model(np.zeros((2, 16, 64, 64, 3), "uint8")).shape
    (2, 8)
    """
    check_model_choice(name, options)
    architecture = ARCHITECTURES[name]
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive int. Received: num_classes={num_classes!r}")
    input_shape = _check_input_shape(input_shape)
    bands = input_shape[-1]

    weights_kind = None
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise ValueError(f"`weights` must be None or a file path. Received: weights={weights!r}")
        weights_kind = weights_format(weights)
    default_mean, default_std = default_mean_std(bands)
    if architecture.mean_std is not None:
        default_mean, default_std = ((v,) * bands for v in architecture.mean_std)
    if weights_kind == "torchvision" and bands == 3:
        default_mean, default_std = TORCHVISION_KINETICS_MEAN, TORCHVISION_KINETICS_STD
    mean = per_band_values(options.get("mean", default_mean), bands, "mean")
    std = per_band_values(options.get("std", default_std), bands, "std")
    if any(v <= 0 for v in std):
        raise ValueError(f"Every `std` must be > 0. Received: std={list(std)}")
    dropout = options.get("dropout", architecture.default_dropout)
    if (
        not isinstance(dropout, (int, float))
        or isinstance(dropout, bool)
        or not 0 <= dropout < 1
    ):
        raise ValueError(f"`dropout` must be a number in [0, 1). Received: dropout={dropout!r}")
    builder_options = {"dropout": float(dropout)}
    if architecture.deformable_units is not None:
        builder_options.update(_check_deformable_options(options, architecture.deformable_units))
    for flag in architecture.flags:
        if flag in options:
            if not isinstance(options[flag], bool):
                raise ValueError(f"`{flag}` must be true or false. Received: {flag}={options[flag]!r}")
            builder_options[flag] = options[flag]

    inputs = keras.Input(shape=input_shape, dtype="uint8", name="clip")
    x = ClipNormalization(mean, std, name="normalize")(inputs)
    logits = architecture.builder(x, num_classes, **builder_options)
    model = keras.Model(inputs, logits, name=name)
    if weights is not None:
        load_weights(model, weights)
    logger.info(
        "Built %s: input %s, %d classes, %d parameters, options %s, weights %s",
        name,
        input_shape,
        num_classes,
        model.count_params(),
        builder_options,
        f"from {weights} ({weights_kind})" if weights is not None else "fresh",
    )
    return model
