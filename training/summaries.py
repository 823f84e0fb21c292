"""TensorBoard summaries, through TensorBoard's own API.

Scalars, images and histograms are `tf.summary` calls (they work once the pinned
`tensorboard` package is installed); the HParams records come from
`tensorboard.plugins.hparams` (`summary_v2.hparams_config_pb`, `summary_v2.hparams_pb`,
`summary.session_end_pb`), written raw so that the experiment keeps each hyperparameter's
type and description and the session its model URI. `tensorboard --logdir runs` shows them;
`tf.compat.v1.train.summary_iterator` plus `parse_hparams_plugin_data` read them back.

Call these inside `with writer.as_default():`.
"""

import time

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary as hparams_summary_v1
from tensorboard.plugins.hparams import summary_v2 as hparams_summary

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
