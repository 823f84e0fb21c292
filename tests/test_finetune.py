"""Fine-tuning: stages and parameter groups by layer name, frozen layers bit-identical after
training, a run fine-tuned from another run's model.keras onto another class count, and
weights recorded in run.json."""

import hashlib
import json
import os

import keras
import numpy as np
import pytest

from models import build_model
from models.catalog import MODELS
from models.finetune import (fine_tune, freeze, head_layer, learning_rate_multipliers, stage_of,
                             variable_groups)
from run_fixtures import write_toy_video
from training.config import TrainConfig, config_from_dict
from training.optimizers import build_optimizer
from training.run_dir import open_run_dir
from training.trainer import run_experiment

SHAPES = {"s3d": (13, 209, 209, 3), "c3d": (8, 32, 32, 3)}


# The MoViNet A1/A2 builds are slow; their stages are A0's (tests/test_movinet.py counts them).
@pytest.mark.parametrize("name", [n for n in MODELS if not n.startswith(("movinet_a1", "movinet_a2"))])
def test_every_weighted_layer_but_the_classifier_has_a_stage(name):
    model = build_model(name, 3, SHAPES.get(name, (4, 32, 32, 3)))
    head = head_layer(model)
    stages = {layer.name: stage_of(name, layer.name) for layer in model.layers if layer.weights}
    unstaged = sorted(n for n, s in stages.items() if s is None)
    # c3d's fc6 and fc7 (MoViNet's head projection and pre_logits) are between the conv groups
    # and the classifier; normalize has no weights.
    extra = {"c3d": ["fc6", "fc7"]}.get(name, [])
    if name.startswith("movinet"):
        extra = ["head.project.conv", "head.project.bn", "pre_logits"]
    assert unstaged == sorted([head.name] + extra)
    first = 0 if name in ("r3d_18", "mc3_18", "r2plus1d_18", "s3d") or name.startswith("movinet") else 1
    assert sorted(set(stages.values()) - {None}) == list(range(first, MODELS[name].stages.count + 1))


@pytest.mark.parametrize("name, layer, stage", [
    ("r2plus1d_18", "stem.3", 0), ("r2plus1d_18", "layer3.1.conv2.0.3", 3),
    ("s3d", "features.3.conv_s.0", 0), ("s3d", "features.4", 1), ("s3d", "features.12.branch1.0.0", 2),
    ("s3d", "features.15.branch3.1.0", 3), ("s3d", "classifier.1", None),
    ("c3d", "conv3b", 3), ("small3d", "bn5", 5), ("small3d", "fc", None),
])
def test_stage_of_layer_names(name, layer, stage):
    assert stage_of(name, layer) == stage


def test_groups_split_head_offsets_and_backbone():
    model = build_model("small3d", 3, (4, 16, 16, 3), deformable_stages=[2], modulated=True)
    groups = variable_groups(model)
    assert {p for p, g in groups.items() if g == "head"} == {"fc/kernel", "fc/bias"}
    assert {p for p, g in groups.items() if g == "offsets"} == {"conv2/offset_conv/kernel", "conv2/offset_conv/bias"}
    assert groups["conv2/kernel"] == "backbone" and groups["bn1/gamma"] == "backbone"


@pytest.mark.parametrize("stages", [-1, 5, True])
def test_freeze_refuses_stage_counts_the_model_lacks(stages):
    model = build_model("r3d_18", 3, (4, 32, 32, 3))
    with pytest.raises(ValueError, match=r"`stages` must be None or an int in 0\.\.4 for r3d_18"):
        freeze(model, "r3d_18", stages=stages)


def test_fine_tune_freezes_and_gives_multipliers_to_the_trainable_variables_only():
    model = build_model("small3d", 3, (4, 16, 16, 3), deformable_stages=[3])
    frozen, multipliers = fine_tune(model, "small3d", freeze_stages=2,
                                    lr_multipliers={"backbone": 0.1, "offsets": 0.5})
    assert frozen == ["conv1", "bn1", "conv2", "bn2"]
    assert not any(path.split("/")[0] in frozen or path.startswith("fc/") for path in multipliers)
    assert multipliers["conv3/kernel"] == 0.1 and multipliers["conv3/offset_conv/kernel"] == 0.5
    assert fine_tune(build_model("small3d", 3, (4, 16, 16, 3)), "small3d") == ([], {})


def _narrow_r3d_18():
    """r3d_18 with the narrow widths of the torchvision fixtures (quick to train)."""
    from models.preprocessing import ClipNormalization
    from models.resnet3d import r3d_18
    inputs = keras.Input((4, 16, 16, 3), dtype="uint8")
    x = ClipNormalization([127.5] * 3, [127.5] * 3, name="normalize")(inputs)
    logits = r3d_18(x, 3, stem_planes=8, stem_midplanes=6, stage_planes=(8, 16, 24, 32),
                    blocks_per_stage=(2, 1, 1, 1), dropout=0.0)
    return keras.Model(inputs, logits, name="r3d_18")


def _fit_a_few_steps(model, optimizer="sgd", lr_multipliers=None, steps=3):
    train = TrainConfig(optimizer=optimizer, learning_rate=0.05, momentum=0.9)
    model.compile(build_optimizer(train, train.learning_rate, lr_multipliers),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (4 * steps,) + model.input_shape[1:], dtype=np.uint8)
    labels = keras.utils.to_categorical(rng.integers(0, 3, 4 * steps), 3)
    model.fit(clips, labels, batch_size=4, epochs=1, verbose=0, shuffle=False)


def _values(model):
    return {v.path: np.array(v) for layer in model.layers for v in layer.weights}


@pytest.mark.parametrize("stages, batch_norm", [(0, False), (2, False), (None, True), (1, True)])
def test_frozen_layers_are_bit_identical_after_training(stages, batch_norm):
    keras.utils.set_random_seed(3)
    model = _narrow_r3d_18()
    frozen = set(freeze(model, "r3d_18", stages=stages, batch_norm=batch_norm))
    before = _values(model)
    _fit_a_few_steps(model)
    after = _values(model)
    for layer in model.layers:
        for variable in layer.weights:
            same = np.array_equal(before[variable.path], after[variable.path])
            expected_frozen = layer.name in frozen
            if expected_frozen:
                assert same, variable.path
            elif variable.trainable or "moving" in variable.path:
                assert not same, variable.path
    stem_and_stages = {l.name for l in model.layers if l.weights and stage_of("r3d_18", l.name) is not None
                       and stages is not None and stage_of("r3d_18", l.name) <= stages}
    assert stem_and_stages <= frozen
    bn = {l.name for l in model.layers if isinstance(l, keras.layers.BatchNormalization)}
    assert (bn <= frozen) == (batch_norm or stages == 4)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_zero_multiplier_on_the_backbone_trains_only_the_head(optimizer):
    keras.utils.set_random_seed(4)
    model = build_model("small3d", 3, (4, 16, 16, 3), frame_differences=False)
    freeze(model, "small3d", batch_norm=True)  # moving statistics would move otherwise
    multipliers = learning_rate_multipliers(model, {"backbone": 0.0})
    assert multipliers and all(not p.startswith("fc/") for p in multipliers)
    before = _values(model)
    _fit_a_few_steps(model, optimizer, multipliers)
    after = _values(model)
    for path in before:
        assert np.array_equal(before[path], after[path]) == (not path.startswith("fc/")), path


# --- runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_class_videos(tmp_path_factory):
    """csv lists of 3 classes (two of them "still" bars at different seeds)."""
    root = tmp_path_factory.mktemp("three")
    rows = {"train": [], "test": []}
    for label, (name, kind) in enumerate([("a_moving", "moving"), ("b_still", "still"), ("c_still", "still")]):
        for index in range(3):
            write_toy_video(root / name / f"{index}.avi", kind, seed=500 + 10 * label + index)
            rows["train" if index < 2 else "test"].append(f"{name}/{index}.avi,{name}")
    for split, lines in rows.items():
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def _fine_tune(root, tmp_path, weights, train):
    config = config_from_dict({
        "name": "finetune",
        "data": {"layout": "csv", "root": str(root), "prepared_dir": str(root / "prepared"),
                 "lists": {s: str(root / f"{s}.csv") for s in ("train", "test")},
                 "frames": 4, "size": 16, "clips_per_video": 2, "workers": 1},
        "model": {"name": "small3d", "weights": weights},
        "augment": {"horizontal_flip": False, "random_crop": False, "crop_size": 12},
        "train": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 4, "optimizer": "adam", **train},
        "tensorboard": {"histograms": False, "graph": False, "clip_images": 0,
                        "confusion_matrix": False, "deform_offsets": False},
    })
    run_dir = open_run_dir(str(tmp_path / "run"))
    run_experiment(config, run_dir, verbose=0)
    return keras.saving.load_model(run_dir.model, compile=False), run_dir


def _kernels(model):
    return {v.path: np.array(v) for v in model.weights if v.path.endswith("/kernel")}


def test_fine_tune_from_a_run_onto_another_class_count(run_path, three_class_videos, tmp_path):
    weights = os.path.join(run_path, "model.keras")
    source = _kernels(keras.saving.load_model(weights, compile=False))
    # Learning rate 0: every loaded kernel comes out unchanged, the new head is its seeded start.
    still, run_dir = _fine_tune(three_class_videos, tmp_path / "lr0", weights, {"learning_rate": 0.0})
    tuned = _kernels(still)
    assert tuned["fc/kernel"].shape == (source["fc/kernel"].shape[0], 3)
    for path, kernel in source.items():
        if path != "fc/kernel":
            np.testing.assert_array_equal(tuned[path], kernel, err_msg=path)
    info = json.loads(open(run_dir.run_info).read())
    assert info["weights"] == {"path": os.path.abspath(weights),
                               "sha256": hashlib.sha256(open(weights, "rb").read()).hexdigest()}
    assert info["num_classes"] == 3
    # A rate for the head only: the backbone's kernels stay, the head (same seeded start) moves.
    moved, _ = _fine_tune(three_class_videos, tmp_path / "head", weights,
                          {"learning_rate": 0.01, "lr_multipliers": {"backbone": 0.0}})
    moved = _kernels(moved)
    for path, kernel in source.items():
        if path != "fc/kernel":
            np.testing.assert_array_equal(moved[path], kernel, err_msg=path)
    assert not np.array_equal(moved["fc/kernel"], tuned["fc/kernel"])


def test_run_without_weights_records_null(run_path):
    assert json.loads(open(os.path.join(run_path, "run.json")).read())["weights"] is None
