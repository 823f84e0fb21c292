"""docs/DEPLOY.md's ten-line LiteRT example, run as written on a trained run's LiteRT export in
an isolated interpreter: its probabilities are the Keras model's on the same clip, and
TensorFlow is never imported."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from run_fixtures import write_toy_video
from training import export
from training.run_dir import open_trained_run
from training.scoring import load_run_model
from training.views import preprocess_item

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = """
import runpy, sys
sys.argv = [sys.argv[1], sys.argv[2], sys.argv[3]]
runpy.run_path(sys.argv[0], run_name="__main__")
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def example_code():
    with open(os.path.join(ROOT, "docs", "DEPLOY.md"), encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"<!-- litert-example -->\n```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 10
    return block


@pytest.mark.slow
def test_litert_example_in_the_docs_matches_the_model(run_path, tmp_path):
    run = open_trained_run(run_path)
    model = load_run_model(run, policy="float32")  # exports compute in float32
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    (export_dir / "model.tflite").write_bytes(export.convert_litert(model))
    export.write_preprocessing(run, model, str(export_dir))
    video = write_toy_video(tmp_path / "moving.avi", "moving", seed=7)
    script = tmp_path / "example.py"
    script.write_text(example_code())
    completed = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(script),
                                str(export_dir), video], cwd=str(tmp_path), capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.strip().splitlines()
    assert lines[-1] == "tensorflow imported: False"
    printed = {name: float(value) for name, value in (line.split() for line in lines[:-1])}
    clip = preprocess_item(video, run.manifest, run.input_shape, num_clips=1)
    expected = tf.nn.softmax(model(clip, training=False)).numpy()[0]
    assert len(printed) == min(3, len(run.class_names))
    for index, name in enumerate(run.class_names):
        assert abs(printed[name] - expected[index]) <= 1e-4
    with open(export_dir / "preprocessing.json") as f:
        assert json.load(f)["sampling"]["method"] == "uniform"  # what the example samples
    assert np.isclose(sum(printed.values()), 1.0, atol=1e-3)
