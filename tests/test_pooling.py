"""Tests for models/pooling.py: FactoredMaxPooling3D gives MaxPooling3D's numbers exactly, and
converts to LiteRT with builtin ops only (which MaxPooling3D does not)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.pooling import FactoredMaxPooling3D


@pytest.mark.parametrize("shape, pool_size, strides, padding", [
    ((2, 4, 8, 8, 3), (1, 2, 2), None, "same"),
    ((2, 4, 8, 8, 3), (2, 2, 2), None, "same"),
    ((1, 3, 5, 7, 2), (2, 2, 2), None, "same"),  # odd sizes: "same" pads the far side
    ((1, 5, 9, 6, 4), (3, 3, 3), (2, 2, 2), "same"),  # overlapping windows
    ((1, 5, 9, 6, 4), (3, 2, 3), (1, 2, 2), "valid"),
    ((1, 1, 1, 1, 8), (2, 2, 2), None, "same"),
])
def test_equals_max_pooling3d_exactly(shape, pool_size, strides, padding):
    x = np.random.default_rng(0).normal(size=shape).astype("float32") - 3.0  # all negative
    reference = keras.layers.MaxPooling3D(pool_size, strides, padding)
    layer = FactoredMaxPooling3D(pool_size, strides, padding)
    expected = reference(x).numpy()
    got = layer(x).numpy()
    np.testing.assert_array_equal(got, expected)
    assert layer.compute_output_shape(shape) == tuple(expected.shape)
    got_in_graph = tf.function(lambda t: layer(t))(tf.constant(x)).numpy()
    np.testing.assert_array_equal(got_in_graph, expected)


def test_from_max_pooling3d_keeps_name_and_geometry():
    original = keras.layers.MaxPooling3D((1, 2, 2), padding="same", name="pool2")
    layer = FactoredMaxPooling3D.from_max_pooling3d(original)
    assert (layer.name, layer.pool_size, layer.strides, layer.padding) == (
        "pool2", (1, 2, 2), (1, 2, 2), "same")
    assert FactoredMaxPooling3D(**layer.get_config()).pool_size == (1, 2, 2)


@pytest.mark.parametrize("kwargs, match", [
    ({"pool_size": (2, 2)}, "3 ints"),
    ({"pool_size": (2, 2, 2), "padding": "full"}, "padding"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FactoredMaxPooling3D(**kwargs)


def _convert(layer_class):
    inputs = keras.Input((4, 8, 8, 3), batch_size=1)
    model = keras.Model(inputs, layer_class((2, 2, 2), padding="same")(inputs))
    function = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec((1, 4, 8, 8, 3))])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def test_converts_to_litert_builtin_ops_where_max_pooling3d_needs_flex():
    from ai_edge_litert.interpreter import Interpreter

    with pytest.raises(Exception, match="MaxPool3D"):
        _convert(keras.layers.MaxPooling3D)
    interpreter = Interpreter(model_content=_convert(FactoredMaxPooling3D))
    interpreter.allocate_tensors()
    ops = {detail["op_name"] for detail in interpreter._get_ops_details()}
    assert "MAX_POOL_2D" in ops and not any("FLEX" in op or "CUSTOM" in op for op in ops)
    x = np.random.default_rng(1).normal(size=(1, 4, 8, 8, 3)).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_array_equal(got, keras.layers.MaxPooling3D((2, 2, 2), padding="same")(x))
