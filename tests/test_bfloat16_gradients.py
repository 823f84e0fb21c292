"""Every model's weight gradients under mixed_bfloat16 match float32's.

oneDNN's bfloat16 Conv3DBackpropFilter (TensorFlow 2.21 on an AVX512-BF16 CPU) returns
NaN or inf kernel gradients for `padding="same"` when the input has fewer frames than the
kernel is deep beyond one (R3D-18's layer4 at 16 frames has 2), so `train.mixed_precision:
auto` runs diverged at the first steps. `models.conv.conv3d` pads those layers explicitly;
this compares each model's gradients in both policies from the same weights, at inputs that
put 2 frames in front of a 3-deep kernel.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import build_model

# Healthy kernels agree at cosine 0.9 or more; the broken gradient scored 0.56 to 0.71 where
# it stayed finite.
COSINE_FLOOR = 0.8
# (name, input (frames, height, width, bands)): where a stage sees 2 frames.
CASES = [("small3d", (4, 12, 12, 3)), ("r3d_18", (16, 32, 32, 3))]


def _kernel_gradients(name, input_shape, policy, weights, clips, labels):
    keras.mixed_precision.set_global_policy(policy)
    try:
        # No dropout: its random mask would differ between the two models.
        model = build_model(name, 4, input_shape, dropout=0.0)
        if weights is not None:
            model.set_weights(weights)
        with tf.GradientTape() as tape:
            logits = tf.cast(model(clips, training=True), tf.float32)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        names = [variable.path for variable in model.trainable_variables]
        gradients = tape.gradient(loss, model.trainable_variables)
        return model.get_weights(), dict(zip(names, (tf.cast(g, tf.float32).numpy()
                                                     for g in gradients)))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name,input_shape", CASES,
                         ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in CASES])
def test_bfloat16_gradients_match_float32(name, input_shape):
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (2, *input_shape), dtype=np.uint8)
    labels = np.array([1, 3])
    keras.utils.set_random_seed(0)
    weights, reference = _kernel_gradients(name, input_shape, "float32", None, clips, labels)
    _, mixed = _kernel_gradients(name, input_shape, "mixed_bfloat16", weights, clips, labels)
    bad = []
    for path, expected in reference.items():
        got = mixed[path]
        if not np.isfinite(got).all():
            bad.append(f"{path}: {np.size(got) - np.isfinite(got).sum()} non-finite values")
            continue
        # bfloat16 keeps 8 significant bits and batch norm over 2 clips amplifies them: the
        # gradients point the same way (cosine near 1), their largest entries may differ.
        cosine = float(np.sum(got * expected) / max(
            np.linalg.norm(got) * np.linalg.norm(expected), 1e-30))
        if path.endswith("kernel") and cosine < COSINE_FLOOR:
            bad.append(f"{path}: cosine {cosine:.3f}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name,input_shape,padded", [
    # layer4 sees 2 frames at 16: its stride-1 3x3x3 convs (and R(2+1)D's 3x1x1 ones) pad
    # explicitly; layer3 (4 frames) keeps "same".
    ("r3d_18", (16, 32, 32, 3), ["layer4.0.conv2.0", "layer4.1.conv1.0", "layer4.1.conv2.0"]),
    ("r2plus1d_18", (16, 32, 32, 3), ["layer4.0.conv2.0.3", "layer4.1.conv1.0.3"]),
    ("mc3_18", (16, 32, 32, 3), []),  # layers 2-4 are 1x3x3: no axis shorter than 1
    ("small3d", (4, 12, 12, 3), ["conv4", "conv5"]),
])
def test_layers_on_fewer_frames_than_their_kernel_pad_explicitly(name, input_shape, padded):
    model = build_model(name, 4, input_shape)
    names = {layer.name for layer in model.layers}
    assert all(f"{layer}.pad" in names for layer in padded), sorted(
        n for n in names if n.endswith(".pad"))
    assert "layer3.1.conv1.0.pad" not in names and "conv3.pad" not in names
