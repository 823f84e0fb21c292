"""DeformConv3D against a slow NumPy loop reference, Keras Conv3D and finite differences."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.deform_conv3d import DeformConv3D
from models.deform_conv3d_ops import deform_conv3d

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_deform_conv3d(
    inputs, offsets, kernel, mask=None, strides=(1, 1, 1), padding="valid",
    dilation_rate=(1, 1, 1),
):
    """Deformable 3D convolution written as loops over every index, in float64."""
    inputs = np.asarray(inputs, np.float64)
    offsets = np.asarray(offsets, np.float64)
    kernel = np.asarray(kernel, np.float64)
    batch, depth, height, width, channels = inputs.shape
    kd, kh, kw, _, filters = kernel.shape
    num_points = kd * kh * kw
    groups = offsets.shape[-1] // (3 * num_points)
    group_channels = channels // groups
    sizes, kernel_size = (depth, height, width), (kd, kh, kw)
    out_sizes, pads = [], []
    for axis in range(3):
        span = (kernel_size[axis] - 1) * dilation_rate[axis] + 1
        if padding == "valid":
            out_sizes.append((sizes[axis] - span) // strides[axis] + 1)
            pads.append(0)
        else:
            out = -(-sizes[axis] // strides[axis])
            out_sizes.append(out)
            pads.append(max((out - 1) * strides[axis] + span - sizes[axis], 0) // 2)

    def value(b, t, y, x, g):
        if 0 <= t < depth and 0 <= y < height and 0 <= x < width:
            return inputs[b, t, y, x, g * group_channels:(g + 1) * group_channels]
        return np.zeros(group_channels)

    outputs = np.zeros((batch, *out_sizes, filters))
    for b in range(batch):
        for ot in range(out_sizes[0]):
            for oy in range(out_sizes[1]):
                for ox in range(out_sizes[2]):
                    for g in range(groups):
                        for it in range(kd):
                            for iy in range(kh):
                                for ix in range(kw):
                                    k = (it * kh + iy) * kw + ix
                                    start = (g * num_points + k) * 3
                                    dt, dy, dx = offsets[b, ot, oy, ox, start:start + 3]
                                    p = (
                                        ot * strides[0] - pads[0] + it * dilation_rate[0] + dt,
                                        oy * strides[1] - pads[1] + iy * dilation_rate[1] + dy,
                                        ox * strides[2] - pads[2] + ix * dilation_rate[2] + dx,
                                    )
                                    low = [int(np.floor(c)) for c in p]
                                    frac = [c - f for c, f in zip(p, low)]
                                    sample = np.zeros(group_channels)
                                    for a in (0, 1):
                                        for c in (0, 1):
                                            for e in (0, 1):
                                                weight = (
                                                    (frac[0] if a else 1 - frac[0])
                                                    * (frac[1] if c else 1 - frac[1])
                                                    * (frac[2] if e else 1 - frac[2])
                                                )
                                                sample = sample + weight * value(
                                                    b, low[0] + a, low[1] + c, low[2] + e, g
                                                )
                                    if mask is not None:
                                        sample = sample * mask[b, ot, oy, ox, g * num_points + k]
                                    outputs[b, ot, oy, ox] += (
                                        sample
                                        @ kernel[it, iy, ix, g * group_channels:(g + 1) * group_channels]
                                    )
    return outputs


def conv_output_shape(input_shape, kernel_size, strides, padding, dilation_rate):
    probe = tf.nn.convolution(
        tf.zeros(input_shape[:4] + (1,), tf.float64),
        tf.zeros(tuple(kernel_size) + (1, 1), tf.float64),
        strides=strides, padding=padding.upper(), dilations=dilation_rate,
    )
    return tuple(probe.shape[:4])


# (input (B, D, H, W, C), kernel, strides, padding, dilation, offset groups, modulated, filters)
REFERENCE_CASES = {
    "asymmetric_same_3groups_mask": ((2, 5, 6, 7, 6), (2, 3, 2), (2, 1, 1), "same", (1, 1, 1), 3, True, 4),
    "cube_valid_dilated": ((1, 5, 5, 6, 2), (3, 3, 3), (1, 1, 1), "valid", (1, 2, 1), 1, False, 3),
    "frame_kernel_strided_2groups_mask": ((1, 4, 7, 5, 4), (1, 3, 3), (1, 2, 2), "same", (1, 1, 1), 2, True, 2),
    "strided_valid_odd": ((2, 5, 7, 5, 3), (3, 2, 3), (2, 2, 1), "valid", (1, 1, 1), 1, False, 2),
    "same_dilated_even_kernel": ((1, 4, 6, 5, 2), (2, 2, 2), (1, 1, 1), "same", (2, 1, 2), 2, True, 3),
}


def make_case(name, seed=0, offset_scale=1.5):
    shape, kernel_size, strides, padding, dilation, groups, modulated, filters = REFERENCE_CASES[name]
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=shape)
    kernel = rng.normal(size=kernel_size + (shape[-1], filters))
    out_shape = conv_output_shape(shape, kernel_size, strides, padding, dilation)
    num_points = int(np.prod(kernel_size))
    offsets = rng.normal(scale=offset_scale, size=out_shape + (groups * num_points * 3,))
    mask = rng.uniform(size=out_shape + (groups * num_points,)) if modulated else None
    options = dict(strides=strides, padding=padding, dilation_rate=dilation)
    return inputs, offsets, kernel, mask, options


@pytest.mark.parametrize("name", sorted(REFERENCE_CASES))
def test_fractional_offsets_match_reference(name):
    inputs, offsets, kernel, mask, options = make_case(name)
    expected = reference_deform_conv3d(inputs, offsets, kernel, mask, **options)
    outputs = deform_conv3d(inputs, offsets, kernel, mask, **options)
    np.testing.assert_allclose(outputs.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_out_of_range_offsets_give_zeros_never_nan():
    inputs, offsets, kernel, mask, options = make_case("asymmetric_same_3groups_mask")
    rng = np.random.default_rng(1)
    # Mix samples near the border (partly outside), far outside and absurdly far.
    far = rng.choice([0.0, 3.0, -7.5, 1e3, -1e9, 3e30], size=offsets.shape)
    offsets = offsets + far
    expected = reference_deform_conv3d(inputs, offsets, kernel, mask, **options)
    outputs = deform_conv3d(inputs, offsets, kernel, mask, **options).numpy()
    assert np.isfinite(outputs).all()
    np.testing.assert_allclose(outputs, expected, rtol=1e-10, atol=1e-10)
    all_out = deform_conv3d(inputs, np.full_like(offsets, 1e6), kernel, mask, **options)
    np.testing.assert_array_equal(all_out.numpy(), 0.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_infinite_offsets_read_zeros_with_finite_gradients(dtype):
    inputs, offsets, kernel, mask, options = make_case("asymmetric_same_3groups_mask")
    rng = np.random.default_rng(2)
    chosen = rng.uniform(size=offsets.shape) < 0.3
    huge = rng.choice([np.inf, -np.inf, 1e38, -1e38], size=offsets.shape)
    infinite = np.where(chosen, huge, offsets)
    # An infinite offset is a sample infinitely far away: the same as a merely far one.
    far = np.where(chosen, np.sign(huge) * 1e9, offsets)
    expected = reference_deform_conv3d(inputs, far, kernel, mask, **options)
    tensors = [tf.constant(t, dtype) for t in (inputs, infinite, kernel, mask)]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        outputs = deform_conv3d(*tensors, **options)
    np.testing.assert_allclose(outputs.numpy(), expected, rtol=1e-5, atol=1e-5)
    for name, gradient in zip(("inputs", "offsets", "kernel", "mask"),
                              tape.gradient(outputs, tensors)):
        assert np.isfinite(gradient.numpy()).all(), name


def test_nan_offsets_stay_in_their_own_output_position():
    inputs, offsets, kernel, mask, options = make_case("cube_valid_dilated")
    broken = offsets.copy()
    broken[0, 1, 0, 2, 7] = np.nan
    outputs = deform_conv3d(inputs, broken, kernel, mask, **options).numpy()
    clean = deform_conv3d(inputs, offsets, kernel, mask, **options).numpy()
    assert np.isnan(outputs[0, 1, 0, 2]).all()
    outputs[0, 1, 0, 2] = clean[0, 1, 0, 2]
    np.testing.assert_allclose(outputs, clean, rtol=1e-12)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_inputs_stop_training_instead_of_a_silent_nan_loss(bad_value):
    # A clip with NaN/Inf pixels cannot give a finite conv output (Conv3D neither); what
    # matters is that training notices. NanLossStop is what train.py runs.
    from training.callbacks import NanLossStop

    keras.utils.set_random_seed(3)
    clips, labels = _moving_bar_clips(8, seed=3)
    clips[5, 2, 4, 4, 0] = bad_value  # in the second batch of 4
    inputs = keras.Input((4, 8, 8, 1))
    features = DeformConv3D(2, 3, padding="same", modulated=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(
        keras.layers.GlobalAveragePooling3D()(features)))
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    nan_stop = NanLossStop()
    history = model.fit(clips[:4], labels[:4], batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()  # the clean half trains finitely
    model.fit(clips, labels, batch_size=4, epochs=3, verbose=0, shuffle=False,
              callbacks=[nan_stop])
    assert nan_stop.stopped_at is not None and nan_stop.stopped_at["epoch"] == 1
    assert nan_stop.stopped_at["batch"] == 2 and not np.isfinite(nan_stop.stopped_at["loss"])


TORCHVISION_FIXTURE = os.path.join(REPO, "tests", "data", "deform_conv2d_torchvision.npz")


@pytest.mark.parametrize("name", ["groups2_mask_same", "stride2_same_odd", "dilation2_valid_mask"])
def test_frame_kernel_equals_torchvision_deform_conv2d(name):
    # Outputs of torchvision.ops.deform_conv2d written by bench/make_deform_conv2d_reference.py;
    # its frames become our D axis, and a (1, 3, 3) kernel with dt = 0 treats each alone.
    with np.load(TORCHVISION_FIXTURE) as fixture:
        case = {key.split("/")[1]: fixture[key] for key in fixture.files
                if key.startswith(name + "/")}
    groups, masked, stride, pad, dilation = (int(v) for v in case["params"])
    inputs = np.transpose(case["inputs"], (0, 2, 3, 1))[None]
    frames, out_h, out_w = case["offset"].shape[0], *case["offset"].shape[2:]
    offsets_yx = np.transpose(case["offset"], (0, 2, 3, 1)).reshape(frames, out_h, out_w, groups, 9, 2)
    offsets = np.concatenate([np.zeros_like(offsets_yx[..., :1]), offsets_yx], axis=-1)
    offsets = offsets.reshape(1, frames, out_h, out_w, groups * 27)
    mask = np.transpose(case["mask"], (0, 2, 3, 1))[None] if masked else None
    kernel = np.transpose(case["weight"], (2, 3, 1, 0))[None]
    outputs = deform_conv3d(
        inputs, offsets, kernel, mask, strides=(1, stride, stride),
        padding="same" if pad else "valid", dilation_rate=(1, dilation, dilation),
    )
    expected = np.transpose(case["output"], (0, 2, 3, 1))[None]
    np.testing.assert_allclose(outputs.numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "strides, padding, dilation_rate",
    [
        ((1, 1, 1), "valid", (1, 1, 1)),
        ((1, 1, 1), "same", (1, 1, 1)),
        ((2, 2, 2), "same", (1, 1, 1)),
        ((1, 2, 3), "same", (1, 1, 1)),
        ((2, 1, 2), "valid", (1, 1, 1)),
        ((1, 1, 1), "same", (2, 1, 3)),
        ((1, 1, 1), "valid", (1, 2, 2)),
    ],
)
@pytest.mark.parametrize("with_mask", [False, True])
def test_zero_offsets_equal_conv3d(strides, padding, dilation_rate, with_mask):
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(2, 6, 7, 8, 3)).astype("float32")
    conv = keras.layers.Conv3D(
        4, (3, 2, 3), strides=strides, padding=padding, dilation_rate=dilation_rate,
        use_bias=False,
    )
    expected = conv(inputs).numpy()
    groups = 3
    offsets = np.zeros(expected.shape[:4] + (groups * 18 * 3,), "float32")
    mask = np.ones(expected.shape[:4] + (groups * 18,), "float32") if with_mask else None
    outputs = deform_conv3d(
        inputs, offsets, conv.kernel, mask, strides=strides, padding=padding,
        dilation_rate=dilation_rate,
    )
    np.testing.assert_allclose(outputs.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shift", [(1, -2, 1), (0, 1, 0), (-1, 0, -3)])
def test_integer_offsets_equal_shifted_input(shift):
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(1, 5, 7, 8, 2))
    kernel = rng.normal(size=(2, 3, 3, 2, 3))
    shifted = np.zeros_like(inputs)
    dt, dy, dx = shift
    # shifted[t, y, x] = inputs[t + dt, y + dy, x + dx], zero where that is outside.
    src = [slice(max(d, 0), n + min(d, 0)) for d, n in zip(shift, inputs.shape[1:4])]
    dst = [slice(max(-d, 0), n + min(-d, 0)) for d, n in zip(shift, inputs.shape[1:4])]
    shifted[:, dst[0], dst[1], dst[2]] = inputs[:, src[0], src[1], src[2]]
    expected = tf.nn.conv3d(shifted, kernel, [1] * 5, "VALID").numpy()
    offsets = np.tile(np.array(shift, np.float64), expected.shape[:4] + (18,))
    outputs = deform_conv3d(inputs, offsets, kernel)
    np.testing.assert_allclose(outputs.numpy(), expected, rtol=1e-10, atol=1e-10)


def _loss_fn(projection, options, with_mask):
    @tf.function
    def loss(inputs, offsets, kernel, mask=None):
        outputs = deform_conv3d(inputs, offsets, kernel, mask if with_mask else None, **options)
        return tf.reduce_sum(projection * outputs)

    return loss


def test_offset_gradient_at_zero_is_forward_difference():
    # At integer sample points the gradient is the one-sided difference toward floor + 1;
    # the output is linear in each offset on [0, 1), so a step of 0.5 measures it exactly.
    inputs, offsets, kernel, _, options = make_case("cube_valid_dilated")
    offsets = np.zeros_like(offsets)
    projection = np.random.default_rng(4).normal(size=conv_output_shape(
        inputs.shape, kernel.shape[:3], options["strides"], options["padding"],
        options["dilation_rate"]) + (kernel.shape[-1],))
    loss = _loss_fn(projection, options, with_mask=False)
    inputs, kernel, offsets_tensor = tf.constant(inputs), tf.constant(kernel), tf.constant(offsets)
    with tf.GradientTape() as tape:
        tape.watch(offsets_tensor)
        value = loss(inputs, offsets_tensor, kernel)
    gradient = tape.gradient(value, offsets_tensor).numpy()
    assert np.abs(gradient).max() > 1e-3
    rng = np.random.default_rng(5)
    flat_choices = rng.choice(offsets.size, size=8, replace=False)
    step = 0.5
    for flat in flat_choices:
        index = np.unravel_index(flat, offsets.shape)
        moved = offsets.copy()
        moved[index] = step
        forward_difference = (loss(inputs, tf.constant(moved), kernel) - value).numpy() / step
        np.testing.assert_allclose(gradient[index], forward_difference, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "name", ["asymmetric_same_3groups_mask", "cube_valid_dilated", "same_dilated_even_kernel"]
)
def test_gradients_match_finite_differences(name):
    inputs, offsets, kernel, mask, options = make_case(name, seed=6, offset_scale=1.2)
    # The output is only piecewise smooth in the offsets: keep every sample point away
    # from the integer kinks so that the central differences do not straddle one.
    near_integer = np.abs(offsets - np.round(offsets)) < 1e-3
    offsets = np.where(near_integer, offsets + 0.01, offsets)
    with_mask = mask is not None
    rng = np.random.default_rng(7)
    out_shape = conv_output_shape(inputs.shape, kernel.shape[:3], options["strides"],
                                  options["padding"], options["dilation_rate"])
    projection = rng.normal(size=out_shape + (kernel.shape[-1],))
    loss = _loss_fn(projection, options, with_mask)
    arguments = [tf.constant(inputs), tf.constant(offsets), tf.constant(kernel)]
    if with_mask:
        arguments.append(tf.constant(mask))
    with tf.GradientTape() as tape:
        tape.watch(arguments)
        value = loss(*arguments)
    gradients = tape.gradient(value, arguments)
    epsilon = 1e-6
    # Directional derivatives along random directions: a wrong entry anywhere shows up.
    # The first and last cases have 252 and 120 output positions, so the backward pass walks
    # several 64-row chunks, the last one overlapping the one before.
    for position, (argument, gradient) in enumerate(zip(arguments, gradients)):
        for _ in range(3):
            direction = rng.normal(size=argument.shape)
            plus = list(arguments)
            minus = list(arguments)
            plus[position] = argument + epsilon * direction
            minus[position] = argument - epsilon * direction
            numeric = (loss(*plus) - loss(*minus)).numpy() / (2 * epsilon)
            analytic = float(tf.reduce_sum(gradient * direction))
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6)


def test_float16_keeps_coordinates_in_float32():
    # At x ~ 250 float16 spaces numbers 0.125 apart: sampling at 250.37 in float16
    # coordinates would land visibly off the float64 reference.
    width = 260
    inputs = np.linspace(0.0, 1.0, width).reshape(1, 1, 1, width, 1)
    inputs = np.sin(40 * inputs)
    kernel = np.array([0.5, -1.0, 0.25]).reshape(1, 1, 3, 1, 1)
    offsets = np.zeros((1, 1, 1, width - 2, 9))
    offsets[..., 2::3] = 0.37
    expected = reference_deform_conv3d(inputs, offsets, kernel)
    outputs = deform_conv3d(
        tf.constant(inputs, tf.float16), tf.constant(offsets, tf.float16),
        tf.constant(kernel, tf.float16),
    )
    assert outputs.dtype == tf.float16
    np.testing.assert_allclose(outputs.numpy().astype(np.float64), expected, atol=5e-3)


def test_mixed_precision_layer_matches_float32():
    rng = np.random.default_rng(8)
    inputs = rng.normal(size=(2, 4, 6, 6, 4)).astype("float32")
    reference_layer = DeformConv3D(6, 3, padding="same", modulated=True, offset_groups=2)
    reference_layer.build(inputs.shape)
    reference_layer.offset_conv.kernel.assign(
        rng.normal(scale=0.1, size=reference_layer.offset_conv.kernel.shape)
    )
    expected = reference_layer(inputs).numpy()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = DeformConv3D.from_conv3d(_plain_conv(reference_layer), modulated=True,
                                         offset_groups=2)
        layer.offset_conv.set_weights(reference_layer.offset_conv.get_weights())
        outputs = layer(inputs)
    finally:
        keras.config.set_dtype_policy(previous)
    assert layer.kernel.dtype == "float32"
    assert outputs.dtype == tf.float16
    assert np.isfinite(outputs.numpy()).all()
    np.testing.assert_allclose(outputs.numpy().astype("float32"), expected, atol=0.05, rtol=0.02)


def _plain_conv(layer):
    conv = keras.layers.Conv3D(
        layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
        dilation_rate=layer.dilation_rate, use_bias=layer.use_bias,
    )
    conv.build((None, None, None, None, layer.kernel.shape[3]))
    conv.set_weights([layer.kernel.numpy()] + ([layer.bias.numpy()] if layer.use_bias else []))
    return conv


LAYER_CASES = [
    # (input shape, layer arguments)
    ((2, 5, 7, 6, 3), dict(filters=4, kernel_size=3)),
    ((1, 6, 8, 7, 6), dict(filters=2, kernel_size=(2, 3, 2), strides=(2, 1, 1), padding="same",
                           offset_groups=3, modulated=True)),
    ((2, 4, 9, 9, 4), dict(filters=5, kernel_size=(1, 3, 3), strides=(1, 2, 2), padding="same",
                           offset_groups=2, activation="relu")),
    ((1, 5, 8, 8, 2), dict(filters=3, kernel_size=3, dilation_rate=(1, 2, 2), use_bias=False,
                           modulated=True)),
]


@pytest.mark.parametrize("input_shape, arguments", LAYER_CASES)
def test_new_layer_equals_conv3d_and_output_shape_is_exact(input_shape, arguments):
    rng = np.random.default_rng(9)
    inputs = rng.normal(size=input_shape).astype("float32")
    layer = DeformConv3D(**arguments)
    outputs = layer(inputs)
    assert tuple(outputs.shape) == layer.compute_output_shape(input_shape)
    conv_arguments = {k: v for k, v in arguments.items() if k not in ("offset_groups", "modulated")}
    conv = keras.layers.Conv3D(**conv_arguments)
    conv.build(input_shape)
    conv.set_weights(
        [layer.kernel.numpy()] + ([layer.bias.numpy()] if layer.use_bias else [])
    )
    np.testing.assert_allclose(outputs.numpy(), conv(inputs).numpy(), rtol=1e-5, atol=1e-5)
    offsets, mask = layer.compute_offsets(inputs)
    num_points = int(np.prod(layer.kernel_size))
    assert tuple(offsets.shape) == tuple(outputs.shape[:4]) + (layer.offset_groups * num_points * 3,)
    np.testing.assert_array_equal(offsets.numpy(), 0.0)
    if layer.modulated:
        assert tuple(mask.shape) == tuple(outputs.shape[:4]) + (layer.offset_groups * num_points,)
        np.testing.assert_allclose(mask.numpy(), 1.0)
    else:
        assert mask is None


@pytest.mark.parametrize("modulated", [False, True])
def test_from_conv3d_keeps_the_output(modulated):
    rng = np.random.default_rng(10)
    inputs = rng.normal(size=(2, 5, 8, 8, 4)).astype("float32")
    conv = keras.layers.Conv3D(6, 3, strides=(1, 2, 2), padding="same", activation="relu",
                               name="trained")
    conv.build(inputs.shape)
    conv.bias.assign(rng.normal(size=(6,)))
    layer = DeformConv3D.from_conv3d(conv, offset_groups=2, modulated=modulated)
    np.testing.assert_allclose(layer(inputs).numpy(), conv(inputs).numpy(), rtol=1e-5, atol=1e-5)
    assert layer.get_config()["activation"] == "relu"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(filters=0, kernel_size=3), "filters"),
        (dict(filters=4, kernel_size=(3, 3)), "kernel_size"),
        (dict(filters=4, kernel_size=3, strides=0), "strides"),
        (dict(filters=4, kernel_size=3, padding="causal"), "padding"),
        (dict(filters=4, kernel_size=3, strides=2, dilation_rate=2), "dilation_rate"),
        (dict(filters=4, kernel_size=3, offset_groups=0), "offset_groups"),
    ],
)
def test_bad_arguments_raise(arguments, message):
    with pytest.raises(ValueError, match=message):
        DeformConv3D(**arguments)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="offset_groups"):
        DeformConv3D(4, 3, offset_groups=2).build((1, 4, 4, 4, 3))
    with pytest.raises(ValueError, match="too small"):
        DeformConv3D(4, 3).build((1, 2, 4, 4, 3))
    with pytest.raises(ValueError, match="Received: offsets.shape"):
        deform_conv3d(np.zeros((1, 3, 3, 3, 2)), np.zeros((1, 1, 1, 1, 80)), np.zeros((3, 3, 3, 2, 1)))
    with pytest.raises(ValueError, match="Received: mask.shape"):
        deform_conv3d(np.zeros((1, 3, 3, 3, 2)), np.zeros((1, 1, 1, 1, 81)),
                      np.zeros((3, 3, 3, 2, 1)), mask=np.zeros((1, 1, 1, 1, 26)))


def _random_offset_model(seed=11):
    rng = np.random.default_rng(seed)
    inputs = keras.Input((None, None, None, 4))
    layer = DeformConv3D(5, (2, 3, 3), strides=(1, 2, 2), padding="same", offset_groups=2,
                         modulated=True, activation="relu", name="deform")
    outputs = keras.layers.GlobalAveragePooling3D()(layer(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(outputs))
    layer.offset_conv.kernel.assign(rng.normal(scale=0.2, size=layer.offset_conv.kernel.shape))
    layer.offset_conv.bias.assign(rng.normal(scale=0.5, size=layer.offset_conv.bias.shape))
    clips = rng.normal(size=(2, 4, 8, 8, 4)).astype("float32")
    return model, clips


def test_config_round_trip_and_keras_file_reload(tmp_path):
    model, clips = _random_offset_model()
    layer = model.get_layer("deform")
    clone = DeformConv3D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(reloaded.get_layer("deform"), DeformConv3D)
    np.testing.assert_array_equal(reloaded.predict(clips, verbose=0), model.predict(clips, verbose=0))


def test_saved_model_export_serves_the_same_outputs(tmp_path):
    model, clips = _random_offset_model()
    model.export(str(tmp_path / "exported"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "exported"))
    served = loaded.serve(tf.constant(clips))
    np.testing.assert_allclose(served.numpy(), model(clips).numpy(), rtol=1e-5, atol=1e-6)


def test_dynamic_shapes_and_xla_match_eager():
    model, clips = _random_offset_model()
    expected = model(clips).numpy()
    signature = [tf.TensorSpec((None, None, None, None, 4), tf.float32)]
    dynamic = tf.function(model, input_signature=signature)
    np.testing.assert_allclose(dynamic(clips).numpy(), expected, rtol=1e-5, atol=1e-6)
    other = np.random.default_rng(12).normal(size=(3, 5, 7, 9, 4)).astype("float32")
    np.testing.assert_allclose(dynamic(other).numpy(), model(other).numpy(), rtol=1e-5, atol=1e-6)

    def loss_and_gradients(clips):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(clips) ** 2)
        return loss, tape.gradient(loss, model.trainable_weights)

    eager_loss, eager_gradients = loss_and_gradients(clips)
    xla_loss, xla_gradients = tf.function(loss_and_gradients, jit_compile=True)(clips)
    np.testing.assert_allclose(xla_loss.numpy(), eager_loss.numpy(), rtol=1e-5)
    for xla_gradient, eager_gradient in zip(xla_gradients, eager_gradients):
        np.testing.assert_allclose(xla_gradient.numpy(), eager_gradient.numpy(), rtol=1e-4, atol=1e-5)


def _moving_bar_clips(count, seed):
    """Class 0: a bright bar moving right; class 1: moving left. Needs time to tell apart."""
    rng = np.random.default_rng(seed)
    clips = np.zeros((count, 4, 8, 8, 1), "float32")
    labels = rng.integers(0, 2, size=count)
    for index, label in enumerate(labels):
        start = rng.integers(0, 4)
        for frame in range(4):
            column = start + frame if label == 0 else start + 3 - frame
            clips[index, frame, :, column, 0] = 1.0
    clips += rng.normal(scale=0.05, size=clips.shape).astype("float32")
    return clips, labels


def test_tiny_model_learns_and_offsets_move():
    keras.utils.set_random_seed(13)
    clips, labels = _moving_bar_clips(32, seed=13)
    inputs = keras.Input((4, 8, 8, 1))
    deform = DeformConv3D(4, 3, padding="same", modulated=True, activation="relu", name="deform")
    features = keras.layers.GlobalAveragePooling3D()(deform(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(features))
    model.compile(
        optimizer=keras.optimizers.Adam(0.03),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(clips, labels, batch_size=16, epochs=15, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert np.abs(deform.offset_conv.kernel.numpy()).max() > 1e-3


@pytest.mark.slow
def test_trains_under_mirrored_strategy():
    # Two logical CPUs make a real 2-replica MirroredStrategy; that has to be configured
    # before TensorFlow starts, hence a fresh interpreter.
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf, keras
        from models.deform_conv3d import DeformConv3D
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            inputs = keras.Input((4, 6, 6, 2))
            x = DeformConv3D(3, 3, padding="same", modulated=True, name="deform")(inputs)
            outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling3D()(x))
            model = keras.Model(inputs, outputs)
            model.compile(optimizer="sgd",
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(0)
        clips = rng.normal(size=(8, 4, 6, 6, 2)).astype("float32")
        labels = rng.integers(0, 2, size=8)
        before = model.get_layer("deform").kernel.numpy().copy()
        history = model.fit(clips, labels, batch_size=4, epochs=1, verbose=0)
        after = model.get_layer("deform").kernel.numpy()
        assert np.isfinite(history.history["loss"]).all()
        assert np.abs(after - before).max() > 0
        print("trained", history.history["loss"])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained" in result.stdout


def _bfloat16_exact(array):
    return tf.cast(tf.cast(array, tf.bfloat16), tf.float32).numpy()


def test_bfloat16_layer_is_the_float32_oracle_rounded_once():
    # Inputs and weights exactly representable in bfloat16, offsets of a few pixels with
    # fractional parts (offset_conv bias 2.3..5.7): a bfloat16 offset would be off by up to
    # 1/64 pixel. Offsets, sampling coordinates, interpolation weights and the contraction
    # run in float32 under mixed_bfloat16, so the one difference from the float32 layer is
    # the output's rounding to bfloat16: relative error <= 2^-8 (unit roundoff of 8
    # significant bits), plus an absolute 1e-6 for float32 summation-order noise near 0.
    rng = np.random.default_rng(24)
    inputs = _bfloat16_exact(rng.normal(size=(1, 4, 8, 8, 4)))
    reference = DeformConv3D(4, 3, padding="same", modulated=True)
    reference.build(inputs.shape)
    reference.kernel.assign(_bfloat16_exact(rng.normal(scale=0.3, size=reference.kernel.shape)))
    offset_kernel = _bfloat16_exact(rng.normal(scale=0.05, size=reference.offset_conv.kernel.shape))
    offset_bias = _bfloat16_exact(rng.uniform(2.3, 5.7, size=reference.offset_conv.bias.shape))
    reference.offset_conv.set_weights([offset_kernel, offset_bias])
    expected = reference(inputs).numpy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = DeformConv3D(4, 3, padding="same", modulated=True)
        layer.build(inputs.shape)
        layer.set_weights(reference.get_weights())
        offsets, mask = layer.compute_offsets(tf.constant(inputs, tf.bfloat16))
        outputs = layer(tf.constant(inputs, tf.bfloat16))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert layer.compute_dtype == "bfloat16" and outputs.dtype == tf.bfloat16
    assert offsets.dtype == tf.float32 and mask.dtype == tf.float32
    np.testing.assert_allclose(offsets.numpy(), reference.compute_offsets(inputs)[0].numpy(),
                               rtol=1e-6, atol=1e-6)
    assert np.abs(expected).max() > 1.0  # not a test of zeros
    np.testing.assert_allclose(outputs.numpy().astype("float32"), expected,
                               rtol=2.0 ** -8, atol=1e-6)
