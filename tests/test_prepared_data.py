"""Tests for training.prepared_data's clip inputs: `data.normalization` and the read options
resolved against a manifest (issue 20)."""

import pytest

from core.errors import UserError
from models.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from training.config import config_from_dict
from training.prepared_data import clip_inputs_of, extra_input_bands, model_normalization

STATISTICS = {"mean": [1000.0, 2000.0, 3000.0], "std": [100.0, 0.0, 300.0]}


def config(model=None, **data):
    return config_from_dict({"data": {"prepared_dir": "/nowhere", **data},
                             "model": model or {"name": "small3d"}})


def manifest(dtype="uint16", bands=3, statistics=True, **keys):
    content = {"format_version": 2, "frame_shape": [8, 8, bands], "dtype": dtype, **keys}
    if statistics:
        content["statistics"] = {key: values[:bands] + [7.0] * (bands - 3)
                                 for key, values in STATISTICS.items()}
    return content


@pytest.mark.parametrize("data_manifest,expected", [
    # 8-bit RGB video keeps the model's own default: nothing is passed to build_model.
    (manifest("uint8"), ("model", None, None)),
    (manifest("uint8", statistics=False), ("model", None, None)),
    # Anything else standardises with the dataset's statistics (a std of 0 becomes 1).
    (manifest("uint16"), ("dataset", [1000.0, 2000.0, 3000.0], [100.0, 1.0, 300.0])),
    (manifest("uint8", bands=4), ("dataset", [1000.0, 2000.0, 3000.0, 7.0],
                                  [100.0, 1.0, 300.0, 7.0])),
    # Data prepared before statistics existed: the old default.
    (manifest("uint16", statistics=False), ("model", None, None)),
])
def test_auto_normalization(data_manifest, expected):
    inputs = clip_inputs_of(config(), data_manifest)
    normalization = inputs["normalization"]
    assert (normalization["name"], normalization["mean"], normalization["std"]) == expected
    assert model_normalization(inputs)["input_dtype"] == data_manifest["dtype"]


@pytest.mark.parametrize("value,mean,std", [
    ("imagenet", list(IMAGENET_MEAN), list(IMAGENET_STD)),
    ("none", [0.0] * 3, [1.0] * 3),
    ("dataset", [1000.0, 2000.0, 3000.0], [100.0, 1.0, 300.0]),
    ({"mean": [1, 2, 3], "std": [4, 5, 6]}, [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]),
])
def test_named_and_given_normalizations(value, mean, std):
    inputs = clip_inputs_of(config(normalization=value), manifest("uint8"))
    assert model_normalization(inputs) == {"input_dtype": "uint8", "mean": mean, "std": std}


def test_extra_bands_get_mean_0_std_1_and_a_float32_input():
    inputs = clip_inputs_of(config(mask_band=True, day_of_year="sinusoidal"),
                            manifest("uint16", mask=True, dated=True))
    assert extra_input_bands(inputs) == 3
    assert model_normalization(inputs) == {
        "input_dtype": "float32", "mean": [1000.0, 2000.0, 3000.0, 0.0, 0.0, 0.0],
        "std": [100.0, 1.0, 300.0, 1.0, 1.0, 1.0]}
    # Masked pixels are filled with the stored bands' normalisation mean (0 once standardised).
    assert inputs["fill"] == [1000.0, 2000.0, 3000.0]
    assert (inputs["mask"], inputs["dated"], inputs["day_of_year"]) == (True, True, "sinusoidal")


def test_8_bit_rgb_with_a_mask_band_spells_out_the_model_default():
    inputs = clip_inputs_of(config(mask_band=True), manifest("uint8", mask=True))
    assert inputs["normalization"]["mean"] == [*IMAGENET_MEAN, 0.0]
    assert inputs["fill"] == list(IMAGENET_MEAN)


def test_float_items_are_filled_even_without_masks():
    assert clip_inputs_of(config(), manifest("float32"))["fill"] == [1000.0, 2000.0, 3000.0]
    assert clip_inputs_of(config(), manifest("uint16"))["fill"] is None


@pytest.mark.parametrize("data,data_manifest,message", [
    ({"normalization": "imagenet"}, manifest(bands=5), "3 \\(RGB\\) bands"),
    ({"normalization": "dataset"}, manifest(statistics=False), "no band statistics"),
    ({"normalization": {"mean": [1, 2], "std": [1, 1]}}, manifest(), "one mean and std"),
    ({"sample_by": "date"}, manifest(), "undated"),
    ({"day_of_year": "band"}, manifest(), "undated"),
    ({"mask_band": True}, {"format_version": 1, "clip_shape": [4, 8, 8, 3]}, "format v1"),
])
def test_clip_inputs_that_do_not_fit_the_data(data, data_manifest, message):
    with pytest.raises(UserError, match=message):
        clip_inputs_of(config(**data), data_manifest)


def test_the_early_check_refuses_date_options_on_undated_data():
    from training.prepared_data import check_prepared_data

    undated = {**manifest(), "frame_shape": [16, 16, 3], "resize": {},
               "splits": {"train": {}, "test": {}}, "classes": ["a", "b"]}
    with pytest.raises(UserError, match="undated"):
        check_prepared_data(config(size=8, sample_by="date").data, undated)
    check_prepared_data(config(size=8).data, undated)
