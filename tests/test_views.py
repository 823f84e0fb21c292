"""Tests for training.views' issue-20 part: decoded items of any dtype become the model's
input as the run's clip inputs say (the crops and views themselves: tests/test_evaluate.py)."""

import numpy as np
import pytest

from core.errors import UserError
from training.views import as_run_inputs


def run_manifest(**inputs):
    clip_inputs = {"dtype": "uint16", "mask": False, "dated": False, "fill": None,
                   "min_valid_fraction": 0.0, "sample_by": "index", "mask_band": False,
                   "day_of_year": "none", "normalization": {"name": "dataset"}, **inputs}
    return {"clip_inputs": clip_inputs}


def test_runs_without_clip_inputs_take_the_views_as_they_are():
    views = np.arange(24, dtype=np.uint8).reshape(1, 2, 2, 2, 3)
    assert as_run_inputs(views, {}, "x.avi") is views


def test_a_uint16_item_keeps_its_values():
    views = np.array([[[[[14, 557]]]]], np.uint16)
    out = as_run_inputs(views, run_manifest(), "a.tif")
    assert out.dtype == np.uint16 and out.tolist() == views.tolist()


def test_nodata_and_nan_are_filled_and_given_as_the_mask_band():
    views = np.array([[[[[1.0, 2.0], [np.nan, 3.0], [-9999.0, 4.0]]]]], np.float32)
    manifest = {**run_manifest(dtype="float32", fill=[10.0, 20.0], mask_band=True),
                "nodata": -9999.0}
    out = as_run_inputs(views, manifest, "a.npy")
    assert out.dtype == np.float32 and out.shape == (1, 1, 1, 3, 3)
    assert out[0, 0, 0].tolist() == [[1.0, 2.0, 1.0], [10.0, 20.0, 0.0], [10.0, 20.0, 0.0]]


def test_the_runs_8_bit_rule_applies_to_raw_items():
    views = np.array([[[[[0, 1000, 3000]]]]], np.uint16)
    manifest = {**run_manifest(dtype="uint8"), "to_uint8": {"low": [0] * 3,
                                                             "high": [2000] * 3}}
    out = as_run_inputs(views, manifest, "a.tif")
    assert out.dtype == np.uint8 and out.ravel().tolist() == [0, 128, 255]


@pytest.mark.parametrize("manifest,message", [
    (run_manifest(), "dtype uint16"),
    (run_manifest(dtype="uint8", day_of_year="band", dated=True), "day-of-year"),
])
def test_items_the_run_cannot_take(manifest, message):
    with pytest.raises(UserError, match=message):
        as_run_inputs(np.zeros((1, 1, 1, 1, 3), np.uint8), manifest, "a.avi")


def test_predict_reads_a_sensor_item_as_prepare_stored_it(tmp_path):
    """predict.py's decode of a raw uint16 .npy item of a v2 run: its own values (not the
    8-bit rule of format v1), its frames in date order (the sidecar's dates are shuffled),
    the run's clips and the nodata pixels filled with the dataset mean."""
    from data_prep.sampling import sample_frame_indices
    from sequence_fixtures import dated_uint16_run_items
    from training.views import preprocess_item

    items, run_manifest = dated_uint16_run_items(tmp_path, clip_frames=4)
    fill = np.rint(run_manifest["clip_inputs"]["fill"]).astype(np.uint16)
    for path, (array, days) in items.items():
        views = preprocess_item(path, run_manifest, (4, 8, 8, array.shape[-1]))
        stored = array[np.argsort(days)]
        expected = stored[sample_frame_indices(len(array), 4)[0]][:, 1:9, 1:9]  # centre crop
        invalid = (expected == 0).any(axis=-1)
        expected = np.where(invalid[..., None], fill, expected)
        assert views.dtype == np.uint16 and invalid.any()
        np.testing.assert_array_equal(views[0], expected)
