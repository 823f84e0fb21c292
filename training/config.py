"""Experiment configuration: the schema (dataclasses) and its validation.

`load_config` reads a file with its `_base_` files and `--set` overrides into one mapping
(`training.config_files`), then validates it into the dataclasses below: an unknown key, a
wrong type or an out-of-range value raises `ConfigError` naming the file (or `--set`) and the
dotted key, with the closest valid key when one is near. `config_reference()` lists every
key for docs/TRAINING.md's table (`training.config_docs` writes it).

Example:

>>> config = load_config("configs/demo.yaml", overrides=["train.epochs=3"])
>>> config.train.epochs
3
"""

import copy
import dataclasses
import difflib
import inspect
import math
import os
import types
import typing

import yaml

from core.atomic import write_text_atomically
from core.errors import UserError
from core.untrusted_text import short_repr, synth_value_problem
from data_prep import synth
from data_prep.source_spec import SourceSpec
from data_prep.sources import LAYOUTS as SOURCE_LAYOUTS
from data_prep.sources import MULTI_LABEL_LAYOUTS
from models import catalog as model_catalog
from training.config_files import ConfigError, apply_overrides, merge_config_files

# synth: the demo videos of data_prep.synth, generated into data.root, then prepared as csv.
# synth generates the demo; tfrecord reads Model Garden / DMVR records as they are.
LAYOUTS = ("synth",) + SOURCE_LAYOUTS + ("tfrecord",)


def _option(default, *, choices=None, minimum=None, maximum=None, below=None, help=""):
    """A dataclass field with its allowed values recorded for validation and for the docs."""
    if isinstance(default, (dict, list)):
        factory = lambda value=default: copy.deepcopy(value)  # noqa: E731
        return dataclasses.field(
            default_factory=factory,
            metadata={"choices": choices, "minimum": minimum, "maximum": maximum,
                      "below": below, "help": help},
        )
    return dataclasses.field(
        default=default,
        metadata={"choices": choices, "minimum": minimum, "maximum": maximum,
                  "below": below, "help": help},
    )


def _source_key(field):
    """The `data.<name>` key of one SourceSpec field: same type, default, bounds and help."""
    meta = field.metadata
    return field.name, field.type, _option(field.default, minimum=meta["minimum"],
                                           maximum=meta["maximum"], help=meta["help"])


# The keys that say where items come from are SourceSpec's fields (data_prep/source_spec.py),
# one list for this config, the prepare flags and the manifest: a new one is added there.
_SourceKeys = dataclasses.make_dataclass(
    "_SourceKeys", [_source_key(field) for field in dataclasses.fields(SourceSpec)])


@dataclasses.dataclass
class DataConfig(_SourceKeys):
    layout: str = _option("folders", choices=LAYOUTS,
                          help="how data.root is organised; synth generates the demo videos")
    prepared_dir: str | None = _option(
        None, help="where the clip shards live: a path or a gs:// URL (prepared if empty)")
    format: str = _option("v2", choices=("v1", "v2"),
                          help="prepared data: v1 stored clips, v2 whole items (clips drawn "
                               "while training)")
    frames: int = _option(16, minimum=1, maximum=1024, help="frames per clip")
    size: int = _option(112, minimum=4, maximum=4096, help="stored clip height and width")
    resize_short: int | None = _option(None, minimum=1, help="resize short side before the crop")
    clips_per_video: int = _option(1, minimum=1, maximum=1000,
                                   help="clips stored per video (v2: clips per video validated on)")
    sampling: str = _option("uniform", choices=("uniform", "stride"), help="frame sampling")
    frame_stride: int = _option(1, minimum=1, help="frame step for sampling: stride")
    encoding: str | None = _option(None, choices=("raw", "png", "jpeg"),
                                   help="frame storage; null = raw (v1), jpeg for 1/3 bands "
                                        "(v2)")
    fps: float | None = _option(None, minimum=0.0, help="v2: resample videos to this rate")
    max_frames: int | None = _option(None, minimum=1, help="v2: at most this many frames per "
                                                           "item, evenly spaced")
    workers: int | None = _option(None, minimum=1,
                                  help="workers of Beam's local runner when preparing")
    train_split: str = _option("train", help="split trained on")
    test_split: str = _option("test", help="split validated on each epoch and evaluated at the end")
    synth: dict = _option({}, help="keyword arguments of data_prep.synth.generate_dataset")
    normalization: str | dict = _option(
        "auto", help="the model's per-band standardisation: auto (8-bit 3-band: the model's "
        "default; else dataset), dataset (the manifest's statistics), imagenet, kinetics, none, "
        "or {mean: [...], std: [...]} in stored units")
    min_valid_fraction: float = _option(0.0, minimum=0.0, maximum=1.0,
                                        help="frames with fewer valid pixels are not sampled")
    mask_band: bool = _option(False, help="append the validity mask (0/1) as an input band")
    sample_by: str = _option("index", choices=("index", "date"),
                             help="spread a clip's frames over frame indices or over dates")
    day_of_year: str = _option("none", choices=("none", "band", "sinusoidal"),
                               help="day-of-year input bands of dated items")

    def source_spec(self):
        """The `SourceSpec` of these keys, whole (synth: the generated csv lists, so only
        once the videos are generated)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(SourceSpec)}
        if self.layout == "synth":
            values.update(synth.prepare_arguments(self.root))
        return SourceSpec(**values)


@dataclasses.dataclass
class ModelConfig:
    name: str = _option("small3d", help="a models.build_model name")
    options: dict = _option({}, help="keyword arguments of that builder")
    weights: str | None = _option(None, help="start from: a torchvision .pth, a run's model.keras "
                                             "or .weights.h5 (docs/MODELS.md)")


@dataclasses.dataclass
class AugmentConfig:
    horizontal_flip: bool = _option(True, help="random left-right flip (off for direction labels)")
    random_crop: bool = _option(True, help="random crop_size crop in training (centre otherwise)")
    crop_size: int | None = _option(None, minimum=4, help="model input size; null = data.size")
    temporal_jitter: bool = _option(True, help="a random stored clip per item each epoch")


@dataclasses.dataclass
class TrainConfig:
    epochs: int = _option(30, minimum=1)
    batch_size: int = _option(8, minimum=1)
    eval_batch_size: int | None = _option(None, minimum=1, help="null = batch_size")
    steps_per_epoch: int | None = _option(None, minimum=1, help="null = one pass over train")
    optimizer: str = _option("sgd", choices=("sgd", "adam", "adamw"))
    learning_rate: float = _option(0.01, minimum=0.0, below=None, help="peak learning rate")
    momentum: float = _option(0.9, minimum=0.0, below=1.0, help="sgd momentum")
    nesterov: bool = _option(False)
    schedule: str = _option("cosine", choices=("cosine", "step", "constant"))
    warmup_epochs: float = _option(0.0, minimum=0.0, help="linear warmup from 0")
    step_epochs: list = _option([], help="epochs at which step multiplies the rate by step_gamma")
    step_gamma: float = _option(0.1, minimum=0.0)
    min_learning_rate: float = _option(0.0, minimum=0.0, help="cosine floor")
    weight_decay: float = _option(0.0, minimum=0.0, help="decoupled, not on biases or norms")
    label_smoothing: float = _option(0.0, minimum=0.0, below=1.0)
    gradient_clip_norm: float | None = _option(None, minimum=0.0)
    mixed_precision: str = _option(
        "auto", choices=("auto", "true", "false", "float32", "mixed_bfloat16", "mixed_float16"),
        help="auto: bfloat16 on a CPU with AMX/AVX512-BF16, float16 on a GPU >= 7.0, else "
             "float32 (training/precision.py)")
    seed: int = _option(0, minimum=0)
    shuffle_buffer: int = _option(256, minimum=1, help="items held by the shuffle")
    freeze_bn: bool = _option(False, help="every BatchNormalization frozen: moving statistics, "
                                          "gamma and beta")
    freeze_stages: int | None = _option(None, minimum=0, help="null = none; 0 = the stem; N = the "
                                                              "stem and stages 1..N")
    lr_multipliers: dict = _option({}, help="learning-rate multiplier per group: head, backbone, "
                                            "offsets (e.g. {backbone: 0.1})")


@dataclasses.dataclass
class DistributeConfig:
    strategy: str = _option("none", choices=("none", "mirrored", "multi_worker"))


@dataclasses.dataclass
class TensorBoardConfig:
    histograms: bool = _option(True, help="weight histograms each epoch")
    graph: bool = _option(True, help="the training graph")
    clip_images: int = _option(3, minimum=0, help="input clips per split drawn as frame strips")
    rgb_bands: list | None = _option(None, help="0-based bands drawn as red, green, blue (one: "
                                     "grey); null = the first three")
    confusion_matrix: bool = _option(True, help="validation confusion matrix image each epoch")
    deform_offsets: bool = _option(True, help="DeformConv3D offset scalars, histograms, image")


@dataclasses.dataclass
class EvaluateConfig:
    views: str = _option("10x3", help="evaluate.py default: temporal clips x spatial crops")


@dataclasses.dataclass
class ExperimentConfig:
    name: str | None = _option(None, help="run name; null = the config file's stem")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)
    tensorboard: TensorBoardConfig = dataclasses.field(default_factory=TensorBoardConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)

    @property
    def input_size(self):
        """Height and width the model sees: the crop, or the stored size."""
        return self.augment.crop_size or self.data.size


# --- validation ---------------------------------------------------------------------------


def _schema_keys(cls, prefix=""):
    """All dotted keys of the schema, for did-you-mean suggestions."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        dotted = f"{prefix}{field.name}"
        yield dotted
        if dataclasses.is_dataclass(hints[field.name]):
            yield from _schema_keys(hints[field.name], prefix=f"{dotted}.")


def _describe(annotation, meta):
    """Human wording of what a field accepts, e.g. 'an integer >= 1'."""
    args = typing.get_args(annotation)
    optional = isinstance(annotation, types.UnionType) and type(None) in args
    bases = [a for a in args if a is not type(None)] \
        if isinstance(annotation, types.UnionType) else [annotation]
    words = " or ".join({int: "an integer", float: "a number", bool: "true or false",
                         str: "a string", dict: "a mapping", list: "a list"}[base]
                        for base in bases)
    if meta.get("choices"):
        words = "one of " + ", ".join(meta["choices"])
    bounds = []
    if meta.get("minimum") is not None:
        bounds.append(f">= {meta['minimum']}")
    if meta.get("maximum") is not None:
        bounds.append(f"<= {meta['maximum']}")
    if meta.get("below") is not None:
        bounds.append(f"< {meta['below']}")
    if bounds:
        words += " " + " and ".join(bounds)
    if optional:
        words += " (or null)"
    return words


def _coerce(value, annotation, meta):
    """Returns the value as the field's type, or raises ValueError."""
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType):
        if value is None and type(None) in args:
            return None
        choices = [a for a in args if a is not type(None)]
        for choice in choices[:-1]:  # `str | dict | None`: the first type that fits
            try:
                return _coerce(value, choice, meta)
            except ValueError:
                pass
        annotation = choices[-1]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError
    elif annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError
    elif annotation is float:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if not isinstance(value, (int, float)):
            raise ValueError
        value = float(value)
        if not math.isfinite(value):  # .nan, .inf: a run that starts and dies of NaN loss
            raise ValueError
    elif annotation is str:
        if isinstance(value, bool) and str(value).lower() in (meta.get("choices") or ()):
            value = str(value).lower()  # YAML reads `true` as a bool; the choice is the word
        if not isinstance(value, str):
            raise ValueError
    elif annotation is dict:
        if not isinstance(value, dict):
            raise ValueError
    elif annotation is list:
        if not isinstance(value, list):
            raise ValueError
    if meta.get("choices") and value not in meta["choices"]:
        raise ValueError
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise ValueError
        if meta.get("maximum") is not None and value > meta["maximum"]:
            raise ValueError
        if meta.get("below") is not None and value >= meta["below"]:
            raise ValueError
    return value


def _source_of(dotted, origins, default_source):
    """The file (or --set) a key came from; a missing key falls back to its parent's source."""
    while dotted:
        if origins.get(dotted):
            return origins[dotted]
        dotted = dotted.rpartition(".")[0]
    return default_source


def _build(cls, data, origins, default_source, all_keys, prefix=""):
    section = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        source = _source_of(prefix.rstrip("."), origins, default_source)
        raise ConfigError(
            f"{source}: {section} expects a mapping of keys. "
            f"Received: {prefix.rstrip('.')}={short_repr(data)}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            dotted = f"{prefix}{key}"
            source = _source_of(dotted, origins, default_source)
            # Compare the key's own name with its siblings' (a shared `augment.` prefix would
            # make every sibling look close); then the same name in another section.
            close = [f"{prefix}{c}" for c in difflib.get_close_matches(str(key), fields, n=1)]
            close = close or [k for k in all_keys if k.rpartition(".")[2] == str(key)]
            hint = f" — did you mean {close[0]}?" if close else (
                f" — valid keys in {section}: {', '.join(fields)}"
            )
            raise ConfigError(f"{source}: unknown key {dotted}{hint}")
    values = {}
    for name, field in fields.items():
        if name not in data:
            continue
        dotted = f"{prefix}{name}"
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            section_data = data[name] if data[name] is not None else {}
            values[name] = _build(annotation, section_data, origins, default_source, all_keys,
                                  prefix=f"{dotted}.")
            continue
        try:
            values[name] = _coerce(data[name], annotation, field.metadata)
        except (ValueError, TypeError):
            source = _source_of(dotted, origins, default_source)
            raise ConfigError(
                f"{source}: {dotted} expects {_describe(annotation, field.metadata)}. "
                f"Received: {dotted}={short_repr(data[name])}"
            ) from None
    return cls(**values)


NORMALIZATIONS = ("auto", "dataset", "imagenet", "kinetics", "none")


def normalization_problem(value):
    """What is wrong with a `data.normalization` value (a sentence), or None if it is fine.

    >>> normalization_problem({"mean": [1, 2], "std": [3]})
    'mean and std lists of the same length, every std > 0'
    """
    if isinstance(value, str):
        return None if value in NORMALIZATIONS else f"one of {', '.join(NORMALIZATIONS)}"
    expected = "mean and std lists of the same length, every std > 0"
    if not isinstance(value, dict) or set(value) != {"mean", "std"}:
        return f"one of {', '.join(NORMALIZATIONS)} or {{mean: [...], std: [...]}}"
    mean, std = value["mean"], value["std"]
    numbers = all(isinstance(v, list) and v and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
        for v in (mean, std))
    if not numbers or len(mean) != len(std) or min(std) <= 0:
        return expected
    return None


def _check_consistency(config, origins, default_source):
    """Checks between keys that no single field can check alone."""

    def fail(dotted, message):
        raise ConfigError(f"{_source_of(dotted, origins, default_source)}: {message}")

    train = config.train
    if train.warmup_epochs > train.epochs:
        fail("train.warmup_epochs", "train.warmup_epochs expects a value <= train.epochs. "
             f"Received: train.warmup_epochs={train.warmup_epochs}, train.epochs={train.epochs}")
    if train.schedule == "step":
        if not train.step_epochs or not all(
            isinstance(e, int) and not isinstance(e, bool) and 0 < e < train.epochs
            for e in train.step_epochs
        ) or sorted(train.step_epochs) != train.step_epochs:
            fail("train.step_epochs", "train.step_epochs expects increasing integers between 1 "
                 f"and train.epochs - 1 for schedule: step. Received: "
                 f"train.step_epochs={train.step_epochs!r}")
    if train.min_learning_rate > train.learning_rate:
        fail("train.min_learning_rate", "train.min_learning_rate expects a value <= "
             f"train.learning_rate. Received: train.min_learning_rate={train.min_learning_rate}")
    groups = model_catalog.PARAMETER_GROUPS
    for group, value in train.lr_multipliers.items():
        if group not in groups:
            close = difflib.get_close_matches(str(group), groups, n=1)
            hint = f" — did you mean {close[0]}?" if close else ""
            fail(f"train.lr_multipliers.{group}", "train.lr_multipliers expects groups among "
                 f"{', '.join(groups)}{hint}. Received: "
                 f"train.lr_multipliers.{group}={value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            fail(f"train.lr_multipliers.{group}", f"train.lr_multipliers.{group} expects a "
                 f"number >= 0. Received: train.lr_multipliers.{group}={value!r}")
    if config.model.weights is not None and "weights" in config.model.options:
        fail("model.options.weights", "give the weights once, as model.weights. Received: "
             f"model.options.weights={config.model.options['weights']!r}")
    crop = config.augment.crop_size
    if crop is not None and crop > config.data.size:
        fail("augment.crop_size", "augment.crop_size expects a value <= data.size. "
             f"Received: augment.crop_size={crop}, data.size={config.data.size}")
    try:
        model_catalog.check_model_choice(config.model.name, config.model.options)
    except ValueError as e:
        # Name the file (or --set) of the wrong name, or of the first unknown option.
        spec = model_catalog.MODELS.get(config.model.name)
        accepted = spec.options if spec else None
        unknown = sorted(set(config.model.options) - set(accepted or ()))
        fail(f"model.options.{unknown[0]}" if accepted else "model.name", f"model: {e}")
    if not config.data.prepared_dir:
        fail("data.prepared_dir", "data.prepared_dir is required: where the clip shards are "
             "(or will be prepared). Received: data.prepared_dir=None")
    if config.data.synth:
        accepted = [name for name, p in inspect.signature(synth.generate_dataset).parameters.items()
                    if p.kind == inspect.Parameter.KEYWORD_ONLY and name != "show_progress"]
        for key in config.data.synth:
            if key not in accepted:
                close = difflib.get_close_matches(str(key), accepted, n=1)
                hint = f" — did you mean data.synth.{close[0]}?" if close else (
                    f" — valid keys: {', '.join(accepted)}")
                fail(f"data.synth.{key}", f"unknown key data.synth.{key}{hint}")
            problem = synth_value_problem(
                config.data.synth[key],
                inspect.signature(synth.generate_dataset).parameters[key].default)
            if problem:
                fail(f"data.synth.{key}", f"data.synth.{key} expects {problem}. Received: "
                     f"data.synth.{key}={short_repr(config.data.synth[key])}")
    data = config.data
    problem = normalization_problem(data.normalization)
    if problem:
        fail("data.normalization", f"data.normalization expects {problem}. Received: "
             f"data.normalization={short_repr(data.normalization)}")
    if data.normalization != "auto" and ({"mean", "std"} & set(config.model.options)):
        fail("data.normalization", "give the normalisation once: data.normalization, or "
             "model.options mean/std with data.normalization auto. Received: "
             f"data.normalization={short_repr(data.normalization)}")
    rgb_bands = config.tensorboard.rgb_bands
    if rgb_bands is not None and (len(rgb_bands) not in (1, 3) or not all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in rgb_bands)):
        fail("tensorboard.rgb_bands", "tensorboard.rgb_bands expects 1 or 3 band indices "
             f">= 0 (or null). Received: tensorboard.rgb_bands={short_repr(rgb_bands)}")
    multi_label_layouts = ("synth",) + MULTI_LABEL_LAYOUTS + ("tfrecord",)
    if data.multi_label and data.layout not in multi_label_layouts:
        fail("data.multi_label", "data.multi_label expects data.layout one of "
             f"{', '.join(multi_label_layouts)}. Received: data.layout={data.layout}")
    if data.layout == "synth":
        # Either key makes the demo multi-label (the generated videos are what is trained);
        # the resolved config then says so in both places.
        generated = data.synth.get("multi_label")
        if data.multi_label and generated is not None and not generated:
            fail("data.multi_label", "data.multi_label expects data.synth.multi_label true or "
                 f"unset (the generated videos are what is trained). Received: "
                 f"data.multi_label=True, data.synth.multi_label={generated!r}")
        if data.multi_label or generated:
            data.multi_label = True
            data.synth = {**data.synth, "multi_label": True}
    if isinstance(data.root, dict) and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.root.items()
    ):
        fail("data.root", "data.root expects a directory or {split name: directory}. "
             f"Received: data.root={data.root!r}")
    if config.data.lists is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in config.data.lists.items()
    ):
        fail("data.lists", "data.lists expects {split name: list file path}. "
             f"Received: data.lists={config.data.lists!r}")


def config_from_dict(data, *, origins=None, source="<config>"):
    """Validates a merged dict into an ExperimentConfig (errors name `source` or the origin)."""
    origins = origins or {}
    all_keys = list(_schema_keys(ExperimentConfig))
    config = _build(ExperimentConfig, data, origins, source, all_keys)
    _check_consistency(config, origins, source)
    return config


def load_config(path, overrides=()):
    """Reads, merges, overrides and validates a config file.

    Args:
        path: str, the YAML file.
        overrides: iterable of `key.path=value` strings, applied after the files.

    Returns:
        ExperimentConfig, with `name` set to the file's stem when the file gives none.

    Raises:
        ConfigError: anything wrong with the files or the overrides, naming file and key.
    """
    merged, origins = merge_config_files(path)
    apply_overrides(merged, origins, overrides)
    config = config_from_dict(merged, origins=origins, source=path)
    if config.name is None:
        config.name = os.path.splitext(os.path.basename(path))[0]
    return config


def config_to_dict(config):
    return dataclasses.asdict(config)


def dump_config(config, path):
    """Writes the resolved config as YAML; `load_config(path)` gives back an equal config."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
    write_text_atomically(path, "# Resolved config of this run: python train.py --config "
                                "THIS_FILE reproduces it.\n" + text)


def config_reference():
    """Rows (key, default, accepts, help) for every key, for docs/TRAINING.md."""
    rows = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        defaults = cls()
        for field in dataclasses.fields(cls):
            dotted = f"{prefix}{field.name}"
            if dataclasses.is_dataclass(hints[field.name]):
                walk(hints[field.name], f"{dotted}.")
                continue
            rows.append((dotted, getattr(defaults, field.name),
                         _describe(hints[field.name], field.metadata),
                         field.metadata.get("help", "")))

    walk(ExperimentConfig, "")
    return rows
