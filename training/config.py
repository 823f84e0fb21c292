"""Experiment configuration: YAML files, `_base_` inheritance, `--set` overrides, dataclasses.

A config file is plain YAML (`yaml.safe_load` rules, plus: no tabs, no duplicate keys). It may
name one or more `_base_` files, relative to itself, merged depth-first before its own keys
(later wins; mappings merge key by key, everything else is replaced). `--set key.path=value`
overrides come last, each value parsed as YAML (`--set train.epochs=3`). The merged mapping is
validated into the dataclasses below: an unknown key, a wrong type or an out-of-range value
raises `ConfigError` naming the file (or `--set`) and the dotted key, with the closest valid key
when one is near.

Example:

>>> config = load_config("configs/demo.yaml", overrides=["train.epochs=3"])
>>> config.train.epochs
3
"""

import copy
import dataclasses
import difflib
import functools
import importlib.util
import inspect
import logging
import os
import types
import typing

import yaml

from core.atomic import write_text_atomically
from data_prep import synth
from core.errors import UserError
from data_prep.shards import is_multi_label, num_classes_of
from data_prep.sources import DEFAULT_FILENAME_TEMPLATE, DEFAULT_START_INDEX
from data_prep.sources import LAYOUTS as SOURCE_LAYOUTS
from data_prep.sources import MULTI_LABEL_LAYOUTS

logger = logging.getLogger(__name__)

# synth: the demo videos of data_prep.synth, generated into data.root, then prepared as csv.
LAYOUTS = ("synth",) + SOURCE_LAYOUTS
OVERRIDE_SOURCE = "--set"


class ConfigError(UserError):
    """A mistake in a config file or a `--set` override (file and key named in the message)."""


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


@dataclasses.dataclass
class DataConfig:
    layout: str = _option("folders", choices=LAYOUTS,
                          help="how data.root is organised; synth generates the demo videos")
    root: str | None = _option(None, help="videos (or frame folders, .npy arrays) to prepare")
    split_dir: str | None = _option(None, help="official split files (ucf101, hmdb51)")
    split: int = _option(1, minimum=1, maximum=3, help="official split number")
    lists: dict | None = _option(None, help="{split name: list file} for csv/list/kinetics")
    classes_file: str | None = _option(None, help="class names, one a line (ucf101 classInd)")
    prepared_dir: str | None = _option(None, help="where the clip shards live (prepared if empty)")
    frames: int = _option(16, minimum=1, help="frames per clip")
    size: int = _option(112, minimum=4, help="stored clip height and width")
    resize_short: int | None = _option(None, minimum=1, help="resize short side before the crop")
    clips_per_video: int = _option(1, minimum=1, help="clips stored per video")
    sampling: str = _option("uniform", choices=("uniform", "stride"), help="frame sampling")
    frame_stride: int = _option(1, minimum=1, help="frame step for sampling: stride")
    encoding: str = _option("raw", choices=("raw", "png", "jpeg"), help="clip storage")
    workers: int | None = _option(None, minimum=1, help="decode processes when preparing")
    train_split: str = _option("train", help="split trained on")
    test_split: str = _option("test", help="split validated on each epoch and evaluated at the end")
    synth: dict = _option({}, help="keyword arguments of data_prep.synth.generate_dataset")
    only_present: bool = _option(False, help="prepare the listed items on disk, count the rest")
    multi_label: bool = _option(False, help="several labels per item (list, rawframes, csv, "
                                             "synth): sigmoid outputs, binary cross-entropy, mAP")
    num_classes: int | None = _option(None, minimum=1,
                                      help="class count for list/rawframes without classes_file")
    filename_template: str = _option(DEFAULT_FILENAME_TEMPLATE, help="rawframes: frame file names")
    start_index: int = _option(DEFAULT_START_INDEX, minimum=0, help="rawframes: number of the first frame file")
    with_offset: bool = _option(False, help="rawframes: rows carry a first-frame offset")


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


# --- reading YAML -------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain PyYAML keeps the last one silently)."""


def _construct_mapping_without_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"{loader.name}: duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                f"(first at line {seen[key] + 1}). Each key may appear once per mapping."
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_without_duplicates
)


def read_yaml_file(path):
    """Reads one YAML file into a dict, rejecting tabs and duplicate keys.

    Raises:
        ConfigError: the file is missing, unreadable, not a mapping, or not valid YAML.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"Config file not found. Received: path={path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file ({e})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if "\t" in line:
            raise ConfigError(f"{path}: tab character at line {number}; YAML indents with spaces")
    loader = _StrictLoader(text)
    loader.name = path
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections at the top. "
            f"Received: a {type(data).__name__}"
        )
    return data


def _merge_into(target, source, origin, origins, prefix=""):
    """Deep-merges `source` into `target` (mappings key by key, the rest replaced)."""
    for key, value in source.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            origins[dotted] = origin
            _merge_into(target[key], value, origin, origins, prefix=f"{dotted}.")
        else:
            target[key] = copy.deepcopy(value)
            origins[dotted] = origin
            if isinstance(value, dict):
                for sub in _dotted_keys(value, prefix=f"{dotted}."):
                    origins[sub] = origin


def _dotted_keys(mapping, prefix=""):
    for key, value in mapping.items():
        yield f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _dotted_keys(value, prefix=f"{prefix}{key}.")


def merge_config_files(path, *, _chain=()):
    """Reads `path` and its `_base_` files into one dict.

    Returns:
        (merged dict, origins) where origins maps each dotted key to the file it came from.

    Raises:
        ConfigError: a `_base_` file is missing, `_base_` has the wrong type, or bases cycle.
    """
    absolute = os.path.abspath(path)
    if absolute in _chain:
        cycle = " -> ".join([*(os.path.relpath(p) for p in _chain), os.path.relpath(absolute)])
        raise ConfigError(f"{path}: _base_ cycle: {cycle}")
    data = read_yaml_file(path)
    bases = data.pop("_base_", None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise ConfigError(
            f"{path}: _base_ expects a path or a list of paths. Received: _base_={bases!r}"
        )
    merged, origins = {}, {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), base)
        if not os.path.isfile(base_path):
            raise ConfigError(f"{path}: _base_ file not found: {base_path}. Received: _base_={base!r}")
        base_data, base_origins = merge_config_files(base_path, _chain=(*_chain, absolute))
        for key in base_origins:
            origins[key] = base_origins[key]
        _merge_into(merged, base_data, None, {})
    own_origins = {}
    size_before = _stored_size(merged)
    _merge_into(merged, data, path, own_origins)
    origins.update(own_origins)
    if "data.size" in own_origins and "augment.crop_size" not in own_origins:
        _crop_follows_size(merged, size_before, path)
    return merged, origins


def _stored_size(merged):
    section = merged.get("data")
    return section.get("size") if isinstance(section, dict) else None


def _crop_follows_size(merged, old_size, source):
    """Scales an earlier file's absolute `augment.crop_size` by a later `data.size` change.

    A base's crop is meant for its size (112 of 128, 28 of 32); kept as it is, a larger
    `data.size` would train on a small window of each frame without saying so. So when a
    later file or `--set` changes data.size without setting augment.crop_size, the crop keeps
    its fraction of the size (rounded), and the change is logged naming both values.
    """
    augment = merged.get("augment")
    crop = augment.get("crop_size") if isinstance(augment, dict) else None
    new_size = _stored_size(merged)
    numbers = (crop, old_size, new_size)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in numbers) \
            or old_size == new_size:
        return
    augment["crop_size"] = max(4, round(crop * new_size / old_size))
    logger.info("%s: data.size %d -> %d, so augment.crop_size follows: %d -> %d (set "
                "augment.crop_size too to choose another)", source, old_size, new_size, crop,
                augment["crop_size"])


def apply_overrides(merged, origins, overrides):
    """Applies `key.path=value` strings (values parsed as YAML) to the merged dict in place.

    A `data.size` override without an `augment.crop_size` one scales the files' crop with it
    (`_crop_follows_size`).
    """
    overrides = list(overrides or ())
    sets_crop = any(o.partition("=")[0].strip() == "augment.crop_size" for o in overrides)
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"{OVERRIDE_SOURCE} expects key.path=value. Received: {OVERRIDE_SOURCE} {override}"
            )
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text  # an unparsable value stays a string; validation judges it
        parts = key.split(".")
        node = merged
        for depth, part in enumerate(parts[:-1]):
            if part not in node:
                origins[".".join(parts[: depth + 1])] = OVERRIDE_SOURCE
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                parent = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"{OVERRIDE_SOURCE}: {parent} is a value, not a section. "
                    f"Received: {OVERRIDE_SOURCE} {override}"
                )
            node = child
        size_before = _stored_size(merged)
        node[parts[-1]] = value
        origins[key] = OVERRIDE_SOURCE
        if key == "data.size" and not sets_crop:
            _crop_follows_size(merged, size_before, OVERRIDE_SOURCE)
        if isinstance(value, dict):
            for sub in _dotted_keys(value, prefix=f"{key}."):
                origins[sub] = OVERRIDE_SOURCE


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
    base = next((a for a in args if a is not type(None)), annotation) if optional else annotation
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             dict: "a mapping", list: "a list"}[base]
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
    if isinstance(annotation, types.UnionType) and type(None) in args:
        if value is None:
            return None
        annotation = next(a for a in args if a is not type(None))
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
            f"Received: {prefix.rstrip('.')}={data!r}"
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
                f"Received: {dotted}={data[name]!r}"
            ) from None
    return cls(**values)


@functools.cache
def _model_catalog():
    """models/catalog.py, loaded without running `models/__init__` (which imports Keras, so
    TensorFlow): a mistyped model name fails here in milliseconds, before a run directory
    exists. The catalog holds only data and checks, so loading it twice (here and via
    `models`) is harmless."""
    models_dir = importlib.util.find_spec("models").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location(
        "_models_catalog", os.path.join(models_dir, "catalog.py"))
    catalog = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(catalog)
    return catalog


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
    groups = _model_catalog().PARAMETER_GROUPS
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
    catalog = _model_catalog()
    try:
        catalog.check_model_choice(config.model.name, config.model.options)
    except ValueError as e:
        # Name the file (or --set) of the wrong name, or of the first unknown option.
        accepted = catalog.MODEL_OPTIONS.get(config.model.name)
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
    data = config.data
    multi_label_layouts = ("synth",) + MULTI_LABEL_LAYOUTS
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
    if config.data.lists is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in config.data.lists.items()
    ):
        fail("data.lists", "data.lists expects {split name: list file path}. "
             f"Received: data.lists={config.data.lists!r}")


def check_prepared_data(data, manifest):
    """Raises UserError if prepared clips (their manifest.json) do not fit the `data` config.

    No TensorFlow here: train.py checks this before the run directory exists.
    """
    frames, height, width, _ = manifest["clip_shape"]
    expected = {"data.frames": (data.frames, frames), "data.size": (data.size, min(height, width)),
                "data.clips_per_video": (data.clips_per_video, manifest["clips_per_video"])}
    for key, (wanted, found) in expected.items():
        if wanted != found:
            raise UserError(
                f"{data.prepared_dir} was prepared with {key}={found} but the config asks for "
                f"{key}={wanted}; use another data.prepared_dir or set {key}={found}. "
                f"Received: {key}={wanted}"
            )
    for split in (data.train_split, data.test_split):
        if split not in manifest["splits"]:
            raise UserError(f"{data.prepared_dir} has no split {split!r} (it has "
                            f"{', '.join(manifest['splits'])}). Received: split={split}")
    _check_label_kind(data, manifest)


def _check_label_kind(data, manifest):
    """Raises UserError if the prepared data's multi_label or num_classes differ from the config.

    A dataset prepared single-label cannot train a multi-label config (nor the reverse): the
    records hold `label` or `labels`, and the loss and metrics follow the config.
    """
    found = is_multi_label(manifest)
    if found != data.multi_label:
        raise UserError(
            f"{data.prepared_dir} was prepared with multi_label={str(found).lower()} but the "
            f"config asks for data.multi_label={str(data.multi_label).lower()}; use another "
            f"data.prepared_dir or set data.multi_label={str(found).lower()}. "
            f"Received: data.multi_label={str(data.multi_label).lower()}")
    if data.num_classes is not None and num_classes_of(manifest) != data.num_classes:
        raise UserError(
            f"{data.prepared_dir} was prepared with num_classes={num_classes_of(manifest)} but "
            f"the config asks for data.num_classes={data.num_classes}; use another "
            f"data.prepared_dir or set data.num_classes={num_classes_of(manifest)}. "
            f"Received: data.num_classes={data.num_classes}")


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
