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
