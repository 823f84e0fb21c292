"""Tests for models/: build_model, every architecture, normalisation, saving, errors."""

import numpy as np
import pytest

import keras

import models
from models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ClipNormalization

# Small clip sizes: the big models are only built and run at these, never at 16x112x112.
SMALL_SHAPE = (8, 32, 32, 3)


def random_clips(shape, batch=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, *shape), dtype=np.uint8)


@pytest.fixture(scope="module")
def built_models():
    """One model per name at SMALL_SHAPE with 5 classes, built once for the module."""
    return {name: models.build_model(name, 5, SMALL_SHAPE) for name in models.MODEL_NAMES}


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_output_is_logits_of_num_classes(built_models, name):
    model = built_models[name]
    assert model.name == name
    assert model.inputs[0].dtype == "uint8"
    assert tuple(model.inputs[0].shape) == (None, *SMALL_SHAPE)
    logits = keras.ops.convert_to_numpy(model(random_clips(SMALL_SHAPE), training=False))
    assert logits.shape == (2, 5)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    assert model.compute_output_shape((2, *SMALL_SHAPE)) == (2, 5)


@pytest.mark.parametrize("name", ["small3d", "frames_as_channels"])
@pytest.mark.parametrize("shape", [(8, 32, 32, 1), (8, 32, 32, 4), (4, 24, 40, 10), (16, 64, 64, 3)])
def test_any_band_count_and_clip_size(name, shape):
    model = models.build_model(name, 7, shape)
    logits = model(random_clips(shape), training=False)
    assert tuple(logits.shape) == (2, 7)


def test_small3d_is_small():
    assert models.build_model("small3d", 8, (16, 64, 64, 3)).count_params() < 1_000_000


@pytest.mark.parametrize(
    "bands, expected_mean, expected_std",
    [(3, IMAGENET_MEAN, IMAGENET_STD), (1, (127.5,), (127.5,)), (4, (127.5,) * 4, (127.5,) * 4)],
)
def test_default_normalisation_per_band_count(bands, expected_mean, expected_std):
    model = models.build_model("small3d", 2, (4, 8, 8, bands))
    normalize = model.get_layer("normalize")
    assert normalize.mean == pytest.approx(expected_mean)
    assert normalize.std == pytest.approx(expected_std)


@pytest.mark.parametrize("mean, std", [(10.0, 2.0), ([0.0, 100.0, 200.0, 255.0], [1.0, 2.0, 4.0, 8.0])])
def test_normalisation_matches_numpy(mean, std):
    clips = random_clips((4, 8, 8, 4))
    model = models.build_model("small3d", 2, (4, 8, 8, 4), mean=mean, std=std)
    normalize = model.get_layer("normalize")
    got = keras.ops.convert_to_numpy(normalize(clips))
    expected = (clips.astype(np.float64) - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)


def test_clip_normalization_rejects_wrong_band_count():
    layer = ClipNormalization(mean=[1.0, 2.0], std=[1.0, 1.0])
    with pytest.raises(ValueError, match="2 per-band values but the input has 3 bands"):
        layer(random_clips((2, 4, 4, 3)))


def test_frames_as_channels_folds_frame_major():
    """The fold layers give (H, W, F*b) with channel f*b + band, like a numpy reshape."""
    shape = (3, 4, 5, 2)
    model = models.build_model("frames_as_channels", 2, shape, mean=0.0, std=1.0)
    fold = keras.Model(model.input, model.get_layer("fold_frames.reshape").output)
    clips = random_clips(shape)
    expected = clips.transpose(0, 2, 3, 1, 4).reshape(2, 4, 5, 6).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fold(clips)), expected)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_saves_and_reloads_with_safe_mode(built_models, name, tmp_path):
    model = built_models[name]
    clips = random_clips(SMALL_SHAPE, seed=1)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert reloaded.name == name
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(reloaded(clips, training=False)),
        keras.ops.convert_to_numpy(model(clips, training=False)),
    )


def test_small3d_one_training_step_lowers_loss():
    keras.utils.set_random_seed(0)
    model = models.build_model("small3d", 3, (4, 16, 16, 3), dropout=0.0)
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clips = random_clips((4, 16, 16, 3), batch=6)
    labels = np.array([0, 1, 2, 0, 1, 2])
    history = model.fit(clips, labels, batch_size=6, epochs=5, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "resnet50"}, r"Unknown model name. Expected one of \['small3d'"),
        ({"depth": 3}, r"Unknown option\(s\) \['depth'\] for model 'small3d'. Expected any of \['mean'"),
        ({"mean": [1.0, 2.0]}, r"`mean` must be one number or a list of 3 numbers"),
        ({"std": [1.0, 0.0, 1.0]}, r"Every `std` must be > 0"),
        ({"std": "imagenet"}, r"`std` must be a number or a list of numbers"),
        ({"dropout": 1.0}, r"`dropout` must be a number in \[0, 1\). Received: dropout=1.0"),
        ({"deformable_stages": [0]}, r"`deformable_stages` must be a list of 1-based stage numbers in 1..5"),
        ({"deformable_stages": [6]}, r"in 1..5. Received: deformable_stages=\[6\]"),
        ({"offset_groups": 0}, r"`offset_groups` must be a positive int. Received: offset_groups=0"),
        ({"modulated": "yes"}, r"`modulated` must be true or false"),
        ({"num_classes": 0}, r"`num_classes` must be a positive int"),
        ({"input_shape": (8, 32, 32)}, r"`input_shape` must be 4 positive ints"),
        ({"name": "frames_as_channels", "deformable_stages": [1]}, r"Unknown option\(s\) \['deformable_stages'\]"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    arguments = {"name": "small3d", "num_classes": 4, "input_shape": (4, 16, 16, 3)}
    arguments.update(kwargs)
    name = arguments.pop("name")
    num_classes = arguments.pop("num_classes")
    input_shape = arguments.pop("input_shape")
    with pytest.raises(ValueError, match=message):
        models.build_model(name, num_classes, input_shape, **arguments)
