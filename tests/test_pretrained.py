"""Pretrained weights: torchvision checkpoints reproduce torch's logits; our own files round
trip; heads of another class count stay fresh; files that do not fit are refused."""

import dataclasses
import functools
import hashlib
import logging
from pathlib import Path

import keras
import numpy as np
import pytest

from models import build_model
from models.catalog import MODELS
from models.pretrained import (
    TORCHVISION_KINETICS_MEAN,
    TORCHVISION_KINETICS_STD,
    kinetics400_classes,
    load_weights,
    weights_format,
    weights_sha256,
)
from models.resnet3d import r2plus1d_18, r3d_18, mc3_18
from models.torch_checkpoint import CheckpointError

DATA = Path(__file__).parent / "data" / "torchvision_tiny"
# The narrow models of bench/make_torchvision_fixtures.py (its TINY_WIDTHS, 5 classes).
TINY_WIDTHS = {"stem_planes": 8, "stem_midplanes": 6, "stage_planes": (8, 16, 24, 32), "blocks_per_stage": (2, 1, 1, 1)}
TINY_CLASSES = 5
CLIP_SHAPE = (8, 32, 32, 3)
ARCHS = {"r3d_18": r3d_18, "mc3_18": mc3_18, "r2plus1d_18": r2plus1d_18}


@pytest.fixture(scope="module")
def expected():
    return np.load(DATA / "logits.npz")


@pytest.fixture
def tiny_architectures(monkeypatch):
    """build_model's ResNets, narrowed to the fixture checkpoints' widths."""
    for name, builder in ARCHS.items():
        monkeypatch.setitem(MODELS, name, dataclasses.replace(
            MODELS[name], builder=functools.partial(builder, **TINY_WIDTHS)))


def _head_and_backbone(model):
    weights = {v.path: np.array(v) for layer in model.layers for v in layer.weights}
    head = {k: v for k, v in weights.items() if k.startswith("fc/")}
    return head, {k: v for k, v in weights.items() if not k.startswith("fc/")}


@pytest.mark.parametrize("suffix", ["", "_legacy"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_torchvision_checkpoint_reproduces_torch_logits(tiny_architectures, expected, arch, suffix):
    model = build_model(arch, TINY_CLASSES, CLIP_SHAPE, weights=DATA / f"{arch}{suffix}.pth")
    normalize = model.get_layer("normalize")
    np.testing.assert_allclose(normalize.mean, TORCHVISION_KINETICS_MEAN)
    np.testing.assert_allclose(normalize.std, TORCHVISION_KINETICS_STD)
    logits = np.asarray(model(expected["clips"], training=False))
    reference = expected[f"logits_{arch}"]
    assert np.abs(logits - reference).max() <= 1e-4 * np.abs(reference).max()
    np.testing.assert_array_equal(logits.argmax(-1), reference.argmax(-1))


def test_given_mean_and_std_override_the_kinetics_statistics(tiny_architectures):
    model = build_model("r3d_18", TINY_CLASSES, CLIP_SHAPE, weights=DATA / "r3d_18.pth", mean=100.0, std=50.0)
    assert model.get_layer("normalize").mean == [100.0] * 3
    assert model.get_layer("normalize").std == [50.0] * 3


def test_other_class_count_loads_the_backbone_and_keeps_a_fresh_head(tiny_architectures, caplog):
    keras.utils.set_random_seed(1)
    fresh = build_model("r3d_18", 7, CLIP_SHAPE)
    keras.utils.set_random_seed(1)
    with caplog.at_level(logging.INFO, logger="models.pretrained"):
        model = build_model("r3d_18", 7, CLIP_SHAPE, weights=DATA / "r3d_18.pth")
    assert "fc: checkpoint has 5 classes, model 7: new head" in caplog.messages
    full = build_model("r3d_18", TINY_CLASSES, CLIP_SHAPE, weights=DATA / "r3d_18.pth")
    head, backbone = _head_and_backbone(model)
    fresh_head, _ = _head_and_backbone(fresh)
    _, full_backbone = _head_and_backbone(full)
    assert head["fc/kernel"].shape == (32, 7)
    for key in head:
        np.testing.assert_array_equal(head[key], fresh_head[key])
    assert backbone.keys() == full_backbone.keys()
    for key in backbone:
        np.testing.assert_array_equal(backbone[key], full_backbone[key])


@pytest.mark.parametrize(
    "arch, checkpoint, message",
    [
        # mc3's stages 2-4 are 1x3x3 where r3d's are 3x3x3.
        ("mc3_18", "r3d_18.pth", r"first mismatch 'layer2\.0\.conv1\.0\.weight': file shape \(16, 8, 3, 3, 3\), model expects \(16, 8, 1, 3, 3\)"),
        # R(2+1)D's stem is factored and its blocks are Sequentials: most keys differ.
        (
            "r3d_18",
            "r2plus1d_18_legacy.pth",
            r"first mismatch 'stem\.0\.weight': file shape \(6, 3, 1, 7, 7\), model expects \(8, 3, 3, 7, 7\); "
            r"missing keys 10 \[layer1\.0\.conv1\.0\.weight, .*\]; unexpected keys 65 \[stem\.3\.weight, ",
        ),
    ],
)
def test_checkpoint_of_another_architecture_is_refused(tiny_architectures, arch, checkpoint, message):
    with pytest.raises(CheckpointError, match=message) as info:
        build_model(arch, TINY_CLASSES, CLIP_SHAPE, weights=DATA / checkpoint)
    assert str(DATA / checkpoint) in str(info.value) and "\n" not in str(info.value)


def test_full_size_model_refuses_the_narrow_checkpoint_and_keeps_its_weights():
    model = build_model("mc3_18", TINY_CLASSES, (4, 32, 32, 3))
    before = [np.array(v) for v in model.weights]
    with pytest.raises(CheckpointError, match=r"first mismatch 'stem\.0\.weight': file shape \(8, 3, 3, 7, 7\), model expects \(64, 3, 3, 7, 7\)"):
        load_weights(model, DATA / "mc3_18.pth")
    for old, variable in zip(before, model.weights):
        np.testing.assert_array_equal(old, np.array(variable))


@pytest.mark.parametrize("extension", [".keras", ".weights.h5"])
def test_own_weights_round_trip_onto_another_input_size(tmp_path, extension):
    keras.utils.set_random_seed(2)
    source = build_model("small3d", 4, (8, 32, 32, 3))
    path = tmp_path / f"run{extension}"
    source.save(path) if extension == ".keras" else source.save_weights(path)
    assert weights_format(path) == ("keras" if extension == ".keras" else "keras_weights")
    model = build_model("small3d", 4, (6, 40, 40, 3), weights=path)
    for a, b in zip(source.weights, model.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    clips = np.random.default_rng(0).integers(0, 256, (2, 8, 32, 32, 3), dtype=np.uint8)
    # Same weights, so the same logits at the source's size (ImageNet statistics kept).
    same_size = build_model("small3d", 4, (8, 32, 32, 3), weights=path)
    np.testing.assert_allclose(np.asarray(same_size(clips)), np.asarray(source(clips)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extension", [".keras", ".weights.h5"])
def test_own_weights_onto_another_class_count_keep_kernels_and_a_fresh_head(tmp_path, extension, caplog):
    source = build_model("small3d", 4, (8, 32, 32, 3))
    path = tmp_path / f"run{extension}"
    source.save(path) if extension == ".keras" else source.save_weights(path)
    keras.utils.set_random_seed(3)
    fresh = build_model("small3d", 9, (8, 32, 32, 3))
    keras.utils.set_random_seed(3)
    with caplog.at_level(logging.INFO, logger="models.pretrained"):
        model = build_model("small3d", 9, (8, 32, 32, 3), weights=path)
    head = [layer for layer in model.layers if layer.weights][-1]
    assert f"{head.name}: checkpoint has 4 classes, model 9: new head" in caplog.messages
    for layer in model.layers:
        if not layer.weights:
            continue
        reference = fresh.get_layer(layer.name) if layer is head else source.get_layer(layer.name)
        for a, b in zip(reference.weights, layer.weights):
            np.testing.assert_array_equal(np.array(a), np.array(b))


def test_own_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "small3d.weights.h5"
    build_model("small3d", 4, (8, 32, 32, 3), frame_differences=False).save_weights(path)
    with pytest.raises(CheckpointError, match=r"do not fit model 'frames_as_channels'") as info:
        build_model("frames_as_channels", 4, (8, 32, 32, 3), weights=path)
    assert "missing keys" in str(info.value) and "unexpected keys" in str(info.value)


def test_corrupt_keras_weights_are_refused(tmp_path):
    path = tmp_path / "bad.weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match="cannot read the Keras weights"):
        build_model("small3d", 4, (8, 32, 32, 3), weights=path)


def test_kinetics400_classes_are_torchvisions():
    classes = kinetics400_classes()
    assert len(classes) == 400 == len(set(classes))
    assert classes[:2] == ["abseiling", "air drumming"] and classes[-1] == "zumba"


def test_weights_sha256_is_the_files_hash():
    path = DATA / "mc3_18.pth"
    assert weights_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "weights, error, message",
    [
        (3, ValueError, r"`weights` must be None or a file path. Received: weights=3"),
        ("no/such/file.pth", CheckpointError, r"no/such/file.pth: cannot open the weights file"),
    ],
)
def test_bad_weights_argument_raises(weights, error, message):
    with pytest.raises(error, match=message):
        build_model("small3d", 4, (8, 32, 32, 3), weights=weights)


@pytest.mark.parametrize("arch, stages", [("r3d_18", [4]), ("r2plus1d_18", [1]), ("mc3_18", [3])])
def test_deformable_variant_loads_the_plain_checkpoint_with_zero_offsets(tiny_architectures, expected, arch, stages):
    model = build_model(arch, TINY_CLASSES, CLIP_SHAPE, weights=DATA / f"{arch}.pth",
                        deformable_stages=stages, modulated=True)
    offsets = [v for v in model.weights if "/offset_conv/" in v.path]
    assert offsets and all(not np.any(np.array(v)) for v in offsets)
    logits = np.asarray(model(expected["clips"], training=False))
    reference = expected[f"logits_{arch}"]
    assert np.abs(logits - reference).max() <= 1e-4 * np.abs(reference).max()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_torchvision_checkpoint_in_bfloat16_keeps_torch_top1(tiny_architectures, expected, arch):
    # The fixture clips' top-1 margins are >= 1.3 logits, of logits up to 10: bfloat16's
    # 8 significant bits (relative error 2^-9 a rounding, over ~20 layers) cannot close them.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(arch, TINY_CLASSES, CLIP_SHAPE, weights=DATA / f"{arch}.pth")
        assert model.get_layer("stem.0").compute_dtype == "bfloat16"
        logits = np.asarray(model(expected["clips"], training=False)).astype("float32")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    reference = expected[f"logits_{arch}"]
    np.testing.assert_array_equal(logits.argmax(-1), reference.argmax(-1))
    # And close in value: a few percent of the largest logit.
    assert np.abs(logits - reference).max() <= 0.05 * np.abs(reference).max()
