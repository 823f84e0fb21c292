"""Reading TF Model Garden's MoViNet `tf.train.Checkpoint` files for models/movinet.py.

A checkpoint is read with `tf.train.load_checkpoint` (a table of named arrays: nothing in it
runs). Model Garden saves `tf.train.Checkpoint(model=MovinetClassifier)`, whose keys are object
paths: the backbone is the classifier's first weighted layer, its units (`stem`,
`block<b>_layer<l>`..., `head`) are the backbone's weighted layers in order, and a unit's
variables sit under its attributes. So our layer `<unit>.<part>...` maps by rule:

| our layer | checkpoint key (under `model/layer_with_weights-0/layer_with_weights-<unit index>/`) |
| --- | --- |
| `stem.conv`, `stem.bn` | `_stem/_conv`, `_stem/_batch_norm` |
| `<block>.expansion.conv`, `.bn` | `_expansion/_conv`, `_expansion/_batch_norm` |
| `<block>.feature.conv`, `.conv_temporal`, `.bn`, `.bn_temporal` | `_feature/_conv`, `_feature/_conv_temporal`, `_feature/_batch_norm`, `_feature/_batch_norm_temporal` |
| `<block>.se.reduce`, `.se.expand` | `_attention/_se_reduce/_conv`, `_attention/_se_expand/_conv` |
| `<block>.projection.*`, `<block>.skip.projection.*` | `_projection/*`, `_skip/_projection/*` |
| `<block>.rezero` | `_mobile_bottleneck/_rezero` |
| `head.project.conv`, `.bn` | `_project/_conv`, `_project/_batch_norm` (unit `head`) |
| `pre_logits`, `classifier` | `model/layer_with_weights-1/_head/_conv`, `.../_classifier/_conv` |

then `/<variable>/.ATTRIBUTES/VARIABLE_VALUE`, where a convolution's kernel is `_conv/kernel`
or `_conv/depthwise_kernel` ('2plus1d' and '3d' wrap Keras's conv once more) or `kernel`
('3d_2plus1d', the layout Model Garden trains stream models in). Shapes then map by rule:
leading size-1 axes of pointwise kernels go (our 1x1 convolutions are Dense layers), and a
'3d_2plus1d' depthwise kernel `(1, k, k, 1, c)` / `(k, 1, 1, 1, c)` becomes the (2+1)D
`(k, k, c, 1)` / `(k, 1, c, 1)` (Model Garden's tools/convert_3d_2plus1d.py rule).
"""

import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from models.movinet import VARIANTS, unit_names
from models.torch_checkpoint import CheckpointError

INDEX_SUFFIX = ".index"
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# Where the backbone's units sit, as Model Garden's classifier, its `_backbone` attribute or a
# `tf.train.Checkpoint(backbone=...)` save them.
BACKBONE_ROOTS = ("model/layer_with_weights-0/", "model/_backbone/", "backbone/")
CLASSIFIER_ROOT = "model/layer_with_weights-1/"
_PARTS = {
    "conv": "_conv", "conv_temporal": "_conv_temporal", "bn": "_batch_norm",
    "bn_temporal": "_batch_norm_temporal", "expansion": "_expansion", "feature": "_feature",
    "se": "_attention", "reduce": "_se_reduce/_conv", "expand": "_se_expand/_conv",
    "projection": "_projection", "skip": "_skip", "rezero": "_mobile_bottleneck/_rezero",
    "project": "_project",
}
_TOP_LEVEL = {"pre_logits": "_head/_conv", "classifier": "_classifier/_conv"}
_KERNEL_NAMES = ("kernel", "depthwise_kernel")


def checkpoint_prefix(path):
    """The checkpoint prefix of `path` (a prefix, its `.index` file, or a directory holding a
    `checkpoint` file), or None if `path` is not a TF checkpoint."""
    path = Path(path)
    if path.is_dir():
        latest = tf.train.latest_checkpoint(str(path))
        return latest
    if path.name.endswith(INDEX_SUFFIX) and path.is_file():
        return str(path)[: -len(INDEX_SUFFIX)]
    if Path(str(path) + INDEX_SUFFIX).is_file():
        return str(path)
    return None


def checkpoint_files(path):
    """The files of the checkpoint at `path` (its `.index` and data shards), sorted."""
    prefix = checkpoint_prefix(path)
    if prefix is None:
        return []
    return sorted(Path(prefix).parent.glob(Path(prefix).name + ".*"))


def read_tf_checkpoint(path):
    """`{key: np.ndarray}` of the variables in the TF checkpoint at `path` (object-graph and
    optimizer entries left out).

    Raises:
        CheckpointError: not a readable TF checkpoint.
    """
    prefix = checkpoint_prefix(path)
    if prefix is None:
        raise CheckpointError(f"{path}: not a TF checkpoint (expected a prefix with a .index file, "
                              "the .index file, or a directory with a `checkpoint` file)")
    try:
        reader = tf.train.load_checkpoint(prefix)
        keys = reader.get_variable_to_shape_map()
        return {key[: -len(VALUE_SUFFIX)]: np.asarray(reader.get_tensor(key)) for key in keys
                if key.endswith(VALUE_SUFFIX) and "OPTIMIZER_SLOT" not in key}
    except (tf.errors.OpError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot read the TF checkpoint (truncated or corrupt?): "
                              f"{str(error).splitlines()[0]}") from None


def _backbone_root(tensors):
    for root in BACKBONE_ROOTS:
        if any(key.startswith(root + "layer_with_weights-0/") for key in tensors):
            return root
    return None


def _checkpoint_path(layer_name, units, root):
    """The checkpoint path of our layer `layer_name` (without the variable), or None."""
    if layer_name in _TOP_LEVEL:
        return CLASSIFIER_ROOT + _TOP_LEVEL[layer_name]
    unit, *parts = layer_name.split(".")
    if unit not in units or not parts:
        return None
    if unit == "stem":
        parts = ["_stem"] + [_PARTS[p] for p in parts]
    else:
        if any(p not in _PARTS for p in parts):
            return None
        parts = [_PARTS[p] for p in parts]
    return f"{root}layer_with_weights-{units.index(unit)}/" + "/".join(parts)


def _candidate_keys(path, variable_name):
    if variable_name in _KERNEL_NAMES:
        return [f"{path}/_conv/kernel", f"{path}/_conv/depthwise_kernel", f"{path}/kernel",
                f"{path}/depthwise_kernel"]
    if variable_name == "bias":
        return [f"{path}/_conv/bias", f"{path}/bias"]
    return [f"{path}/{variable_name}"]


def to_model_layout(value, shape):
    """A checkpoint array in the layout of a model variable of `shape` (see the module doc)."""
    shape = tuple(shape)
    if value.shape == shape:
        return value
    if value.ndim == 5 and len(shape) == 4:  # a '3d_2plus1d' Conv3D kernel for a (2+1)D conv
        value = value[0] if value.shape[0] == 1 else value[:, 0]
        if value.shape[-1] != shape[-1]:
            value = np.transpose(value, (0, 1, 3, 2))  # grouped Conv3D -> depthwise layout
    while value.ndim > len(shape) and value.shape[0] == 1:
        value = value[0]
    return value


def movinet_entries(model, tensors, path):
    """`(entries, unexpected)` for `models.pretrained._assign`: per weighted layer of a MoViNet
    `model`, `(layer, [(variable, key, value, file_shape, model_shape), ...])`, and the
    checkpoint keys under the model's roots that no variable took.

    Raises:
        CheckpointError: `model` is not a MoViNet, or the checkpoint holds no MoViNet backbone.
    """
    if model.name not in VARIANTS:
        raise CheckpointError(f"{path}: a TF (Model Garden) checkpoint loads into a MoViNet model only. "
                              f"Received: model {model.name!r}")
    units = unit_names(VARIANTS[model.name][0])
    root = _backbone_root(tensors)
    if root is None:
        shown = ", ".join(sorted(tensors)[:4])
        raise CheckpointError(f"{path}: no Model Garden MoViNet backbone in the checkpoint (expected keys "
                              f"under one of {list(BACKBONE_ROOTS)}; found {shown}, ...)")
    used = set()
    entries = []
    for layer in model.layers:
        if not layer.weights:
            continue
        base = _checkpoint_path(layer.name, units, root)
        items = []
        for variable in layer.weights:
            candidates = _candidate_keys(base, variable.name) if base else [f"{layer.name}/{variable.name}"]
            key = next((k for k in candidates if k in tensors), candidates[0])
            value = file_shape = None
            if key in tensors:
                used.add(key)
                file_shape = tuple(tensors[key].shape)
                value = to_model_layout(tensors[key], variable.shape)
            items.append((variable, key, value, file_shape, tuple(variable.shape)))
        entries.append((layer, items))
    backbone_units = re.compile(re.escape(root) + r"layer_with_weights-\d+/")
    unexpected = sorted(k for k in tensors if k not in used
                        and (backbone_units.match(k) or k.startswith(CLASSIFIER_ROOT)))
    return entries, unexpected
