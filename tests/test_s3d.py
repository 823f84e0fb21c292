"""Tests for models/s3d.py: torchvision's S3D (names, shapes, sizes) and SymmetricMaxPooling3D."""

import json
from pathlib import Path

import numpy as np
import pytest

import keras

import models
from models.catalog import MODELS
from models.s3d import SymmetricMaxPooling3D, features_shape
from models.pretrained import TORCH_TENSOR_NAMES

# The smallest clip S3D takes (its catalog row's `min_input`, checked below): every forward
# test runs at it (S3D at 224 is heavy on 2 cores).
MIN_FRAMES, MIN_SIZE, _ = MODELS["s3d"].min_input
MIN_SHAPE = (MIN_FRAMES, MIN_SIZE, MIN_SIZE, 3)
NUM_CLASSES = 400  # Kinetics-400, the class count of torchvision's parameter count
TORCHVISION_KEYS = Path(__file__).parent / "data" / "s3d_torchvision_keys.json"


def torchvision_document():
    return json.loads(TORCHVISION_KEYS.read_text())


def random_clips(shape, batch=1, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, *shape), dtype=np.uint8)


@pytest.fixture(scope="module")
def s3d_model():
    keras.utils.set_random_seed(0)
    return models.build_model("s3d", NUM_CLASSES, MIN_SHAPE)


def test_parameter_count_equals_torchvision(s3d_model):
    # torchvision's `num_params` for S3D_Weights.KINETICS400_V1 (3 bands, 400 classes).
    assert sum(int(np.prod(w.shape)) for w in s3d_model.trainable_weights) == 8_320_048


# docs/MODELS.md: Keras weight `<layer>/<variable>` <-> torchvision `<layer>.<parameter>`,
# the rule the checkpoint loader applies.
KERAS_TO_TORCH_PARAMETER = TORCH_TENSOR_NAMES


def test_weights_map_one_to_one_to_torchvision_state_dict(s3d_model):
    """Every key of torchvision's state_dict (bench/make_s3d_keys.py) is one Keras weight."""
    document = torchvision_document()
    expected = {
        key: tuple(shape)
        for key, shape in document["keys"].items()
        if not key.endswith(".num_batches_tracked")  # no Keras counterpart
    }
    mapped = {}
    for weight in s3d_model.weights:
        layer_name, variable = weight.path.split("/")
        key = f"{layer_name}.{KERAS_TO_TORCH_PARAMETER[variable]}"
        assert key not in mapped, f"two Keras weights map to {key}"
        shape = tuple(weight.shape)
        # Conv3D kernels are (t, h, w, in, out); torch's (out, in, t, h, w).
        mapped[key] = (shape[4], shape[3], *shape[:3]) if len(shape) == 5 else shape
    assert mapped == expected
    assert document["num_params"] == 8_320_048


def test_pools_have_torchvision_s_windows(s3d_model):
    """Every MaxPool3d/AvgPool3d of torchvision's S3D is the layer of the same name here."""
    pools = torchvision_document()["pools"]
    assert len(pools) == 14  # 4 in `features`, 9 in the Inception branches, `avgpool`
    for name, pool in pools.items():
        layer = s3d_model.get_layer(name)
        assert pool["ceil_mode"] is False  # floor rounding, which both layers use
        if pool["kind"] == "MaxPool3d":
            assert isinstance(layer, SymmetricMaxPooling3D)
            assert (layer.pool_size, layer.strides, layer.padding) == (
                tuple(pool["kernel_size"]), tuple(pool["stride"]), tuple(pool["padding"])
            )
        else:
            assert isinstance(layer, keras.layers.AveragePooling3D)
            assert (layer.pool_size, layer.strides, layer.padding) == (
                tuple(pool["kernel_size"]), tuple(pool["stride"]), "valid"
            )
            assert pool["padding"] == [0, 0, 0]


def test_batch_norm_and_dropout_are_torchvision_s(s3d_model):
    batch_norms = [l for l in s3d_model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(batch_norms) == 77
    # eps 1e-3 and PyTorch momentum 0.001, which Keras writes as 0.999.
    assert {(l.epsilon, l.momentum) for l in batch_norms} == {(1e-3, 0.999)}
    assert s3d_model.get_layer("classifier.0").rate == 0.2


def test_output_is_logits_of_num_classes(s3d_model):
    clips = random_clips(MIN_SHAPE)
    logits = keras.ops.convert_to_numpy(s3d_model(clips, training=False))
    assert logits.shape == (1, NUM_CLASSES)
    assert np.all(np.isfinite(logits))
    assert s3d_model.compute_output_shape((2, *MIN_SHAPE)) == (2, NUM_CLASSES)
    assert tuple(s3d_model.get_layer("features.15.concat").output.shape) == (None, 2, 7, 7, 1024)


def test_saves_and_reloads_with_safe_mode(s3d_model, tmp_path):
    clips = random_clips(MIN_SHAPE, seed=1)
    path = tmp_path / "s3d.keras"
    s3d_model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert reloaded.name == "s3d"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(reloaded(clips, training=False)),
        keras.ops.convert_to_numpy(s3d_model(clips, training=False)),
    )


@pytest.mark.parametrize("clip, expected", torchvision_document()["features_shapes"])
def test_features_shape_equals_torchvision_s(clip, expected):
    """`features_shape` against torchvision's `model.features` output, measured by bench/make_s3d_keys.py."""
    assert features_shape(*clip) == tuple(expected)


def test_min_clip_is_the_smallest_that_fits_the_average_pool():
    assert features_shape(MIN_FRAMES, MIN_SIZE, MIN_SIZE) == (2, 7, 7)
    assert features_shape(MIN_FRAMES - 1, MIN_SIZE, MIN_SIZE)[0] < 2
    assert features_shape(MIN_FRAMES, MIN_SIZE - 1, MIN_SIZE - 1)[1:] == (6, 6)


def test_larger_clip_averages_the_logits_of_every_position():
    model = models.build_model("s3d", 5, (32, 256, 231, 1))
    assert tuple(model.get_layer("features.15.concat").output.shape) == (None, 4, 8, 7, 1024)
    # The (2, 7, 7) average pool leaves 3x2x1 positions; the logits are their mean.
    assert tuple(model.get_layer("classifier.1").output.shape) == (None, 3, 2, 1, 5)
    assert tuple(model.output.shape) == (None, 5)


@pytest.mark.parametrize(
    "input_shape",
    [(MIN_FRAMES - 1, 224, 224, 3), (16, MIN_SIZE - 1, 224, 3), (16, 224, 112, 3), (8, 32, 32, 1)],
)
def test_too_small_clip_raises_value_error(input_shape):
    with pytest.raises(ValueError, match=r"s3d needs clips of at least 13 frames and 209 x 209 pixels"):
        models.build_model("s3d", 4, input_shape)


def test_has_no_deformable_variant():
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['deformable_stages'\] for model 's3d'"):
        models.build_model("s3d", 4, MIN_SHAPE, deformable_stages=[1])


def max_pool_reference(x, pool_size, strides, padding):
    """PyTorch's MaxPool3d (ceil_mode off), one output position at a time."""
    batch, *sizes, channels = x.shape
    padded = np.full(
        (batch, *(n + 2 * p for n, p in zip(sizes, padding)), channels), -np.inf, x.dtype
    )
    padded[:, padding[0]:padding[0] + sizes[0], padding[1]:padding[1] + sizes[1],
           padding[2]:padding[2] + sizes[2]] = x
    out_sizes = [(n + 2 * p - k) // s + 1 for n, k, s, p in zip(sizes, pool_size, strides, padding)]
    out = np.empty((batch, *out_sizes, channels), x.dtype)
    for t in range(out_sizes[0]):
        for i in range(out_sizes[1]):
            for j in range(out_sizes[2]):
                window = padded[
                    :,
                    t * strides[0]:t * strides[0] + pool_size[0],
                    i * strides[1]:i * strides[1] + pool_size[1],
                    j * strides[2]:j * strides[2] + pool_size[2],
                ]
                out[:, t, i, j] = window.max(axis=(1, 2, 3))
    return out


@pytest.mark.parametrize(
    "pool_size, strides, padding",
    [
        ((1, 3, 3), (1, 2, 2), (0, 1, 1)),  # features.1, features.4
        ((3, 3, 3), (2, 2, 2), (1, 1, 1)),  # features.7
        ((2, 2, 2), (2, 2, 2), (0, 0, 0)),  # features.13
        ((3, 3, 3), (1, 1, 1), (1, 1, 1)),  # the Inception blocks' branch3 ("same" path)
        ((3, 2, 3), (1, 1, 2), (1, 1, 0)),
    ],
)
@pytest.mark.parametrize("sizes", [(4, 8, 8), (5, 7, 9)])
def test_symmetric_max_pooling_equals_pytorch_rule(pool_size, strides, padding, sizes):
    # Negative inputs: zero padding would win at the borders, -inf never does.
    x = np.random.default_rng(0).normal(-3.0, 1.0, (2, *sizes, 3)).astype("float32")
    layer = SymmetricMaxPooling3D(pool_size, strides=strides, padding=padding)
    expected = max_pool_reference(x, pool_size, strides, padding)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), expected)
    assert layer.compute_output_shape(x.shape) == expected.shape
    restored = SymmetricMaxPooling3D.from_config(layer.get_config())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(x)), expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pool_size": 0}, r"`pool_size` must be an int or a tuple of 3 ints, each >= 1. Received: pool_size=0"),
        ({"pool_size": (2, 2)}, r"`pool_size` must be an int or a tuple of 3 ints"),
        ({"pool_size": 3, "strides": (1, 0, 1)}, r"`strides` must be .* each >= 1"),
        ({"pool_size": 3, "padding": -1}, r"`padding` must be .* each >= 0"),
        ({"pool_size": (1, 3, 3), "padding": (1, 1, 1)}, r"Each `padding` must be at most half of `pool_size`"),
    ],
)
def test_symmetric_max_pooling_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SymmetricMaxPooling3D(**kwargs)
