"""Every model in one table: `MODELS[name]` is the row that says all there is to know about it.

A row (`ModelSpec`) holds the builder, the options it accepts and their defaults, the
fine-tuning stages (how layer names map to them), the smallest clip it takes, and whether it
is a port of a torchvision model (whose checkpoints then load by the naming rule of
models/pretrained.py, with torchvision's eval transforms for `predict.py --model`).
`models.build_model`, `models.finetune`, `models.pretrained` and `training.config` all read
this table; adding a model is its module plus one row here (docs/DESIGN.md, "How to add…").

This module imports only the standard library (no Keras, so no TensorFlow): `training.config`
imports it to reject a mistyped `model.name` or option in milliseconds, before a run loads
TensorFlow or creates its directory. The builders are named as `"module:function"` and
imported only when a model is built.
"""

import dataclasses
import difflib
import importlib
import re
from typing import Callable

COMMON_OPTIONS = ("mean", "std", "dropout")
DEFORMABLE_OPTIONS = ("deformable_stages", "offset_groups", "modulated")
# The parameter groups of every model, for per-group learning rates (models.finetune).
PARAMETER_GROUPS = ("head", "backbone", "offsets")


@dataclasses.dataclass(frozen=True)
class Stages:
    """How a model's layer names map to its fine-tuning stages (0 = the stem, 1..`count`).

    Attributes:
        count: int, the number of stages after the stem; a deformable model's
            `deformable_stages` are these stages too.
        pattern: str, a regex matched at the start of a layer name. Its group 1 is the
            stage number, or with `starts` a layer index; a match whose group 1 is empty is
            the stem (stage 0). A name that does not match is in no stage (the classifier).
        starts: ints, with `pattern` capturing a layer index: the first index of stage 0,
            1, 2, ... (S3D's `features.<i>`, where a max pool opens each stage).
        shift: int, added to a captured stage number (MoViNet numbers its blocks from 0).
    """

    count: int
    pattern: str
    starts: tuple = ()
    shift: int = 0

    def stage_of(self, layer_name):
        """The stage of `layer_name`, or None.

        >>> CONV_GROUPS.stage_of("conv3b"), CONV_GROUPS.stage_of("bn5"), CONV_GROUPS.stage_of("fc")
        (3, 5, None)
        """
        match = re.match(self.pattern, layer_name)
        if not match:
            return None
        if match.group(1) is None:
            return 0
        number = int(match.group(1))
        if self.starts:
            return sum(number >= start for start in self.starts) - 1
        return number + self.shift


# torchvision's video ResNets: `stem.*`, then `layer1.*` .. `layer4.*`.
RESNET_STAGES = Stages(4, r"(?:stem|layer(\d+))\.")
# The five conv groups `conv<i>[a-z]` / `bn<i>` of c3d, small3d and frames_as_channels; no stem.
CONV_GROUPS = Stages(5, r"(?:conv|bn)(\d+)[a-z]?(?:\.|$)")
# torchvision's S3D: the stem `features.0-3`, then a max pool opens each of stages 1-3.
S3D_STAGES = Stages(3, r"features\.(\d+)(?:\.|$)", starts=(0, 4, 7, 13))
# Model Garden's MoViNet: `stem.*`, then blocks 0..4 (`block<b>_layer<l>.*`) as stages 1..5.
MOVINET_STAGES = Stages(5, r"(?:stem|block(\d+)_layer\d+)\.", shift=1)


@dataclasses.dataclass(frozen=True)
class TorchvisionPort:
    """A port of a torchvision video model: Keras layer names are its state_dict prefixes.

    Its checkpoints load by the naming rule of models/pretrained.py. The rest is
    torchvision's eval transforms of its Kinetics-400 weights (the weights' `transforms`),
    which `predict.py --model NAME --weights FILE` applies.

    Attributes:
        resize: (height, width) every frame is resized to.
        crop_size: int, the side of the centre crop.
        frames: int, frames per clip.
    """

    resize: tuple
    crop_size: int
    frames: int


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model: everything `build_model`, fine-tuning, the loaders and the config need.

    Attributes:
        name: str, the `build_model` / `model.name` name.
        builder: `"module:function"` (imported when the model is built) or the function
            itself: `builder(x, num_classes, *, dropout, [deformable options], [flags])`
            builds the layers on the normalised clip `x` and returns the logits.
        stages: `Stages`, the fine-tuning stages (and deformable stages).
        default_dropout: float, `dropout` when the user gives none.
        deformable: bool, whether the builder takes `deformable_stages`, `offset_groups`
            and `modulated`.
        flags: the builder's own boolean options (passed only when given).
        min_input: (frames, height, width), the smallest clip the model takes.
        torchvision: a `TorchvisionPort`, or None when torchvision has no such model.
        mean_std: (mean, std) of every band, the model's own default normalisation, or None
            for the general default (`models.preprocessing.default_mean_std`).
    """

    name: str
    builder: str | Callable
    stages: Stages
    default_dropout: float = 0.2
    deformable: bool = False
    flags: tuple = ()
    min_input: tuple = (1, 1, 1)
    torchvision: TorchvisionPort | None = None
    mean_std: tuple | None = None

    @property
    def options(self):
        """Every option name `build_model` accepts for this model, in documentation order."""
        return COMMON_OPTIONS + (DEFORMABLE_OPTIONS if self.deformable else ()) + self.flags

    def build_function(self):
        """The builder function (its module imported now, with Keras)."""
        if callable(self.builder):
            return self.builder
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(module), function)


# torchvision's eval transforms of its 112 x 112 Kinetics-400 video weights.
_RESNET_PORT = TorchvisionPort(resize=(128, 171), crop_size=112, frames=16)

# One row per model, in the order the documentation lists them.
MODELS = {spec.name: spec for spec in (
    ModelSpec("small3d", "models.small3d:small3d", CONV_GROUPS, deformable=True,
              flags=("frame_differences",)),
    ModelSpec("frames_as_channels", "models.frames_as_channels:frames_as_channels", CONV_GROUPS),
    ModelSpec("c3d", "models.c3d:c3d", CONV_GROUPS, default_dropout=0.5, deformable=True),
    ModelSpec("r3d_18", "models.resnet3d:r3d_18", RESNET_STAGES, default_dropout=0.0,
              deformable=True, torchvision=_RESNET_PORT),
    ModelSpec("mc3_18", "models.resnet3d:mc3_18", RESNET_STAGES, default_dropout=0.0,
              deformable=True, torchvision=_RESNET_PORT),
    ModelSpec("r2plus1d_18", "models.resnet3d:r2plus1d_18", RESNET_STAGES, default_dropout=0.0,
              deformable=True, torchvision=_RESNET_PORT),
    # The fixed (2, 7, 7) average pool needs features of 2x7x7 (models.s3d.features_shape).
    ModelSpec("s3d", "models.s3d:s3d", S3D_STAGES, min_input=(13, 209, 209),
              torchvision=TorchvisionPort(resize=(256, 256), crop_size=224, frames=16)),
    # Model Garden's MoViNets (base, and causal stream variants) take [0, 1] inputs.
    *(ModelSpec(name, f"models.movinet:{name}", MOVINET_STAGES, mean_std=(0.0, 255.0))
      for name in ("movinet_a0", "movinet_a1", "movinet_a2", "movinet_a0_stream",
                   "movinet_a1_stream", "movinet_a2_stream")),
)}
MODEL_NAMES = tuple(MODELS)


def closest(word, choices):
    """The choice nearest to a mistyped `word` (difflib's), or None."""
    found = difflib.get_close_matches(str(word), list(choices), n=1)
    return found[0] if found else None


def model_spec(name):
    """The row of model `name`; ValueError naming the closest name for an unknown one.

    >>> model_spec("r3d_18").stages.count
    4
    >>> model_spec("r3d18")
    Traceback (most recent call last):
    ...
    ValueError: Unknown model name — did you mean r3d_18? Expected one of [...]. Received: name='r3d18'
    """
    if name not in MODELS:
        near = closest(name, MODEL_NAMES)
        hint = f" — did you mean {near}?" if near else "."
        raise ValueError(f"Unknown model name{hint} Expected one of {list(MODEL_NAMES)}. "
                         f"Received: name={name!r}")
    return MODELS[name]


def check_model_choice(name, options):
    """Raises ValueError for an unknown model name or an option `name` does not accept.

    Args:
        name: str, a model name.
        options: dict, the model options (only their names are checked here).

    Returns:
        The model's `ModelSpec`.
    """
    spec = model_spec(name)
    accepted = spec.options
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        near = closest(unknown[0], accepted)
        hint = f" — did you mean {near}?" if near else "."
        raise ValueError(f"Unknown option(s) {unknown} for model {name!r}{hint} Expected any "
                         f"of {list(accepted)}. Received: options={options!r}")
    return spec
