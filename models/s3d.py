"""`s3d`: torchvision's S3D (Xie et al. 2018, "Rethinking Spatiotemporal Feature Learning").

This follows torchvision's `torchvision/models/video/s3d.py` layer for layer: separable
convolutions (a 1xkxk then a kx1x1 convolution, each with batch norm and ReLU), the
separable Inception blocks, the max pools with their kernels, strides and symmetric
paddings (floor rounding: torchvision leaves `ceil_mode` off), batch norm with eps 1e-3 and
PyTorch momentum 0.001 (Keras 0.999), no convolution biases, the fixed (2, 7, 7) average
pool, dropout, a 1x1x1 convolution classifier with a bias, and the mean of its logits over
the remaining positions. With 3 bands and 400 classes it has torchvision's 8,320,048
trainable parameters.

Layer names are torchvision's state_dict prefixes, so weights map one to one by the rule of
docs/MODELS.md: `features.0.0.0` is the first convolution (`features.0.0.0.weight`),
`features.0.0.1` its batch norm, `features.5.branch1.1.0.0` the spatial convolution of the
first Inception block's second branch, `classifier.1` the classifier (`classifier.1.weight`,
`classifier.1.bias`). Layers without weights get names in the same scheme (`features.0.0.2`
is a ReLU, `features.1` a max pool, `features.5.concat` the branch concatenation).

The average pool's kernel is fixed, so S3D needs features of at least 2x7x7, i.e. clips of
at least 13 frames and 209 x 209 pixels (its catalog row's `min_input`, which `build_model`
checks); torchvision's standard input is 16 or more frames cropped to 224 x 224.
"""

import math

import keras
from keras import ops

from models.argument_validation import standardize_triple
from models.conv import conv3d

# The layers that change the size of the clip, with PyTorch's (kernel, stride, padding).
STEM_SPATIAL_CONV = ((1, 7, 7), (1, 2, 2), (0, 3, 3))  # features.0.0.0
STEM_TEMPORAL_CONV = ((7, 1, 1), (2, 1, 1), (3, 0, 0))  # features.0.1.0
POOLS = {
    "features.1": ((1, 3, 3), (1, 2, 2), (0, 1, 1)),
    "features.4": ((1, 3, 3), (1, 2, 2), (0, 1, 1)),
    "features.7": ((3, 3, 3), (2, 2, 2), (1, 1, 1)),
    "features.13": ((2, 2, 2), (2, 2, 2), (0, 0, 0)),
}
AVGPOOL_SIZE = (2, 7, 7)

# features.5, 6, 8..12, 14, 15: (index, branch0 out, branch1 mid, out, branch2 mid, out,
# branch3 out), as torchvision lists them (after the input channels, which Keras infers).
INCEPTION_BLOCKS = (
    (5, 64, 96, 128, 16, 32, 32),
    (6, 128, 128, 192, 32, 96, 64),
    (8, 192, 96, 208, 16, 48, 64),
    (9, 160, 112, 224, 24, 64, 64),
    (10, 128, 128, 256, 24, 64, 64),
    (11, 112, 144, 288, 32, 64, 64),
    (12, 256, 160, 320, 32, 128, 128),
    (14, 256, 160, 320, 32, 128, 128),
    (15, 384, 192, 384, 48, 128, 128),
)
FEATURE_CHANNELS = 1024

# PyTorch's default Conv3d initialisation (torchvision's S3D keeps it):
# kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
CONV_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"},
}
CLASSIFIER_BIAS_LIMIT = 1.0 / math.sqrt(FEATURE_CHANNELS)


def _output_size(size, kernel, stride, padding):
    # PyTorch's floor rule for convolutions and pools without ceil_mode.
    return (size + 2 * padding - kernel) // stride + 1


def features_shape(frames, height, width):
    """`(frames, height, width)` of S3D's features (before `avgpool`) for a clip of that size."""
    shape = (frames, height, width)
    for kernel, stride, padding in (STEM_SPATIAL_CONV, STEM_TEMPORAL_CONV, *POOLS.values()):
        shape = tuple(_output_size(*axis) for axis in zip(shape, kernel, stride, padding))
    return shape


@keras.saving.register_keras_serializable(package="models")
class SymmetricMaxPooling3D(keras.layers.Layer):
    """3D max pooling with PyTorch's padding: `padding` positions on both sides of each axis.

    Keras's `padding="same"` puts an odd extra row at the end and `"valid"` has none;
    PyTorch's `MaxPool3d(padding=p)` pads `p` on both sides with values that never win.
    Here the padding is -inf, so a padded position is never the maximum, whatever the sign
    of the input. Output sizes follow PyTorch's floor rule (`ceil_mode=False`).

    Args:
        pool_size: int or 3 ints `(t, h, w)`, the window.
        strides: int or 3 ints. Default: `pool_size`.
        padding: int or 3 ints, padded positions on *both* sides of each axis; each at most
            half the window, as PyTorch requires. Default: 0.

    Input shape:
        `(batch, frames, height, width, channels)`.

    Output shape:
        `(batch, frames', height', width', channels)` with
        `n' = floor((n + 2 * padding - pool_size) / strides) + 1` per axis.

    Example:

    >>> layer = SymmetricMaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding=(0, 1, 1))
    >>> layer(np.zeros((2, 4, 8, 8, 3), "float32")).shape
    (2, 4, 4, 4, 3)
    """

    def __init__(self, pool_size, strides=None, padding=0, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = standardize_triple(pool_size, "pool_size")
        self.strides = standardize_triple(self.pool_size if strides is None else strides, "strides")
        self.padding = standardize_triple(padding, "padding", minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.pool_size)):
            raise ValueError(
                "Each `padding` must be at most half of `pool_size`. "
                f"Received: padding={self.padding}, pool_size={self.pool_size}"
            )

    def _uses_same(self):
        # Stride 1 with padding k // 2 on an odd window is TF's symmetric "same", whose padded
        # positions never win either; it saves the copy of the input that padding makes.
        return self.strides == (1, 1, 1) and all(
            k % 2 == 1 and p == k // 2 for k, p in zip(self.pool_size, self.padding)
        )

    def call(self, inputs):
        if self._uses_same():
            return ops.max_pool(inputs, self.pool_size, self.strides, padding="same")
        x = inputs
        if any(self.padding):
            pad_width = [(0, 0)] + [(p, p) for p in self.padding] + [(0, 0)]
            x = ops.pad(x, pad_width, constant_values=float("-inf"))
        return ops.max_pool(x, self.pool_size, self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        spatial = [
            None if n is None else _output_size(n, k, s, p)
            for n, k, s, p in zip(input_shape[1:4], self.pool_size, self.strides, self.padding)
        ]
        return (input_shape[0], *spatial, input_shape[4])

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding})
        return config


def _conv_bn_relu(x, filters, kernel_size, strides, padding, name):
    """torchvision's Conv3dNormActivation: conv `name.0` (no bias), BN `name.1`, ReLU `name.2`."""
    x = conv3d(x, filters, kernel_size, strides=strides, padding=padding, use_bias=False,
               kernel_initializer=CONV_INITIALIZER, name=f"{name}.0")
    # PyTorch momentum 0.001 is Keras momentum 0.999 (they weigh the new batch the other way).
    x = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.999, name=f"{name}.1")(x)
    return keras.layers.ReLU(name=f"{name}.2")(x)


def _temporal_separable_conv(x, filters, kernel_size, stride, padding, name):
    """torchvision's TemporalSeparableConv: 1xkxk (`name.0`) then kx1x1 (`name.1`)."""
    k, s, p = kernel_size, stride, padding
    x = _conv_bn_relu(x, filters, (1, k, k), (1, s, s), (0, p, p), f"{name}.0")
    return _conv_bn_relu(x, filters, (k, 1, 1), (s, 1, 1), (p, 0, 0), f"{name}.1")


def _sep_inception_block(x, b0_out, b1_mid, b1_out, b2_mid, b2_out, b3_out, name):
    """torchvision's SepInceptionBlock3D: four branches, concatenated along the channels."""
    x0 = _conv_bn_relu(x, b0_out, 1, 1, 0, f"{name}.branch0")
    x1 = _conv_bn_relu(x, b1_mid, 1, 1, 0, f"{name}.branch1.0")
    x1 = _temporal_separable_conv(x1, b1_out, 3, 1, 1, f"{name}.branch1.1")
    x2 = _conv_bn_relu(x, b2_mid, 1, 1, 0, f"{name}.branch2.0")
    x2 = _temporal_separable_conv(x2, b2_out, 3, 1, 1, f"{name}.branch2.1")
    x3 = SymmetricMaxPooling3D(3, strides=1, padding=1, name=f"{name}.branch3.0")(x)
    x3 = _conv_bn_relu(x3, b3_out, 1, 1, 0, f"{name}.branch3.1")
    return keras.layers.Concatenate(axis=-1, name=f"{name}.concat")([x0, x1, x2, x3])


def _max_pool(x, name):
    pool_size, strides, padding = POOLS[name]
    return SymmetricMaxPooling3D(pool_size, strides=strides, padding=padding, name=name)(x)


def s3d(x, num_classes, *, dropout=0.2):
    """Builds torchvision's S3D on the normalised clip `x`.

    Args:
        x: float tensor `(batch, frames, height, width, bands)` whose features cover the
            average pool: at least 13 frames and 209 x 209 pixels (torchvision: 16+ frames
            at 224 x 224).
        num_classes: int, number of logits.
        dropout: float in [0, 1), dropout before the classifier (torchvision's 0.2).

    Returns:
        Logits tensor `(batch, num_classes)`: the classifier's logits at every position left
        by the (2, 7, 7) average pool, averaged (one position at the minimum clip size).

    Raises:
        ValueError: if the clip is too small for the average pool.
    """
    frames, height, width = x.shape[1:4]
    if any(n < m for n, m in zip(features_shape(frames, height, width), AVGPOOL_SIZE)):
        raise ValueError(
            f"s3d needs features of at least {AVGPOOL_SIZE[0]}x{AVGPOOL_SIZE[1]}x{AVGPOOL_SIZE[2]} "
            f"for its fixed average pool: clips of at least 13 frames and 209 x 209 pixels; "
            f"torchvision uses 16 or more frames at 224 x 224. "
            f"Received: input_shape={tuple(x.shape[1:])}"
        )
    # features.0: the stem's separable 7x7x7 convolution, stride 2 in every axis.
    x = _conv_bn_relu(x, 64, *STEM_SPATIAL_CONV, "features.0.0")
    x = _conv_bn_relu(x, 64, *STEM_TEMPORAL_CONV, "features.0.1")
    x = _max_pool(x, "features.1")
    x = _conv_bn_relu(x, 64, 1, 1, 0, "features.2")
    x = _temporal_separable_conv(x, 192, 3, 1, 1, "features.3")
    for index, *branches in INCEPTION_BLOCKS:
        # features.4, .7 and .13 are the max pools in front of blocks 5, 8 and 14.
        if f"features.{index - 1}" in POOLS:
            x = _max_pool(x, f"features.{index - 1}")
        x = _sep_inception_block(x, *branches, f"features.{index}")
    x = keras.layers.AveragePooling3D(AVGPOOL_SIZE, strides=1, padding="valid", name="avgpool")(x)
    x = keras.layers.Dropout(dropout, name="classifier.0")(x)
    x = keras.layers.Conv3D(
        num_classes,
        1,
        use_bias=True,
        kernel_initializer=CONV_INITIALIZER,
        bias_initializer=keras.initializers.RandomUniform(-CLASSIFIER_BIAS_LIMIT, CLASSIFIER_BIAS_LIMIT),
        name="classifier.1",
    )(x)
    # torchvision averages the classifier's logits, not the features, over the positions.
    return keras.layers.GlobalAveragePooling3D(name="mean")(x)
