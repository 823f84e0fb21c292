"""GeoTIFF items train end to end (issue 20): a folder of 13-band uint16 GeoTIFFs per date,
and one multi-date stack per item (`data.bands_per_date`), prepared as they are and trained
with the dataset's statistics."""

import json

import keras
import numpy as np
import pytest

from data_prep.rasters import write_raster
from training.config import config_from_dict
from training.run_dir import open_run_dir
from training.trainer import run_experiment

DATES, SIZE, BANDS = 4, 8, 13
UTM_31N = "EPSG:32631"


def reflectances(label, seed):
    """(dates, H, W, 13) uint16: the classes differ by their level in band 7 (NIR)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(1500, 200, (DATES, SIZE, SIZE, BANDS))
    values[..., 7] += 2500 * label
    return np.clip(values, 1, 10000).astype(np.uint16)


def write_items(root, kind):
    for label, name in enumerate(("bare", "green")):
        for index in range(4):
            series = reflectances(label, seed=10 * label + index)
            transform = (10.0, 0.0, 500000.0 + 100 * index, 0.0, -10.0, 4800000.0)
            if kind == "folder":  # S2_<date>.tif per date, dates from the file names
                folder = root / name / f"field{index}"
                folder.mkdir(parents=True)
                for date in range(DATES):
                    write_raster(str(folder / f"S2_2024030{date + 1}.tif"), series[date],
                                 crs=UTM_31N, transform=transform)
            else:  # one stack, date-major
                (root / name).mkdir(parents=True, exist_ok=True)
                write_raster(str(root / name / f"field{index}.tif"),
                             np.concatenate(list(series), axis=-1), crs=UTM_31N,
                             transform=transform)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "stack"])
def test_thirteen_band_geotiff_items_prepare_and_train(tmp_path, kind):
    root = tmp_path / "items"
    write_items(root, kind)
    data = {"layout": "folders", "root": str(root), "prepared_dir": str(tmp_path / "prepared"),
            "frames": DATES, "size": SIZE, "train_split": "train", "test_split": "train"}
    if kind == "folder":
        data["date_pattern"] = r"S2_(\d{8})\.tif"
    else:
        data["bands_per_date"] = BANDS
    config = config_from_dict({
        "name": f"geotiff_{kind}", "data": data, "model": {"name": "small3d"},
        "augment": {"horizontal_flip": False, "random_crop": False},
        "train": {"epochs": 1, "batch_size": 4, "optimizer": "adam", "learning_rate": 0.003},
        "tensorboard": {"histograms": False, "graph": False, "clip_images": 0,
                        "confusion_matrix": False, "deform_offsets": False},
    })
    run_path = tmp_path / "run"
    run_experiment(config, open_run_dir(str(run_path)), verbose=0)
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16" and manifest["frame_shape"] == [SIZE, SIZE, BANDS]
    assert manifest["dated"] is (kind == "folder")
    assert len(manifest["statistics"]["mean"]) == BANDS
    geo = manifest["geo"]["green/field1" if kind == "folder" else "green/field1.tif"]
    assert geo["transform"][2] == 500100.0 and ("32631" in geo["crs"] or "UTM" in geo["crs"])
    model = keras.saving.load_model(run_path / "model.keras")
    assert keras.backend.standardize_dtype(model.inputs[0].dtype) == "uint16"
    assert model.inputs[0].shape[1:] == (DATES, SIZE, SIZE, BANDS)
    assert (run_path / "metrics.json").exists()
