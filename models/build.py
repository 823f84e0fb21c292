"""`build_model`: the one entry point from a model name and options to a `keras.Model`.

The YAML `model:` section maps onto it directly: `name` plus options. Every model takes raw
clips `(batch, frames, height, width, bands)` as stored (uint8 by default; `input_dtype` for
16-bit or float data), normalises them in its first layer (`ClipNormalization`) and returns
logits `(batch, num_classes)` (no softmax). What to build,
and which options and defaults apply, is the model's row in `models.catalog.MODELS`.
"""

import logging
import os

import keras

from models.catalog import check_model_choice
from models.preprocessing import ClipNormalization, default_mean_std, per_band_values
from models.pretrained import TORCHVISION_KINETICS_MEAN, TORCHVISION_KINETICS_STD, load_weights, weights_format

logger = logging.getLogger(__name__)


def _check_input_shape(input_shape, spec):
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_shape)
    ):
        raise ValueError(
            "`input_shape` must be 4 positive ints (frames, height, width, bands). "
            f"Received: input_shape={input_shape!r}"
        )
    frames, height, width = spec.min_input
    if any(n < m for n, m in zip(input_shape, spec.min_input)):
        raise ValueError(
            f"{spec.name} needs clips of at least {frames} frames and {height} x {width} pixels. "
            f"Received: input_shape={tuple(input_shape)}"
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


INPUT_DTYPES = ("uint8", "uint16", "int16", "float16", "float32")


def default_normalization(name, bands, weights=None):
    """The per-band `(mean, std)` `build_model` uses when none is given (0-255 units).

    Args:
        name: str, a model name.
        bands: int, the clip's bands.
        weights: None or the path of weights (torchvision weights bring their statistics).

    Returns:
        Two tuples of `bands` floats: the model's catalog row's, else torchvision's
        Kinetics-400 statistics for torchvision weights on 3 bands, else ImageNet's for 3
        bands, else 127.5 / 127.5.

    >>> default_normalization("small3d", 1)
    ((127.5,), (127.5,))
    """
    weights_kind = weights_format(weights) if weights is not None else None
    return _default_mean_std(check_model_choice(name, {}), bands, weights_kind)


def _default_mean_std(spec, bands, weights_kind):
    default_mean, default_std = default_mean_std(bands)
    if spec.mean_std is not None:
        default_mean, default_std = ((v,) * bands for v in spec.mean_std)
    if weights_kind == "torchvision" and bands == 3:
        default_mean, default_std = TORCHVISION_KINETICS_MEAN, TORCHVISION_KINETICS_STD
    return tuple(default_mean), tuple(default_std)


def build_model(name, num_classes, input_shape, weights=None, *, input_dtype="uint8",
                **options):
    """Builds the named video classifier.

    Args:
        name: str, one of `models.MODEL_NAMES` (the rows of `models.catalog.MODELS`;
            the MoViNets are `"movinet_a<N>"` and their causal `"movinet_a<N>_stream"`).
        num_classes: int, number of output logits.
        input_shape: 4 ints `(frames, height, width, bands)` of one clip; any band count,
            at least the row's `min_input` (s3d: 13 frames of 209 x 209 pixels).
        weights: None (fresh initialisation, the default) or the path of weights to start
            from, told apart by content: a torchvision state_dict `.pth` (torch's zip or
            legacy format; the models whose row is a `TorchvisionPort`), or a `.keras`
            model or `.weights.h5` of the same architecture from one of our runs (any input
            size the architecture allows), or a TF Model Garden MoViNet `tf.train.Checkpoint`
            (its prefix, `.index` file or directory) for the `movinet_*` models. With a
            torchvision file, `mean`/`std` default to torchvision's Kinetics-400 statistics
            (`models.pretrained.TORCHVISION_KINETICS_*`) for 3 bands. A checkpoint with `num_classes` classes loads its head too; with
            another class count the backbone loads and the head stays fresh (logged). See
            docs/MODELS.md, "Pretrained weights".
        input_dtype: str, the clips' element type (`INPUT_DTYPES`): the stored dtype of the
            data (uint8 for 8-bit video), float32 when bands are computed (a mask band).
        **options: model options (the row's `options`); every model accepts
            - `mean`, `std`: per-band normalisation in 0-255 units, one number or one per
              band. Defaults: ImageNet's `(123.675, 116.28, 103.53)` /
              `(58.395, 57.12, 57.375)` for 3 bands, 127.5 / 127.5 for any other count;
              0 / 255 for the MoViNets (Model Garden's [0, 1] input).
            - `dropout`: float in [0, 1), dropout before the classifier (model default).
            and every model whose catalog row is `deformable` accepts
            - `deformable_stages`: list of 1-based stages (the row's `stages`: residual
              stages of the ResNets, conv groups of `c3d` and `small3d`) whose 3x3x3
              convolutions become `DeformConv3D`. Default: none.
            - `offset_groups`: int, offset groups of those layers. Default: 1.
            - `modulated`: bool, modulated (DCNv2) deformable convolutions. Default: false.
            and `small3d` accepts
            - `frame_differences`: bool, feed the differences of consecutive frames rather
              than the frames (needs at least 2 frames). Default: true.

    Returns:
        A `keras.Model` named `name`: input `input_dtype` `(batch, frames, height, width, bands)`,
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
    spec = check_model_choice(name, options)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive int. Received: num_classes={num_classes!r}")
    input_shape = _check_input_shape(input_shape, spec)
    bands = input_shape[-1]

    weights_kind = None
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise ValueError(f"`weights` must be None or a file path. Received: weights={weights!r}")
        weights_kind = weights_format(weights)
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"`input_dtype` must be one of {list(INPUT_DTYPES)}. "
                         f"Received: input_dtype={input_dtype!r}")
    default_mean, default_std = _default_mean_std(spec, bands, weights_kind)
    mean = per_band_values(options.get("mean", default_mean), bands, "mean")
    std = per_band_values(options.get("std", default_std), bands, "std")
    if any(v <= 0 for v in std):
        raise ValueError(f"Every `std` must be > 0. Received: std={list(std)}")
    dropout = options.get("dropout", spec.default_dropout)
    if (
        not isinstance(dropout, (int, float))
        or isinstance(dropout, bool)
        or not 0 <= dropout < 1
    ):
        raise ValueError(f"`dropout` must be a number in [0, 1). Received: dropout={dropout!r}")
    builder_options = {"dropout": float(dropout)}
    if spec.deformable:
        builder_options.update(_check_deformable_options(options, spec.stages.count))
    for flag in spec.flags:
        if flag in options:
            if not isinstance(options[flag], bool):
                raise ValueError(f"`{flag}` must be true or false. Received: {flag}={options[flag]!r}")
            builder_options[flag] = options[flag]

    inputs = keras.Input(shape=input_shape, dtype=input_dtype, name="clip")
    x = ClipNormalization(mean, std, name="normalize")(inputs)
    logits = spec.build_function()(x, num_classes, **builder_options)
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
