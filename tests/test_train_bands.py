"""Training on non-8-bit, multi-band, masked, dated data end to end (issue 20, the read side):
v2 records written by hand as the contract says, a run of small3d, and what the run keeps."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sequence_fixtures import write_prepared_v2
from training.config import config_from_dict
from training.evaluation import evaluate_run
from training.scoring import load_run_model
from training.export_check import split_clips
from training.run_dir import open_run_dir, open_trained_run
from training.trainer import run_experiment

FRAMES, SIZE, BANDS = 6, 12, 4
FIRST_DATE = 19723  # 2024-01-01


def reflectance_item(label, seed, *, masked):
    """A uint16 4-band series: the classes differ by band 0's absolute level (2000 vs 2600)
    only; a cloud (value 60000, masked) covers a corner of frame 1."""
    rng = np.random.default_rng(seed)
    frames = rng.normal(3000, 400, (FRAMES, SIZE, SIZE, BANDS))
    frames[..., 0] = rng.normal(2000 + 600 * label, 150, (FRAMES, SIZE, SIZE))
    frames = np.clip(frames, 0, 10000).astype(np.uint16)
    item = {"frames": frames, "label": label,
            "dates": FIRST_DATE + np.sort(rng.choice(365, FRAMES, replace=False))}
    if masked:
        masks = np.ones((FRAMES, SIZE, SIZE), bool)
        masks[1, :4, :4] = False
        frames[1, :4, :4] = 60000
        item.update(masks=masks,
                    valid_fraction=masks.reshape(FRAMES, -1).mean(axis=1).tolist())
    return item


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bands") / "prepared"
    splits = {split: [reflectance_item(index % 2, seed=100 * offset + index, masked=True)
                      for index in range(count)]
              for offset, (split, count) in enumerate((("train", 16), ("test", 6)))}
    return write_prepared_v2(directory, splits, classes=["low", "high"], mask=True,
                             dated=True)


def train(tmp_path, prepared, **data):
    config = config_from_dict({
        "name": "bands",
        "data": {"layout": "csv", "prepared_dir": prepared, "frames": 4, "size": SIZE,
                 **data},
        "model": {"name": "small3d"},
        "augment": {"horizontal_flip": True, "random_crop": True, "crop_size": 8},
        "train": {"epochs": 2, "batch_size": 4, "optimizer": "adam", "learning_rate": 0.003},
        "tensorboard": {"histograms": False, "graph": False, "clip_images": 1,
                        "confusion_matrix": False, "deform_offsets": False},
    })
    run_path = tmp_path / "run"
    run_experiment(config, open_run_dir(str(run_path)), verbose=0)
    return run_path


@pytest.fixture(scope="module")
def uint16_run(tmp_path_factory, prepared):
    return train(tmp_path_factory.mktemp("uint16"), prepared)


@pytest.mark.slow
def test_a_uint16_run_standardises_with_the_dataset_statistics(uint16_run, prepared):
    run_path = uint16_run
    with open(os.path.join(prepared, "manifest.json")) as file:
        statistics = json.load(file)["statistics"]
    model = keras.saving.load_model(run_path / "model.keras")
    assert keras.backend.standardize_dtype(model.inputs[0].dtype) == "uint16"
    assert model.inputs[0].shape[1:] == (4, 8, 8, BANDS)
    normalize = model.get_layer("normalize")
    np.testing.assert_allclose(normalize.mean, statistics["mean"])
    np.testing.assert_allclose(normalize.std, statistics["std"])
    # The run is self-describing: evaluate and predict read the clip inputs from it.
    with open(run_path / "data_manifest.json") as file:
        inputs = json.load(file)["clip_inputs"]
    assert inputs["dtype"] == "uint16" and inputs["normalization"]["name"] == "dataset"
    assert inputs["fill"] == pytest.approx(statistics["mean"])
    assert (run_path / "metrics.json").exists()


@pytest.mark.slow
def test_mask_and_day_of_year_bands_train_as_float32_inputs(tmp_path, prepared):
    run_path = train(tmp_path, prepared, mask_band=True, day_of_year="sinusoidal",
                     sample_by="date", min_valid_fraction=0.95)
    model = keras.saving.load_model(run_path / "model.keras")
    assert keras.backend.standardize_dtype(model.inputs[0].dtype) == "float32"
    assert model.inputs[0].shape[-1] == BANDS + 3
    normalize = model.get_layer("normalize")
    assert normalize.mean[BANDS:] == [0.0] * 3 and normalize.std[BANDS:] == [1.0] * 3
    with open(run_path / "metrics.json") as file:
        assert "top1" in json.load(file)


@pytest.mark.slow
def test_the_uint16_run_exports_and_evaluates_in_its_dtype(uint16_run):
    run = open_trained_run(str(uint16_run))
    serve = tf.saved_model.load(str(uint16_run / "export")).signatures["serving_default"]
    assert serve.structured_input_signature[1]["clips"].dtype == tf.uint16
    with open(uint16_run / "export" / "preprocessing.json") as file:
        record = json.load(file)
    assert record["input"]["dtype"] == "uint16"
    assert record["clip_inputs"]["normalization"] == "dataset"
    clips, labels = split_clips(run, "test", 3)
    assert clips.dtype == np.uint16 and clips.shape == (3, 4, 8, 8, BANDS)
    logits = serve(clips=tf.constant(clips))["logits"].numpy()
    model = load_run_model(run, policy="float32")  # the export computes in float32
    np.testing.assert_allclose(logits, keras.ops.convert_to_numpy(model(clips)), atol=1e-4)
    results = evaluate_run(run, model, "test", (1, 1))
    assert results["source"] == "shards" and 0 <= results["top1"] <= 1
