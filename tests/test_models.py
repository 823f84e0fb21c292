"""Tests for models/: build_model, every architecture, normalisation, saving, errors."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import keras

import models
from models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ClipNormalization, FrameDifferences
from models.pretrained import TORCH_TENSOR_NAMES

# Small clip sizes: the big models are only built and run at these, never at 16x112x112.
SMALL_SHAPE = (8, 32, 32, 3)
# s3d's fixed average pool needs at least 13x209x209 clips: tests/test_s3d.py covers it.
# MoViNet A1/A2 are A0 with more blocks (tests/test_movinet.py counts their parameters).
SMALL_MODEL_NAMES = tuple(name for name in models.MODEL_NAMES
                          if name != "s3d" and not name.startswith(("movinet_a1", "movinet_a2")))


def random_clips(shape, batch=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, *shape), dtype=np.uint8)


NUM_CLASSES = 400  # Kinetics-400, the class count torchvision's parameter counts are for


@pytest.fixture(scope="module")
def built_models():
    """One model per SMALL_MODEL_NAMES name at SMALL_SHAPE with 400 classes, built once."""
    keras.utils.set_random_seed(0)
    return {name: models.build_model(name, NUM_CLASSES, SMALL_SHAPE) for name in SMALL_MODEL_NAMES}


@pytest.mark.parametrize("name", SMALL_MODEL_NAMES)
def test_output_is_logits_of_num_classes(built_models, name):
    model = built_models[name]
    assert model.name == name
    assert model.inputs[0].dtype == "uint8"
    assert tuple(model.inputs[0].shape) == (None, *SMALL_SHAPE)
    logits = keras.ops.convert_to_numpy(model(random_clips(SMALL_SHAPE), training=False))
    assert logits.shape == (2, NUM_CLASSES)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    assert model.compute_output_shape((2, *SMALL_SHAPE)) == (2, NUM_CLASSES)


@pytest.mark.parametrize(
    "name, shape",
    [
        (name, shape)
        for name in ("small3d", "frames_as_channels")
        for shape in [(8, 32, 32, 1), (8, 32, 32, 4), (4, 24, 40, 10), (16, 64, 64, 3)]
    ]
    # The big models are slow to build: each gets band counts other than the fixture's 3.
    + [
        ("c3d", (8, 32, 32, 1)),
        ("r3d_18", (8, 32, 32, 10)),
        ("mc3_18", (4, 16, 16, 1)),
        ("mc3_18", (4, 16, 16, 4)),
        ("r2plus1d_18", (8, 32, 32, 4)),
    ],
)
def test_any_band_count_and_clip_size(name, shape):
    model = models.build_model(name, 7, shape)
    logits = model(random_clips(shape), training=False)
    assert tuple(logits.shape) == (2, 7)


# torchvision's `num_params` for its Kinetics-400 weights (3 bands, 400 classes).
TORCHVISION_PARAMETER_COUNTS = {"r3d_18": 33_371_472, "mc3_18": 11_695_440, "r2plus1d_18": 31_505_325}


def trainable_parameter_count(model):
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMETER_COUNTS))
def test_parameter_count_equals_torchvision(built_models, name):
    assert trainable_parameter_count(built_models[name]) == TORCHVISION_PARAMETER_COUNTS[name]


def c3d_parameter_count(shape, num_classes):
    """C3D's parameters written out from the paper: 3x3x3 convs with biases, 3 dense layers."""
    frames, height, width, bands = shape
    count, channels = 0, bands
    for filters in (64, 128, 256, 256, 512, 512, 512, 512):
        count += 27 * channels * filters + filters
        channels = filters
    # pool1 is 1x2x2, pool2..pool5 2x2x2, rounding up ("same").
    frames = -(-frames // 16)
    height, width = -(-height // 32), -(-width // 32)
    flat = frames * height * width * 512
    return count + (flat * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * num_classes + num_classes)


def test_c3d_parameter_count(built_models):
    assert trainable_parameter_count(built_models["c3d"]) == c3d_parameter_count(SMALL_SHAPE, NUM_CLASSES)
    # At the paper's 16x112x112, pool5 gives 1x4x4x512 = 8192 features to fc6.
    assert c3d_parameter_count((16, 112, 112, 3), 487) - c3d_parameter_count((16, 32, 32, 3), 487) == (
        (8192 - 512) * 4096
    )


def torchvision_state_dict_shapes(arch, bands=3, num_classes=NUM_CLASSES):
    """{key: shape} of torchvision's video ResNet-18 state_dict, written out from its source.

    Slow and explicit on purpose: the reference the Keras layer names and shapes must map to.
    """
    shapes = {}

    def conv(name, in_channels, out_channels, kernel):
        shapes[f"{name}.weight"] = (out_channels, in_channels, *kernel)

    def batch_norm(name, channels):
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{suffix}"] = (channels,)

    if arch == "r2plus1d_18":
        conv("stem.0", bands, 45, (1, 7, 7))
        batch_norm("stem.1", 45)
        conv("stem.3", 45, 64, (3, 1, 1))
        batch_norm("stem.4", 64)
    else:
        conv("stem.0", bands, 64, (3, 7, 7))
        batch_norm("stem.1", 64)
    inplanes = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            midplanes = (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)
            for conv_name, in_channels in (("conv1", inplanes), ("conv2", planes)):
                if arch == "r2plus1d_18":
                    conv(f"{prefix}.{conv_name}.0.0", in_channels, midplanes, (1, 3, 3))
                    batch_norm(f"{prefix}.{conv_name}.0.1", midplanes)
                    conv(f"{prefix}.{conv_name}.0.3", midplanes, planes, (3, 1, 1))
                else:
                    temporal = 3 if arch == "r3d_18" or stage == 1 else 1
                    conv(f"{prefix}.{conv_name}.0", in_channels, planes, (temporal, 3, 3))
                batch_norm(f"{prefix}.{conv_name}.1", planes)
            if inplanes != planes:
                conv(f"{prefix}.downsample.0", inplanes, planes, (1, 1, 1))
                batch_norm(f"{prefix}.downsample.1", planes)
            inplanes = planes
    shapes["fc.weight"] = (num_classes, 512)
    shapes["fc.bias"] = (num_classes,)
    return shapes


# docs/MODELS.md: Keras weight `<layer>/<variable>` <-> torchvision `<layer>.<parameter>`,
# the rule the checkpoint loader applies.
KERAS_TO_TORCH_PARAMETER = TORCH_TENSOR_NAMES


def torch_shape_of_keras_weight(shape):
    """Conv3D kernels (t, h, w, in, out) -> (out, in, t, h, w); Dense (in, out) -> (out, in)."""
    if len(shape) == 5:
        return (shape[4], shape[3], shape[0], shape[1], shape[2])
    if len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMETER_COUNTS))
def test_weights_map_one_to_one_to_torchvision_state_dict(built_models, name):
    mapped = {}
    for weight in built_models[name].weights:
        layer_name, variable = weight.path.split("/")
        key = f"{layer_name}.{KERAS_TO_TORCH_PARAMETER[variable]}"
        assert key not in mapped, f"two Keras weights map to {key}"
        mapped[key] = torch_shape_of_keras_weight(tuple(weight.shape))
    assert mapped == torchvision_state_dict_shapes(name)


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


@pytest.mark.parametrize(
    "layer", [ClipNormalization(mean=[10.0, 20.0], std=[2.0, 4.0]), FrameDifferences()], ids=lambda l: type(l).__name__
)
def test_preprocessing_layers_same_eagerly_in_tf_data_and_after_config_round_trip(layer):
    import tensorflow as tf

    clips = random_clips((4, 6, 6, 2))
    eager = keras.ops.convert_to_numpy(layer(clips))
    in_dataset = next(iter(tf.data.Dataset.from_tensors(clips).map(layer))).numpy()
    rebuilt = type(layer).from_config(layer.get_config())
    np.testing.assert_allclose(in_dataset, eager, rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rebuilt(clips)), eager, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float16", "float32"])
def test_models_take_the_stored_dtype_and_standardise_in_float32(dtype):
    # Reflectances 0..10000 with the dataset's statistics: standardised as numpy does it.
    values = np.random.default_rng(0).uniform(0, 10000, (2, 4, 8, 8, 3)).astype(dtype)
    if dtype == "int16":
        values[0, 0, 0, 0, 0] = -5
    model = models.build_model("small3d", 2, (4, 8, 8, 3), input_dtype=dtype,
                               mean=[5000.0, 4000.0, 3000.0], std=[2900.0, 2000.0, 1000.0])
    assert keras.backend.standardize_dtype(model.inputs[0].dtype) == dtype
    normalize = model.get_layer("normalize")
    got = keras.ops.convert_to_numpy(normalize(values))
    expected = (values.astype(np.float64) - [5000.0, 4000.0, 3000.0]) / [2900.0, 2000.0, 1000.0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.isfinite(keras.ops.convert_to_numpy(model(values))).all()


def test_nan_becomes_zero_after_standardisation():
    layer = ClipNormalization(mean=[100.0, 0.5], std=[10.0, 0.1])
    values = np.array([[[[[np.nan, 0.7], [120.0, np.nan]]]]], "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(values)),
                               [[[[[0.0, 2.0], [2.0, 0.0]]]]], rtol=1e-5)


def test_bfloat16_keeps_16_bit_precision_until_standardised():
    layer = ClipNormalization(mean=[10000.0], std=[1.0], dtype="mixed_bfloat16")
    values = np.array([10001, 10002, 10003], "uint16").reshape(1, 1, 1, 3, 1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(
        keras.ops.cast(layer(values), "float32")).ravel(), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("name,bands,expected", [
    ("small3d", 3, (IMAGENET_MEAN, IMAGENET_STD)), ("small3d", 2, ((127.5,) * 2, (127.5,) * 2)),
    ("movinet_a0", 3, ((0.0,) * 3, (255.0,) * 3))])
def test_default_normalization_is_what_build_model_uses(name, bands, expected):
    assert models.build.default_normalization(name, bands) == expected


def test_clip_normalization_rejects_wrong_band_count():
    layer = ClipNormalization(mean=[1.0, 2.0], std=[1.0, 1.0])
    with pytest.raises(ValueError, match="2 per-band values but the input has 3 bands"):
        layer(random_clips((2, 4, 4, 3)))


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_frame_differences_match_numpy(dtype):
    clips = random_clips((5, 4, 4, 3)).astype(dtype)
    layer = FrameDifferences()
    got = keras.ops.convert_to_numpy(layer(clips))
    reference = clips.astype(np.float64)
    np.testing.assert_allclose(got, reference[:, 1:] - reference[:, :-1], rtol=1e-6)
    assert layer.compute_output_shape(clips.shape) == (2, 4, 4, 4, 3)


@pytest.mark.parametrize("frame_differences", [True, False])
def test_small3d_frame_differences_option(frame_differences):
    model = models.build_model("small3d", 3, (4, 16, 16, 3), frame_differences=frame_differences)
    names = [layer.name for layer in model.layers]
    assert ("frame_differences" in names) == frame_differences
    # A clip that does not move gives the same logits as an all-zero clip: only motion counts.
    still = np.repeat(random_clips((1, 16, 16, 3)), 4, axis=1)
    zeros = np.zeros_like(still)
    same = np.allclose(
        keras.ops.convert_to_numpy(model(still, training=False)),
        keras.ops.convert_to_numpy(model(zeros, training=False)),
        atol=1e-6,
    )
    assert same == frame_differences


def test_frames_as_channels_folds_frame_major():
    """The fold layers give (H, W, F*b) with channel f*b + band, like a numpy reshape."""
    shape = (3, 4, 5, 2)
    model = models.build_model("frames_as_channels", 2, shape, mean=0.0, std=1.0)
    fold = keras.Model(model.input, model.get_layer("fold_frames.reshape").output)
    clips = random_clips(shape)
    expected = clips.transpose(0, 2, 3, 1, 4).reshape(2, 4, 5, 6).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fold(clips)), expected)


def conv3d_reference(x, kernel, strides, padding):
    """Direct PyTorch-semantics Conv3D: zeros on both sides, then a strided valid sum."""
    x = np.pad(x, [(0, 0)] + [(p, p) for p in padding] + [(0, 0)])
    kt, kh, kw = kernel.shape[:3]
    out_shape = [(x.shape[1 + a] - kernel.shape[a]) // strides[a] + 1 for a in range(3)]
    out = np.zeros((x.shape[0], *out_shape, kernel.shape[-1]))
    for t, h, w in np.ndindex(*out_shape):
        t0, h0, w0 = t * strides[0], h * strides[1], w * strides[2]
        window = x[:, t0 : t0 + kt, h0 : h0 + kh, w0 : w0 + kw]
        out[:, t, h, w] = np.einsum("bthwc,thwco->bo", window, kernel)
    return out


@pytest.mark.parametrize(
    "kernel_size, strides, padding",
    [
        ((3, 3, 3), (2, 2, 2), (1, 1, 1)),  # r3d_18's strided block conv
        ((3, 7, 7), (1, 2, 2), (1, 3, 3)),  # the basic stem
        ((1, 3, 3), (1, 2, 2), (0, 1, 1)),  # mc3_18 / R(2+1)D spatial, strided
        ((3, 1, 1), (2, 1, 1), (1, 0, 0)),  # R(2+1)D temporal, strided
        ((3, 3, 3), (1, 1, 1), (1, 1, 1)),  # stride 1: Keras "same"
    ],
)
def test_conv3d_pads_symmetrically_like_pytorch(kernel_size, strides, padding):
    from models.conv import conv3d

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 6, 10, 9, 2)).astype(np.float32)
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, conv3d(inputs, 3, kernel_size, strides=strides, padding=padding, name="c"))
    kernel = rng.normal(size=(*kernel_size, 2, 3)).astype(np.float32)
    model.get_layer("c").kernel.assign(kernel)
    expected = conv3d_reference(x.astype(np.float64), kernel.astype(np.float64), strides, padding)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, rtol=1e-4, atol=1e-4)


DEFORMABLE_CASES = [
    # (name, options, names of the layers that must be DeformConv3D)
    ("small3d", {"deformable_stages": [1, 3], "modulated": True}, ["conv1", "conv3"]),
    ("c3d", {"deformable_stages": [5], "offset_groups": 4}, ["conv5a", "conv5b"]),
    ("r3d_18", {"deformable_stages": [2]}, [f"layer2.{b}.conv{c}.0" for b in (0, 1) for c in (1, 2)]),
    (
        "mc3_18",
        {"deformable_stages": [1, 4], "modulated": True},
        [f"layer{s}.{b}.conv{c}.0" for s in (1, 4) for b in (0, 1) for c in (1, 2)],
    ),
    (
        "r2plus1d_18",
        {"deformable_stages": [3], "offset_groups": 2, "modulated": True},
        [f"layer3.{b}.conv{c}.0.0" for b in (0, 1) for c in (1, 2)],
    ),
]


def copy_weights_by_layer_name(source, target):
    """Gives `target` every weight of `source`; a DeformConv3D takes its Conv3D's kernel/bias."""
    from models.deform_conv3d import DeformConv3D

    for layer in target.layers:
        if not layer.weights:
            continue
        source_layer = source.get_layer(layer.name)
        if isinstance(layer, DeformConv3D):
            layer.kernel.assign(source_layer.kernel)
            if layer.use_bias:
                layer.bias.assign(source_layer.bias)
        else:
            layer.set_weights(source_layer.get_weights())


@pytest.mark.parametrize("name, options, deformable_layers", DEFORMABLE_CASES)
def test_fresh_deformable_variant_equals_plain_twin(built_models, name, options, deformable_layers):
    from models.deform_conv3d import DeformConv3D

    plain = built_models[name]
    deformable = models.build_model(name, NUM_CLASSES, SMALL_SHAPE, **options)
    assert deformable.name == name
    found = sorted(layer.name for layer in deformable.layers if isinstance(layer, DeformConv3D))
    assert found == sorted(deformable_layers)
    for layer_name in deformable_layers:
        assert plain.get_layer(layer_name).kernel.shape == deformable.get_layer(layer_name).kernel.shape
    copy_weights_by_layer_name(plain, deformable)
    clips = random_clips(SMALL_SHAPE, seed=2)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(deformable(clips, training=False)),
        keras.ops.convert_to_numpy(plain(clips, training=False)),
        rtol=1e-4,
        atol=1e-5,
    )


def test_deformable_options_without_stages_build_the_plain_model():
    from models.deform_conv3d import DeformConv3D

    model = models.build_model("small3d", 4, (4, 16, 16, 3), offset_groups=2, modulated=True)
    assert not any(isinstance(layer, DeformConv3D) for layer in model.layers)


@pytest.mark.parametrize("name", SMALL_MODEL_NAMES + ("small3d_deformable",))
def test_saves_and_reloads_with_safe_mode(built_models, name, tmp_path):
    if name == "small3d_deformable":
        model = models.build_model("small3d", 6, SMALL_SHAPE, deformable_stages=[2], modulated=True)
        # Non-zero offsets, so the reloaded offset branch is really exercised.
        offset_conv = model.get_layer("conv2").offset_conv
        offset_conv.kernel.assign(np.random.default_rng(3).normal(0, 0.05, offset_conv.kernel.shape))
    else:
        model = built_models[name]
    clips = random_clips(SMALL_SHAPE, seed=1)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert reloaded.name == model.name
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(reloaded(clips, training=False)),
        keras.ops.convert_to_numpy(model(clips, training=False)),
    )


@pytest.mark.slow
def test_deformable_model_reloads_in_a_fresh_process(tmp_path):
    """`models.register_layers()` registers every custom layer a saved model may hold: the
    loaders (training.scoring) call it, and so does a user's script."""
    model = models.build_model("small3d", 3, (4, 16, 16, 3), deformable_stages=[5])
    clips = random_clips((4, 16, 16, 3))
    path = tmp_path / "deformable.keras"
    model.save(path)
    np.save(tmp_path / "clips.npy", clips)
    np.save(tmp_path / "logits.npy", keras.ops.convert_to_numpy(model(clips, training=False)))
    script = textwrap.dedent(
        f"""
        import numpy as np, keras, models
        models.register_layers()
        model = keras.models.load_model({str(path)!r}, safe_mode=True)
        logits = keras.ops.convert_to_numpy(model(np.load({str(tmp_path / "clips.npy")!r}), training=False))
        np.testing.assert_array_equal(logits, np.load({str(tmp_path / "logits.npy")!r}))
        """
    )
    repo_root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=repo_root, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


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
        ({"name": "r3d_18", "deformable_stages": [5]}, r"in 1..4. Received: deformable_stages=\[5\]"),
        ({"name": "c3d", "deformable_stages": "all"}, r"in 1..5. Received: deformable_stages='all'"),
        ({"offset_groups": 0}, r"`offset_groups` must be a positive int. Received: offset_groups=0"),
        ({"input_dtype": "int64"}, r"`input_dtype` must be one of"),
        ({"modulated": "yes"}, r"`modulated` must be true or false"),
        ({"num_classes": 0}, r"`num_classes` must be a positive int"),
        ({"frame_differences": 1}, r"`frame_differences` must be true or false"),
        ({"input_shape": (1, 16, 16, 3)}, r"FrameDifferences needs clips of at least 2 frames"),
        ({"name": "r3d_18", "frame_differences": False}, r"Unknown option\(s\) \['frame_differences'\]"),
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


def test_import_models_and_its_catalog_load_no_keras():
    """`import models` has no side effect: the catalog (what training.config reads) comes
    without Keras or TensorFlow, and the first use of an export configures TensorFlow."""
    code = ("import os, sys, models, models.catalog\n"
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules), "
            "os.environ.get('TF_ENABLE_ONEDNN_OPTS'), len(models.MODEL_NAMES))")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["[]", "None", str(len(models.MODEL_NAMES))]


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_every_row_builds_with_all_the_options_it_lists(name):
    """A row's `options` are what its builder takes (flags here given as false)."""
    from models.catalog import MODELS

    spec = MODELS[name]
    values = {"mean": 100.0, "std": 50.0, "dropout": 0.1, "deformable_stages": [spec.stages.count],
              "offset_groups": 1, "modulated": True}
    shape = (*spec.min_input, 3) if name == "s3d" else (4, 16, 16, 3)
    options = {option: values.get(option, False) for option in spec.options}
    model = models.build_model(name, 3, shape, **options)
    assert model.name == name and model.get_layer("normalize").std == [50.0] * 3