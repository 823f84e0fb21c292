"""MoViNet: parameter counts and logits equal to TF Model Garden's (fixtures made with
tf-models-official by bench/make_movinet_fixtures.py), the checkpoint naming rule, the stream
model fed frame by frame equal to the causal model on the whole clip, and fine-tuning from a
checkpoint."""

import json
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest

from models import build_model
from models.finetune import freeze, head_layer, stage_of
from models.movinet import MovinetStream, init_state_shapes, make_divisible
from models.movinet_checkpoint import to_model_layout
from models.pretrained import weights_format, weights_sha256
from models.torch_checkpoint import CheckpointError

FIXTURES = Path(__file__).parent / "data" / "movinet"
PARITY = json.loads((FIXTURES / "parity.json").read_text())
RELATIVE_TOLERANCE = 1e-4


def relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{name: checkpoint prefix} of the committed Model Garden fixtures, unpacked once."""
    root = tmp_path_factory.mktemp("movinet")
    prefixes = {}
    for archive in sorted(FIXTURES.glob("*.tar.gz")):
        name = archive.name[: -len(".tar.gz")]
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        prefixes[name] = str(root / name / "ckpt")
    return prefixes


@pytest.fixture(scope="module")
def parity():
    return dict(np.load(FIXTURES / "parity.npz"))


def clip_shape():
    return tuple(PARITY["clip_shape"][1:])


@pytest.mark.parametrize("name", sorted(PARITY["parameters_at_600_classes"]))
def test_parameter_count_equals_model_gardens(name):
    model = build_model(name, 600, (4, 32, 32, 3))
    assert model.count_params() == PARITY["parameters_at_600_classes"][name]


@pytest.mark.parametrize("name", ["movinet_a0", "movinet_a0_stream"])
def test_logits_equal_model_gardens(checkpoints, parity, name):
    assert weights_format(checkpoints[name]) == "tf_checkpoint"
    model = build_model(name, PARITY["num_classes"], clip_shape(), weights=checkpoints[name])
    logits = keras.ops.convert_to_numpy(model(parity["clip"], training=False))
    assert relative_error(logits, parity[name]) <= RELATIVE_TOLERANCE


def test_index_file_loads_like_its_prefix(checkpoints, parity):
    model = build_model("movinet_a0", PARITY["num_classes"], clip_shape(), weights=checkpoints["movinet_a0"] + ".index")
    logits = keras.ops.convert_to_numpy(model(parity["clip"], training=False))
    assert relative_error(logits, parity["movinet_a0"]) <= RELATIVE_TOLERANCE
    # A run records the checkpoint's files' digest, not a read error on the prefix.
    assert len(weights_sha256(checkpoints["movinet_a0"])) == 64


def test_other_class_count_keeps_the_backbone_and_gets_a_fresh_head(checkpoints, parity):
    loaded = build_model("movinet_a0", 3, clip_shape(), weights=checkpoints["movinet_a0"])
    full = build_model("movinet_a0", PARITY["num_classes"], clip_shape(), weights=checkpoints["movinet_a0"])
    for name in ("pre_logits", "block4_layer3.se.expand", "stem.bn"):
        for a, b in zip(loaded.get_layer(name).weights, full.get_layer(name).weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert head_layer(loaded).name == "classifier"
    assert tuple(head_layer(loaded).kernel.shape) == (2048, 3)


def test_base_checkpoint_does_not_fit_the_stream_model(checkpoints):
    with pytest.raises(CheckpointError, match=r"do not fit model 'movinet_a0_stream': first"):
        build_model("movinet_a0_stream", PARITY["num_classes"], clip_shape(), weights=checkpoints["movinet_a0"])


def test_tf_checkpoint_refused_by_other_models(checkpoints):
    with pytest.raises(CheckpointError, match="loads into a MoViNet model only"):
        build_model("small3d", 3, (4, 16, 16, 3), weights=checkpoints["movinet_a0"])


def test_3d_2plus1d_kernels_map_to_the_2plus1d_layout():
    # Model Garden trains stream models with Conv3D kernels; tools/convert_3d_2plus1d.py's rule.
    spatial = np.arange(9 * 4, dtype="float32").reshape(1, 3, 3, 1, 4)
    temporal = np.arange(5 * 4, dtype="float32").reshape(5, 1, 1, 1, 4)
    np.testing.assert_array_equal(to_model_layout(spatial, (3, 3, 4, 1)), spatial[0].transpose(0, 1, 3, 2))
    np.testing.assert_array_equal(to_model_layout(temporal, (5, 1, 4, 1)), temporal[:, 0].transpose(0, 1, 3, 2))
    pointwise = np.ones((1, 1, 1, 6, 7), "float32")
    assert to_model_layout(pointwise, (6, 7)).shape == (6, 7)


def test_se_width_follows_model_gardens_rounding():
    assert make_divisible(0.25 * 184 * 2) == 96 and make_divisible(0.25 * 24) == 8


@pytest.fixture(scope="module")
def stream_model(checkpoints):
    return build_model("movinet_a0_stream", PARITY["num_classes"], clip_shape(), weights=checkpoints["movinet_a0_stream"])


def test_stream_one_frame_at_a_time_equals_the_whole_clip(stream_model, parity):
    stream = MovinetStream(stream_model)
    states = stream.init_states(batch_size=1)
    assert set(states) == set(init_state_shapes("a0", 64, 64))
    clip = parity["clip"]
    for t in range(clip.shape[1]):
        logits, states = stream(clip[:, t:t + 1], states)
        # Causal: the first t + 1 frames alone give the same logits as the stream so far.
        if t in (0, 4):
            prefix = build_model("movinet_a0_stream", PARITY["num_classes"], (t + 1, *clip.shape[2:]))
            prefix.set_weights(stream_model.get_weights())
            expected = keras.ops.convert_to_numpy(prefix(clip[:, :t + 1], training=False))
            assert relative_error(keras.ops.convert_to_numpy(logits), expected) <= RELATIVE_TOLERANCE
    assert relative_error(keras.ops.convert_to_numpy(logits), parity["movinet_a0_stream"]) <= RELATIVE_TOLERANCE


def test_stream_steps_of_several_frames_equal_the_whole_clip(stream_model, parity):
    stream = MovinetStream(stream_model)
    states = stream.init_states(batch_size=1)
    for start in (0, 3, 5):
        logits, states = stream(parity["clip"][:, start:{0: 3, 3: 5, 5: 8}[start]], states)
    assert relative_error(keras.ops.convert_to_numpy(logits), parity["movinet_a0_stream"]) <= RELATIVE_TOLERANCE


def test_stream_refuses_a_base_model():
    with pytest.raises(ValueError, match="needs a movinet_a<N>_stream model"):
        MovinetStream(build_model("movinet_a0", 2, (2, 32, 32, 3)))


def test_stream_model_reloads_from_keras_file_and_still_streams(stream_model, parity, tmp_path):
    path = tmp_path / "stream.keras"
    stream_model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(parity["clip"], training=False)),
                                  keras.ops.convert_to_numpy(stream_model(parity["clip"], training=False)))
    stream = MovinetStream(reloaded)
    states = stream.init_states()
    for t in range(parity["clip"].shape[1]):
        logits, states = stream(parity["clip"][:, t:t + 1], states)
    assert relative_error(keras.ops.convert_to_numpy(logits), parity["movinet_a0_stream"]) <= RELATIVE_TOLERANCE


@pytest.mark.parametrize("name, layer, stage", [
    ("movinet_a0", "stem.conv", 0), ("movinet_a0", "block0_layer0.expansion.bn", 1),
    ("movinet_a2_stream", "block4_layer6.feature.bn_temporal", 5), ("movinet_a1", "head.project.conv", None),
    ("movinet_a1", "pre_logits", None), ("movinet_a0", "classifier", None),
])
def test_stage_of_movinet_layers(name, layer, stage):
    assert stage_of(name, layer) == stage


@pytest.mark.slow
def test_litert_stream_has_builtin_ops_only_and_matches_keras_on_every_frame(stream_model, parity):
    from models.movinet_export import LiteRTStream, operator_names, stream_to_litert

    flatbuffer = stream_to_litert(stream_model)
    ops_in_file = operator_names(flatbuffer)
    assert not [op for op in ops_in_file if op.startswith("Flex") or op in ("CUSTOM", "READ_VARIABLE")], ops_in_file
    assert "CONV_3D" not in ops_in_file and "DEPTHWISE_CONV_2D" in ops_in_file
    litert, keras_stream = LiteRTStream(flatbuffer), MovinetStream(stream_model)
    litert_states, keras_states = litert.init_states(), keras_stream.init_states()
    assert set(litert_states) == set(keras_states)
    for t in range(parity["clip"].shape[1]):
        frame = parity["clip"][:, t:t + 1]
        litert_logits, litert_states = litert(frame, litert_states)
        keras_logits, keras_states = keras_stream(frame, keras_states)
        assert relative_error(litert_logits, keras.ops.convert_to_numpy(keras_logits)) <= RELATIVE_TOLERANCE, t
    assert relative_error(litert_logits, parity["movinet_a0_stream"]) <= RELATIVE_TOLERANCE


@pytest.mark.slow
def test_a_run_fine_tunes_a0_from_a_model_garden_checkpoint(checkpoints, tmp_path):
    """The whole path a user takes: prepare toy videos, train movinet_a0 from the checkpoint
    with frozen stages and batch norm and a head-only learning rate, evaluate, reload."""
    from run_fixtures import write_toy_video
    from training.config import config_from_dict
    from training.run_dir import open_run_dir
    from training.trainer import run_experiment

    root = tmp_path / "videos"
    rows = {"train": [], "test": []}
    for label, (name, kind) in enumerate([("a_moving", "moving"), ("b_still", "still")]):
        for index in range(3):
            write_toy_video(root / name / f"{index}.avi", kind, seed=900 + 10 * label + index)
            rows["train" if index < 2 else "test"].append(f"{name}/{index}.avi,{name}")
    for split, lines in rows.items():
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    config = config_from_dict({
        "name": "movinet_finetune",
        "data": {"layout": "csv", "root": str(root), "prepared_dir": str(root / "prepared"),
                 "lists": {s: str(root / f"{s}.csv") for s in ("train", "test")},
                 "frames": 4, "size": 32, "clips_per_video": 1, "workers": 1},
        "model": {"name": "movinet_a0", "weights": checkpoints["movinet_a0"]},
        "augment": {"horizontal_flip": False, "random_crop": False, "crop_size": 32},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "optimizer": "adam",
                  "learning_rate": 0.01, "freeze_stages": 3, "freeze_bn": True,
                  "lr_multipliers": {"backbone": 0.1}},
        "tensorboard": {"histograms": False, "graph": False, "clip_images": 0,
                        "confusion_matrix": False, "deform_offsets": False},
    })
    run_dir = open_run_dir(str(tmp_path / "run"))
    run_experiment(config, run_dir, verbose=0)
    tuned = keras.saving.load_model(run_dir.model, compile=False)
    source = build_model("movinet_a0", 2, (4, 32, 32, 3), weights=checkpoints["movinet_a0"])
    # freeze()'s rule for the run's settings: the stem and stages 1-3, every batch norm.
    frozen = set(freeze(source, "movinet_a0", stages=3, batch_norm=True))
    assert {"stem.conv", "block2_layer1.feature.conv", "block3_layer0.expansion.bn"} <= frozen
    assert "block3_layer0.expansion.conv" not in frozen
    # Every frozen layer (weights and moving statistics) comes out bit-identical and every
    # other one trained (the classifier differs anyway: two fresh heads).
    for layer in source.layers:
        if not layer.weights:
            continue
        unchanged = all(np.array_equal(np.array(a), np.array(b)) for a, b in
                        zip(layer.weights, tuned.get_layer(layer.name).weights))
        assert unchanged == (layer.name in frozen), layer.name
    info = json.loads(open(run_dir.run_info).read())
    assert info["weights"]["path"] == str(Path(checkpoints["movinet_a0"]).resolve())
    assert len(info["weights"]["sha256"]) == 64
    metrics = json.loads(open(run_dir.metrics).read())
    assert metrics["videos"] == 2 and 0.0 <= metrics["top1"] <= 1.0 and np.isfinite(metrics["loss"])


@pytest.mark.slow
def test_saved_model_signatures_stream_like_keras(stream_model, parity, tmp_path):
    import tensorflow as tf

    from models.movinet_export import export_stream_saved_model

    loaded = tf.saved_model.load(export_stream_saved_model(stream_model, str(tmp_path / "saved")))
    states = loaded.signatures["init_states"](input_shape=tf.constant([1, 1, 64, 64, 3]))
    assert set(states) == set(init_state_shapes("a0", 64, 64))
    call = loaded.signatures["serving_default"]
    for t in range(parity["clip"].shape[1]):
        outputs = call(image=tf.constant(parity["clip"][:, t:t + 1]), **states)
        logits = outputs.pop("logits").numpy()
        states = outputs
    assert relative_error(logits, parity["movinet_a0_stream"]) <= RELATIVE_TOLERANCE
