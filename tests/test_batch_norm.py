"""FusedBatchNormalization against Keras's BatchNormalization (the oracle)."""

import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.batch_norm import FusedBatchNormalization


def _pair(shape, **options):
    keras_layer = keras.layers.BatchNormalization(**options)
    fused = FusedBatchNormalization(**options)
    keras_layer.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(3)
    weights = [rng.normal(1.0, 0.2, shape[-1]), rng.normal(0.0, 0.2, shape[-1]),
               rng.normal(0.0, 0.5, shape[-1]), rng.uniform(0.5, 2.0, shape[-1])]
    keras_layer.set_weights(weights)
    fused.set_weights(weights)
    return keras_layer, fused


@pytest.mark.parametrize("shape", [(2, 3, 5, 5, 4), (3, 6, 6, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_outputs_and_gradients_equal_keras_batch_norm(shape, training):
    keras_layer, fused = _pair(shape, epsilon=1e-5, momentum=0.9)
    x = tf.constant(np.random.default_rng(4).normal(2.0, 3.0, shape), tf.float32)
    upstream = tf.constant(np.random.default_rng(5).normal(size=shape), tf.float32)
    results = []
    for layer in (keras_layer, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * upstream)
        results.append((y, *tape.gradient(loss, [x, layer.gamma, layer.beta])))
    for expected, got in zip(*results):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)


def test_moving_statistics_follow_pytorch_unbiased_variance():
    shape = (2, 3, 4, 4, 5)
    keras_layer, fused = _pair(shape, momentum=0.9)
    x = np.random.default_rng(6).normal(1.0, 2.0, shape).astype("float32")
    keras_layer(x, training=True)
    fused(x, training=True)
    np.testing.assert_allclose(fused.moving_mean.numpy(), keras_layer.moving_mean.numpy(),
                               rtol=1e-5, atol=1e-6)
    n = np.prod(shape[:-1])
    batch_biased = x.reshape(-1, shape[-1]).var(0)
    start = (keras_layer.moving_variance.numpy() - 0.1 * batch_biased) / 0.9
    np.testing.assert_allclose(fused.moving_variance.numpy(),
                               0.9 * start + 0.1 * batch_biased * n / (n - 1), rtol=1e-5)


def test_bfloat16_activations_keep_float32_statistics():
    shape = (2, 3, 4, 4, 5)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = FusedBatchNormalization()
        x = tf.constant(np.random.default_rng(7).normal(size=shape), tf.bfloat16)
        y = layer(x, training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert y.dtype == tf.bfloat16
    assert layer.moving_mean.dtype == "float32" and layer.gamma.dtype == "float32"
    normalised = tf.cast(y, tf.float32).numpy().reshape(-1, 5)
    np.testing.assert_allclose(normalised.mean(0), 0.0, atol=0.02)
    np.testing.assert_allclose(normalised.std(0), 1.0, atol=0.02)


def test_masked_or_other_axis_falls_back_to_keras():
    layer = FusedBatchNormalization(axis=1)
    x = np.random.default_rng(8).normal(size=(2, 3, 4, 4, 5)).astype("float32")
    reference = keras.layers.BatchNormalization(axis=1)
    np.testing.assert_allclose(layer(x, training=True), reference(x, training=True), atol=1e-5)


def test_saved_model_reloads_with_the_same_outputs(tmp_path):
    inputs = keras.Input((3, 4, 4, 2))
    model = keras.Model(inputs, FusedBatchNormalization(name="bn")(inputs))
    model.get_layer("bn").set_weights([np.full(2, 2.0), np.ones(2), np.zeros(2), np.full(2, 4.0)])
    model.save(tmp_path / "m.keras")
    importlib.import_module("models")  # registers the layer

    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(again.get_layer("bn"), FusedBatchNormalization)
    x = np.random.default_rng(9).normal(size=(2, 3, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(again(x), model(x), atol=1e-6)
