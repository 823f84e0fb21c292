"""MoViNet A0-A2 (Kondratyuk et al., CVPR 2021), base and causal stream, parameter-exact to
TF Model Garden's `official/projects/movinet` so its `tf.train.Checkpoint` files load by rule
(models/movinet_checkpoint.py).

A block is Model Garden's mobile inverted bottleneck: a pointwise expansion, a depthwise
spatiotemporal convolution, a squeeze-excite, a pointwise projection scaled by a zero-initialised
scalar ("rezero") and a residual (through an average-pooled projection when the shape changes).

| variant | convolutions | squeeze-excite | activations |
| --- | --- | --- | --- |
| `movinet_aN` (base) | 3D, `same` padding | mean over frames and pixels | swish, sigmoid gate |
| `movinet_aN_stream` | (2+1)D: per-frame 2D, then a causal temporal depthwise | `[cumulative mean over frames so far, this frame's mean]` | hard swish, hard sigmoid gate |

The stream variants are causal: a frame's features depend on earlier frames only (the temporal
convolutions are padded in front, the squeeze-excite averages the frames seen so far), so one
frame at a time with carried states (`MovinetStream`) gives the logits of the whole clip. The
classifier averages over all frames (the head pool), then a 2048-unit swish layer (`pre_logits`)
and the `classifier`.

Layer names are `<unit>.<part>...` with units `stem`, `block<b>_layer<l>` (Model Garden's names)
and `head`; their parts follow Model Garden's attributes (`expansion`, `feature`, `se`,
`projection`, `skip`, `rezero`), which is what the checkpoint rule maps. Every convolution and
batch normalisation is its own top-level layer, so `freeze` finds them.
"""

import keras
import numpy as np
from keras import ops

# (stem filters, blocks, head project filters, pre-logits filters); a block is
# (base filters, ((expand filters, kernel (t, h, w), spatial stride), ...)). From Model Garden's
# movinet.py BLOCK_SPECS; every temporal stride is 1.
_K13, _K15, _K33, _K53 = (1, 3, 3), (1, 5, 5), (3, 3, 3), (5, 3, 3)
BLOCK_SPECS = {
    "a0": (8, (
        (8, ((24, _K15, 2),)),
        (32, ((80, _K33, 2), (80, _K33, 1), (80, _K33, 1))),
        (56, ((184, _K53, 2), (112, _K33, 1), (184, _K33, 1))),
        (56, ((184, _K53, 1), (184, _K33, 1), (184, _K33, 1), (184, _K33, 1))),
        (104, ((384, _K53, 2), (280, _K15, 1), (280, _K15, 1), (344, _K15, 1))),
    ), 480, 2048),
    "a1": (16, (
        (16, ((40, _K15, 2), (40, _K33, 1))),
        (40, ((96, _K33, 2), (120, _K33, 1), (96, _K33, 1), (96, _K33, 1))),
        (64, ((216, _K53, 2), (128, _K33, 1), (216, _K33, 1), (168, _K33, 1), (216, _K33, 1))),
        (64, ((216, _K53, 1), (216, _K33, 1), (216, _K33, 1), (128, _K33, 1), (128, _K15, 1),
              (216, _K33, 1))),
        (136, ((456, _K53, 2), (360, _K15, 1), (360, _K15, 1), (360, _K15, 1), (456, _K15, 1),
               (456, _K33, 1), (544, _K13, 1))),
    ), 600, 2048),
    "a2": (16, (
        (16, ((40, _K15, 2), (40, _K33, 1), (64, _K33, 1))),
        (40, ((96, _K33, 2), (120, _K33, 1), (96, _K33, 1), (96, _K33, 1), (120, _K33, 1))),
        (72, ((240, _K53, 2), (160, _K33, 1), (240, _K33, 1), (192, _K33, 1), (240, _K33, 1))),
        (72, ((240, _K53, 1), (240, _K33, 1), (240, _K33, 1), (240, _K33, 1), (144, _K15, 1),
              (240, _K33, 1))),
        (144, ((480, _K53, 2), (384, _K15, 1), (384, _K15, 1), (480, _K15, 1), (480, _K15, 1),
               (480, _K33, 1), (576, _K13, 1))),
    ), 640, 2048),
}
# build_model name -> (Model Garden model_id, stream).
VARIANTS = {
    "movinet_a0": ("a0", False), "movinet_a1": ("a1", False), "movinet_a2": ("a2", False),
    "movinet_a0_stream": ("a0", True), "movinet_a1_stream": ("a1", True),
    "movinet_a2_stream": ("a2", True),
}
NUM_STAGES = 5  # the five block groups; the stem is stage 0
# Model Garden's MoViNets take [0, 1] floats: ClipNormalization's mean 0, std 255.
MOVINET_MEAN = 0.0
MOVINET_STD = 255.0
SE_RATIO = 0.25
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
_ACTIVATIONS = ("swish", "sigmoid", "hard_swish", "hard_sigmoid")


def make_divisible(value, divisor=8):
    """Model Garden's channel rounding (nn_layers.make_divisible) for the squeeze-excite width."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return int(new_value)


def unit_names(model_id):
    """The units in order: `stem`, `block<b>_layer<l>`..., `head` (Model Garden's names)."""
    _, blocks, _, _ = BLOCK_SPECS[model_id]
    names = ["stem"]
    for b, (_, layers) in enumerate(blocks):
        names += [f"block{b}_layer{i}" for i in range(len(layers))]
    return names + ["head"]


@keras.saving.register_keras_serializable(package="models")
class MovinetActivation(keras.layers.Layer):
    """Model Garden's activations: `swish`, `sigmoid`, `hard_swish`, `hard_sigmoid`.

    `hard_sigmoid` is Model Garden's `relu6(x + 3) * 0.16667` (its constant, not 1/6), and
    `hard_swish` is `x * relu6(x + 3) / 6`: both use only builtin LiteRT ops.

    >>> np.asarray(MovinetActivation("hard_sigmoid")(np.array([-3.0, 0.0, 3.0]))).round(4).tolist()
    [0.0, 0.5, 1.0]
    """

    def __init__(self, kind, **kwargs):
        super().__init__(**kwargs)
        if kind not in _ACTIVATIONS:
            raise ValueError(f"`kind` must be one of {list(_ACTIVATIONS)}. Received: kind={kind!r}")
        self.kind = kind

    def call(self, x):
        if self.kind == "swish":
            return ops.silu(x)
        if self.kind == "sigmoid":
            return ops.sigmoid(x)
        if self.kind == "hard_swish":
            return x * ops.relu6(x + 3.0) * (1.0 / 6.0)
        return ops.relu6(x + 3.0) * 0.16667

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


def _frames_to_batch(x):
    shape = ops.shape(x)
    return ops.reshape(x, (-1, shape[2], shape[3], shape[4])), shape


def _batch_to_frames(y, shape):
    out = ops.shape(y)
    return ops.reshape(y, (shape[0], shape[1], out[1], out[2], out[3]))


@keras.saving.register_keras_serializable(package="models")
class FrameConv2D(keras.layers.Layer):
    """A 2D convolution of every frame, `same` padding: the spatial half of a (2+1)D conv.

    Frames are folded into the batch, so the op is a plain Conv2D / DepthwiseConv2D (fast on
    CPU, builtin in LiteRT), as in Model Garden's `MobileConv2D`.

    Args:
        filters: int, output channels (ignored when `depthwise`: the input's).
        kernel_size: int, square kernel side.
        strides: int, spatial stride.
        depthwise: bool, one filter per channel (kernel `(k, k, channels, 1)`).

    Input shape: `(batch, frames, height, width, channels)`.
    Output shape: `(batch, frames, ceil(height / strides), ceil(width / strides), filters)`.

    >>> FrameConv2D(4, 3, strides=2)(np.zeros((1, 2, 9, 9, 3), "float32")).shape
    (1, 2, 5, 5, 4)
    """

    def __init__(self, filters, kernel_size, strides=1, depthwise=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.depthwise = bool(depthwise)

    def build(self, input_shape):
        channels = input_shape[-1]
        k = self.kernel_size
        shape = (k, k, channels, 1) if self.depthwise else (k, k, channels, self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="he_normal")

    def call(self, x):
        frames, shape = _frames_to_batch(x)
        if self.depthwise:
            y = ops.depthwise_conv(frames, self.kernel, strides=self.strides, padding="same")
        else:
            y = ops.conv(frames, self.kernel, strides=self.strides, padding="same")
        return _batch_to_frames(y, shape)

    def compute_output_shape(self, input_shape):
        def out(n):
            return None if n is None else -(-n // self.strides)
        channels = input_shape[-1] if self.depthwise else self.filters
        return (*input_shape[:2], out(input_shape[2]), out(input_shape[3]), channels)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "depthwise": self.depthwise}


@keras.saving.register_keras_serializable(package="models")
class TemporalDepthwiseConv(keras.layers.Layer):
    """The temporal half of a (2+1)D depthwise conv: `valid` along frames, one filter a channel.

    It runs on frames already padded in front (`CausalPadding`) or preceded by the carried
    frames (`StreamBuffer`), so `frames - kernel_size + 1` frames come out. The kernel has Model
    Garden's layout `(kernel_size, 1, channels, 1)`; pixels are folded into one axis so the op
    is a DepthwiseConv2D.

    >>> TemporalDepthwiseConv(3)(np.zeros((1, 6, 4, 4, 2), "float32")).shape
    (1, 4, 4, 4, 2)
    """

    def __init__(self, kernel_size, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(self.kernel_size, 1, input_shape[-1], 1),
                                      initializer="he_normal")

    def call(self, x):
        shape = ops.shape(x)
        pixels = ops.reshape(x, (shape[0], shape[1], shape[2] * shape[3], shape[4]))
        y = ops.depthwise_conv(pixels, self.kernel, strides=1, padding="valid")
        return ops.reshape(y, (shape[0], -1, shape[2], shape[3], shape[4]))

    def compute_output_shape(self, input_shape):
        frames = None if input_shape[1] is None else input_shape[1] - self.kernel_size + 1
        return (input_shape[0], frames, *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="models")
class CausalPadding(keras.layers.Layer):
    """Puts `size` zero frames in front: the causal padding of a whole clip (no states).

    >>> CausalPadding(2)(np.ones((1, 3, 2, 2, 1), "float32")).shape
    (1, 5, 2, 2, 1)
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, x):
        # Concatenate zeros rather than pad: Model Garden's choice too, LiteRT-friendly.
        zeros = ops.zeros_like(x[:, :1])
        return ops.concatenate([zeros] * self.size + [x], axis=1)

    def compute_output_shape(self, input_shape):
        frames = None if input_shape[1] is None else input_shape[1] + self.size
        return (input_shape[0], frames, *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="models")
class StreamBuffer(keras.layers.Layer):
    """`[frames, buffer] -> [buffer + frames, the last size of them]`: a carried causal padding."""

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, inputs):
        x, buffer = inputs
        full = ops.concatenate([buffer, x], axis=1)
        return [full, full[:, -self.size:]]

    def compute_output_shape(self, input_shape):
        x, buffer = input_shape
        frames = None if x[1] is None else x[1] + self.size
        return [(x[0], frames, *x[2:]), tuple(buffer)]

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="models")
class SpatialMean(keras.layers.Layer):
    """Mean over height and width, kept: `(b, t, h, w, c) -> (b, t, 1, 1, c)`."""

    def call(self, x):
        return ops.mean(x, axis=(2, 3), keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:2], 1, 1, input_shape[-1])


@keras.saving.register_keras_serializable(package="models")
class CumulativeMean(keras.layers.Layer):
    """The causal squeeze-excite pool: at frame t, the mean of frames 0..t (Model Garden's
    `GlobalAveragePool3D(causal=True)`).

    Called on `[x]` (a whole clip) or `[x, running_sum, frame_count]` (a stream step), where
    `x` is `(b, t, 1, 1, c)` per-frame means, `running_sum` `(b, 1, 1, 1, c)` the sum of the
    frames before, `frame_count` `(b, 1)` their number; a stream step returns
    `[means, new_running_sum, new_frame_count]`.

    >>> means = CumulativeMean()([np.array([1.0, 3.0, 5.0], "float32").reshape(1, 3, 1, 1, 1)])
    >>> np.asarray(means)[0, :, 0, 0, 0].tolist()
    [1.0, 2.0, 3.0]
    """

    def call(self, inputs):
        x = inputs[0]
        sums = ops.cumsum(x, axis=1)
        frames = ops.shape(x)[1]
        positions = ops.cast(ops.arange(frames) + 1, x.dtype)
        if len(inputs) == 1:
            return sums / ops.reshape(positions, (1, -1, 1, 1, 1))
        running_sum, frame_count = inputs[1], inputs[2]
        sums = sums + running_sum
        divisors = ops.reshape(positions, (1, -1, 1, 1, 1)) + ops.reshape(frame_count, (-1, 1, 1, 1, 1))
        return [sums / divisors, sums[:, -1:], frame_count + ops.cast(frames, x.dtype)]

    def compute_output_shape(self, input_shape):
        if len(input_shape) == 1:
            return tuple(input_shape[0])
        return [tuple(input_shape[0]), tuple(input_shape[1]), tuple(input_shape[2])]


@keras.saving.register_keras_serializable(package="models")
class AccumulatingMean(keras.layers.Layer):
    """The head pool: the mean over every frame and pixel seen, `(b, t, h, w, c) -> (b, c)`.

    Called on `[x]` (a whole clip) or `[x, running_sum, frame_count]` (a stream step:
    `running_sum` `(b, c)` is the sum of the earlier frames' pixel means, `frame_count` `(b, 1)`
    their number), returning `[mean, new_running_sum, new_frame_count]` for a step. Model
    Garden's `GlobalAveragePool3D(causal=False)` with its buffer.
    """

    def call(self, inputs):
        x = inputs[0]
        sums = ops.sum(ops.mean(x, axis=(2, 3)), axis=1)
        frames = ops.cast(ops.shape(x)[1], x.dtype)
        if len(inputs) == 1:
            return sums / frames
        running_sum, frame_count = inputs[1], inputs[2]
        sums = sums + running_sum
        frame_count = frame_count + frames
        return [sums / frame_count, sums, frame_count]

    def compute_output_shape(self, input_shape):
        pooled = (input_shape[0][0], input_shape[0][-1])
        if len(input_shape) == 1:
            return pooled
        return [pooled, tuple(input_shape[1]), tuple(input_shape[2])]


@keras.saving.register_keras_serializable(package="models")
class FrameAveragePooling(keras.layers.Layer):
    """3x3 average pooling of every frame, stride 2, `same` (padding not counted): the skip path
    of a downsampling block (AveragePooling2D on folded frames, LiteRT-builtin)."""

    def call(self, x):
        frames, shape = _frames_to_batch(x)
        y = ops.average_pool(frames, pool_size=3, strides=2, padding="same")
        return _batch_to_frames(y, shape)

    def compute_output_shape(self, input_shape):
        def out(n):
            return None if n is None else -(-n // 2)
        return (*input_shape[:2], out(input_shape[2]), out(input_shape[3]), input_shape[-1])


@keras.saving.register_keras_serializable(package="models")
class Rezero(keras.layers.Layer):
    """Scales its input by one trainable scalar `scale`, initialised to zero (ReZero)."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="zeros")

    def call(self, x):
        return x * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="models")
class Gate(keras.layers.Layer):
    """`[x, g] -> x * g` with `g` broadcast over pixels (and frames): the squeeze-excite gate."""

    def call(self, inputs):
        return inputs[0] * inputs[1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


class _Graph:
    """Builds the MoViNet graph on a tensor, creating its layers or reusing a built model's.

    With `reuse` (a built MoViNet `keras.Model`), every weighted layer is taken from it by name,
    so a stream-step model shares the clip model's weights; with `states` (a dict of state
    tensors by Model Garden's state names), the temporal padding and the pools carry them and
    `self.new_states` collects their next values.
    """

    def __init__(self, stream, reuse=None, states=None):
        self.stream = stream
        self.reuse = reuse
        self.states = states
        self.new_states = {}
        self.activation = "hard_swish" if stream else "swish"
        self.gating = "hard_sigmoid" if stream else "sigmoid"

    def layer(self, name, factory):
        if self.reuse is not None and any(layer.name == name for layer in self.reuse.layers):
            return self.reuse.get_layer(name)
        return factory()

    def pointwise(self, x, name, filters, use_bias=False):
        # A 1x1(x1) convolution is a Dense on the channel axis.
        return self.layer(name, lambda: keras.layers.Dense(filters, use_bias=use_bias, name=name))(x)

    def bn_act(self, x, prefix, suffix="", activation=True):
        name = f"{prefix}.bn{suffix}"
        x = self.layer(name, lambda: keras.layers.BatchNormalization(
            epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name))(x)
        if activation:
            x = MovinetActivation(self.activation, name=f"{prefix}.act{suffix}")(x)
        return x

    def conv_bn(self, x, unit, filters, use_activation=True):
        x = self.pointwise(x, f"{unit}.conv", filters)
        return self.bn_act(x, unit, activation=use_activation)

    def stem(self, x, filters):
        if self.stream:
            x = self.layer("stem.conv", lambda: FrameConv2D(filters, 3, strides=2, name="stem.conv"))(x)
        else:
            x = self.layer("stem.conv", lambda: keras.layers.Conv3D(
                filters, (1, 3, 3), strides=(1, 2, 2), padding="same", use_bias=False, name="stem.conv"))(x)
        return self.bn_act(x, "stem")

    def feature(self, x, name, kernel, stride):
        t, k, _ = kernel
        channels = x.shape[-1]
        if not self.stream:
            x = self.layer(f"{name}.conv", lambda: keras.layers.Conv3D(
                channels, kernel, strides=(1, stride, stride), padding="same", groups=channels,
                use_bias=False, name=f"{name}.conv"))(x)
            return self.bn_act(x, name)
        x = self.layer(f"{name}.conv", lambda: FrameConv2D(channels, k, strides=stride, depthwise=True,
                                                           name=f"{name}.conv"))(x)
        x = self.bn_act(x, name)
        if t == 1:
            return x
        if self.states is None:
            x = CausalPadding(t - 1, name=f"{name}.pad")(x)
        else:
            state = f"state_{name.split('.')[0]}_stream_buffer"
            x, self.new_states[state] = StreamBuffer(t - 1, name=f"{name}.buffer")([x, self.states[state]])
        x = self.layer(f"{name}.conv_temporal", lambda: TemporalDepthwiseConv(t, name=f"{name}.conv_temporal"))(x)
        return self.bn_act(x, name, suffix="_temporal")

    def squeeze_excite(self, x, name, hidden):
        channels = x.shape[-1]
        if self.stream:
            per_frame = SpatialMean(name=f"{name}.spatial_pool")(x)
            if self.states is None:
                so_far = CumulativeMean(name=f"{name}.causal_pool")([per_frame])
            else:
                unit = name.split(".")[0]
                so_far, self.new_states[f"state_{unit}_pool_buffer"], self.new_states[
                    f"state_{unit}_pool_frame_count"] = CumulativeMean(name=f"{name}.causal_pool")(
                    [per_frame, self.states[f"state_{unit}_pool_buffer"],
                     self.states[f"state_{unit}_pool_frame_count"]])
            pooled = keras.layers.Concatenate(name=f"{name}.concat")([so_far, per_frame])
        else:
            pooled = keras.layers.GlobalAveragePooling3D(keepdims=True, name=f"{name}.pool")(x)
        s = self.pointwise(pooled, f"{name}.reduce", hidden, use_bias=True)
        s = MovinetActivation(self.activation, name=f"{name}.reduce_act")(s)
        s = self.pointwise(s, f"{name}.expand", channels, use_bias=True)
        s = MovinetActivation(self.gating, name=f"{name}.expand_act")(s)
        return Gate(name=f"{name}.gate")([x, s])

    def block(self, x, name, out_filters, expand_filters, kernel, stride):
        hidden = make_divisible(SE_RATIO * expand_filters * (2 if self.stream else 1))
        h = self.conv_bn(x, f"{name}.expansion", expand_filters)
        h = self.feature(h, f"{name}.feature", kernel, stride)
        h = self.squeeze_excite(h, f"{name}.se", hidden)
        h = self.conv_bn(h, f"{name}.projection", out_filters, use_activation=False)
        h = self.layer(f"{name}.rezero", lambda: Rezero(name=f"{name}.rezero"))(h)
        skip = x
        if stride > 1:
            skip = FrameAveragePooling(name=f"{name}.skip.pool")(skip)
        if stride > 1 or x.shape[-1] != out_filters:
            skip = self.conv_bn(skip, f"{name}.skip.projection", out_filters, use_activation=False)
        return keras.layers.Add(name=f"{name}.add")([h, skip])

    def head(self, x, project_filters):
        x = self.conv_bn(x, "head.project", project_filters)
        if self.states is None:
            return AccumulatingMean(name="head.pool")([x])
        pooled, self.new_states["state_head_pool_buffer"], self.new_states["state_head_pool_frame_count"] = (
            AccumulatingMean(name="head.pool")(
                [x, self.states["state_head_pool_buffer"], self.states["state_head_pool_frame_count"]]))
        return pooled


def movinet(x, num_classes, model_id, stream, dropout=0.2, reuse=None, states=None):
    """Builds MoViNet `model_id` on a normalised clip tensor `x` (values in [0, 1]).

    Args:
        x: `(batch, frames, height, width, 3)` float tensor.
        num_classes: int, logits.
        model_id: `"a0"`, `"a1"` or `"a2"`.
        stream: bool, the causal (2+1)D stream variant.
        dropout: float, dropout before the classifier.
        reuse: a built MoViNet model whose weighted layers to share (for `MovinetStream`).
        states: None, or the stream states by name (`init_state_shapes`): then the temporal
            paddings and pools carry them.

    Returns:
        The logits `(batch, num_classes)`, or with `states` `(logits, new_states)`.
    """
    stem_filters, blocks, project_filters, head_filters = BLOCK_SPECS[model_id]
    graph = _Graph(stream, reuse=reuse, states=states)
    x = graph.stem(x, stem_filters)
    for b, (base_filters, layers) in enumerate(blocks):
        for i, (expand_filters, kernel, stride) in enumerate(layers):
            x = graph.block(x, f"block{b}_layer{i}", base_filters, expand_filters, kernel, stride)
    x = graph.head(x, project_filters)
    x = graph.layer("pre_logits", lambda: keras.layers.Dense(head_filters, activation="swish",
                                                            name="pre_logits"))(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    logits = graph.layer("classifier", lambda: keras.layers.Dense(num_classes, name="classifier"))(x)
    return logits if states is None else (logits, graph.new_states)


def _builder(model_id, stream):
    def build(x, num_classes, dropout=0.2):
        return movinet(x, num_classes, model_id, stream, dropout=dropout)
    build.__name__ = f"movinet_{model_id}{'_stream' if stream else ''}"
    build.__doc__ = f"MoViNet-{model_id.upper()}{'-Stream' if stream else ''}: see `movinet`."
    return build


movinet_a0 = _builder("a0", False)
movinet_a1 = _builder("a1", False)
movinet_a2 = _builder("a2", False)
movinet_a0_stream = _builder("a0", True)
movinet_a1_stream = _builder("a1", True)
movinet_a2_stream = _builder("a2", True)


def init_state_shapes(model_id, height, width):
    """The stream states of one clip (no batch axis), by Model Garden's state names.

    `state_<unit>_stream_buffer` `(kernel frames - 1, h, w, channels)`: the last frames before a
    temporal convolution; `state_<unit>_pool_buffer` `(1, 1, 1, channels)` and
    `state_<unit>_pool_frame_count` `(1,)`: the running sum and count of a squeeze-excite's
    causal pool; `state_head_pool_buffer` `(channels,)`, `state_head_pool_frame_count` `(1,)`.
    Counts are float32 (Model Garden's are int32), so every state is one float tensor.
    """
    stem_filters, blocks, project_filters, _ = BLOCK_SPECS[model_id]
    h, w = -(-height // 2), -(-width // 2)
    shapes = {}
    for b, (_, layers) in enumerate(blocks):
        for i, (expand_filters, kernel, stride) in enumerate(layers):
            unit = f"block{b}_layer{i}"
            if stride > 1:  # the spatial conv comes before the buffer in (2+1)D
                h, w = -(-h // stride), -(-w // stride)
            if kernel[0] > 1:
                shapes[f"state_{unit}_stream_buffer"] = (kernel[0] - 1, h, w, expand_filters)
            shapes[f"state_{unit}_pool_buffer"] = (1, 1, 1, expand_filters)
            shapes[f"state_{unit}_pool_frame_count"] = (1,)
    shapes["state_head_pool_buffer"] = (project_filters,)
    shapes["state_head_pool_frame_count"] = (1,)
    return shapes


class MovinetStream:
    """Runs a `movinet_*_stream` model a few frames (normally one) at a time with its states.

    Args:
        model: a `movinet_a<N>_stream` model from `build_model` (any weights; also reloaded
            from `.keras`). The step model shares its layers, so later weight changes show.

    Attributes:
        step_model: a `keras.Model` with inputs `{"image": uint8 (batch, frames, h, w, 3),
            **states}` and outputs `{"logits": ..., **states}` (for export).

    Example:

    >>> from models import build_model
    >>> model = build_model("movinet_a0_stream", 5, (4, 32, 32, 3))
    >>> stream = MovinetStream(model)
    >>> states = stream.init_states(batch_size=1)
    >>> logits, states = stream(np.zeros((1, 1, 32, 32, 3), "uint8"), states)
    >>> logits.shape
    (1, 5)
    """

    def __init__(self, model):
        if model.name not in VARIANTS or not VARIANTS[model.name][1]:
            raise ValueError("MovinetStream needs a movinet_a<N>_stream model. "
                             f"Received: model.name={model.name!r}")
        self.model_id = VARIANTS[model.name][0]
        _, self.height, self.width, bands = model.input_shape[1:]
        self.state_shapes = init_state_shapes(self.model_id, self.height, self.width)
        image = keras.Input(shape=(None, self.height, self.width, bands), dtype="uint8", name="image")
        states = {name: keras.Input(shape=shape, name=name) for name, shape in self.state_shapes.items()}
        x = model.get_layer("normalize")(image)
        classes = model.get_layer("classifier").units
        logits, new_states = movinet(x, classes, self.model_id, True, reuse=model, states=states)
        self.step_model = keras.Model({"image": image, **states}, {"logits": logits, **new_states},
                                      name=f"{model.name}_step")

    def init_states(self, batch_size=1):
        """Zero states for the first frame: `{name: float32 array (batch_size, *shape)}`."""
        return {name: np.zeros((batch_size, *shape), "float32") for name, shape in self.state_shapes.items()}

    def __call__(self, frames, states):
        """`(uint8 (batch, frames, h, w, 3), states) -> (logits (batch, classes), new states)`,
        numpy arrays."""
        inputs = {"image": np.asarray(frames), **{k: np.asarray(v) for k, v in states.items()}}
        # predict_on_batch runs the compiled step (a traced function), not layer by layer eagerly.
        outputs = self.step_model.predict_on_batch(inputs)
        logits = outputs.pop("logits")
        return logits, outputs
