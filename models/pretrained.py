"""Loading pretrained weights into a built model: torchvision `.pth` files and our own runs.

torchvision state_dicts load by a naming rule, not a table: our torchvision ports (the
catalog rows with a `TorchvisionPort`) name every Keras layer after its torchvision
state_dict prefix (models/resnet3d.py, models/s3d.py), so the Keras layer `P` holds the torch
tensors `P.<name>`:

| Keras variable | torch key | layout |
| --- | --- | --- |
| `kernel` of a conv | `P.weight` | `(out, in, *k)` -> `(*k, in, out)` |
| `kernel` of a Dense | `P.weight` | `(out, in)` -> `(in, out)` |
| `bias` | `P.bias` | as is |
| BatchNormalization `gamma`, `beta` | `P.weight`, `P.bias` | as is |
| `moving_mean`, `moving_variance` | `P.running_mean`, `P.running_var` | as is |

`P.num_batches_tracked` has no Keras counterpart and is skipped. A deformable variant loads
the same file: a `DeformConv3D` named `P` takes `P.weight`/`P.bias` as its kernel and bias,
and its offset branch (`P/offset_conv/*`) keeps its zero initialisation, so the loaded model
computes exactly what the plain one does until training moves the offsets. The head is the last layer
with weights (its output channels are the classes); when the checkpoint has another class
count, the backbone loads and the head keeps its fresh initialisation.

Our own `.keras` and `.weights.h5` files hold the same architecture's variables, so they are
copied layer by layer with the same head rule.
"""

import hashlib
import logging
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np

from models.catalog import MODELS
from models.finetune import OFFSET_BRANCH, weighted_layers
from models.movinet_checkpoint import checkpoint_files, checkpoint_prefix, movinet_entries, read_tf_checkpoint
from models.torch_checkpoint import ZIP_SIGNATURE, CheckpointError, read_torch_state_dict
from models.weights_file_checks import dataset_value, open_archive_member

logger = logging.getLogger(__name__)

# torchvision's Kinetics-400 training statistics (transforms/_presets.py VideoClassification),
# in the 0-255 units of ClipNormalization.
TORCHVISION_KINETICS_MEAN = tuple(255.0 * v for v in (0.43216, 0.394666, 0.37645))
TORCHVISION_KINETICS_STD = tuple(255.0 * v for v in (0.22803, 0.22145, 0.216989))
# torchvision's eval transforms of its Kinetics-400 video weights, from the catalog's ports:
# name -> ((resize height, resize width), centre crop, frames per clip).
TORCHVISION_EVAL_TRANSFORMS = {
    name: (spec.torchvision.resize, spec.torchvision.crop_size, spec.torchvision.frames)
    for name, spec in MODELS.items() if spec.torchvision is not None
}
KINETICS400_CLASSES_FILE = Path(__file__).with_name("kinetics400_classes.txt")

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"
# Keras variable name -> the torch tensor name it holds (BatchNormalization's first).
TORCH_TENSOR_NAMES = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
SKIPPED_TORCH_TENSORS = ("num_batches_tracked",)
LISTED_KEYS = 8


def kinetics400_classes():
    """The 400 Kinetics-400 class names, in the order of torchvision's checkpoints' logits."""
    return KINETICS400_CLASSES_FILE.read_text(encoding="utf-8").splitlines()


def weights_sha256(path):
    """Hex sha256 of a weights file (of a TF checkpoint's files in name order), to record which
    weights a run started from."""
    digest = hashlib.sha256()
    for name in checkpoint_files(path) or [path]:
        with open(name, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def weights_format(path):
    """What kind of weights file `path` is, from its first bytes (not its name).

    Returns:
        `"keras"` (a `.keras` archive), `"keras_weights"` (a `.weights.h5`), `"tf_checkpoint"`
        (a `tf.train.Checkpoint` prefix, its `.index` file or its directory: Model Garden's
        MoViNets, models/movinet_checkpoint.py) or `"torchvision"` (anything else, which
        `read_torch_state_dict` then accepts or refuses with a clear error).

    Raises:
        CheckpointError: if the file cannot be opened.
    """
    path = Path(path)
    if checkpoint_prefix(path) is not None:
        return "tf_checkpoint"
    try:
        with open(path, "rb") as file:
            head = file.read(len(HDF5_SIGNATURE))
    except OSError as error:
        raise CheckpointError(f"{path}: cannot open the weights file: {error.strerror}") from None
    if head == HDF5_SIGNATURE:
        return "keras_weights"
    if head.startswith(ZIP_SIGNATURE):
        try:
            with zipfile.ZipFile(path) as archive:
                if KERAS_ARCHIVE_WEIGHTS in archive.namelist():
                    return "keras"
        except zipfile.BadZipFile:
            pass  # read_torch_state_dict reports the corrupt archive.
    return "torchvision"


def _torch_layout(array_or_shape, keras_name):
    """The torch shape of a Keras variable (kernels transposed back), for messages."""
    shape = tuple(array_or_shape)
    if keras_name == "kernel" and len(shape) >= 2:
        return (shape[-1], shape[-2], *shape[:-2])
    return shape


def _to_keras_layout(array, keras_name):
    if keras_name == "kernel" and array.ndim >= 2:
        # torch (out, in, *k) -> Keras (*k, in, out).
        return np.transpose(array, (*range(2, array.ndim), 1, 0))
    return array


def _is_other_head(model_shapes, file_shapes):
    """True if two heads differ only in their class count (kernel's last axis, bias)."""
    if len(model_shapes) != len(file_shapes):
        return False
    return all(
        len(m) == len(f) and m[:-1] == f[:-1] for m, f in zip(model_shapes, file_shapes)
    ) and model_shapes[0][-1] != file_shapes[0][-1]


def _key_list(keys):
    keys = list(keys)
    shown = ", ".join(keys[:LISTED_KEYS]) + (f", ... ({len(keys) - LISTED_KEYS} more)" if len(keys) > LISTED_KEYS else "")
    return f"{len(keys)} [{shown}]"


def _raise_mismatch(path, model, first, missing, unexpected):
    raise CheckpointError(
        f"{path}: the weights do not fit model {model.name!r}: {first}; "
        f"missing keys {_key_list(missing)}; unexpected keys {_key_list(unexpected)}"
    )


def _assign(model, path, entries, unexpected):
    """Checks every variable, then assigns them all (or raises, having assigned nothing).

    `entries`: per weighted layer, `(layer, items)` with one item per variable:
    `(variable, key, value, file_shape, model_shape)`, where `value` is the array in Keras
    layout or None when the file lacks `key`, and the two shapes are in the file's layout
    (for messages). The head (last weighted layer) may differ in its class count only.
    """
    missing = [key for _, items in entries for _, key, value, _, _ in items if value is None]
    first = None  # the first problem in the model's layer order
    new_head = None
    for index, (layer, items) in enumerate(entries):
        values = [value for _, _, value, _, _ in items]
        model_shapes = [tuple(variable.shape) for variable, _, _, _, _ in items]
        if index == len(entries) - 1 and all(value is not None for value in values):
            file_shapes = [tuple(value.shape) for value in values]
            if _is_other_head(model_shapes, file_shapes):
                new_head = (layer, file_shapes[0][-1], model_shapes[0][-1])
                continue
        for variable, key, value, file_shape, model_shape in items:
            if first is not None:
                break
            if value is None:
                first = f"first missing key {key!r}"
            elif tuple(value.shape) != tuple(variable.shape):
                first = f"first mismatch {key!r}: file shape {file_shape}, model expects {model_shape}"
    if first is None and unexpected:
        first = f"first unexpected key {unexpected[0]!r}"
    if first is not None:
        _raise_mismatch(path, model, first, missing, unexpected)
    for layer, items in entries:
        if new_head is None or layer is not new_head[0]:
            for variable, _, value, _, _ in items:
                variable.assign(value.astype(variable.dtype))
    if new_head is not None:
        layer, file_classes, model_classes = new_head
        logger.info("%s: checkpoint has %d classes, model %d: new head", layer.name, file_classes, model_classes)
    return new_head is None


def load_torchvision_weights(model, path):
    """Loads a torchvision state_dict `.pth` into `model` by the layer-naming rule.

    Args:
        model: a built `keras.Model` whose weighted layers are named after torchvision's
            state_dict prefixes (the ResNets of models/resnet3d.py).
        path: the `.pth` file (torch's zip or legacy format).

    Returns:
        True if the head was loaded too, False if it kept its fresh weights because the
        checkpoint has another class count (logged as `fc: checkpoint has 400 classes,
        model 101: new head`).

    Raises:
        CheckpointError: the file is not a readable state_dict, or a key or shape does not
            fit (the message names the first problem and lists missing and unexpected keys).
            Nothing is assigned unless everything fits.
    """
    tensors = read_torch_state_dict(path)
    used = set()
    entries = []
    for layer in weighted_layers(model):
        items = []
        for variable in layer.weights:
            if OFFSET_BRANCH in f"/{variable.path}":
                continue  # a DeformConv3D's offset branch: no torchvision counterpart, stays zero
            key = f"{layer.name}.{TORCH_TENSOR_NAMES.get(variable.name, variable.name)}"
            value = tensors.get(key)
            file_shape = None
            if value is not None:
                used.add(key)
                file_shape = tuple(value.shape)
                if value.ndim == len(variable.shape):
                    value = _to_keras_layout(value, variable.name)
            items.append((variable, key, value, file_shape, _torch_layout(variable.shape, variable.name)))
        entries.append((layer, items))
    unexpected = [
        key for key in tensors if key not in used and key.rsplit(".", 1)[-1] not in SKIPPED_TORCH_TENSORS
    ]
    head_loaded = _assign(model, path, entries, unexpected)
    logger.info("Loaded torchvision weights %s into %s (%d tensors)", path, model.name, len(used))
    return head_loaded


def _keras_weight_groups(model):
    """Layer -> the group its variables have in a Keras 3 weights file.

    Keras addresses a functional model's layers as `layers/<snake_case class name>[_<n>]`,
    numbered per class in `model.layers` order (saving_lib's `_save_container_state`), and a
    layer's own variables as `vars/0..n-1` in `layer.weights` order.
    """
    used = {}
    groups = {}
    for layer in model.layers:
        name = re.sub(r"\W+", "", type(layer).__name__)
        name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
        name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        groups[layer.name] = f"layers/{name}/vars"
    return groups


def _open_keras_weights(path, kind):
    try:
        if kind == "keras":
            with zipfile.ZipFile(path) as archive:  # streamed, not inflated into memory
                return h5py.File(open_archive_member(archive, KERAS_ARCHIVE_WEIGHTS, path), "r")
        return h5py.File(path, "r")
    except (OSError, zipfile.BadZipFile, KeyError, RuntimeError, NotImplementedError) as error:
        raise CheckpointError(f"{path}: cannot read the Keras weights (a truncated or corrupt file): {error}") from None


def load_keras_weights(model, path):
    """Copies the weights of a `.keras` model or `.weights.h5` of the same architecture.

    Variables are matched layer by layer (Keras's own addressing, see
    `_keras_weight_groups`) with shape checks; a head with another class count keeps its
    fresh weights, logged as for torchvision checkpoints.

    Returns:
        True if the head was loaded too, False if it was left fresh.

    Raises:
        CheckpointError: unreadable file, or a layer or shape that does not fit.
    """
    kind = weights_format(path)
    groups = _keras_weight_groups(model)
    with _open_keras_weights(path, kind) as file:
        entries = []
        used = set()
        for layer in weighted_layers(model):
            group = groups[layer.name]
            items = []
            for index, variable in enumerate(layer.weights):
                key = f"{group}/{index}"
                # Shapes compared before any data is read (models.weights_file_checks).
                value = dataset_value(file[key], variable.shape, path, key) \
                    if key in file else None
                if value is not None:
                    used.add(key)
                shape = None if value is None else tuple(value.shape)
                items.append((variable, f"{layer.name}/{variable.name}", value, shape, tuple(variable.shape)))
            entries.append((layer, items))
        stored = []
        file.visititems(lambda name, obj: stored.append(name) if isinstance(obj, h5py.Dataset) else None)
        unexpected = [name for name in stored if name.startswith("layers/") and name not in used]
        head_loaded = _assign(model, path, entries, unexpected)
    logger.info("Loaded Keras weights %s into %s", path, model.name)
    return head_loaded


def load_tf_checkpoint_weights(model, path):
    """Loads a Model Garden MoViNet `tf.train.Checkpoint` into a MoViNet `model` by the naming
    rule of models/movinet_checkpoint.py, with the head rule and checks of the other loaders.

    Returns:
        True if the head was loaded too, False if it kept its fresh weights (another class count).

    Raises:
        CheckpointError: unreadable checkpoint, a model that is not a MoViNet, or a key or shape
            that does not fit (nothing is assigned then).
    """
    tensors = read_tf_checkpoint(path)
    entries, unexpected = movinet_entries(model, tensors, path)
    head_loaded = _assign(model, path, entries, unexpected)
    logger.info("Loaded TF checkpoint %s into %s", path, model.name)
    return head_loaded


def load_weights(model, path):
    """Loads `path` into `model`: a torchvision `.pth`, a `.keras`, a `.weights.h5` or a Model
    Garden `tf.train.Checkpoint` (MoViNets).

    Returns:
        `(format, head_loaded)`: `weights_format(path)` and whether the head was loaded.
    """
    kind = weights_format(path)
    if kind == "tf_checkpoint":
        return kind, load_tf_checkpoint_weights(model, path)
    if kind == "torchvision":
        return kind, load_torchvision_weights(model, path)
    return kind, load_keras_weights(model, path)
