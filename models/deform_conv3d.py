"""`DeformConv3D`: the deformable 3D convolution layer, a drop-in for `keras.layers.Conv3D`.

The layer predicts its own offsets (and mask) with a Conv3D branch and applies the op
`models.deform_conv3d_ops.deform_conv3d` (the sampling, its hand-written gradient and the
XLA kernels live there, apart from the layer, as Keras keeps ops apart from layers).
"""

import keras
from keras import activations, constraints, initializers, regularizers

from models.argument_validation import standardize_padding, standardize_triple
from models.deform_conv3d_ops import conv_output_shape, deform_conv3d


@keras.saving.register_keras_serializable(package="video_models")
class DeformConv3D(keras.layers.Layer):
    """Deformable 3D convolution layer, a drop-in for `keras.layers.Conv3D`.

    Each of the kd*kh*kw kernel points samples the input at its regular Conv3D place plus
    a learned fractional offset (dt, dy, dx), read by trilinear interpolation; the samples
    are then contracted with the kernel exactly as Conv3D does (see
    `models.deform_conv3d_ops.deform_conv3d` for the op's full semantics). The offsets,
    and with `modulated=True` a per-point mask (DCNv2), are predicted by the layer's own
    Conv3D branch (`offset_conv`) over the same input, with the same kernel size, strides,
    padding and dilation.

    Semantics (channels-last): for output position o and kernel point k (row-major over
    (kd, kh, kw)), the input is read at p = o * strides - pad_before + k * dilation_rate
    + (dt, dy, dx), per axis, with 'same' padding following TF's rule (pad_before =
    total // 2). Trilinear interpolation uses the corners floor(p) and floor(p) + 1; a
    corner outside the input contributes zero, so offsets far outside give zeros. Offset
    group g moves input channels [g*C/G, (g+1)*C/G). With a (1, k, k) kernel and dt = 0
    this is torchvision.ops.deform_conv2d on each frame.

    Initialisation: the offset branch starts with zero weights and bias, so a new layer
    computes exactly a plain Conv3D and `from_conv3d` keeps a trained Conv3D's output.
    For the same reason the mask is `2 * sigmoid(logits)`, in (0, 2), which starts at 1:
    DCNv2's plain sigmoid starts at 0.5 and would halve every activation of a converted
    network at creation (and a new layer would not be a drop-in for Conv3D).

    Args:
        filters: int, the number of output channels.
        kernel_size: int or tuple of 3 ints, (kd, kh, kw).
        strides: int or tuple of 3 ints. `strides > 1` is incompatible with
            `dilation_rate > 1`, as in Conv3D. Defaults to 1.
        padding: `"valid"` or `"same"` (TF's rule: pad_before = total // 2).
            Defaults to `"valid"`.
        dilation_rate: int or tuple of 3 ints. Defaults to 1.
        offset_groups: int, the number of channel groups that get their own offsets
            (G); must divide the input channels. Defaults to 1.
        modulated: bool, whether to predict and apply a mask per kernel point and group
            (DCNv2). Defaults to `False`.
        use_bias: bool, whether to add a bias. Defaults to `True`.
        activation: activation applied to the output, or `None`.
        kernel_initializer: initializer for the kernel. Defaults to `"glorot_uniform"`.
        bias_initializer: initializer for the bias. Defaults to `"zeros"`.
        kernel_regularizer: optional regularizer for the kernel.
        bias_regularizer: optional regularizer for the bias.
        activity_regularizer: optional regularizer for the output.
        kernel_constraint: optional constraint for the kernel.
        bias_constraint: optional constraint for the bias.

    Input shape:
        5D tensor `(batch_size, frames, height, width, channels)`.

    Output shape:
        5D tensor `(batch_size, new_frames, new_height, new_width, filters)`, the same as
        Conv3D's.

    Returns:
        `activation(deform_conv3d(inputs, offsets, kernel, mask) + bias)`.

    Raises:
        ValueError: for bad arguments, or when `offset_groups` does not divide the input
            channels.

    Example:

    >>> x = np.random.rand(2, 8, 16, 16, 4).astype("float32")
    >>> y = DeformConv3D(8, 3, padding="same", modulated=True)(x)
    >>> print(y.shape)
    (2, 8, 16, 16, 8)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        dilation_rate=1,
        offset_groups=1,
        modulated=False,
        use_bias=True,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(
                "Invalid value for argument `filters`. Expected a strictly positive "
                f"int. Received: filters={filters}"
            )
        if not isinstance(offset_groups, int) or offset_groups <= 0:
            raise ValueError(
                "Invalid value for argument `offset_groups`. Expected a strictly "
                f"positive int. Received: offset_groups={offset_groups}"
            )
        self.filters = filters
        self.kernel_size = standardize_triple(kernel_size, "kernel_size")
        self.strides = standardize_triple(strides, "strides")
        self.padding = standardize_padding(padding)
        self.dilation_rate = standardize_triple(dilation_rate, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides > 1` not supported in conjunction with `dilation_rate > 1`. "
                f"Received: strides={self.strides} and dilation_rate={self.dilation_rate}"
            )
        self.offset_groups = offset_groups
        self.modulated = bool(modulated)
        self.use_bias = use_bias
        self.activation = activations.get(activation)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.num_points = self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]
        self.input_spec = keras.layers.InputSpec(ndim=5)
        offset_channels = offset_groups * self.num_points * (4 if self.modulated else 3)
        # Zero weights and bias: a new layer samples the regular grid (and a mask of
        # 2 * sigmoid(0) = 1), so it starts as exactly a Conv3D.
        self.offset_conv = keras.layers.Conv3D(
            offset_channels,
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            kernel_initializer="zeros",
            bias_initializer="zeros",
            # Offsets are sampling positions: float32 under a bfloat16/float16 policy, whose
            # 8 significant bits (bfloat16) would move a sample at offset 5 by up to 1/64 pixel.
            dtype="float32" if self.dtype_policy.compute_dtype in ("bfloat16", "float16")
            else self.dtype_policy,
            name="offset_conv",
        )

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None or in_channels % self.offset_groups:
            raise ValueError(
                "The input channels must be known and divisible by `offset_groups`. "
                f"Received: offset_groups={self.offset_groups}, "
                f"input_shape={tuple(input_shape)}"
            )
        self.input_spec = keras.layers.InputSpec(ndim=5, axes={-1: in_channels})
        self.compute_output_shape(input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (in_channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        self.offset_conv.build(input_shape)

    def compute_offsets(self, inputs):
        """The offsets (and mask) this layer predicts for `inputs`.

        Returns:
            `(offsets, mask)`: offsets (B, D', H', W', G*K*3) in input pixels, ordered
            [group][kernel point][(dt, dy, dx)]; mask (B, D', H', W', G*K) in (0, 2), or
            `None` when the layer is not modulated.
        """
        predicted = self.offset_conv(inputs)
        split = self.offset_groups * self.num_points * 3
        offsets = predicted[..., :split]
        if not self.modulated:
            return offsets, None
        return offsets, 2.0 * keras.ops.sigmoid(predicted[..., split:])

    # The op's passes run under XLA. A copy traced for another runtime sets it False
    # (training.export for ONNX: tf2onnx cannot look inside an XLA-compiled function).
    jit_compile = True

    def call(self, inputs):
        offsets, mask = self.compute_offsets(inputs)
        outputs = deform_conv3d(
            inputs,
            offsets,
            self.kernel,
            mask=mask,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            jit_compile=self.jit_compile,
        )
        if self.use_bias:
            outputs = outputs + keras.ops.cast(self.bias, outputs.dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return conv_output_shape(input_shape, self.kernel_size, self.filters, self.strides,
                                 self.padding, self.dilation_rate)

    @classmethod
    def from_conv3d(cls, conv, offset_groups=1, modulated=False, **kwargs):
        """A DeformConv3D with a built Conv3D's weights: the same output at creation.

        Args:
            conv: a built `keras.layers.Conv3D`, channels-last, `groups=1`.
            offset_groups: int, see the constructor.
            modulated: bool, see the constructor.
            **kwargs: overrides of the constructor arguments taken from `conv` (e.g.
                `name`).

        Raises:
            ValueError: when `conv` is not a built channels-last Conv3D with groups=1.
        """
        if not isinstance(conv, keras.layers.Conv3D) or isinstance(conv, cls):
            raise ValueError(
                f"Expected a keras.layers.Conv3D. Received: conv={conv!r}"
            )
        config = conv.get_config()
        if not conv.built or config["groups"] != 1 or config["data_format"] != "channels_last":
            raise ValueError(
                "Expected a built channels-last Conv3D with groups=1. Received: "
                f"built={conv.built}, groups={config['groups']}, "
                f"data_format={config['data_format']}"
            )
        arguments = {
            key: config[key]
            for key in (
                "filters", "kernel_size", "strides", "padding", "dilation_rate",
                "use_bias", "activation", "kernel_initializer", "bias_initializer",
                "kernel_regularizer", "bias_regularizer", "activity_regularizer",
                "kernel_constraint", "bias_constraint", "dtype", "trainable",
            )
        }
        arguments.update(offset_groups=offset_groups, modulated=modulated)
        arguments.update(kwargs)
        layer = cls(**arguments)
        kernel = conv.kernel
        layer.build((None, None, None, None, kernel.shape[3]))
        layer.kernel.assign(kernel)
        if layer.use_bias:
            layer.bias.assign(conv.bias)
        return layer

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
                "offset_groups": self.offset_groups,
                "modulated": self.modulated,
                "use_bias": self.use_bias,
                "activation": activations.serialize(self.activation),
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": constraints.serialize(self.kernel_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint),
            }
        )
        return config
