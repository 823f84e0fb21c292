"""Export a trained model: a SavedModel, a LiteRT (.tflite) file, an ONNX file.

```
RUN_DIR/export/saved_model.pb, variables/   the traced model: no Python classes needed
RUN_DIR/export/assets/classes.txt            class names, one a line, line number = label id
RUN_DIR/export/preprocessing.json            what a clip must be (see `preprocessing_record`)
RUN_DIR/export/model.tflite                  LiteRT, float32, builtin ops only, batch 1
RUN_DIR/export/model_int8.tflite             LiteRT, int8 weights and activations (calibrated)
RUN_DIR/export/model.onnx                    ONNX (tf2onnx), any batch
RUN_DIR/export/<file>.check.json             its parity and latency check (training.export_check)
```

Every format takes clips `clips` `(batch, F, H, W, band)` of the model's input dtype (uint8
for 8-bit video; the stored dtype of 16-bit or float data, float32 with extra bands) (H = W =
the model's input size, RGB for 3 bands; normalisation, the dataset's per-band statistics
included, is inside the model, so the clips are raw values as stored) and
returns `logits` and `probabilities` (the softmax of the logits; for a multi-label run, a
sigmoid per class: independent probabilities). A clip of another shape is refused: the
SavedModel says which shape it expects, LiteRT and onnxruntime name the dimension.

SavedModel signatures:
- `serving_default(clips)` -> `{"logits", "probabilities"}` float32 (None, num_classes).
- `class_names()`: `{"class_names": string (num_classes,)}`, read from the asset.

```python
loaded = tf.saved_model.load("RUN_DIR/export")
probabilities = loaded.signatures["serving_default"](clips=clips)["probabilities"]
names = loaded.signatures["class_names"]()["class_names"]
```

Custom layers (DeformConv3D, ClipNormalization) are traced into graphs, so plain
`tf.saved_model.load` works in a process that never imports `models`. Their hand-written
gradients are not saved (`experimental_custom_gradients=False`): the export is for inference.

LiteRT has no builtin 3-D max pool, so the LiteRT graph is traced from a clone of the model
whose `MaxPooling3D` layers are `models.pooling.FactoredMaxPooling3D` (2-D pools, the same
numbers); the string handling of `class_names` stays out of it (the class names are in
preprocessing.json). DeformConv3D converts to builtin ops (gathers in a WHILE loop) once it is
traced without XLA, for LiteRT and ONNX alike (`export_copy`).
"""

import logging
import os
import shutil
import tempfile

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2)

from core.atomic import atomic_write, write_json_atomically
from core.errors import UserError
from data_prep.shards import is_multi_label
from models.deform_conv3d import DeformConv3D
from models.pooling import FactoredMaxPooling3D
from training.export_check import check_export, split_clips
from training.run_dir import open_trained_run
from training.precision import model_with_policy
from training.scoring import load_run_model, output_activation
from training.timeline import clip_span

logger = logging.getLogger(__name__)

EXPORT_DIRNAME = "export"
CLASSES_ASSET = "classes.txt"
PREPROCESSING_FILE = "preprocessing.json"
FORMATS = ("saved_model", "litert", "onnx")
FILE_NAMES = {("litert", None): "model.tflite", ("litert", "int8"): "model_int8.tflite",
              ("onnx", None): "model.onnx"}
# What tf.saved_model.save writes; anything else in export/ (other formats) is kept when
# the SavedModel is written again.
SAVED_MODEL_ENTRIES = ("saved_model.pb", "variables", "assets", "fingerprint.pb")
ONNX_OPSET = 17


def export_path(run_dir):
    return os.path.join(run_dir.path, EXPORT_DIRNAME)


def _shape_text(shape):
    return "(batch, " + ", ".join(str(v) for v in shape) + ")"


def _checked_clips(clips, input_shape):
    """`clips`, after a graph assertion that they have the model's (F, H, W, band): a
    SavedModel signature alone lets any size through a fully convolutional model."""
    expected = tf.constant(input_shape, tf.int32)
    check = tf.debugging.assert_equal(
        tf.shape(clips)[1:], expected,
        message=f"Expected clips shaped {_shape_text(input_shape)} (frames, height, "
                "width, band, as the run was trained; see preprocessing.json). Received shape:",
        summarize=5)
    with tf.control_dependencies([check]):
        return tf.identity(clips)


def _quietly(function, *args, **kwargs):
    """`function(*args, **kwargs)` with TensorFlow's and absl's INFO/WARNING lines off:
    "Assets written to: <a temporary path>" and notes on unsaved custom gradients or renamed
    inputs mean nothing to the user of an export."""
    quieted = [tf.get_logger(), logging.getLogger("absl"), logging.getLogger("tf2onnx")]
    levels = [each.level for each in quieted]
    for each in quieted:
        each.setLevel(logging.ERROR)
    try:
        return function(*args, **kwargs)
    finally:
        for each, level in zip(quieted, levels):
            each.setLevel(level)


def _input_dtype(model):
    """The model's input dtype (uint8 for 8-bit video; the stored dtype of other data)."""
    return tf.dtypes.as_dtype(keras.backend.standardize_dtype(model.inputs[0].dtype))


def _serving_module(model, classes_file, multi_label):
    input_shape = tuple(model.input_shape[1:])
    input_dtype = _input_dtype(model)

    class VideoClassifier(tf.Module):
        def __init__(self):
            super().__init__(name="video_classifier")
            self.model = model
            self.classes_file = tf.saved_model.Asset(classes_file)

        @tf.function(input_signature=[tf.TensorSpec((None, *input_shape), input_dtype,
                                                    name="clips")])
        def serving_default(self, clips):
            logits = tf.cast(self.model(_checked_clips(clips, input_shape), training=False),
                             tf.float32)
            return {"logits": logits, "probabilities": output_activation(logits, multi_label)}

        @tf.function(input_signature=[])
        def class_names(self):
            text = tf.strings.strip(tf.io.read_file(self.classes_file))
            return {"class_names": tf.strings.split(text, "\n")}

    return VideoClassifier()


def export_saved_model(model, export_dir, class_names, multi_label=False, policy="float32"):
    """Writes `model` as a SavedModel to `export_dir`, replacing any previous SavedModel whole
    (other files there, e.g. LiteRT and ONNX exports, are kept).

    Args:
        model: a keras.Model taking uint8 clips and returning logits.
        export_dir: str, the directory to (re)create.
        class_names: list of str, one per output, as the `classes.txt` asset.
        multi_label: bool, sigmoid probabilities per class instead of the softmax.
        policy: str, the Keras policy the export computes in: float32 unless asked, so that
            it runs at full speed and precision on any machine (a bfloat16-trained model is
            copied into float32 layers with the same weights).

    Returns:
        str, export_dir.
    """
    if len(class_names) != model.output_shape[-1]:
        raise ValueError(f"Expected one class name per model output ({model.output_shape[-1]})."
                         f" Received: {len(class_names)} class names")
    model = model_with_policy(model, policy)
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    # Saved beside the target and renamed into place: a crash never leaves half an export.
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        classes_file = os.path.join(staging, CLASSES_ASSET)
        with open(classes_file, "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in class_names))
        module = _serving_module(model, classes_file, multi_label)
        with atomic_write(export_dir, temporary=os.path.join(staging, "saved_model")) as saved:
            # TensorFlow logs "Assets written to: <the staging name>" (a temporary path that
            # means nothing to the user: the line below names the export) and absl notes on
            # renamed inputs at INFO.
            _quietly(tf.saved_model.save, module, saved,
                     signatures={"serving_default": module.serving_default,
                                 "class_names": module.class_names},
                     options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
            if os.path.exists(export_dir):  # an older export: replaced only once this one is whole
                for name in os.listdir(export_dir):
                    if name not in SAVED_MODEL_ENTRIES and not os.path.exists(
                            os.path.join(saved, name)):
                        os.replace(os.path.join(export_dir, name), os.path.join(saved, name))
                shutil.rmtree(export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported SavedModel to %s", export_dir)
    return export_dir


def export_after_training(model, run_dir, class_names, multi_label=False):
    """`export_saved_model` into RUN_DIR/export/, never raising: the model is already saved.

    Returns:
        str, the export directory, or None if the export failed (the error is logged).
    """
    target = export_path(run_dir)
    try:
        export_saved_model(model, target, class_names, multi_label)
        if os.path.isfile(run_dir.run_info) and os.path.isfile(run_dir.data_manifest):
            write_preprocessing(open_trained_run(run_dir.path, need_model=False), model, target)
        return target
    except Exception:  # noqa: BLE001  (any failure: the run itself has succeeded)
        logger.exception("export to %s failed; model.keras and metrics.json are kept. Retry "
                         "with: python export.py --run-dir %s", target, run_dir.path)
        return None


def export_run(run):
    """Exports a finished run (a `training.run_dir.TrainedRun`) from its model.keras.

    Raises:
        UserError: the run directory cannot be written (read-only, full).
    """
    model = load_run_model(run, policy="float32")  # exports compute in float32
    try:
        directory = export_saved_model(model, export_path(run.run_dir), run.class_names,
                                       is_multi_label(run.manifest))
        write_preprocessing(run, model, directory)
    except OSError as e:
        raise UserError(f"Expected the run directory to be writable, to export into it: "
                        f"{e.strerror or e}. Received: --run-dir {run.run_dir.path}") from None
    return directory


# --- what a clip must be ---------------------------------------------------------------------

def preprocessing_record(run, model):
    """What every export expects, for code that runs it without this project.

    Returns:
        dict: classes, label kind and output activation, the input (shape, dtype, layout,
        colour order), the run's frame sampling, the resize and centre-crop sizes and the
        normalisation statistics (applied inside the model: feed raw values as stored),
        and for v2 runs what the clip holds beyond the stored bands (`clip_inputs`).
    """
    manifest = run.manifest
    frames, crop_size, _, bands = run.input_shape
    sampling = dict(manifest["sampling"])
    multi_label = is_multi_label(manifest)
    try:
        normalize = model.get_layer("normalize").get_config()
        mean, std = normalize["mean"], normalize["std"]
    except ValueError:
        mean = std = None
    dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)
    inputs = manifest.get("clip_inputs")
    record = {
        "classes": list(run.class_names),
        "label_kind": "multi_label" if multi_label else "single_label",
        "output": "sigmoid per class" if multi_label else "softmax",
        "input": {"name": "clips", "shape": [None, frames, crop_size, crop_size, bands],
                  "dtype": dtype,
                  "layout": "(batch, frames, height, width, band), channels last",
                  "colour": "RGB" if bands == 3 else f"{bands} band(s) as stored"},
        "frames": int(frames),
        "sampling": {"method": sampling["method"], "frames": int(sampling["frames"]),
                     "frame_stride": int(sampling["frame_stride"]),
                     "clips_per_video": int(sampling.get("clips_per_video",
                                                         manifest.get("clips_per_video", 1))),
                     "clip_span_frames": clip_span(sampling)},
        "resize": {"size": None if manifest["resize"].get("size") is None
                   else int(manifest["resize"]["size"]),
                   "resize_short": manifest["resize"]["resize_short"],
                   "rule": "resize_short set: short side to resize_short, then the centre "
                           "size x size square; else straight to size x size. INTER_AREA "
                           "shrinking, INTER_LINEAR enlarging"},
        "crop": {"size": int(crop_size), "where": "centre"},
        "normalisation": {"mean": mean, "std": std,
                          "units": "0-255 pixel values" if dtype == "uint8" and not inputs
                          else "stored values",
                          "where": f"inside the model: feed raw {dtype} values as stored"},
        "outputs": ["logits", "probabilities"],
        "model": run.info.get("model") or model.name,
    }
    if inputs:
        record["clip_inputs"] = {
            "stored_dtype": inputs["dtype"], "fill_invalid_with": inputs["fill"],
            "extra_bands": (["validity mask (1 valid, 0 invalid)"] if inputs["mask_band"]
                            else []) + {"none": [], "band": ["day of year / 365.25"],
                                        "sinusoidal": ["sin(2 pi doy / 365.25)",
                                                       "cos(2 pi doy / 365.25)"]}[
                                                           inputs["day_of_year"]],
            "normalization": inputs["normalization"]["name"]}
    return record


def write_preprocessing(run, model, export_dir):
    path = os.path.join(export_dir, PREPROCESSING_FILE)
    os.makedirs(export_dir, exist_ok=True)
    write_json_atomically(path, preprocessing_record(run, model))
    return path


# --- LiteRT and ONNX --------------------------------------------------------------------------

def export_copy(model, litert=False):
    """A copy of `model` with the same weights, in the ops another runtime's converter knows:
    DeformConv3D traced without XLA (tf2onnx and LiteRT's converter cannot look inside an
    XLA-compiled function) and, for LiteRT, MaxPooling3D as FactoredMaxPooling3D (LiteRT has
    no builtin 3-D max pool), computing in float32 whatever policy the model was trained in
    (the converters' builtin kernels are float32)."""
    model = model_with_policy(model, "float32")

    def clone(layer):
        if litert and isinstance(layer, keras.layers.MaxPooling3D):
            return FactoredMaxPooling3D.from_max_pooling3d(layer)
        copy = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, DeformConv3D):
            copy.jit_compile = False
        return copy

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _inference_function(model, batch, multi_label):
    input_shape = tuple(model.input_shape[1:])

    @tf.function(input_signature=[tf.TensorSpec((batch, *input_shape), _input_dtype(model),
                                                name="clips")])
    def infer(clips):
        logits = tf.cast(model(clips, training=False), tf.float32)
        return {"logits": logits, "probabilities": output_activation(logits, multi_label)}

    return infer


def convert_litert(model, multi_label=False, representative_clips=None):
    """The LiteRT flatbuffer (bytes) of `model`, builtin ops only, batch 1.

    Args:
        representative_clips: None for float32; uint8 clips (N, F, H, W, band) to calibrate
            int8 weights and activations (post-training quantisation; an op without an int8
            kernel stays float).
    """
    infer = _inference_function(export_copy(model, litert=True), 1, multi_label)
    traced = infer.get_concrete_function()
    # Variables frozen to constants first: the converter leaves Keras 3's variables as
    # resource variables (from a SavedModel too), which the interpreter reads uninitialised.
    frozen = convert_variables_to_constants_v2(traced)
    module = tf.Module()
    # Wrapped again for a named signature (`clips` in, `logits` and `probabilities` out),
    # and saved as a SavedModel without DeformConv3D's custom gradient: converted directly,
    # a model with one loses its signature (the converter falls back to an older path).
    module.infer = tf.function(
        lambda clips: tf.nest.pack_sequence_as(traced.structured_outputs, frozen(clips)),
        input_signature=infer.input_signature)
    with tempfile.TemporaryDirectory(prefix="litert-") as folder:
        _quietly(tf.saved_model.save, module, folder,
                 signatures={"serving_default": module.infer},
                 options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        return _convert(converter, representative_clips)


def _convert(converter, representative_clips):
    """The flatbuffer of `converter`, builtin ops only (int8 when calibration clips are given)."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if representative_clips is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([clip[None]]
                                                    for clip in representative_clips)
    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001  (the converter raises ConverterError and others)
        raise UserError("LiteRT cannot convert this model with builtin ops only: "
                        + str(e).strip().splitlines()[-1]) from None


def convert_onnx(model, multi_label=False):
    """The ONNX model (bytes) of `model` through tf2onnx, any batch, outputs named
    `logits` and `probabilities`."""
    # tf2onnx loads in about two seconds and only this format needs it.
    import tf2onnx

    infer = _inference_function(export_copy(model), None, multi_label)
    proto, _ = _quietly(tf2onnx.convert.from_function, infer,
                        input_signature=infer.input_signature, opset=ONNX_OPSET)
    names = {"logits": None, "probabilities": None}
    for output in proto.graph.output:  # tf2onnx names them after the graph's Identity ops
        for name in names:
            if output.name.startswith(name) or output.name.split(":")[0].endswith(name):
                names[name] = output.name
    renamed = {old: new for new, old in names.items() if old and old != new}
    for node in proto.graph.node:
        node.output[:] = [renamed.get(value, value) for value in node.output]
        node.input[:] = [renamed.get(value, value) for value in node.input]
    for output in proto.graph.output:
        output.name = renamed.get(output.name, output.name)
    for graph_input in proto.graph.input:
        if graph_input.name.startswith("clips"):
            old = graph_input.name
            graph_input.name = "clips"
            for node in proto.graph.node:
                node.input[:] = ["clips" if value == old else value for value in node.input]
    return proto.SerializeToString()


def export_format(run, fmt, *, quantize=None, check_clips=256, calibration_clips=64,
                  num_threads=None):
    """Writes one format of a finished run under RUN_DIR/export/ and checks it.

    Args:
        run: a `training.run_dir.TrainedRun`.
        fmt: "saved_model", "litert" or "onnx".
        quantize: None, or "int8" (LiteRT only), calibrated on `calibration_clips` clips of
            the run's training split.
        check_clips: int, held-out clips (the run's test split, in order) the export is
            checked on.
        num_threads: int or None, the runtime's threads for the latency.

    Returns:
        (path written, check dict of `training.export_check.check_export`).

    Raises:
        UserError: an unknown format, int8 for a format other than LiteRT, a model LiteRT
            cannot convert with builtin ops, or data that is gone.
    """
    if fmt not in FORMATS:
        raise UserError(f"Expected --format one of {', '.join(FORMATS)}. Received: {fmt}")
    if quantize not in (None, "int8") or (quantize and fmt != "litert"):
        raise UserError("Expected --quantize int8 with --format litert only. Received: "
                        f"--format {fmt} --quantize {quantize}")
    if check_clips < 1:
        raise UserError(f"Expected --check-clips >= 1. Received: {check_clips}")
    model = load_run_model(run, policy="float32")  # exports compute in float32
    multi_label = is_multi_label(run.manifest)
    export_dir = export_path(run.run_dir)
    clips, labels = split_clips(run, run.info.get("test_split", "test"), check_clips)
    if fmt == "saved_model":
        path = export_saved_model(model, export_dir, run.class_names, multi_label)
    else:
        if fmt == "litert":
            calibration = None
            if quantize:
                calibration, _ = split_clips(run, run.info.get("train_split", "train"),
                                             calibration_clips)
            data = convert_litert(model, multi_label, calibration)
        else:
            data = convert_onnx(model, multi_label)
        path = os.path.join(export_dir, FILE_NAMES[(fmt, quantize)])
        os.makedirs(export_dir, exist_ok=True)
        with atomic_write(path) as temporary:
            with open(temporary, "wb") as f:
                f.write(data)
    write_preprocessing(run, model, export_dir)
    check = check_export(fmt, path, model, clips, labels, quantized=bool(quantize),
                         num_threads=num_threads)
    return path, check
