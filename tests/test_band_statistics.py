"""Per-band statistics: partials per item, combined in any order, against NumPy."""

import itertools

import numpy as np
import pytest

from data_prep.band_statistics import (STATISTICS_SAMPLE_PER_ITEM, combine_partials,
                                       empty_partial, finish_statistics, item_partial)


def _items(seed=0):
    rng = np.random.default_rng(seed)
    items = []
    for index in range(4):
        frames = rng.normal(100 * (index + 1), 10 + index, (3, 5, 6, 2)).astype(np.float32)
        masks = rng.random((3, 5, 6)) > 0.2
        frames[0, 0, 0, 1] = np.nan  # invalid in its band only
        items.append((f"item{index}", frames, masks))
    return items


def test_moments_and_range_match_numpy_over_valid_pixels():
    items = _items()
    stats = finish_statistics(combine_partials(
        item_partial(frames, masks, item_id=name) for name, frames, masks in items), "train")
    for band in range(2):
        values = np.concatenate([frames[..., band][masks & np.isfinite(frames[..., band])]
                                 for _, frames, masks in items]).astype(np.float64)
        pixels = sum(masks.size for _, _, masks in items)
        assert stats["count"][band] == values.size
        np.testing.assert_allclose(stats["mean"][band], values.mean(), rtol=1e-12)
        np.testing.assert_allclose(stats["std"][band], values.std(), rtol=1e-9)
        assert stats["min"][band] == values.min() and stats["max"][band] == values.max()
        assert stats["valid_fraction"][band] == pytest.approx(values.size / pixels)
    assert stats["split"] == "train"


def test_percentiles_come_from_a_sample_close_to_numpy():
    rng = np.random.default_rng(1)
    items = [(f"i{k}", rng.uniform(0, 1000, (4, 16, 16, 1))) for k in range(8)]
    stats = finish_statistics(combine_partials(
        item_partial(frames, item_id=name) for name, frames in items), "train")
    every = np.concatenate([frames.ravel() for _, frames in items])
    low, high = np.percentile(every, [2, 98])
    assert abs(stats["p2"][0] - low) < 15 and abs(stats["p98"][0] - high) < 15


def test_an_items_sample_is_bounded_and_seeded_by_its_id():
    frames = np.arange(4 * 40 * 40, dtype=np.uint16).reshape(4, 40, 40, 1)
    one = item_partial(frames, item_id="x")
    assert len(one["sample_values"][0]) == STATISTICS_SAMPLE_PER_ITEM
    assert item_partial(frames, item_id="x") == one
    assert item_partial(frames, item_id="y")["sample_values"] != one["sample_values"]


def _assert_same_partial(got, expected):
    """Equal, float sums up to rounding (addition order differs); samples exactly."""
    for key in ("sum", "sum_squares"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-12)
    assert {k: v for k, v in got.items() if k not in ("sum", "sum_squares")} == \
        {k: v for k, v in expected.items() if k not in ("sum", "sum_squares")}


def test_combining_is_associative_and_commutative():
    partials = [item_partial(frames, masks, item_id=name, sample_size=50)
                for name, frames, masks in _items(2)]
    reference = combine_partials(partials, sample_size=60)
    for order in itertools.permutations(partials):
        _assert_same_partial(combine_partials(order, sample_size=60), reference)
    nested = combine_partials([combine_partials(partials[:1], sample_size=60),
                               combine_partials(partials[1:], sample_size=60)],
                              sample_size=60)
    _assert_same_partial(nested, reference)
    _assert_same_partial(combine_partials([empty_partial(2)] + partials, sample_size=60),
                         reference)


def test_a_band_without_valid_values_gets_zeros():
    frames = np.full((1, 2, 2, 2), np.nan, np.float32)
    frames[..., 0] = 3.0
    stats = finish_statistics(item_partial(frames, item_id="n"), "train")
    assert stats["count"] == [4, 0]
    assert stats["mean"] == [3.0, 0.0] and stats["std"] == [0.0, 0.0]
    assert stats["valid_fraction"] == [1.0, 0.0]


def test_partials_of_different_band_counts_do_not_combine():
    with pytest.raises(ValueError, match="one band count"):
        combine_partials([empty_partial(1), empty_partial(3)])
