"""Tests for training.export and export.py: the SavedModel loads with plain TensorFlow in a
process that never imports this project (a trained run's export and a DeformConv3D model's),
model.keras reloads in safe mode, a failed export never breaks a run; LiteRT (builtin ops only)
and ONNX exports of small3d (plain and deformable), r3d_18 and r2plus1d_18 (narrow) match the Keras
model, every format refuses a clip of another shape, and export.py checks what it writes in
a process without TensorFlow."""

import dataclasses
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import evaluate
import models
from models.catalog import MODELS
from training import export, export_runtime
from training.run_dir import RunDir, open_trained_run
from training.scoring import load_run_model

# Runs with `python -I` (no PYTHONPATH, no user site) from a directory outside the repo, so
# importing any project package fails; it checks that too.
LOADER = textwrap.dedent("""
    import importlib.util, json, sys
    import numpy as np
    import tensorflow as tf

    report = {}
    for name, directory, clips in json.loads(sys.argv[1]):
        loaded = tf.saved_model.load(directory)
        serve = loaded.signatures["serving_default"]
        output = serve(clips=tf.constant(np.load(clips)))
        np.save(clips + ".out.npy", output["probabilities"].numpy())
        names = loaded.signatures["class_names"]()["class_names"].numpy()
        report[name] = {"outputs": sorted(output), "classes": [n.decode() for n in names],
                        "input": serve.structured_input_signature[1]["clips"].shape.as_list(),
                        "dtype": serve.structured_input_signature[1]["clips"].dtype.name}
    report["project_modules"] = [m for m in sys.modules
                                 if m.split(".")[0] in ("models", "training", "data_prep")]
    report["project_importable"] = any(importlib.util.find_spec(m) is not None
                                       for m in ("models", "training", "data_prep"))
    print(json.dumps(report))
""")


def load_in_plain_process(exports, cwd):
    """[(name, export_dir, clips.npy)] -> report dict; outputs saved beside each clips file."""
    script = os.path.join(cwd, "load_export.py")
    with open(script, "w") as f:
        f.write(LOADER)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    completed = subprocess.run([sys.executable, "-I", script, json.dumps(exports)], cwd=cwd,
                               env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def random_clips(shape, count=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), np.uint8)


@pytest.fixture(scope="module")
def deformable(tmp_path_factory):
    """small3d with DeformConv3D in conv group 2, offsets made non-zero, exported."""
    folder = tmp_path_factory.mktemp("deformable")
    model = models.build_model("small3d", 3, (4, 12, 12, 3), deformable_stages=[2])
    rng = np.random.default_rng(0)
    offset_weights = [v for v in model.weights if "offset_conv" in v.path]
    assert offset_weights
    for variable in offset_weights:  # fresh offsets are zero: the layer would equal Conv3D
        variable.assign(rng.normal(0, 0.5, variable.shape).astype("float32"))
    export_dir = export.export_saved_model(model, str(folder / "export"), ["a", "b", "c"])
    return model, export_dir, folder


@pytest.mark.slow
def test_exports_load_with_plain_tensorflow_and_match_the_models(run_path, deformable,
                                                                  tmp_path):
    deform_model, deform_export, _ = deformable
    run = open_trained_run(run_path)
    run_model = load_run_model(run, policy="float32")  # the export computes in float32
    cases = {"run": (run_model, os.path.join(run_path, "export")),
             "deformable": (deform_model, deform_export)}
    exports, expected = [], {}
    for name, (model, directory) in cases.items():
        clips = random_clips(model.input_shape[1:], seed=len(exports))
        path = str(tmp_path / f"{name}.npy")
        np.save(path, clips)
        exports.append((name, directory, path))
        expected[name] = tf.nn.softmax(model(clips, training=False)).numpy()
    report = load_in_plain_process(exports, str(tmp_path))
    assert report["project_modules"] == [] and report["project_importable"] is False
    assert report["run"]["classes"] == ["moving", "still"]
    assert report["deformable"]["classes"] == ["a", "b", "c"]
    for name, (model, _) in cases.items():
        assert report[name]["outputs"] == ["logits", "probabilities"]
        assert report[name]["input"] == [None, *model.input_shape[1:]]
        assert report[name]["dtype"] == "uint8"
        got = np.load(str(tmp_path / f"{name}.npy.out.npy"))
        np.testing.assert_allclose(got, expected[name], atol=1e-5)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    # The deformable offsets matter: the same weights with zero offsets answer differently.
    offsets = [v for v in deform_model.weights if "offset_conv" in v.path]
    saved = [v.numpy() for v in offsets]
    for variable in offsets:
        variable.assign(np.zeros(variable.shape, "float32"))
    clips = np.load(exports[1][2])
    plain = tf.nn.softmax(deform_model(clips, training=False)).numpy()
    for variable, value in zip(offsets, saved):
        variable.assign(value)
    assert np.abs(plain - expected["deformable"]).max() > 1e-4


@pytest.mark.parametrize("which", ["run", "deformable"])
def test_model_keras_reloads_in_safe_mode_with_identical_predictions(run_path, deformable,
                                                                     which):
    if which == "run":
        path = os.path.join(run_path, "model.keras")
        model = keras.saving.load_model(path, compile=False, safe_mode=False)
    else:
        model = deformable[0]
        path = str(deformable[2] / "model.keras")
        model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    clips = random_clips(model.input_shape[1:], seed=7)
    np.testing.assert_allclose(reloaded(clips, training=False), model(clips, training=False),
                               atol=1e-6)


def test_failed_export_is_logged_and_leaves_no_partial_directory(deformable, tmp_path,
                                                                 caplog):
    model = deformable[0]
    run_dir = RunDir(str(tmp_path))
    with caplog.at_level(logging.ERROR, logger="training.export"):
        assert export.export_after_training(model, run_dir, ["only one name"]) is None
    assert "export to" in caplog.text and "export.py --run-dir" in caplog.text
    assert os.listdir(tmp_path) == []  # neither export/ nor a staging directory


def test_evaluate_export_rewrites_an_older_runs_export(run_path, capsys):
    target = os.path.join(run_path, "export")
    assert os.path.isfile(os.path.join(target, "saved_model.pb"))  # train.py exported it
    shutil.rmtree(target)  # as for a run trained before exports existed
    assert evaluate.main(["--run-dir", run_path, "--export"]) == 0
    assert capsys.readouterr().out.strip() == f"exported {target}"
    assert os.path.isfile(os.path.join(target, "saved_model.pb"))
    with open(os.path.join(target, "assets", "classes.txt")) as f:
        assert f.read().split() == ["moving", "still"]
    assert sorted(os.listdir(os.path.dirname(target))).count("export") == 1
    assert not [n for n in os.listdir(run_path) if n.startswith(".export-")]


def test_multi_label_export_returns_a_sigmoid_per_class(multi_label_run_path, tmp_path):
    run = open_trained_run(multi_label_run_path)
    model = load_run_model(run, policy="float32")  # the export computes in float32
    clips = random_clips(model.input_shape[1:], count=4)
    loaded = tf.saved_model.load(os.path.join(multi_label_run_path, "export"))
    got = loaded.signatures["serving_default"](clips=tf.constant(clips))["probabilities"].numpy()
    expected = tf.sigmoid(model(clips, training=False)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got.sum(axis=1), 1.0, atol=1e-3)  # independent, not a softmax
    names = loaded.signatures["class_names"]()["class_names"].numpy()
    assert [name.decode() for name in names] == run.class_names


# --- LiteRT and ONNX -------------------------------------------------------------------------

def litert_logits(data, clips):
    run = export_runtime.litert_runner(content=data)
    return np.concatenate([run(clip[None]) for clip in clips])


def onnx_session(data):
    import onnxruntime

    return onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])


def assert_parity(model, got, clips):
    expected = model(clips, training=False).numpy()
    assert np.abs(got - expected).max() <= 1e-4
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def litert_ops(data):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    return {detail["op_name"] for detail in interpreter._get_ops_details()}


@pytest.fixture(scope="module")
def deformable_converted(deformable):
    """The deformable model as LiteRT and ONNX bytes, converted once for the tests below."""
    return {"litert": export.convert_litert(deformable[0]),
            "onnx": export.convert_onnx(deformable[0])}


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
def test_small3d_and_deformable_exports_match_keras(deformable, deformable_converted, fmt):
    plain = models.build_model("small3d", 3, (4, 32, 32, 3))
    for model in (plain, deformable[0]):
        clips = random_clips(model.input_shape[1:], count=4, seed=3)
        if model is deformable[0]:
            data = deformable_converted[fmt]
        elif fmt == "litert":
            data = export.convert_litert(model)
        else:
            data = export.convert_onnx(model)
        if fmt == "litert":
            assert not any("FLEX" in op or "CUSTOM" in op for op in litert_ops(data))
            got = litert_logits(data, clips)
        else:
            got = onnx_session(data).run(["logits"], {"clips": clips})[0]
        assert_parity(model, got, clips)


# torchvision's block graph (2 blocks a stage: the strided one with its shortcut, then the
# plain one) at narrow widths: the converters meet every op and layout of the full model,
# and convert 16 thousand weights instead of 33 million (~1 min each).
NARROW_WIDTHS = {"stem_planes": 8, "stem_midplanes": 6, "stage_planes": (8, 16, 24, 32)}


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18"])
def test_resnet_exports_match_keras(name, monkeypatch):
    spec = MODELS[name]
    monkeypatch.setitem(MODELS, name, dataclasses.replace(
        spec, builder=functools.partial(spec.build_function(), **NARROW_WIDTHS)))
    model = models.build_model(name, 5, (4, 32, 32, 3))
    assert tuple(model.get_layer("fc").kernel.shape) == (32, 5)  # the narrow model
    clips = random_clips(model.input_shape[1:], count=2, seed=4)
    data = export.convert_litert(model)
    assert not any("FLEX" in op or "CUSTOM" in op for op in litert_ops(data))
    assert_parity(model, litert_logits(data, clips), clips)
    got = onnx_session(export.convert_onnx(model)).run(["logits"], {"clips": clips})[0]
    assert_parity(model, got, clips)


def test_every_format_refuses_a_clip_of_another_shape(deformable, deformable_converted):
    # the deformable model takes 4x12x12x3
    wrong = random_clips((4, 16, 16, 3), count=1)
    loaded = tf.saved_model.load(deformable[1])
    # Refused at the signature's TensorSpec (TypeError naming it) or, where TensorFlow lets
    # the shape through, by the graph's own check naming the run's clip shape.
    with pytest.raises((TypeError, tf.errors.InvalidArgumentError),
                       match=r"(None|batch), 4, 12, 12, 3\)"):
        loaded.signatures["serving_default"](clips=tf.constant(wrong))
    run = export_runtime.litert_runner(content=deformable_converted["litert"])
    with pytest.raises(ValueError, match="Dimension mismatch. Got 16 but expected 12"):
        run(wrong)
    session = onnx_session(deformable_converted["onnx"])
    with pytest.raises(Exception, match="(?i)invalid dimensions"):
        session.run(["logits"], {"clips": wrong})


@pytest.mark.slow
def test_export_cli_writes_checks_and_preprocessing_without_tensorflow(run_path, capsys):
    from export import main as export_main

    target = os.path.join(run_path, "export")
    for fmt in ("litert", "onnx"):
        assert export_main(["--run-dir", run_path, "--format", fmt]) == 0
        out = capsys.readouterr().out
        name = "model.tflite" if fmt == "litert" else "model.onnx"
        assert f"exported {os.path.join(target, name)}" in out and "PASSED" in out
        assert "TensorFlow not imported" in out
        with open(os.path.join(target, name + ".check.json")) as f:
            check = json.load(f)
        assert check["passed"] is True and check["tensorflow_imported"] is False
        assert check["top1_agreement"] == 1.0 and check["max_abs_logit_difference"] <= 1e-4
        assert check["clips"] == 8 and check["latency_ms_median"] > 0
    assert export_main(["--run-dir", run_path, "--format", "litert", "--quantize", "int8"]) == 0
    with open(os.path.join(target, "model_int8.tflite.check.json")) as f:
        check = json.load(f)
    assert check["passed"] is None and "export_top1_accuracy" in check  # reported, not judged
    with open(os.path.join(target, "preprocessing.json")) as f:
        record = json.load(f)
    assert record["classes"] == ["moving", "still"] and record["label_kind"] == "single_label"
    assert record["input"]["shape"] == [None, 4, 12, 12, 3]
    assert record["sampling"]["frames"] == 4 and record["resize"]["size"] == 16
    assert record["crop"]["size"] == 12 and len(record["normalisation"]["mean"]) == 3
    # the SavedModel written again keeps the other formats beside it
    assert export_main(["--run-dir", run_path]) == 0
    assert {"model.tflite", "model.onnx", "preprocessing.json", "saved_model.pb"} <= set(
        os.listdir(target))


@pytest.mark.parametrize("arguments, message", [
    (["--format", "onnx", "--quantize", "int8"], "--quantize int8 with --format litert"),
    (["--format", "litert", "--check-clips", "0"], "--check-clips >= 1"),
])
def test_export_cli_mistakes_are_one_line_exit_2(run_path, capsys, arguments, message):
    from export import main as export_main

    assert export_main(["--run-dir", run_path, *arguments]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
