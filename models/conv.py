"""One 3-D convolution with PyTorch-style symmetric zero padding, plain or deformable.

Keras's `padding="same"` pads the extra row at the end when a stride-2 convolution needs an
odd amount of padding; PyTorch pads both sides equally. The architectures here follow
torchvision, so a strided or deformable convolution gets an explicit `ZeroPadding3D` and
`padding="valid"`; a stride-1 convolution whose padding is `kernel_size // 2` keeps
`padding="same"`, which is then symmetric and saves a layer.
"""

import keras

from models.argument_validation import standardize_triple


def _shorter_than_kernel(x, kernel_size):
    """True when an axis of `x` is known and shorter than a kernel deeper than 1 along it.

    oneDNN's bfloat16 Conv3DBackpropFilter (TensorFlow 2.21; seen on an AMD EPYC with
    AVX512-BF16, where `train.mixed_precision: auto` picks bfloat16) returns wrong, often NaN
    or inf, kernel gradients for `padding="same"` on 2 frames and a 3-deep
    kernel (R3D-18's layer4 at 16 frames; tests/test_bfloat16_gradients.py): such layers take
    the explicit zero padding and `"valid"`, which computes the same values in every policy.
    """
    return any(size is not None and size < kernel
               for size, kernel in zip(x.shape[1:4], kernel_size) if kernel > 1)


def conv3d(
    x,
    filters,
    kernel_size,
    *,
    name,
    strides=1,
    padding=0,
    use_bias=False,
    kernel_initializer="glorot_uniform",
    deformable=False,
    offset_groups=1,
    modulated=False,
):
    """Applies a Conv3D, or a DeformConv3D of the same shape, to `x`.

    Args:
        x: tensor `(batch, frames, height, width, channels)`.
        filters: int, output channels.
        kernel_size: int or 3 ints `(t, h, w)`.
        name: str, the layer's name (a torchvision state_dict prefix such as
            `"layer1.0.conv1.0"`); the padding layer, if any, is `name + ".pad"`.
        strides: int or 3 ints.
        padding: int or 3 ints, zeros added on *both* sides of each axis.
        use_bias: bool.
        kernel_initializer: Keras initializer (or its name) for the kernel.
        deformable: bool, build a `DeformConv3D` instead of a `Conv3D`.
        offset_groups: int, offset groups of the `DeformConv3D` (ignored when not deformable).
        modulated: bool, modulated (DCNv2) `DeformConv3D` (ignored when not deformable).

    Returns:
        The output tensor.
    """
    kernel_size = standardize_triple(kernel_size, "kernel_size")
    strides = standardize_triple(strides, "strides")
    padding = standardize_triple(padding, "padding", minimum=0)
    symmetric_same = strides == (1, 1, 1) and padding == tuple(k // 2 for k in kernel_size)
    if symmetric_same and not deformable and not _shorter_than_kernel(x, kernel_size):
        keras_padding = "same"
    else:
        keras_padding = "valid"
        if any(padding):
            x = keras.layers.ZeroPadding3D(padding, name=name + ".pad")(x)
    if deformable:
        # Imported here so plain models never depend on the deformable layer's module.
        from models.deform_conv3d import DeformConv3D

        layer = DeformConv3D(
            filters,
            kernel_size,
            strides=strides,
            padding="valid",
            offset_groups=offset_groups,
            modulated=modulated,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            name=name,
        )
    else:
        layer = keras.layers.Conv3D(
            filters,
            kernel_size,
            strides=strides,
            padding=keras_padding,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            name=name,
        )
    return layer(x)
