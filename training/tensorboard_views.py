"""TensorBoard views: one small callback per view, chosen from the config in one factory.

Every view writes through `training.summaries` (core TensorFlow ops) into the layout
`keras.callbacks.TensorBoard` uses: `train/` and `validation/` runs with `epoch_*` scalars,
and the run itself (`""`) for the HParams session and the test metrics. `Writers` holds one
file writer per run and is shared by all views and the trainer.

Always written: the epoch scalars (`EpochScalars`), the learning rate per step
(`StepLearningRate`) and, for a multi-label run, the per-class average precision. The others
each have a `tensorboard.<key>` in the config, mapped to their builder in `VIEWS`. A new view
is one class here plus one entry in `VIEWS` and its key in `TensorBoardConfig`.
"""

import dataclasses
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from models.deform_conv3d import DeformConv3D
from training import input_pipeline, summaries, visuals
from training.callbacks import current_learning_rate
from training.keras_version import require_supported_keras

logger = logging.getLogger(__name__)


class Writers:
    """One `tf.summary` file writer per TensorBoard run: `""` (the run itself), `train`,
    `validation`; each made on first use under `log_dir` (RUN_DIR/tensorboard)."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self._writers = {}

    def __call__(self, run):
        if run not in self._writers:
            path = os.path.join(self.log_dir, run) if run else self.log_dir
            self._writers[run] = tf.summary.create_file_writer(path)
        return self._writers[run]

    def flush(self):
        for writer in self._writers.values():
            writer.flush()

    def close(self):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class View(keras.callbacks.Callback):
    """A view's common part: `begin(step)` once at the first epoch of each attempt (after
    BackupAndRestore restored the epoch count, so a resumed run's first step), `end(step,
    logs)` after each epoch (step = epochs done: 0 is the initial model), then a flush."""

    def __init__(self, writers):
        super().__init__()
        self.writers = writers
        self._started = False

    def begin(self, step):
        pass

    def end(self, step, logs):
        pass

    def on_train_begin(self, logs=None):
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._started = True
            self.begin(step=epoch)
            self.writers.flush()

    def on_epoch_end(self, epoch, logs=None):
        self.end(epoch + 1, logs or {})
        self.writers.flush()


class EpochScalars(View):
    """The epoch logs: `epoch_<metric>` in `train/` and `validation/`; learning_rate,
    epoch_seconds and clips_per_second (from `callbacks.EpochLog`) under their own names."""

    def end(self, step, logs):
        with self.writers("train").as_default():
            for key, value in logs.items():
                if key.startswith("val_") or not isinstance(value, (int, float)):
                    continue
                name = key if key in ("learning_rate", "epoch_seconds",
                                      "clips_per_second") else f"epoch_{key}"
                summaries.scalar(name, value, step)
        with self.writers("validation").as_default():
            for key, value in logs.items():
                if key.startswith("val_"):
                    summaries.scalar(f"epoch_{key[4:]}", value, step)


def learning_rate_every(steps_per_epoch, per_epoch=20):
    """Steps between `step_learning_rate` scalars: about `per_epoch` of them an epoch."""
    return max(1, steps_per_epoch // per_epoch)


class StepLearningRate(View):
    """`step_learning_rate` every `every` optimizer steps: the rate applied at step
    `optimizer.iterations` (so warmup shows), x axis in steps."""

    def __init__(self, writers, every):
        super().__init__(writers)
        self.every = every

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step % self.every == 0:
            with self.writers("train").as_default():
                summaries.scalar("step_learning_rate",
                                 current_learning_rate(self.model.optimizer), step)


class WeightHistograms(View):
    """A histogram of every weight after each epoch (`train/`)."""

    def end(self, step, logs):
        with self.writers("train").as_default():
            for weight in self.model.weights:
                summaries.histogram(weight.path, keras.ops.convert_to_numpy(weight), step)


class ValidationMetricView(View):
    """A view of a compiled metric that holds the validation pass at epoch end (fit
    evaluates last): `draw(step, logs)` after each epoch that validated (`validation/`)."""

    def __init__(self, writers, metric, class_names):
        super().__init__(writers)
        self.metric = metric
        self.class_names = list(class_names)

    def end(self, step, logs):
        if "val_loss" in logs:
            with self.writers("validation").as_default():
                self.draw(step, logs)


class ConfusionMatrix(ValidationMetricView):
    """The validation confusion matrix as an image, from the compiled MeanClassAccuracy."""

    def draw(self, step, logs):
        matrix = keras.ops.convert_to_numpy(self.metric.confusion)
        title = f"validation clips, epoch {step}, top-1 {logs.get('val_top1', 0):.4f}"
        summaries.image("confusion_matrix", visuals.confusion_matrix_image(
            matrix, self.class_names, title=title), step)


class PerClassAveragePrecision(ValidationMetricView):
    """`per_class_ap/<class>` scalars from the compiled MeanAveragePrecision of a
    multi-label run."""

    def draw(self, step, logs):
        for name, value in zip(self.class_names, self.metric.per_class()):
            if not np.isnan(value):  # a class without a positive clip has no AP
                summaries.scalar(f"per_class_ap/{name}", value, step)


class InputClips(View):
    """`input_clips/<split>`: clips of different videos as frame strips >= 96 px with their
    true class, at the first step; the validation ones again after each epoch with the
    model's prediction.

    Args:
        sample_clips: {split: (list of (F, H, W, band) clips, list of label ids)}.
        picture: dict, `frame_strip`'s false-colour keywords (`visuals.picture_options`).
    """

    def __init__(self, writers, sample_clips, class_names, picture=None):
        super().__init__(writers)
        self.sample_clips = sample_clips
        self.class_names = list(class_names)
        self.picture = picture or {}

    def begin(self, step):
        for split in self.sample_clips:
            self._write(split, step, with_predictions=False)

    def end(self, step, logs):
        if "validation" in self.sample_clips:
            self._write("validation", step, with_predictions=True)

    def _write(self, split, step, with_predictions):
        clips, labels = self.sample_clips[split]
        if not clips:
            return
        captions = [[f"true: {self.class_names[label]}"] for label in labels]
        if with_predictions:
            logits = self.model(np.stack(clips), training=False)
            probabilities = keras.ops.convert_to_numpy(
                keras.ops.softmax(keras.ops.cast(logits, "float32")))
            for caption, row in zip(captions, probabilities):
                caption.append(f"predicted: {self.class_names[int(row.argmax())]} "
                               f"({row.max():.2f})")
        images = [visuals.captioned(visuals.frame_strip(clip, columns=8, **self.picture),
                                    caption)
                  for clip, caption in zip(clips, captions)]
        with self.writers("train" if split == "train" else "validation").as_default():
            summaries.image(f"input_clips/{split}", visuals.pad_to_same_size(images), step=step)


class ModelGraph(View):
    """The model's forward graph (`train/`), once, at the start of a fresh run."""

    def begin(self, step):
        if step != 0:
            return
        spec = tf.TensorSpec((None, *self.model.input_shape[1:]), self.model.inputs[0].dtype)
        forward = tf.function(lambda clips: self.model(clips, training=False))
        with self.writers("train").as_default():
            tf.summary.graph(forward.get_concrete_function(spec).graph)


def _offset_feature_models(model):
    """(layer, model from the clip to that layer's input) for every DeformConv3D in `model`."""
    require_supported_keras("TensorBoard's deformable-offset views")
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, DeformConv3D):
            try:
                feature_model = keras.Model(model.inputs[0], layer.input)
            except (ValueError, AttributeError) as e:  # a layer inside a nested sub-model
                logger.warning("no offset view for %s: %s", layer.name, e)
                continue
            found.append((layer, feature_model))
    return found


class DeformOffsets(View):
    """Each DeformConv3D's offsets on one sample clip (`train/`), at step 0 and after each
    epoch: mean and max magnitude (scalars), the magnitudes (histogram), and the mean spatial
    offset per location drawn over a frame (`offsets/<layer>/field`).

    Args:
        sample: (1, F, H, W, band), the clip the offsets are computed on.
        picture: dict, the frame's false colour (`visuals.picture_options`).
    """

    def __init__(self, writers, sample, picture=None):
        super().__init__(writers)
        self.sample = sample
        self.picture = picture or {}
        self._views = None

    def begin(self, step):
        self._views = _offset_feature_models(self.model)
        if step == 0:
            self._write(step)

    def end(self, step, logs):
        self._write(step)

    def _write(self, step):
        for layer, feature_model in self._views or ():
            features = feature_model(self.sample, training=False)
            offsets, _ = layer.compute_offsets(features)
            offsets = keras.ops.convert_to_numpy(offsets).astype(np.float64)
            # [group][kernel point][(dt, dy, dx)] on the last axis.
            points = offsets.reshape(*offsets.shape[:-1], -1, 3)
            magnitude = np.sqrt((points ** 2).sum(axis=-1))
            time_index = points.shape[1] // 2
            frames = self.sample.shape[1]
            frame = self.sample[0, min(frames - 1, time_index * frames // points.shape[1])]
            with self.writers("train").as_default():
                summaries.scalar(f"offsets/{layer.name}/mean_magnitude", magnitude.mean(), step)
                summaries.scalar(f"offsets/{layer.name}/max_magnitude", magnitude.max(), step)
                summaries.histogram(f"offsets/{layer.name}/magnitude", magnitude, step)
                summaries.image(f"offsets/{layer.name}/field",
                                visuals.offset_field_image(frame, points[0, time_index],
                                                           **self.picture), step)


@dataclasses.dataclass
class ViewInputs:
    """What the views draw from (`gather_view_inputs`).

    Args:
        writers: Writers of RUN_DIR/tensorboard.
        class_names: list of str.
        drawn_metric: the compiled MeanClassAccuracy (single-label) or MeanAveragePrecision
            (multi-label) that holds the validation pass at epoch end, or None.
        multi_label: bool.
        sample_clips: {split: (clips, labels)} for `InputClips` ({} = none).
        offset_sample: (1, F, H, W, band) clip for `DeformOffsets`, or None.
        picture: dict, how clips are drawn (`visuals.picture_options`; {}: 8-bit RGB).
    """

    writers: Writers
    class_names: list
    drawn_metric: object = None
    multi_label: bool = False
    sample_clips: dict = dataclasses.field(default_factory=dict)
    offset_sample: np.ndarray | None = None
    picture: dict = dataclasses.field(default_factory=dict)


def gather_view_inputs(config, writers, class_names, *, drawn_metric, multi_label,
                       validation_data, clips_per_video, dataset_options, picture=None):
    """ViewInputs for a run: `tensorboard.clip_images` clips of each split (training ones
    augmented as the model sees them) and one validation clip for the offsets.

    Args:
        config: ExperimentConfig.
        validation_data: the run's batched validation dataset.
        clips_per_video: int, the manifest's (a video's clips are consecutive).
        dataset_options: dict, the keywords of the run's `input_pipeline.train_dataset`
            beyond split, batch size, shuffle and seed (clip shape, crop, augmentation).
        picture: dict or None, how the clips are drawn (`visuals.picture_options`).
    """
    count = config.tensorboard.clip_images
    sample_clips = {}
    if count:
        sample_clips = {
            "train": input_pipeline.sample_clips(input_pipeline.train_dataset(
                config.data.prepared_dir, config.data.train_split, batch_size=count,
                shuffle_buffer=1, seed=config.train.seed, **dataset_options),
                count, with_labels=True),
            # The first clip of each of `count` videos.
            "validation": input_pipeline.sample_clips(
                validation_data, count, every=clips_per_video, with_labels=True),
        }
    offset_sample = input_pipeline.sample_clips(validation_data, 1)
    return ViewInputs(writers, list(class_names), drawn_metric=drawn_metric,
                      multi_label=multi_label, sample_clips=sample_clips,
                      offset_sample=np.stack(offset_sample) if offset_sample else None,
                      picture=picture or {})


# `tensorboard.<key>` -> the view it turns on (None: nothing to draw for this run).
VIEWS = {
    "histograms": lambda inputs: WeightHistograms(inputs.writers),
    "confusion_matrix": lambda inputs: None if inputs.multi_label or inputs.drawn_metric is None
    else ConfusionMatrix(inputs.writers, inputs.drawn_metric, inputs.class_names),
    "clip_images": lambda inputs: InputClips(inputs.writers, inputs.sample_clips,
                                             inputs.class_names, inputs.picture),
    "graph": lambda inputs: ModelGraph(inputs.writers),
    "deform_offsets": lambda inputs: None if inputs.offset_sample is None
    else DeformOffsets(inputs.writers, inputs.offset_sample, inputs.picture),
}
# `tensorboard.<key>`s that say how the views draw rather than turn one on.
PICTURE_KEYS = ("rgb_bands",)


def tensorboard_callbacks(config, inputs, *, learning_rate_every=1):
    """The view callbacks a run's `tensorboard:` config asks for, in writing order.

    Args:
        config: TensorBoardConfig; a key that is true (or > 0) turns its `VIEWS` entry on.
        inputs: ViewInputs.
        learning_rate_every: int, steps between `step_learning_rate` scalars; 0 = none.

    Returns:
        list of keras callbacks.
    """
    views = [EpochScalars(inputs.writers)]
    if learning_rate_every:
        views.append(StepLearningRate(inputs.writers, learning_rate_every))
    if inputs.multi_label and inputs.drawn_metric is not None:
        views.append(PerClassAveragePrecision(inputs.writers, inputs.drawn_metric,
                                              inputs.class_names))
    for key, build in VIEWS.items():
        if getattr(config, key):
            view = build(inputs)
            if view is not None:
                views.append(view)
    return views
