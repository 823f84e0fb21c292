"""Distribution: this process's role in a cluster, the tf.distribute strategy, how the workers
share the input, and the patch that lets Keras 3's fit run under MultiWorkerMirroredStrategy.

Roles. `read_worker_role` parses the TF_CONFIG environment variable, TensorFlow's own
format, e.g. for worker 1 of 2:
`{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 1}}`.
The chief is task "chief" if the cluster has one, otherwise worker 0 (TensorFlow's rule).
It runs no TensorFlow op, so train.py can decide where a worker writes before the strategy
configures the eager context (`make_strategy` must come before any other op).

Sharding. `split_input_between_workers` gives each worker its own shard files when there are
enough, and otherwise lets tf.distribute shard by element.

The multi-worker patch (`adapt_model_for_multi_worker`).

Keras 3.15.1's TensorFlow trainer fails under that strategy even for a one-Dense model
(keras-team/keras#20585, tensorflow/tensorflow#72388), in two places of
keras/src/backend/tensorflow/trainer.py:

1. `_maybe_symbolic_build` takes the first distributed batch and calls
   `strategy.reduce("MEAN", batch, axis=None)` on it eagerly, which cannot convert the
   `PerReplica` values ("ValueError: ... PerReplica"). The batch only serves to build the
   model, metrics and optimizer from its shapes, so one replica's part of it does as well.
2. After each step, `reduce_per_replica(logs, strategy, "auto")` calls
   `strategy.reduce("MEAN", value, axis=0)` on every log value; a step's logs are scalars
   ("Invalid reduction dimension 0 for input with 0 dimensions"). Returned with shape [1],
   each replica's value is one row, and the MEAN over axis 0 is the mean over replicas: a
   scalar again, as Keras's callbacks expect.

A third gap is not an error but a silent divergence: Keras 3 creates BatchNormalization's
moving mean and variance with aggregation "none", so each replica updates its own copy from
its own batches and the workers end with different models (one machine with one CPU has a
single replica and never sees it). After each step, the adapted train step replaces every
non-trainable floating-point weight with its mean over the replicas: the moving averages are
linear in the batch statistics, so this equals averaging the replicas' statistics at each
update (tf.keras 2's "mean" aggregation for these weights), and all workers keep one model.

A fourth: validation is split between workers by element, so when the last global batch
holds fewer clips than there are replicas, some replica gets an empty batch, and TensorFlow
2.21's CPU Conv3D returns its input's shape for a batch of 0 (the next op then fails). The
adapted test step skips the forward pass for an empty batch, which adds nothing to the
metrics anyway.

`adapt_model_for_multi_worker` makes these four changes on ONE compiled model instance, by instance
attributes only: the class is untouched, so model.keras saves and loads as usual, and every
other strategy keeps Keras's own code. Gradients are not touched: Keras already scales each
replica's loss by 1 / num_replicas_in_sync and sums the gradients across replicas. The
epoch logs are unaffected too: Keras reads them from the metrics' synchronised variables.
"""

import dataclasses
import json
import logging
import time

import keras
import tensorflow as tf
from keras import tree

from core import storage
from core.errors import UserError
from data_prep.shards import MANIFEST_NAME
from training.keras_version import require_supported_keras

logger = logging.getLogger(__name__)


# --- roles --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    task_type: str
    task_index: int
    num_workers: int  # every task that trains: chief plus workers
    is_chief: bool
    input_pipeline_id: int = 0  # 0..num_workers-1: the chief first, then the workers


    @property
    def name(self):
        return f"{self.task_type}:{self.task_index}"


def read_worker_role(tf_config):
    """Parses the TF_CONFIG string (None if unset) into a WorkerRole.

    Raises:
        UserError: TF_CONFIG missing, not JSON, or naming a task outside its cluster.
    """
    example = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not tf_config:
        raise UserError("distribute.strategy: multi_worker expects the TF_CONFIG environment "
                        f"variable to describe the cluster, e.g. TF_CONFIG='{example}'. "
                        "Received: TF_CONFIG unset")
    try:
        parsed = json.loads(tf_config)
        cluster, task = parsed["cluster"], parsed["task"]
        task_type, task_index = task["type"], int(task["index"])
        trainers = {kind: list(cluster.get(kind, [])) for kind in ("chief", "worker")}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"TF_CONFIG expects JSON like {example}. Received: "
                        f"TF_CONFIG={tf_config!r}") from None
    if len(trainers["chief"]) > 1 or not any(trainers.values()):
        raise UserError("TF_CONFIG expects a cluster with at most one chief and at least one "
                        f"worker address. Received: TF_CONFIG={tf_config!r}")
    if task_type not in trainers or not 0 <= task_index < len(trainers[task_type]):
        raise UserError("TF_CONFIG's task expects a type (chief or worker) and an index inside "
                        f"the cluster's list. Received: TF_CONFIG={tf_config!r}")
    is_chief = task_type == "chief" or (not trainers["chief"] and task_index == 0)
    pipeline_id = task_index + (len(trainers["chief"]) if task_type == "worker" else 0)
    return WorkerRole(task_type, task_index, len(trainers["chief"]) + len(trainers["worker"]),
                      is_chief, pipeline_id)


# --- strategy and input sharding ----------------------------------------------------------


def make_strategy(distribute):
    """The tf.distribute strategy; multi_worker reads its cluster from TF_CONFIG.

    Call it before any other TensorFlow op: MultiWorkerMirroredStrategy configures the
    collective ops of the eager context, which is fixed once the context starts.
    """
    if distribute.strategy == "none":
        return tf.distribute.get_strategy()
    if distribute.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MultiWorkerMirroredStrategy()


def wait_for_manifest(prepared_dir, *, timeout_seconds, poll_seconds=2.0):
    """A non-chief worker waits until the chief has prepared data.prepared_dir.

    Raises:
        UserError: no manifest.json appeared within `timeout_seconds`.
    """
    path = storage.join(prepared_dir, MANIFEST_NAME)
    deadline = time.monotonic() + timeout_seconds
    next_log = time.monotonic()
    while not storage.exists(path):
        if time.monotonic() > deadline:
            raise UserError(
                f"{path} did not appear within {timeout_seconds:.0f} s: the chief prepares the "
                "data, so data.prepared_dir must be on a shared filesystem or prepared on this "
                f"machine beforehand. Received: data.prepared_dir={prepared_dir}")
        if time.monotonic() >= next_log:
            logger.info("waiting for the chief to prepare %s", prepared_dir)
            next_log = time.monotonic() + 60
        time.sleep(poll_seconds)


def data_sharding():
    """tf.data.Options: tf.distribute shards this dataset by element."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def split_input_between_workers(num_shard_files, worker_role):
    """How the workers share the training input: (num_input_pipelines, input_pipeline_id,
    tf.data.Options for tf.distribute).

    By file when every worker gets at least one shard file: each worker's pipeline reads its
    own files (sharded explicitly; tf.distribute's FILE auto-sharding cannot see through the
    pipeline's zip with its random seeds), and tf.distribute is told not to shard again.
    Otherwise by element: every worker reads every file and keeps 1/N of the elements.
    """
    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy
    num_workers = worker_role.num_workers
    if num_shard_files >= num_workers:
        logger.info("sharding the training input by file: %d shard files over %d workers",
                    num_shard_files, num_workers)
        options.experimental_distribute.auto_shard_policy = policy.OFF
        return num_workers, worker_role.input_pipeline_id, options
    logger.warning("%d shard files for %d workers: sharding by element (DATA) instead of "
                   "by file; every worker reads every file", num_shard_files, num_workers)
    options.experimental_distribute.auto_shard_policy = policy.DATA
    return 1, 0, options


# --- Keras 3 fit under MultiWorkerMirroredStrategy ------------------------------------------


def _one_replica(value, strategy):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _as_rows(logs):
    """Every log value reshaped to [1], so Keras's reduce over axis 0 averages replicas."""
    return tree.map_structure(lambda value: tf.reshape(value, [1]), logs)


def adapt_model_for_multi_worker(model, strategy):
    """Patches `model` (compiled under `strategy`) so that `fit`/`evaluate` run.

    Args:
        model: a compiled keras.Model whose variables were created in `strategy.scope()`.
        strategy: the tf.distribute.MultiWorkerMirroredStrategy.

    Returns:
        `model`, changed in place.

    Raises:
        UserError: the installed Keras is not the version whose private methods this patches.
    """
    require_supported_keras("multi-worker training")
    keras_train_step = model.train_step
    keras_test_step = model.test_step

    def maybe_symbolic_build(iterator=None, data_batch=None):
        # As Keras's own, minus the eager reduce of the batch (see the module docstring).
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(lambda v: _one_replica(v, strategy),
                                                next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def train_step(data):
        logs = keras_train_step(data)
        # Built by now (fit builds the model before tracing the step).
        moving = [w for w in model.non_trainable_weights if "float" in w.dtype]
        if moving:
            context = tf.distribute.get_replica_context()
            means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                       [tf.identity(w.value) for w in moving])
            for weight, mean in zip(moving, means):
                weight.assign(mean)
        return _as_rows(logs)

    def test_step(data):
        # An empty batch (see the module docstring) only reads the metrics.
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        logs = tf.cond(tf.shape(tree.flatten(x)[0])[0] > 0, lambda: keras_test_step(data),
                       model.get_metrics_result)
        return _as_rows(logs)

    model._maybe_symbolic_build = maybe_symbolic_build
    model.train_step = train_step
    model.test_step = test_step
    # Drop step functions traced before the patch, if any.
    model.train_function = model.test_function = None
    logger.info("multi_worker: model.fit adapted to MultiWorkerMirroredStrategy (per-step logs "
                "averaged over %d replicas; keras-team/keras#20585)",
                strategy.num_replicas_in_sync)
    return model
