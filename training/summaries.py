"""What a run reports: TensorBoard summaries, its HParams and test tables, curves.png.

Scalars, images and histograms are `tf.summary` calls (they work once the pinned
`tensorboard` package is installed); the HParams records come from
`tensorboard.plugins.hparams` (`summary_v2.hparams_config_pb`, `summary_v2.hparams_pb`,
`summary.session_end_pb`), written raw so that the experiment keeps each hyperparameter's
type and description and the session its model URI. `tensorboard --logdir runs` shows them;
`tf.compat.v1.train.summary_iterator` plus `parse_hparams_plugin_data` read them back.

Call the record functions inside `with writer.as_default():`. The tables below say what a
run reports: its config as HParams (`run_hparams`, `SHOWN_HPARAMS`), the metrics compared
across runs (`HPARAMS_METRICS`), and the test results of metrics.json and the log
(`TEST_RESULT_KEYS`, `TEST_HEADLINE`). `write_training_curves` draws RUN_DIR/curves.png.
"""

import json
import logging
import os
import time

import cv2
import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary as hparams_summary_v1
from tensorboard.plugins.hparams import summary_v2 as hparams_summary

from training import visuals
from training.run_dir import read_history
from training.schedules import schedule_from_config

logger = logging.getLogger(__name__)

EXPERIMENT_TAG = metadata.EXPERIMENT_TAG
SESSION_START_TAG = metadata.SESSION_START_INFO_TAG
SESSION_END_TAG = metadata.SESSION_END_INFO_TAG
STATUS_SUCCESS = api_pb2.STATUS_SUCCESS
STATUS_FAILURE = api_pb2.STATUS_FAILURE


def scalar(name, value, step):
    """A scalar in the Scalars dashboard."""
    return tf.summary.scalar(name, float(value), step=step)


def image(name, images, step):
    """uint8 images (N, H, W, 1 or 3), or one (H, W, 1 or 3), in the Images dashboard."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    return tf.summary.image(name, tf.constant(images, tf.uint8), step=step,
                            max_outputs=len(images))


def histogram(name, values, step, buckets=30):
    """A histogram of the finite `values` in the Histograms dashboard."""
    values = np.asarray(values, np.float64).ravel()
    return tf.summary.histogram(name, values[np.isfinite(values)], step=step, buckets=buckets)


def _write_summary_pb(summary_pb):
    return tf.summary.experimental.write_raw_pb(summary_pb.SerializeToString(), step=0)


def _edit_plugin_data(summary_pb, edit):
    """Applies `edit(HParamsPluginData)` to the plugin data of a one-value hparams summary."""
    value = summary_pb.value[0]
    plugin_data = parse_hparams_plugin_data(value.metadata.plugin_data.content)
    edit(plugin_data)
    value.metadata.plugin_data.content = plugin_data.SerializeToString()
    return summary_pb


def hparam_value(python_value):
    """How a config value shows in the HParams table: bools and floats as they are, integers
    as their decimal text (the table prints every number with 5 significant digits, so 16
    would read `16.000`), anything else as its text."""
    if isinstance(python_value, (bool, float)):
        return python_value
    return str(python_value)


def _data_type(shown_value):
    if isinstance(shown_value, bool):
        return api_pb2.DATA_TYPE_BOOL
    if isinstance(shown_value, float):
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def hparams_experiment(hparams, metrics, description="", shown=()):
    """The experiment: which hyperparameters and which metrics (group, tag) to show.

    Args:
        hparams: {config key: value}, declared in this order.
        metrics: [(group, tag)].
        shown: config keys the dashboard shows by default. It ticks the first five
            hyperparameters flagged `differs` (sorting those first), so `shown` are flagged
            and declared first, in the order given; the others stay a tick away.
    """
    shown = [name for name in shown if name in hparams]
    ordered = shown + [name for name in hparams if name not in shown]
    summary_pb = hparams_summary.hparams_config_pb(
        hparams=[hparams_summary.HParam(name) for name in ordered],
        metrics=[hparams_summary.Metric(tag, group=group or None) for group, tag in metrics],
        time_created_secs=time.time())

    def add_types_and_description(plugin_data):
        plugin_data.experiment.description = description
        for info in plugin_data.experiment.hparam_infos:
            info.type = _data_type(hparam_value(hparams[info.name]))
            info.differs = info.name in shown

    return _write_summary_pb(_edit_plugin_data(summary_pb, add_types_and_description))


def hparams_session_start(hparams, model_uri="", trial_name=None):
    """This run's hyperparameter values (see `hparam_value`); `trial_name` is the name the
    dashboard lists the session under (TensorBoard's default is a hash of the values)."""
    values = {name: hparam_value(value) for name, value in hparams.items()}
    summary_pb = hparams_summary.hparams_pb(values, trial_id=trial_name,
                                            start_time_secs=time.time())

    def add_model_uri(plugin_data):
        plugin_data.session_start_info.model_uri = model_uri

    return _write_summary_pb(_edit_plugin_data(summary_pb, add_model_uri))


def hparams_session_end(success=True):
    summary_pb = hparams_summary_v1.session_end_pb(
        STATUS_SUCCESS if success else STATUS_FAILURE, end_time_secs=time.time())
    return _write_summary_pb(summary_pb)


def parse_hparams_plugin_data(content):
    """Decodes the bytes of an hparams summary (tests and tools read the runs back with it)."""
    return plugin_data_pb2.HParamsPluginData.FromString(content)


# --- what a run reports ------------------------------------------------------------------


def run_hparams(config):
    """Scalars of the config for the HParams dashboard, under their config keys (model
    options one per key, other lists and dicts as text)."""
    flat = {}
    for section in ("data", "model", "augment", "train"):
        for key, value in vars(getattr(config, section)).items():
            if section == "data" and key in ("root", "split_dir", "lists", "classes_file",
                                             "prepared_dir", "workers", "synth"):
                continue
            if section == "model" and key == "weights" and value is None:
                value = "none"  # trained from scratch: a value to compare pretrained runs with
            if value is None:
                continue
            if section == "model" and key == "options":
                for option, option_value in sorted(value.items()):
                    flat[f"model.options.{option}"] = (
                        json.dumps(option_value, sort_keys=True)
                        if isinstance(option_value, (list, dict)) else option_value)
                continue
            if isinstance(value, (list, dict)):
                value = json.dumps(value, sort_keys=True)
            flat[f"{section}.{key}"] = value
    flat["distribute.strategy"] = config.distribute.strategy
    return flat


# What runs are compared on, shown by default (the dashboard ticks the first five; the rest,
# and every other config key, are a tick away); model options follow them.
SHOWN_HPARAMS = ("model.name", "train.learning_rate", "train.batch_size", "train.epochs",
                 "data.frames", "train.optimizer", "train.schedule", "train.warmup_epochs",
                 "data.size", "augment.crop_size", "model.weights")


def shown_hparams(hparams):
    """SHOWN_HPARAMS then the model options, those present in `hparams`."""
    options = [name for name in hparams if name.startswith("model.options.")]
    return [name for name in (*SHOWN_HPARAMS, *options) if name in hparams]


def trial_name(config, run_dir):
    """`<config name>/<run directory name>`, e.g. `demo/20260101-120000`."""
    return f"{config.name}/{os.path.basename(os.path.normpath(run_dir.path))}"


HPARAMS_METRICS = [("", "test/top1"), ("", "test/top5"), ("", "test/mean_class_accuracy"),
                   ("", "test/loss"), ("validation", "epoch_top1"), ("validation", "epoch_loss"),
                   ("train", "epoch_top1"), ("train", "epoch_loss")]
MULTI_LABEL_HPARAMS_METRICS = [
    ("", "test/mean_average_precision"), ("", "test/micro_f1"), ("", "test/macro_f1"),
    ("", "test/loss"), ("validation", "epoch_mean_average_precision"),
    ("validation", "epoch_loss"), ("train", "epoch_loss")]


# What a finished run reports, by label kind (key: multi-label or not): the metrics.json keys
# from the video-level results, and the headline (log name, key) pairs, also its test/ scalars.
TEST_RESULT_KEYS = {
    False: ("top1", "top5", "top5_k", "mean_class_accuracy", "loss", "clips", "videos",
            "clip_top1"),
    True: ("mean_average_precision", "micro_f1", "macro_f1", "threshold", "loss", "clips",
           "videos", "clip_mean_average_precision", "per_class_ap"),
}
TEST_HEADLINE = {
    False: (("top1", "top1"), ("top5", "top5"), ("mean class accuracy", "mean_class_accuracy"),
            ("loss", "loss")),
    True: (("mean average precision", "mean_average_precision"), ("micro F1", "micro_f1"),
           ("macro F1", "macro_f1"), ("loss", "loss")),
}


def start_hparams_session(config, run_dir, multi_label, precision):
    """The HParams experiment and this run's session (inside the run's own writer);
    `precision` is the Keras policy the run trains in (what `train.mixed_precision` chose)."""
    hparams = {**run_hparams(config), "train.precision_policy": precision}
    hparams_experiment(hparams, MULTI_LABEL_HPARAMS_METRICS if multi_label
                       else HPARAMS_METRICS,
                       description=f"{config.name}: {config.model.name}",
                       shown=shown_hparams(hparams))
    hparams_session_start(hparams, model_uri=run_dir.checkpoints,
                          trial_name=trial_name(config, run_dir))


def write_test_scalars(metrics, class_names, multi_label, step):
    """The headline test metrics as `test/<key>` (multi-label: per-class AP too), inside the
    run's own writer."""
    for _, key in TEST_HEADLINE[multi_label]:
        scalar(f"test/{key}", metrics[key], step=step)
    if multi_label:
        for name, value in zip(class_names, metrics["per_class_ap"]):
            if value is not None:
                scalar(f"test_per_class_ap/{name}", value, step=step)


def write_training_curves(run_dir, config, steps_per_epoch, points=400):
    """RUN_DIR/curves.png from history.csv, the rate drawn per step from the schedule (what
    the optimizer applied at each `optimizer.iterations`). A failure is only logged."""
    try:
        history = read_history(run_dir)
        if not history:
            return
        schedule = schedule_from_config(config.train, steps_per_epoch)
        total = config.train.epochs * steps_per_epoch
        steps = np.unique(np.linspace(0, total - 1, min(points, total)).round().astype(int))
        rates = keras.ops.convert_to_numpy(schedule(keras.ops.convert_to_tensor(steps, "int64")))
        image = visuals.training_curves_image(
            history, (steps / steps_per_epoch, rates),
            title=f"{config.name}: {config.model.name}, {run_dir.path}")
        if not cv2.imwrite(run_dir.curves, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {run_dir.curves}")
    except (OSError, ValueError, KeyError) as e:
        logger.warning("no curves.png: %s", e)
