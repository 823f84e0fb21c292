"""Deformable 3D convolution (DCN v1/v2 in time, height and width), in TensorFlow ops.

`deform_conv3d` is the op: a Conv3D whose kd*kh*kw sampling points move by fractional
offsets, sampled by trilinear interpolation. `DeformConv3D` is the Keras layer around it,
a drop-in for `keras.layers.Conv3D` that predicts its own offsets (and mask).

Memory is bounded by walking the kernel points one at a time (a `tf.while_loop`) and by a
hand-written gradient that recomputes the samples in the backward pass, chunk by chunk of
output positions, instead of keeping the B*D'*H'*W'*K*C sampled values alive between the
two passes. The forward pass and the backward's scatter-adds, samples and coordinate
gradients run under XLA, where that was measured faster on CPU; the backward's
independent pieces run at once on TF's inter-op threads (docs/BENCHMARKS.md,
"DeformConv3D")."""

import functools

import keras
import tensorflow as tf
from keras import activations, constraints, initializers, regularizers

_PADDINGS = ("valid", "same")
# The backward pass walks the output positions in this many chunks (of at least
# _MIN_CHUNK_ROWS rows) so that one chunk's samples, not all of them, are alive.
_BACKWARD_CHUNKS = 4
_MIN_CHUNK_ROWS = 64
# Whether the backward pass runs the input-gradient scatter-adds in a loop of their own,
# independent of the loop computing the other gradients, so that the two can run on two
# cores at once. It costs 12-20% more CPU time (both loops recompute the corners and the
# sample gradient) and was not faster on the shared 2-core machine it was measured on;
# within one step of the single loop the scatter-adds already run alongside the rest
# (docs/BENCHMARKS.md, "DeformConv3D").
_SPLIT_BACKWARD_LOOPS = False


def _standardize_triple(value, name):
    """An int or 3 ints -> a tuple of 3 positive ints (Keras' `standardize_tuple` rule)."""
    if isinstance(value, int):
        values = (value,) * 3
    else:
        try:
            values = tuple(value)
        except TypeError:
            values = ()
        if len(values) != 3 or not all(isinstance(v, int) for v in values):
            raise ValueError(
                f"The `{name}` argument must be an int or a tuple of 3 ints. "
                f"Received: {name}={value}"
            )
    if any(v <= 0 for v in values):
        raise ValueError(
            f"The `{name}` argument must be strictly positive. Received: {name}={value}"
        )
    return values


def _standardize_padding(padding):
    normalized = padding.lower() if isinstance(padding, str) else padding
    if normalized not in _PADDINGS:
        raise ValueError(
            "The `padding` argument must be one of 'valid', 'same'. "
            f"Received: padding={padding}"
        )
    return normalized


def conv_output_size_and_pad(size, kernel, stride, dilation, padding):
    """Output length and leading pad of one axis, by TF/Keras Conv3D's rule.

    Works for Python ints and for scalar int tensors (dynamic sizes). 'same' pads
    `total // 2` before and the rest after, as TF does, so an odd total puts the extra
    pixel at the end.
    """
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        return (size - span) // stride + 1, 0
    out = (size + stride - 1) // stride
    total = (out - 1) * stride + span - size
    if isinstance(total, int):
        total = max(total, 0)
    else:
        total = tf.maximum(total, 0)
    return out, total // 2


def _interp_dtype(dtype):
    """Coordinates, weights and sums are float32 under float16/bfloat16, else the input's."""
    return tf.float64 if dtype == tf.float64 else tf.float32


class _Geometry:
    """Static and dynamic sizes shared by the forward and backward passes."""

    def __init__(self, inputs, kernel_shape, num_groups, strides, padding, dilation_rate):
        self.kernel_size = tuple(int(k) for k in kernel_shape[:3])
        self.in_channels = int(kernel_shape[3])
        self.filters = int(kernel_shape[4])
        self.num_points = self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]
        self.num_groups = num_groups
        self.group_channels = self.in_channels // num_groups
        self.strides = strides
        self.dilation_rate = dilation_rate
        shape = tf.shape(inputs)
        self.batch = shape[0]
        self.in_sizes = (shape[1], shape[2], shape[3])
        outs, pads = [], []
        for axis in range(3):
            out, pad = conv_output_size_and_pad(
                shape[axis + 1], self.kernel_size[axis], strides[axis],
                dilation_rate[axis], padding,
            )
            outs.append(out)
            pads.append(pad)
        self.out_sizes = tuple(outs)
        self.pads = tuple(pads)
        self.num_outputs = self.batch * outs[0] * outs[1] * outs[2]


def _grid_indices(geometry):
    """(batch, t, y, x) output indices shaped to broadcast over (B, D', H', W', G)."""
    shapes = [(-1, 1, 1, 1, 1), (1, -1, 1, 1, 1), (1, 1, -1, 1, 1), (1, 1, 1, -1, 1)]
    sizes = (geometry.batch, *geometry.out_sizes)
    return tuple(tf.reshape(tf.range(n), shape) for n, shape in zip(sizes, shapes))


def _flat_indices(geometry, start, size):
    """(batch, t, y, x) indices of flat output positions [start, start + size), (size, 1)."""
    flat = (start + tf.range(size))[:, None]
    depth, height, width = geometry.out_sizes
    return (
        flat // (depth * height * width),
        (flat // (height * width)) % depth,
        (flat // width) % height,
        flat % width,
    )


def _point_corners(geometry, out_indices, offsets_k, point, coord_dtype):
    """Trilinear corners of kernel point `point` for the given output positions and groups.

    Args:
        out_indices: (batch, t, y, x) int32 output indices that broadcast against
            `offsets_k[..., 0]` (from `_grid_indices` or `_flat_indices`).
        offsets_k: (..., G, 3) offsets of this kernel point, `coord_dtype`.
        point: scalar int32 tensor, the kernel point index in row-major (kd, kh, kw) order.

    Returns:
        A list of 8 (rows, weight, weight_grads) for corners (a, b, c) in {0,1}^3: `rows`
        int32 (..., G) row indices into the (B*D*H*W*G, C/G) input view, clamped to a
        valid row; `weight` the interpolation weight, zero for a corner outside the
        input; `weight_grads` the 3 derivatives of `weight` w.r.t. (t, y, x).
    """
    kd, kh, kw = geometry.kernel_size
    point_index = (point // (kh * kw), (point // kw) % kh, point % kw)
    axis_terms = []
    for axis in range(3):
        size = geometry.in_sizes[axis]
        base = (
            out_indices[axis + 1] * geometry.strides[axis]
            - geometry.pads[axis]
            + point_index[axis] * geometry.dilation_rate[axis]
        )
        base = tf.cast(base, coord_dtype)
        size_f = tf.cast(size, coord_dtype)
        # Far-away samples are clipped to a place whose 2 corners are both outside, so
        # they read zeros with a zero gradient, and huge offsets cannot overflow int32.
        coord = tf.clip_by_value(base + offsets_k[..., axis], -2.0, size_f + 1.0)
        low = tf.floor(coord)
        frac = coord - low
        low_i = tf.cast(low, tf.int32)
        terms = []
        # Corners are floor and floor + 1 (never ceil): at an integer coordinate the
        # weight of floor + 1 still moves, so the offset gradient is the one-sided
        # difference toward floor + 1 instead of zero.
        for side, (index, weight, sign) in enumerate(
            ((low_i, 1.0 - frac, -1.0), (low_i + 1, frac, 1.0))
        ):
            valid = tf.cast((index >= 0) & (index < size), coord_dtype)
            clamped = tf.clip_by_value(index, 0, size - 1)
            terms.append((clamped, weight * valid, sign * valid))
        axis_terms.append(terms)

    height, width = geometry.in_sizes[1], geometry.in_sizes[2]
    groups = geometry.num_groups
    batch_rows = out_indices[0] * geometry.in_sizes[0]
    group_index = tf.range(groups)
    corners = []
    for t_index, t_weight, t_grad in axis_terms[0]:
        t_rows = (batch_rows + t_index) * height
        for y_index, y_weight, y_grad in axis_terms[1]:
            ty_rows = (t_rows + y_index) * width
            ty_weight = t_weight * y_weight
            for x_index, x_weight, x_grad in axis_terms[2]:
                rows = (ty_rows + x_index) * groups + group_index
                weight = ty_weight * x_weight
                weight_grads = (
                    t_grad * y_weight * x_weight,
                    t_weight * y_grad * x_weight,
                    ty_weight * x_grad,
                )
                corners.append((rows, weight, weight_grads))
    return corners


def _point_offsets(offsets, point):
    """(B, D', H', W', G, K, 3) offsets -> those of one kernel point, (B, D', H', W', G, 3)."""
    return tf.gather(offsets, point, axis=5)


def _sample_point(input_rows, corners):
    """Trilinear samples of one kernel point: (B, D', H', W', G, C/G), interp dtype."""
    sample = None
    for rows, weight, _ in corners:
        values = tf.gather(input_rows, rows)
        term = values * weight[..., None]
        sample = term if sample is None else sample + term
    return sample


def _deform_conv3d_forward(inputs, offsets, kernel, mask, geometry):
    """Loop over kernel points: sample (B, D', H', W', C), matmul with kernel[k], add.

    Only one kernel point's samples are alive at a time.
    """
    dtype = inputs.dtype
    input_rows = tf.reshape(inputs, (-1, geometry.group_channels))
    kernel_points = tf.reshape(
        kernel, (geometry.num_points, geometry.in_channels, geometry.filters)
    )

    out_indices = _grid_indices(geometry)

    def body(point, outputs):
        corners = _point_corners(
            geometry, out_indices, _point_offsets(offsets, point), point, dtype
        )
        sample = _sample_point(input_rows, corners)
        if mask is not None:
            sample = sample * tf.gather(mask, point, axis=5)[..., None]
        sample = tf.reshape(sample, (geometry.num_outputs, geometry.in_channels))
        return point + 1, outputs + tf.matmul(sample, kernel_points[point])

    outputs = tf.zeros((geometry.num_outputs, geometry.filters), dtype)
    _, outputs = tf.while_loop(
        lambda point, _: point < geometry.num_points,
        body,
        (tf.constant(0), outputs),
        parallel_iterations=1,
    )
    return outputs


def _scatter_add_corners(grad_rows, rows, weights, grad_masked):
    """grad_rows[rows[j]] += weights[j] * grad_masked for the 8 corners j, in order."""
    for corner in range(8):
        grad_rows = tf.tensor_scatter_nd_add(
            grad_rows, rows[corner][..., None], grad_masked * weights[corner][..., None]
        )
    return grad_rows


# XLA makes the 8 scatter-adds in-place loops (TF's kernel is ~3x slower here); see
# docs/BENCHMARKS.md.
_scatter_add_corners_xla = tf.function(_scatter_add_corners, jit_compile=True)


def _corner_sample(input_rows, rows, weights):
    """The trilinear sample sum_j weights[j] * input_rows[rows[j]] over the 8 corners."""
    sample = None
    for corner_rows, weight in zip(rows, weights):
        term = tf.gather(input_rows, corner_rows) * weight[..., None]
        sample = term if sample is None else sample + term
    return sample


def _corner_coord_grads(input_rows, rows, weight_grads, grad_masked):
    """The sample's gradient w.r.t. its (t, y, x) coordinates, (..., G, 3).

    sum_j <grad_masked, input_rows[rows[j]]> * weight_grads[j][axis] over the 8 corners.
    """
    coord_grads = [None, None, None]
    for corner_rows, corner_weight_grads in zip(rows, weight_grads):
        value_grad = tf.reduce_sum(grad_masked * tf.gather(input_rows, corner_rows), axis=-1)
        for axis in range(3):
            term = value_grad * corner_weight_grads[axis]
            coord_grads[axis] = term if coord_grads[axis] is None else coord_grads[axis] + term
    return tf.stack(coord_grads, axis=-1)


# The backward's sample and coordinate gradients as two single-output XLA computations,
# each gathering the corners again: XLA fuses each gather into its one consumer, where
# TF's kernels write all 8 gathered copies out and read them back several times (1.4x
# less CPU time per step; one XLA computation with both outputs writes the gathers out,
# see docs/BENCHMARKS.md).
_corner_sample_xla = tf.function(_corner_sample, jit_compile=True)
_corner_coord_grads_xla = tf.function(_corner_coord_grads, jit_compile=True)


class _BackwardStep:
    """One (kernel point, chunk of output positions) step of a backward loop.

    All chunks have one size (XLA needs static shapes); the last one is moved back to end
    at the last row, and its rows already done get a zero output gradient.
    """

    def __init__(self, geometry, offsets_flat, grad_out, point, chunk, chunk_size, dtype):
        nominal_start = chunk * chunk_size
        self.point = point
        self.start = tf.minimum(nominal_start, geometry.num_outputs - chunk_size)
        self.size = chunk_size
        offsets_k = tf.slice(
            offsets_flat, [self.start, 0, point, 0], [chunk_size, geometry.num_groups, 1, 3]
        )
        corners = _point_corners(
            geometry, _flat_indices(geometry, self.start, chunk_size), offsets_k[:, :, 0, :],
            point, dtype,
        )
        self.rows = [corner[0] for corner in corners]
        self.weights = [corner[1] for corner in corners]
        self.weight_grads = [corner[2] for corner in corners]
        grad_out_chunk = tf.slice(grad_out, [self.start, 0], [chunk_size, geometry.filters])
        fresh_rows = self.start + tf.range(chunk_size) >= nominal_start
        self.grad_out = grad_out_chunk * tf.cast(fresh_rows, dtype)[:, None]


def _deform_conv3d_backward(
    inputs, offsets, kernel, mask, geometry, grad_outputs, jit_compile=True,
    split_loops=None,
):
    """Gradients w.r.t. inputs, offsets, kernel and mask, one kernel point at a time.

    The samples of each kernel point are gathered again here rather than kept from the
    forward pass, and the output positions are walked in up to `_BACKWARD_CHUNKS`
    chunks: only one chunk of one point's samples is alive at a time, which keeps the
    peak memory within a small multiple of Conv3D's.

    Within a step, the input-gradient scatter-adds, the sample, the coordinate gradients
    and the kernel-gradient matmul do not depend on each other, so TF's inter-op threads
    run them at once. With `split_loops` (default `_SPLIT_BACKWARD_LOOPS`) the
    scatter-adds run in a second loop that shares no state with the first, so the two
    loops are not held in step by each other, at the price of computing the corners and
    the sample gradient twice.
    """
    if split_loops is None:
        split_loops = _SPLIT_BACKWARD_LOOPS
    dtype = inputs.dtype
    groups, group_channels = geometry.num_groups, geometry.group_channels
    num_points, num_outputs = geometry.num_points, geometry.num_outputs
    input_rows = tf.reshape(inputs, (-1, group_channels))
    kernel_points = tf.reshape(kernel, (num_points, geometry.in_channels, geometry.filters))
    grad_out = tf.reshape(grad_outputs, (num_outputs, geometry.filters))
    offsets_flat = tf.reshape(offsets, (num_outputs, groups, num_points, 3))
    if mask is not None:
        mask_flat = tf.reshape(mask, (num_outputs, groups, num_points))
    chunk_size = tf.minimum(
        tf.maximum((num_outputs + _BACKWARD_CHUNKS - 1) // _BACKWARD_CHUNKS, _MIN_CHUNK_ROWS),
        num_outputs,
    )
    num_chunks = (num_outputs + chunk_size - 1) // chunk_size
    num_steps = num_points * num_chunks
    scatter = _scatter_add_corners_xla if jit_compile else _scatter_add_corners
    sample_fn = _corner_sample_xla if jit_compile else _corner_sample
    coord_grads_fn = _corner_coord_grads_xla if jit_compile else _corner_coord_grads

    def make_step(index):
        return _BackwardStep(
            geometry, offsets_flat, grad_out, index // num_chunks, index % num_chunks,
            chunk_size, dtype,
        )

    def grad_sample_of(step):
        """(grad w.r.t. the sample, the same times the mask), both (size, G, C/G)."""
        grad_sample = tf.reshape(
            tf.matmul(step.grad_out, kernel_points[step.point], transpose_b=True),
            (step.size, groups, group_channels),
        )
        if mask is None:
            return grad_sample, grad_sample, None
        mask_point = tf.slice(mask_flat, [step.start, 0, step.point], [step.size, groups, 1])
        return grad_sample, grad_sample * mask_point, mask_point

    def input_grad_body(index, grad_rows):
        step = make_step(index)
        _, grad_masked, _ = grad_sample_of(step)
        return index + 1, scatter(grad_rows, step.rows, step.weights, grad_masked)

    def body(index, grad_rows, grad_kernel, grad_offsets, grad_mask):
        step = make_step(index)
        grad_sample, grad_masked, mask_point = grad_sample_of(step)
        if not split_loops:
            grad_rows = scatter(grad_rows, step.rows, step.weights, grad_masked)
        sample = sample_fn(input_rows, step.rows, step.weights)
        coord_grads = coord_grads_fn(input_rows, step.rows, step.weight_grads, grad_masked)
        # Added in place into the final layout (rows seen twice add zero): collecting
        # per-step pieces and transposing them would hold two more offset-sized copies.
        size = step.size
        slots = tf.stack(
            [tf.broadcast_to(step.start + tf.range(size)[:, None], (size, groups)),
             tf.broadcast_to(tf.range(groups), (size, groups)),
             tf.fill((size, groups), step.point)],
            axis=-1,
        )
        grad_offsets = tf.tensor_scatter_nd_add(grad_offsets, slots, coord_grads)
        if mask is not None:
            grad_mask = tf.tensor_scatter_nd_add(
                grad_mask, slots, tf.reduce_sum(grad_sample * sample, -1)
            )
            sample = sample * mask_point
        sample = tf.reshape(sample, (size, geometry.in_channels))
        grad_kernel = grad_kernel.write(
            index, tf.matmul(sample, step.grad_out, transpose_a=True)
        )
        return index + 1, grad_rows, grad_kernel, grad_offsets, grad_mask

    loop_vars = (
        tf.constant(0),
        tf.zeros(()) if split_loops else tf.zeros_like(input_rows),
        tf.TensorArray(dtype, size=num_steps),
        tf.zeros_like(offsets_flat),
        tf.zeros_like(mask_flat) if mask is not None else tf.zeros(()),
    )
    _, grad_rows, grad_kernel, grad_offsets, grad_mask = tf.while_loop(
        lambda index, *_: index < num_steps, body, loop_vars, parallel_iterations=1
    )
    if split_loops:
        _, grad_rows = tf.while_loop(
            lambda index, _: index < num_steps, input_grad_body,
            (tf.constant(0), tf.zeros_like(input_rows)), parallel_iterations=1,
        )
    grad_inputs = tf.reshape(grad_rows, tf.shape(inputs))
    grad_kernel = tf.reshape(
        grad_kernel.stack(),
        (num_points, num_chunks, geometry.in_channels, geometry.filters),
    )
    grad_kernel = tf.reshape(tf.reduce_sum(grad_kernel, axis=1), tf.shape(kernel))
    grad_offsets = tf.reshape(grad_offsets, tf.shape(offsets))
    if mask is None:
        return grad_inputs, grad_offsets, grad_kernel, None
    grad_mask = tf.reshape(grad_mask, tf.shape(mask))
    return grad_inputs, grad_offsets, grad_kernel, grad_mask


@functools.lru_cache(maxsize=None)
def _compiled_passes(geometry_args, has_mask, jit_compile):
    """The forward and backward passes as tf.functions, one pair per static configuration.

    XLA fuses each corner's gather into the weighted sum, so no gathered copy of the
    input is written out, and turns the backward scatter-adds into in-place updates.
    """

    def forward(inputs, offsets, kernel, mask):
        geometry = _Geometry(inputs, *geometry_args)
        return _deform_conv3d_forward(inputs, offsets, kernel, mask, geometry)

    def backward(inputs, offsets, kernel, mask, grad_outputs):
        geometry = _Geometry(inputs, *geometry_args)
        return _deform_conv3d_backward(
            inputs, offsets, kernel, mask, geometry, grad_outputs, jit_compile
        )

    if not has_mask:
        forward_fn = lambda inputs, offsets, kernel: forward(inputs, offsets, kernel, None)  # noqa: E731
        backward_fn = lambda inputs, offsets, kernel, grad_outputs: backward(  # noqa: E731
            inputs, offsets, kernel, None, grad_outputs
        )[:3]
    else:
        forward_fn, backward_fn = forward, backward
    return (
        tf.function(forward_fn, jit_compile=jit_compile, reduce_retracing=True),
        tf.function(backward_fn, reduce_retracing=True),
    )


def _deform_conv3d_core(inputs, offsets, kernel, mask, geometry_args, jit_compile):
    """The op on (B,D,H,W,C), (B,D',H',W',G,K,3), kernel, (B,D',H',W',G,K) tensors.

    Its gradient is written by hand (see `_deform_conv3d_backward`) so that autodiff
    does not keep every kernel point's samples for the backward pass.
    """
    forward, backward = _compiled_passes(geometry_args, mask is not None, jit_compile)
    tensors = (inputs, offsets, kernel) if mask is None else (inputs, offsets, kernel, mask)

    @tf.custom_gradient
    def op(*tensors):
        def grad(grad_outputs):
            return backward(*tensors, grad_outputs)

        # stop_gradient: the tape must not differentiate the compiled forward itself
        # (it would keep the loop's intermediates for a gradient nobody asks for).
        return forward(*[tf.stop_gradient(t) for t in tensors]), grad

    return op(*tensors)


def deform_conv3d(
    inputs, offsets, kernel, mask=None, strides=1, padding="valid", dilation_rate=1,
    jit_compile=True,
):
    """Deformable 3D convolution, channels-last, no bias.

    For output position o and kernel point k (row-major over (kd, kh, kw)), the input is
    sampled at p = o * strides - pad_before + k * dilation_rate + offset, per axis (t, y, x),
    by trilinear interpolation over the 8 corners floor(p) and floor(p) + 1; a corner
    outside the input contributes zero. The samples of offset group g (input channels
    [g*C/G, (g+1)*C/G)) use that group's offsets, are multiplied by the mask when given,
    and are contracted with `kernel` exactly as Conv3D does. With zero offsets (and a mask
    of ones) this is `tf.nn.conv3d` with the same strides, padding and dilation.

    Args:
        inputs: (B, D, H, W, C) float tensor.
        offsets: (B, D', H', W', G*K*3) offsets in input pixels, ordered
            [group g][kernel point k][(dt, dy, dx)], K = kd*kh*kw.
        kernel: (kd, kh, kw, C, F), the layout of Keras Conv3D's kernel.
        mask: optional (B, D', H', W', G*K) modulation (DCNv2), ordered [g][k].
        strides: int or 3 ints.
        padding: "valid" or "same", with TF's rule (pad_before = total // 2).
        dilation_rate: int or 3 ints.
        jit_compile: bool, whether the forward and backward passes run as XLA
            computations (faster on CPU, see docs/BENCHMARKS.md). Defaults to `True`.

    Returns:
        (B, D', H', W', F) tensor of the inputs' dtype. Under float16/bfloat16 the
        coordinates, interpolation weights, sums and the contraction run in float32.

    Raises:
        ValueError: for a kernel whose channels do not match the input, or offsets/mask
            whose last axis is not a multiple of 3*K / K dividing the channels.
    """
    strides = _standardize_triple(strides, "strides")
    dilation_rate = _standardize_triple(dilation_rate, "dilation_rate")
    padding = _standardize_padding(padding)
    inputs = tf.convert_to_tensor(inputs)
    offsets = tf.convert_to_tensor(offsets)
    kernel = tf.convert_to_tensor(kernel)
    kernel_shape = kernel.shape
    if kernel_shape.rank != 5 or None in kernel_shape.as_list():
        raise ValueError(
            "Expected `kernel` of static shape (kd, kh, kw, C, F). "
            f"Received: kernel.shape={kernel_shape}"
        )
    in_channels = int(kernel_shape[3])
    num_points = int(kernel_shape[0] * kernel_shape[1] * kernel_shape[2])
    if inputs.shape.rank != 5 or inputs.shape[-1] != in_channels:
        raise ValueError(
            f"Expected `inputs` of shape (B, D, H, W, {in_channels}) to match the "
            f"kernel. Received: inputs.shape={inputs.shape}"
        )
    offset_channels = offsets.shape[-1]
    if (
        offsets.shape.rank != 5
        or offset_channels is None
        or offset_channels % (3 * num_points)
        or in_channels % (offset_channels // (3 * num_points) or 1)
        or offset_channels == 0
    ):
        raise ValueError(
            f"Expected `offsets` of shape (B, D', H', W', G*{3 * num_points}) with G "
            f"dividing the {in_channels} input channels. "
            f"Received: offsets.shape={offsets.shape}"
        )
    num_groups = offset_channels // (3 * num_points)
    if mask is not None:
        mask = tf.convert_to_tensor(mask)
        if mask.shape.rank != 5 or mask.shape[-1] != num_groups * num_points:
            raise ValueError(
                f"Expected `mask` of shape (B, D', H', W', {num_groups * num_points}) "
                f"for {num_groups} offset group(s). Received: mask.shape={mask.shape}"
            )

    out_dtype = inputs.dtype
    compute_dtype = _interp_dtype(out_dtype)
    inputs = tf.cast(inputs, compute_dtype)
    kernel = tf.cast(kernel, compute_dtype)
    offsets = tf.cast(offsets, compute_dtype)
    geometry = _Geometry(inputs, kernel_shape, num_groups, strides, padding, dilation_rate)
    out_shape = (geometry.batch, *geometry.out_sizes)
    offsets = tf.reshape(offsets, (*out_shape, num_groups, num_points, 3))
    if mask is not None:
        mask = tf.reshape(tf.cast(mask, compute_dtype), (*out_shape, num_groups, num_points))

    geometry_args = (tuple(kernel_shape.as_list()), num_groups, strides, padding, dilation_rate)
    outputs = _deform_conv3d_core(inputs, offsets, kernel, mask, geometry_args, jit_compile)
    outputs = tf.reshape(outputs, (*out_shape, geometry.filters))
    outputs.set_shape(_static_output_shape(inputs.shape, kernel_shape, strides, padding,
                                           dilation_rate))
    return tf.cast(outputs, out_dtype)


def _static_output_shape(input_shape, kernel_shape, strides, padding, dilation_rate):
    dims = [input_shape[0]]
    for axis in range(3):
        size = input_shape[axis + 1]
        if size is None:
            dims.append(None)
        else:
            dims.append(
                conv_output_size_and_pad(
                    int(size), int(kernel_shape[axis]), strides[axis],
                    dilation_rate[axis], padding,
                )[0]
            )
    return tf.TensorShape(dims + [int(kernel_shape[4])])


@keras.saving.register_keras_serializable(package="video_models")
class DeformConv3D(keras.layers.Layer):
    """Deformable 3D convolution layer, a drop-in for `keras.layers.Conv3D`.

    Each of the kd*kh*kw kernel points samples the input at its regular Conv3D place plus
    a learned fractional offset (dt, dy, dx), read by trilinear interpolation; the samples
    are then contracted with the kernel exactly as Conv3D does (see `deform_conv3d` for the
    op's full semantics). The offsets, and with `modulated=True` a per-point mask (DCNv2),
    are predicted by the layer's own Conv3D branch (`offset_conv`) over the same input,
    with the same kernel size, strides, padding and dilation.

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
        self.kernel_size = _standardize_triple(kernel_size, "kernel_size")
        self.strides = _standardize_triple(strides, "strides")
        self.padding = _standardize_padding(padding)
        self.dilation_rate = _standardize_triple(dilation_rate, "dilation_rate")
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
        )
        if self.use_bias:
            outputs = outputs + keras.ops.cast(self.bias, outputs.dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        dims = [input_shape[0]]
        for axis in range(3):
            size = input_shape[axis + 1]
            if size is None:
                dims.append(None)
                continue
            out = conv_output_size_and_pad(
                size, self.kernel_size[axis], self.strides[axis],
                self.dilation_rate[axis], self.padding,
            )[0]
            if out <= 0:
                raise ValueError(
                    "The input is too small for the kernel: the output would have a "
                    f"non-positive size on axis {axis + 1}. "
                    f"Received: input_shape={tuple(input_shape)}"
                )
            dims.append(out)
        return tuple(dims) + (self.filters,)

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
