"""Config files: YAML read strictly, `_base_` inheritance and `--set` overrides, merged into
one mapping for `training.config` to validate.

A config file is plain YAML (`yaml.safe_load` rules, plus: UTF-8 without control characters,
no tabs, no duplicate keys, no aliases, bounded size and nesting). It may name one or more `_base_` files, relative to itself, merged depth-first before its own keys
(later wins; mappings merge key by key, everything else is replaced). `--set key.path=value`
overrides come last, each value parsed as YAML (`--set train.epochs=3`). Every merged key
remembers the file (or `--set`) it came from, so that a validation error can name it.
"""

import copy
import logging
import os

import yaml

from core.errors import UserError
from core.untrusted_text import SafeYamlLoader, load_yaml_text, read_text_file

logger = logging.getLogger(__name__)

OVERRIDE_SOURCE = "--set"
# A config is a few kB; PyYAML parses ~100 kB/s, so this bounds a load to a few seconds.
MAX_CONFIG_BYTES = 256 << 10


class ConfigError(UserError):
    """A mistake in a config file or a `--set` override (file and key named in the message)."""


class _StrictLoader(SafeYamlLoader):
    """SafeLoader that refuses duplicate keys (plain PyYAML keeps the last one silently),
    aliases and deep nesting (core.untrusted_text)."""


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
    try:  # UTF-8 without NUL or control characters, else file and line named
        text = read_text_file(path, error=ConfigError, max_bytes=MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"Config file not found. Received: path={path}") from None
    except OSError as e:
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
            value = load_yaml_text(text) if text.strip() else None
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
