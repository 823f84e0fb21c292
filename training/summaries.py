"""TensorBoard summaries written with TensorFlow's core ops only.

TensorFlow 2.21 no longer installs the `tensorboard` package, and without it
`tf.summary.scalar/image/histogram` (and so `keras.callbacks.TensorBoard`) raise
`TBNotInstalledError`. The records TensorBoard reads are plain `tf.summary.write` calls with
plugin metadata, so this module writes exactly those: the same tags, tensors and plugin names
as tensorboard's own summary ops, readable by `tensorboard --logdir runs` (install
`tensorboard` to view them) and by `tf.compat.v1.train.summary_iterator`.

Call these inside `with writer.as_default():`.
"""

import time

import cv2
import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, message_factory, struct_pb2
from tensorflow.core.framework import summary_pb2

HPARAMS_PLUGIN = "hparams"
EXPERIMENT_TAG = "_hparams_/experiment"
SESSION_START_TAG = "_hparams_/session_start_info"
SESSION_END_TAG = "_hparams_/session_end_info"
STATUS_SUCCESS = 1
STATUS_FAILURE = 2
DATA_TYPE_STRING, DATA_TYPE_BOOL, DATA_TYPE_FLOAT64 = 1, 2, 3


def _metadata(plugin_name, data_class, content=b""):
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=plugin_name, content=content
        ),
        data_class=data_class,
    )


def scalar(name, value, step):
    """A scalar in the Scalars dashboard."""
    return tf.summary.write(
        name, tf.constant(float(value), tf.float32), step=step,
        metadata=_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR),
    )


def image(name, images, step):
    """uint8 images (N, H, W, 1 or 3) as PNGs in the Images dashboard."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    encoded = []
    for picture in images:
        if picture.shape[-1] == 3:
            picture = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)  # cv2 writes BGR
        ok, png = cv2.imencode(".png", picture)
        if not ok:
            raise ValueError(f"Could not PNG-encode an image of shape {picture.shape}")
        encoded.append(png.tobytes())
    height, width = images.shape[1:3]
    tensor = tf.constant([str(width).encode(), str(height).encode(), *encoded])
    return tf.summary.write(
        name, tensor, step=step,
        metadata=_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE),
    )


def histogram(name, values, step, buckets=30):
    """A histogram (left edge, right edge, count per bucket) in the Histograms dashboard."""
    values = np.asarray(values, np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        tensor = np.zeros((0, 3), np.float64)
    else:
        low, high = values.min(), values.max()
        if low == high:
            low, high = low - 0.5, high + 0.5
        counts, edges = np.histogram(values, bins=buckets, range=(low, high))
        tensor = np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
    return tf.summary.write(
        name, tf.constant(tensor, tf.float64), step=step,
        metadata=_metadata("histograms", summary_pb2.DATA_CLASS_TENSOR),
    )


# --- HParams ------------------------------------------------------------------------------
# The HParams dashboard reads `HParamsPluginData` protos (tensorboard/plugins/hparams/
# plugin_data.proto and api.proto). Without the tensorboard package we declare the few
# messages we need here, with the same package, names and field numbers.


def _hparams_messages():
    T = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="video_training/hparams_plugin_data.proto",
        package="tensorboard.hparams",
        syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
    )

    def message(name, fields, nested=()):
        proto = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name, oneof in fields:
            field = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
            if oneof is not None:
                field.oneof_index = oneof
        for nested_proto in nested:
            proto.nested_type.add().CopyFrom(nested_proto)
        return proto

    opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED
    message("Interval", [("min_value", 1, T.TYPE_DOUBLE, opt, None, None),
                         ("max_value", 2, T.TYPE_DOUBLE, opt, None, None)])
    info = message("HParamInfo", [
        ("name", 1, T.TYPE_STRING, opt, None, None),
        ("display_name", 2, T.TYPE_STRING, opt, None, None),
        ("description", 3, T.TYPE_STRING, opt, None, None),
        ("type", 4, T.TYPE_INT32, opt, None, None),  # enum DataType on the wire
        ("domain_discrete", 5, T.TYPE_MESSAGE, opt, ".google.protobuf.ListValue", 0),
        ("domain_interval", 6, T.TYPE_MESSAGE, opt, ".tensorboard.hparams.Interval", 0),
    ])
    info.oneof_decl.add(name="domain")
    message("MetricName", [("group", 1, T.TYPE_STRING, opt, None, None),
                           ("tag", 2, T.TYPE_STRING, opt, None, None)])
    message("MetricInfo", [
        ("name", 1, T.TYPE_MESSAGE, opt, ".tensorboard.hparams.MetricName", None),
        ("display_name", 3, T.TYPE_STRING, opt, None, None),
        ("description", 4, T.TYPE_STRING, opt, None, None),
        ("dataset_type", 5, T.TYPE_INT32, opt, None, None),
    ])
    message("Experiment", [
        ("name", 6, T.TYPE_STRING, opt, None, None),
        ("description", 1, T.TYPE_STRING, opt, None, None),
        ("user", 2, T.TYPE_STRING, opt, None, None),
        ("time_created_secs", 3, T.TYPE_DOUBLE, opt, None, None),
        ("hparam_infos", 4, T.TYPE_MESSAGE, rep, ".tensorboard.hparams.HParamInfo", None),
        ("metric_infos", 5, T.TYPE_MESSAGE, rep, ".tensorboard.hparams.MetricInfo", None),
    ])
    entry = descriptor_pb2.DescriptorProto(name="HparamsEntry")
    entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=T.TYPE_MESSAGE, label=opt,
                    type_name=".google.protobuf.Value")
    entry.options.map_entry = True
    message("SessionStartInfo", [
        ("hparams", 1, T.TYPE_MESSAGE, rep,
         ".tensorboard.hparams.SessionStartInfo.HparamsEntry", None),
        ("model_uri", 2, T.TYPE_STRING, opt, None, None),
        ("monitor_url", 3, T.TYPE_STRING, opt, None, None),
        ("group_name", 4, T.TYPE_STRING, opt, None, None),
        ("start_time_secs", 5, T.TYPE_DOUBLE, opt, None, None),
    ], nested=[entry])
    message("SessionEndInfo", [("status", 1, T.TYPE_INT32, opt, None, None),
                               ("end_time_secs", 2, T.TYPE_DOUBLE, opt, None, None)])
    plugin_data = message("HParamsPluginData", [
        ("version", 1, T.TYPE_INT32, opt, None, None),
        ("experiment", 2, T.TYPE_MESSAGE, opt, ".tensorboard.hparams.Experiment", 0),
        ("session_start_info", 3, T.TYPE_MESSAGE, opt,
         ".tensorboard.hparams.SessionStartInfo", 0),
        ("session_end_info", 4, T.TYPE_MESSAGE, opt, ".tensorboard.hparams.SessionEndInfo", 0),
    ])
    plugin_data.oneof_decl.add(name="data")

    from google.protobuf import descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorboard.hparams.{name}"))
        for name in ("HParamsPluginData", "Experiment", "SessionStartInfo", "SessionEndInfo")
    }


_MESSAGES = {}


def hparams_messages():
    """The HParams proto classes, built once on first use (nothing runs on import)."""
    if not _MESSAGES:
        _MESSAGES.update(_hparams_messages())
    return _MESSAGES


def _write_plugin_data(tag, plugin_data):
    return tf.summary.write(
        tag, tf.constant(0.0), step=0,
        metadata=_metadata(HPARAMS_PLUGIN, summary_pb2.DATA_CLASS_UNKNOWN,
                           plugin_data.SerializeToString()),
    )


def _set_value(value, python_value):
    """Fills a google.protobuf.Value in place (the message class belongs to our own pool)."""
    if isinstance(python_value, bool):
        value.bool_value = python_value
    elif isinstance(python_value, (int, float)):
        value.number_value = float(python_value)
    else:
        value.string_value = str(python_value)


def hparams_experiment(hparams, metrics, description=""):
    """The experiment: which hyperparameters and which metrics (group, tag) to show."""
    messages = hparams_messages()
    experiment = messages["Experiment"](description=description, time_created_secs=time.time())
    for name, python_value in hparams.items():
        kind = (DATA_TYPE_BOOL if isinstance(python_value, bool) else
                DATA_TYPE_FLOAT64 if isinstance(python_value, (int, float)) else DATA_TYPE_STRING)
        experiment.hparam_infos.add(name=name, type=kind)
    for group, tag in metrics:
        info = experiment.metric_infos.add()
        info.name.group = group
        info.name.tag = tag
    return _write_plugin_data(EXPERIMENT_TAG,
                              messages["HParamsPluginData"](version=0, experiment=experiment))


def hparams_session_start(hparams, model_uri=""):
    messages = hparams_messages()
    start = messages["SessionStartInfo"](model_uri=model_uri, start_time_secs=time.time())
    for name, python_value in hparams.items():
        _set_value(start.hparams[name], python_value)
    return _write_plugin_data(SESSION_START_TAG,
                              messages["HParamsPluginData"](version=0, session_start_info=start))


def hparams_session_end(success=True):
    messages = hparams_messages()
    end = messages["SessionEndInfo"](status=STATUS_SUCCESS if success else STATUS_FAILURE,
                                     end_time_secs=time.time())
    return _write_plugin_data(SESSION_END_TAG,
                              messages["HParamsPluginData"](version=0, session_end_info=end))


def parse_hparams_plugin_data(content):
    """Decodes the bytes of an hparams summary (tests and tools read the runs back with it)."""
    plugin_data = hparams_messages()["HParamsPluginData"]()
    plugin_data.ParseFromString(content)
    return plugin_data
