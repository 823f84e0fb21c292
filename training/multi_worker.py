"""Lets Keras 3's `model.fit` run under tf.distribute.MultiWorkerMirroredStrategy.

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

import logging

import keras
import tensorflow as tf
from keras import tree

logger = logging.getLogger(__name__)


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
    """
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
