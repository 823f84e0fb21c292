"""A MoViNet stream model exported for frame-by-frame use with explicit states: a LiteRT (TFLite)
flatbuffer with builtin ops only, and a SavedModel with Model Garden's `init_states` and
`serving_default` (call) signatures.

Model Garden's own export path is where its users fail (AvgPool3D needing Flex ops, converter
crashes, hub/source mismatches: tensorflow/models #10730, #10347, #13559, #13611). Our stream
graph uses only ops LiteRT has as builtins: Conv2D / DepthwiseConv2D on frames folded into the
batch (models/movinet.py), AveragePool2D, cumulative sums, concatenations and reshapes; the
converter is told to refuse anything else (`TFLITE_BUILTINS` only), and `operator_names` lets
a test read back what the file holds.

The flatbuffer's one signature, `serving_default`, takes `image` (uint8 `(batch, 1, h, w, 3)`,
one frame) and every state of `models.movinet.init_state_shapes` by name (float32, with the
batch axis), and returns `logits` and the next states under the same names.

The SavedModel (`export_stream_saved_model`) is what Model Garden's export_saved_model.py
writes for a stream model: `init_states(input_shape)` (an int32 `[batch, frames, h, w, 3]`;
only the batch is used, the frame size is fixed) returns the zero states by name, and
`serving_default(image, **states)` returns `logits` and the next states; it loads with plain
TensorFlow (`tf.saved_model.load`), no project code.
"""

import numpy as np
import tensorflow as tf

from models.movinet import MovinetStream


def stream_to_litert(model, batch_size=1, frames_per_step=1):
    """Converts a `movinet_a<N>_stream` model's one-step graph to a LiteRT flatbuffer.

    Args:
        model: a `movinet_*_stream` `keras.Model` from `build_model` (its input size fixes the
            frame size and the state shapes).
        batch_size: int, the fixed batch of the signature.
        frames_per_step: int, frames per call (1: one frame in, one step).

    Returns:
        The flatbuffer, bytes.

    Raises:
        ValueError: not a stream MoViNet.
    """
    stream = MovinetStream(model)
    serve = _step_function(stream, batch_size, frames_per_step)
    # Without the tf.Module the weights stay resource variables (READ_VARIABLE ops that fail).
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], _frozen_variables(stream.step_model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def _step_function(stream, batch_size, frames_per_step):
    """One stream step, `(image, *states) -> {"logits", **states}`, as a tf.function whose
    signature fixes the batch and frames per call (None: any)."""
    names = list(stream.state_shapes)
    image = tf.TensorSpec((batch_size, frames_per_step, stream.height, stream.width, 3),
                          tf.uint8, name="image")
    states = [tf.TensorSpec((batch_size, *stream.state_shapes[n]), tf.float32, name=n)
              for n in names]

    @tf.function(input_signature=[image, *states])
    def step(image, *state_values):
        return stream.step_model({"image": image, **dict(zip(names, state_values))}, training=False)

    return step


def _frozen_variables(model):
    """A tf.Module tracking `model`'s variables: the converter freezes (and a SavedModel saves)
    the variables a tf.Module tracks, and Keras 3's own tracking is not the one they read."""
    holder = tf.Module()
    holder.model_variables = [variable.value for variable in model.variables]
    return holder


def export_stream_saved_model(model, directory):
    """Writes a SavedModel of a `movinet_a<N>_stream` model with `init_states` and
    `serving_default` signatures (see the module doc); any batch size, any frames per call.

    Args:
        model: a `movinet_*_stream` `keras.Model` from `build_model`.
        directory: str, where to write the SavedModel.

    Returns:
        `directory`.
    """
    stream = MovinetStream(model)
    names = list(stream.state_shapes)
    module = _frozen_variables(stream.step_model)
    call = _step_function(stream, None, None)

    @tf.function(input_signature=[tf.TensorSpec((5,), tf.int32, name="input_shape")])
    def init_states(input_shape):
        return {n: tf.zeros(tf.concat([input_shape[:1], stream.state_shapes[n]], axis=0)) for n in names}

    module.call, module.init_states = call, init_states
    tf.saved_model.save(module, str(directory), signatures={
        "serving_default": call.get_concrete_function(),
        "init_states": init_states.get_concrete_function()})
    return directory


def operator_names(flatbuffer):
    """The sorted distinct operator names in a LiteRT flatbuffer (`FlexXxx` would be a Flex op)."""
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})  # noqa: SLF001 (no public API)


class LiteRTStream:
    """Runs a `stream_to_litert` flatbuffer one step at a time: the same API as `MovinetStream`.

    Example (not a doctest: a conversion takes a minute; tests/test_movinet.py runs it):

        stream = LiteRTStream(stream_to_litert(build_model("movinet_a0_stream", 3, (2, 32, 32, 3))))
        logits, states = stream(np.zeros((1, 1, 32, 32, 3), "uint8"), stream.init_states())
        logits.shape  # (1, 3)
    """

    def __init__(self, flatbuffer, num_threads=1):
        self.interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        details = self.runner.get_input_details()
        self.state_specs = {name: (tuple(d["shape"]), d["dtype"]) for name, d in details.items() if name != "image"}

    def init_states(self):
        """Zero states (the signature's fixed batch)."""
        return {name: np.zeros(shape, dtype) for name, (shape, dtype) in self.state_specs.items()}

    def __call__(self, frames, states):
        """`(uint8 (batch, 1, h, w, 3), states) -> (logits, new states)` as numpy arrays."""
        outputs = self.runner(image=np.asarray(frames, np.uint8), **states)
        logits = outputs.pop("logits")
        return logits, outputs
