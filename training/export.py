"""Export a trained model as a TensorFlow SavedModel that needs nothing of this project.

```
RUN_DIR/export/saved_model.pb, variables/   the traced model: no Python classes needed
RUN_DIR/export/assets/classes.txt            class names, one a line, line number = label id
```

Signatures:
- `serving_default(clips)`: uint8 clips `(None, F, H, W, band)` (H = W = the model's input
  size) -> `{"probabilities": float32 (None, num_classes)}`, the softmax of the logits (for a
  multi-label run, a sigmoid per class: independent probabilities).
  Normalisation is inside the model, so the clips are raw pixels.
- `class_names()`: `{"class_names": string (num_classes,)}`, read from the asset.

```python
loaded = tf.saved_model.load("RUN_DIR/export")
probabilities = loaded.signatures["serving_default"](clips=clips)["probabilities"]
names = loaded.signatures["class_names"]()["class_names"]
```

Custom layers (DeformConv3D, ClipNormalization) are traced into graphs, so plain
`tf.saved_model.load` works in a process that never imports `models`. Their hand-written
gradients are not saved (`experimental_custom_gradients=False`): the export is for inference.
"""

import logging
import os
import shutil
import tempfile

import tensorflow as tf

from core.atomic import atomic_write
from data_prep.shards import is_multi_label
from training.precision import model_with_policy
from training.scoring import load_run_model, output_activation

logger = logging.getLogger(__name__)

EXPORT_DIRNAME = "export"
CLASSES_ASSET = "classes.txt"


def export_path(run_dir):
    return os.path.join(run_dir.path, EXPORT_DIRNAME)


def _serving_module(model, classes_file, multi_label):
    input_shape = tuple(model.input_shape[1:])

    class VideoClassifier(tf.Module):
        def __init__(self):
            super().__init__(name="video_classifier")
            self.model = model
            self.classes_file = tf.saved_model.Asset(classes_file)

        @tf.function(input_signature=[tf.TensorSpec((None, *input_shape), tf.uint8,
                                                    name="clips")])
        def serving_default(self, clips):
            logits = self.model(clips, training=False)
            return {"probabilities": output_activation(logits, multi_label)}

        @tf.function(input_signature=[])
        def class_names(self):
            text = tf.strings.strip(tf.io.read_file(self.classes_file))
            return {"class_names": tf.strings.split(text, "\n")}

    return VideoClassifier()


def export_saved_model(model, export_dir, class_names, multi_label=False, policy="float32"):
    """Writes `model` as a SavedModel to `export_dir`, replacing any previous export whole.

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
            quieted = [tf.get_logger(), logging.getLogger("absl")]
            levels = [each.level for each in quieted]
            for each in quieted:
                each.setLevel(logging.WARNING)
            try:
                tf.saved_model.save(
                    module, saved,
                    signatures={"serving_default": module.serving_default,
                                "class_names": module.class_names},
                    options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
                )
            finally:
                for each, level in zip(quieted, levels):
                    each.setLevel(level)
            if os.path.exists(export_dir):  # an older export: replaced only once this one is whole
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
        return export_saved_model(model, target, class_names, multi_label)
    except Exception:  # noqa: BLE001  (any failure: the run itself has succeeded)
        logger.exception("export to %s failed; model.keras and metrics.json are kept. Retry "
                         "with: python evaluate.py --run-dir %s --export", target, run_dir.path)
        return None


def export_run(run):
    """Exports a finished run (a `training.run_dir.TrainedRun`) from its model.keras."""
    model = load_run_model(run)
    return export_saved_model(model, export_path(run.run_dir), run.class_names,
                              is_multi_label(run.manifest))
