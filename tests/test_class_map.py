"""Tests for training.class_map and `predict.py --class-map`: a whole raster classified patch
by patch into a GeoTIFF with the input's georeference, every pixel reached (edges too), nodata
where no patch spoke.

The model is built by hand so the right map is known: its class-1 logit is the mean of the
last sampled date minus the first (the raster's class 1 greens up, class 2 dries out), its
class-2 logit the opposite. The full chain (prepare + train on raster patches, then the map)
is the last test.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

import predict
from core.errors import UserError
from data_prep.prepare import ItemTask
from data_prep.rasters import raster_info, read_raster, write_raster
from raster_fixtures import (BANDS, CRS, DATES, SQUARE, TRANSFORM, UNLABELLED, field_labels,
                             field_series, write_field_rasters)
from data_prep.reader import read_manifest
from training.class_map import map_dtype, patch_cells, predict_class_map, write_class_map
from training.config import config_from_dict
from training.run_dir import RunDir, open_run_dir, open_trained_run
from training.scoring import clip_probabilities_function, load_run_model
from training.trainer import run_experiment

PATCH, FRAMES, CROP = 8, 2, 6


def trend_model(frames=FRAMES, crop=CROP, bands=BANDS):
    """logits (last date mean - first date mean, the opposite), in thousands."""
    inputs = keras.Input((frames, crop, crop, bands), dtype="uint16")
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 1000)(inputs))
    dense = keras.layers.Dense(2, use_bias=False)
    outputs = dense(flat)
    weights = np.zeros((frames, crop * crop * bands, 2), np.float32)
    per_frame = 1.0 / (crop * crop * bands)
    weights[-1] = [per_frame, -per_frame]
    weights[0] = [-per_frame, per_frame]
    dense.set_weights([weights.reshape(-1, 2)])
    return keras.Model(inputs, outputs)


def write_trend_run(directory, *, patch_stride=None, class_values=(1, 2), nodata=None,
                    layout="raster"):
    """A run directory as train.py leaves it, with `trend_model` as model.keras."""
    run_dir = RunDir(str(directory))
    os.makedirs(run_dir.path, exist_ok=True)
    trend_model().save(run_dir.model)
    classes = ["crop", "fallow"]
    source = {"layout": layout, "root": "/data", "raster": "field_stack.tif",
              "patch_size": PATCH, "bands_per_date": BANDS,
              "patches": {"class_values": list(class_values)}}
    if patch_stride:
        source["patch_stride"] = patch_stride
    manifest = {"format_version": 2, "classes": classes, "source": source,
                "frame_shape": [PATCH, PATCH, BANDS], "resize": {"size": PATCH,
                                                                  "resize_short": None},
                "max_frames": None, "nodata": nodata,
                "sampling": {"method": "uniform", "frames": FRAMES, "frame_stride": 1,
                             "clips_per_video": 1},
                "clips_per_video": 1, "clip_shape": [FRAMES, PATCH, PATCH, BANDS]}
    with open(run_dir.data_manifest, "w") as file:
        json.dump(manifest, file)
    with open(run_dir.run_info, "w") as file:
        json.dump({"input_shape": [FRAMES, CROP, CROP, BANDS], "classes": classes,
                   "prepared_dir": "/prepared"}, file)
    with open(run_dir.classes, "w") as file:
        file.write("\n".join(classes) + "\n")
    return run_dir.path


@pytest.fixture(scope="module")
def trend_run(tmp_path_factory):
    return write_trend_run(tmp_path_factory.mktemp("trend") / "run")


def scorer(run_path):
    trained = open_trained_run(run_path)
    model = load_run_model(trained, "float32")
    return trained, clip_probabilities_function(model), model.inputs[0].dtype


@pytest.mark.parametrize("origins, length, expected", [
    ([0, 8, 16], 24, [(0, 8), (8, 16), (16, 24)]),  # side by side: the patches
    ([0, 4, 8, 12], 20, [(0, 6), (6, 10), (10, 14), (14, 20)]),  # half overlap: the centres
    ([0, 16], 24, [(0, 8), (16, 24)]),  # gaps stay uncovered
    ([0, 8, 10], 18, [(0, 8), (8, 13), (13, 18)]),  # the edge patch's cell
])
def test_patch_cells(origins, length, expected):
    assert patch_cells(origins, 8, length) == expected


@pytest.mark.parametrize("values, expected", [
    ([1, 2], ("uint8", 255)), ([0, 254], ("uint8", 255)), ([3, 255], ("uint16", 65535)),
    ([-1, 4], ("int32", np.iinfo(np.int32).min)),
])
def test_map_dtype_keeps_nodata_out_of_the_classes(values, expected):
    assert map_dtype(values) == expected


@pytest.mark.parametrize("height, width", [(64, 64), (60, 62)])
def test_map_is_the_labels_with_the_inputs_georeference(trend_run, tmp_path, height, width):
    labels = field_labels()[:height, :width]
    path, *_ = write_field_rasters(tmp_path, labels=labels)
    trained, probabilities_of, dtype = scorer(trend_run)
    class_map = predict_class_map(trained, path, probabilities_of, input_dtype=dtype)
    out = write_class_map(str(tmp_path / "map.tif"), class_map, path, with_confidence=True)
    info = raster_info(out)
    assert (info.height, info.width, info.count) == (height, width, 2)
    assert info.crs == raster_info(path).crs and info.transform == TRANSFORM
    assert info.band_names == ("class", "confidence_percent") and info.nodata == 255
    written = read_raster(out)
    labelled = labels != UNLABELLED
    # Every pixel reached, edges included; each labelled pixel has its class's value.
    assert np.array_equal(written[..., 0][labelled], labels[labelled])
    assert set(np.unique(written[..., 0])) <= {1, 2}
    confidence = written[..., 1]
    assert np.all((confidence >= 50) & (confidence <= 100))  # of two classes, the best
    assert np.all(confidence[labelled] > 80)  # a clear trend is a confident call
    assert class_map.pixels_per_class() == {
        "crop": int((written[..., 0] == 1).sum()), "fallow": int((written[..., 0] == 2).sum())}


def test_stride_larger_than_the_patch_leaves_nodata_between(trend_run, tmp_path):
    path, *_ = write_field_rasters(tmp_path)
    trained, probabilities_of, dtype = scorer(trend_run)
    class_map = predict_class_map(trained, path, probabilities_of, stride=2 * SQUARE,
                                  input_dtype=dtype)
    covered = np.zeros((64, 64), bool)
    for row in (0, 32, 56):
        for col in (0, 32, 56):
            covered[row:row + PATCH, col:col + PATCH] = True
    assert np.array_equal(class_map.values != class_map.nodata, covered)
    assert class_map.patches == 9


def test_patches_of_nodata_only_are_nodata(tmp_path):
    run = write_trend_run(tmp_path / "run", nodata=0)
    labels = field_labels()
    series = field_series(labels)
    series[:, 16:32] = 0  # two patch rows with no valid value
    path = str(tmp_path / "stack.tif")
    write_raster(path, np.concatenate(list(series), axis=-1), crs=CRS, transform=TRANSFORM)
    trained, probabilities_of, dtype = scorer(run)
    class_map = predict_class_map(trained, path, probabilities_of, input_dtype=dtype)
    assert np.all(class_map.values[16:32] == class_map.nodata)
    assert np.all(class_map.values[32:] != class_map.nodata)
    assert class_map.patches == 64 - 16


def test_a_validity_band_is_read_and_not_fed_to_the_model(tmp_path):
    run = write_trend_run(tmp_path / "run")
    with open(os.path.join(run, "data_manifest.json")) as file:
        manifest = json.load(file)
    manifest["source"].update(bands_per_date=BANDS + 1, validity_band=0)
    with open(os.path.join(run, "data_manifest.json"), "w") as file:
        json.dump(manifest, file)
    labels = field_labels()
    series = field_series(labels)
    validity = np.full(series.shape[:-1] + (1,), 1, np.uint16)
    validity[:, 40:48] = 0  # one patch row invalid at every date
    dates = np.concatenate([validity, series], axis=-1)  # the mask first in each date
    path = str(tmp_path / "stack.tif")
    write_raster(path, np.concatenate(list(dates), axis=-1), crs=CRS, transform=TRANSFORM)
    trained, probabilities_of, dtype = scorer(run)
    class_map = predict_class_map(trained, path, probabilities_of, input_dtype=dtype)
    assert np.all(class_map.values[40:48] == class_map.nodata)
    labelled = labels != UNLABELLED
    labelled[40:48] = False
    assert np.array_equal(class_map.values[labelled], labels[labelled])


def test_a_folder_of_dates_maps_like_the_stack(trend_run, tmp_path):
    stack, *_ = write_field_rasters(tmp_path / "stack")
    folder, *_ = write_field_rasters(tmp_path / "folder", as_folder=True)
    trained, probabilities_of, dtype = scorer(trend_run)
    maps = [predict_class_map(trained, path, probabilities_of, input_dtype=dtype).values
            for path in (stack, folder)]
    assert np.array_equal(*maps)


def test_a_run_not_trained_on_raster_patches_is_a_user_error(tmp_path):
    run = write_trend_run(tmp_path / "run", layout="csv")
    path, *_ = write_field_rasters(tmp_path)
    trained, probabilities_of, dtype = scorer(run)
    with pytest.raises(UserError, match="trained on raster patches"):
        predict_class_map(trained, path, probabilities_of, input_dtype=dtype)


def test_a_raster_of_another_band_count_or_dtype_is_a_user_error(trend_run, tmp_path):
    trained, probabilities_of, dtype = scorer(trend_run)
    path = str(tmp_path / "two_bands.tif")
    write_raster(path, np.zeros((16, 16, 2 * DATES), np.uint16))
    manifest = json.loads(json.dumps(trained.manifest))
    manifest["source"]["bands_per_date"] = 2
    with pytest.raises(UserError, match="3 band"):
        predict_class_map(dataclasses.replace(trained, manifest=manifest), path,
                          probabilities_of, input_dtype=dtype)
    floats = str(tmp_path / "floats.tif")
    write_raster(floats, np.zeros((16, 16, BANDS * DATES), np.float32))
    with pytest.raises(UserError, match="uint16 input"):
        predict_class_map(trained, floats, probabilities_of, input_dtype=dtype)


def test_predict_cli_writes_the_class_map(trend_run, tmp_path, capsys):
    path, _, labels, _ = write_field_rasters(tmp_path)
    out = str(tmp_path / "map.tif")
    assert predict.main(["--run-dir", trend_run, "--class-map", out, "--json", path]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_map"] == out and report["patches"] == 64
    assert [row["value"] for row in report["classes"]] == [1, 2]
    written = read_raster(out)[..., 0]
    assert raster_info(out).count == 1
    assert sum(row["pixels"] for row in report["classes"]) == written.size
    labelled = labels != UNLABELLED
    assert np.array_equal(written[labelled], labels[labelled])


@pytest.mark.parametrize("arguments, match", [
    (["--class-map", "out.tif"], "one raster"),
    (["--class-map", "out.tif", "a.tif", "b.tif"], "one raster"),
    (["--map-stride", "4", "a.tif"], "with --map-stride"),
    (["--class-map", "out.tif", "--map-stride", "0", "a.tif"], "--map-stride >= 1"),
    (["--class-map", "/nonexistent/out.tif", "a.tif"], "can be written"),
])
def test_class_map_usage_mistakes_are_one_line_exit_2(trend_run, capsys, arguments, match):
    assert predict.main(["--run-dir", trend_run, *arguments]) == 2
    error = capsys.readouterr().err
    assert match in error and len(error.strip().splitlines()) == 1


# --- the whole chain: prepare raster patches, train, map --------------------------------------

# Prepare reads an item's window only with the write side of issue 20 (branch s20-write):
# `ItemTask.window` and `read_item_frames(..., window=...)`.
needs_window_reading = pytest.mark.skipif(
    "window" not in {field.name for field in dataclasses.fields(ItemTask)},
    reason="data_prep.prepare.ItemTask has no `window` yet: prepare cannot read raster "
           "patches before the write side of issue 20 (branch s20-write) is merged")


@needs_window_reading
@pytest.mark.slow  # about 40 s: prepare, 3 short epochs, export, the map
def test_a_labelled_raster_prepares_trains_and_maps(tmp_path, capsys):
    # The stack (a folder of dates prepares alike: test_raster_patches, the write side's
    # tests, and test_a_folder_of_dates_maps_like_the_stack).
    path, label_path, labels, _ = write_field_rasters(tmp_path / "data")
    data = {"layout": "raster", "root": str(tmp_path / "data"),
            "raster": os.path.basename(path), "label_raster": label_path, "patch_size": PATCH,
            "block_size": 2 * SQUARE, "ignore_value": UNLABELLED,
            "prepared_dir": str(tmp_path / "prepared"), "format": "v2", "frames": FRAMES,
            "size": PATCH, "clips_per_video": 1, "workers": 1, "bands_per_date": BANDS}
    config = config_from_dict({
        "name": "raster_patches", "data": data, "model": {"name": "small3d"},
        "augment": {"horizontal_flip": False, "random_crop": False, "crop_size": None},
        "train": {"epochs": 3, "steps_per_epoch": 15, "batch_size": 8, "optimizer": "adam",
                  "learning_rate": 0.003},
        "tensorboard": {"histograms": False, "graph": False, "clip_images": 0,
                        "deform_offsets": False, "confusion_matrix": False}})
    run_path = str(tmp_path / "run")
    run_experiment(config, open_run_dir(run_path), verbose=0)

    manifest = read_manifest(str(tmp_path / "prepared"))
    patches = manifest["source"]["patches"]
    assert (patches["grid"], patches["ignored"], patches["class_values"]) == (64, 4, [1, 2])
    assert manifest["splits"]["train"]["videos"] == patches["train"]
    assert manifest["splits"]["test"]["videos"] == patches["test"]
    item_id = f"{os.path.basename(path)}@r8_c16"
    a, b, c, d, e, f = TRANSFORM  # the window's own georeference
    assert manifest["geo"][item_id]["transform"] == [a, b, c + 16 * a, d, e, f + 8 * e]

    out = str(tmp_path / "map.tif")
    assert predict.main(["--run-dir", run_path, "--class-map", out, path]) == 0
    assert out in capsys.readouterr().out
    info, source_info = raster_info(out), raster_info(label_path)
    assert (info.height, info.width, info.crs, info.transform) == \
        (64, 64, source_info.crs, source_info.transform)
    written = read_raster(out)[..., 0]
    labelled = labels != UNLABELLED
    assert set(np.unique(written)) <= {1, 2}
    assert np.mean(written[labelled] == labels[labelled]) >= 0.75
