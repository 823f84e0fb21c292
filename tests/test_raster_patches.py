"""Tests for data_prep.raster_patches and the `raster` layout of data_prep.sources: the patch
grid, centre and majority labels, the ignore value, and a block split whose test patches
share no pixel with training patches (checked on the pixel footprints)."""

import collections
import dataclasses

import numpy as np
import pytest

from core.errors import UserError
from data_prep.raster_patches import (STRADDLING, TEST, TRAIN, choose_test_blocks,
                                      grid_origins, patch_label_values, patch_origins,
                                      patch_splits, plan_patches)
from data_prep.rasters import write_raster
from data_prep.source_spec import SourceSpec
from data_prep.sources import resolve_source
from raster_fixtures import CRS, TRANSFORM, UNLABELLED, write_field_rasters


@pytest.mark.parametrize("length, patch, stride, cover_edge, expected", [
    (10, 4, 3, False, [0, 3, 6]),
    (10, 4, 4, False, [0, 4]),
    (10, 4, 4, True, [0, 4, 6]),
    (12, 4, 4, True, [0, 4, 8]),  # the grid reaches the edge: nothing added
    (3, 4, 1, True, []),
    (4, 4, 1, False, [0]),
])
def test_grid_origins(length, patch, stride, cover_edge, expected):
    assert grid_origins(length, patch, stride, cover_edge=cover_edge) == expected


def test_patch_origins_row_major_and_covering():
    origins = patch_origins(10, 7, 4, 4, cover_edge=True)
    assert origins.tolist() == [[0, 0], [0, 3], [4, 0], [4, 3], [6, 0], [6, 3]]
    covered = np.zeros((10, 7), bool)
    for row, col in origins:
        covered[row:row + 4, col:col + 4] = True
    assert covered.all()


def majority_reference(window):
    counts = collections.Counter(window.ravel().tolist())
    best = max(counts.values())
    return min(value for value, count in counts.items() if count == best)


@pytest.mark.parametrize("patch, stride", [(3, 1), (4, 2), (5, 5)])
def test_labels_centre_and_majority_match_a_reference(patch, stride):
    labels = np.random.default_rng(patch).integers(0, 4, (13, 11)).astype(np.int16)
    origins = patch_origins(13, 11, patch, stride)
    centre = patch_label_values(labels, origins, patch, "centre")
    majority = patch_label_values(labels, origins, patch, "majority")
    for (row, col), got_centre, got_majority in zip(origins, centre, majority):
        window = labels[row:row + patch, col:col + patch]
        assert got_centre == labels[row + patch // 2, col + patch // 2]
        assert got_majority == majority_reference(window)
    assert centre.dtype == labels.dtype


def test_majority_tie_goes_to_the_smaller_value():
    labels = np.array([[7, 7], [3, 3]], np.uint8)
    assert patch_label_values(labels, [[0, 0]], 2, "majority").tolist() == [3]


def test_unknown_label_rule_is_a_user_error():
    with pytest.raises(UserError, match="label_rule"):
        patch_label_values(np.zeros((4, 4), int), [[0, 0]], 2, "mode")


@pytest.mark.parametrize("blocks, fraction, expected", [
    ((4, 4), 0.25, 4), ((4, 4), 0.0, 0), ((4, 4), 1.0, 16), ((1, 2), 0.1, 1), ((1, 2), 0.9, 1),
])
def test_choose_test_blocks_takes_the_fraction(blocks, fraction, expected):
    mask = choose_test_blocks(blocks[0] * 8, blocks[1] * 8, 8, fraction, seed=3)
    assert mask.shape == blocks
    assert mask.sum() == expected


def test_choose_test_blocks_is_seeded():
    first = choose_test_blocks(80, 80, 8, 0.3, seed=1)
    assert np.array_equal(first, choose_test_blocks(80, 80, 8, 0.3, seed=1))
    assert not np.array_equal(first, choose_test_blocks(80, 80, 8, 0.3, seed=2))


def test_one_block_cannot_be_split():
    with pytest.raises(UserError, match="two spatial blocks"):
        choose_test_blocks(16, 16, 16, 0.5)


def test_patch_splits_by_block_range():
    test_blocks = np.array([[False, True], [False, False]])
    # in block (0,0); in (0,1); over (0,0)+(0,1); over (0,0)+(1,0), both train; over all 4
    origins = [[0, 0], [0, 8], [0, 6], [6, 0], [6, 6]]
    codes = patch_splits(origins, 4, test_blocks, 8)
    assert codes.tolist() == [TRAIN, TEST, STRADDLING, TRAIN, STRADDLING]


def footprints(patches, shape, size):
    """How many patches of the list cover each pixel."""
    covered = np.zeros(shape, int)
    for row, col, _ in patches:
        covered[row:row + size, col:col + size] += 1
    return covered


@pytest.mark.parametrize("patch, stride, block", [(8, 8, 16), (8, 4, 16), (6, 3, 10),
                                                  (5, 5, 7)])
@pytest.mark.parametrize("seed", [0, 1])
def test_no_test_patch_shares_a_pixel_with_a_training_patch(patch, stride, block, seed):
    labels = np.random.default_rng(seed).integers(1, 3, (40, 36)).astype(np.uint8)
    plan = plan_patches(labels, patch_size=patch, stride=stride, rule="majority",
                        block_size=block, test_fraction=0.3, seed=seed)
    train = footprints(plan.splits["train"], labels.shape, patch)
    test = footprints(plan.splits["test"], labels.shape, patch)
    assert plan.splits["train"] and plan.splits["test"]
    assert not np.any((train > 0) & (test > 0))
    # Every kept patch lies in blocks of its own split.
    block_of_pixel = np.kron(plan.test_blocks, np.ones((block, block), bool))[:40, :36]
    assert not block_of_pixel[train > 0].any() and block_of_pixel[test > 0].all()
    counts = plan.counts
    assert counts["grid"] == len(patch_origins(40, 36, patch, stride))
    assert counts["train"] + counts["test"] + counts["straddling"] == counts["grid"]
    # A grid not aligned with the blocks drops the patches on their borders, counted.
    assert (counts["straddling"] > 0) == (block % stride != 0 or block % patch != 0
                                          or stride != patch)


def test_ignored_labels_are_left_out_and_counted():
    labels = np.full((16, 16), 5, np.int16)
    labels[:8, :8] = -1
    labels[8:, 8:] = 9
    plan = plan_patches(labels, patch_size=4, stride=4, ignore_values=[-1, 9],
                        test_fraction=0.0)
    assert plan.counts == {"grid": 16, "ignored": 8, "straddling": 0, "train": 8}
    assert {value for *_, value in plan.splits["train"]} == {5}
    assert list(plan.splits) == ["train"]


def test_the_same_seed_gives_the_same_plan_and_another_seed_another():
    labels = np.random.default_rng(0).integers(0, 3, (64, 64)).astype(np.uint8)
    options = dict(patch_size=8, stride=8, block_size=16, test_fraction=0.25)
    first = plan_patches(labels, seed=7, **options)
    assert first.splits == plan_patches(labels, seed=7, **options).splits
    assert first.splits["test"] != plan_patches(labels, seed=8, **options).splits["test"]


def test_a_raster_smaller_than_a_patch_is_a_user_error():
    with pytest.raises(UserError, match="at least one patch"):
        plan_patches(np.zeros((6, 9), np.uint8), patch_size=8)


# --- the `raster` layout ---------------------------------------------------------------------


def raster_spec(tmp_path, **options):
    path, label_path, labels, _ = write_field_rasters(tmp_path / "data")
    defaults = dict(layout="raster", root=str(tmp_path / "data"), raster="field_stack.tif",
                    label_raster=label_path, patch_size=8, block_size=16,
                    ignore_value=UNLABELLED)
    return SourceSpec(**{**defaults, **options}), labels


@pytest.mark.parametrize("as_folder", [False, True])
def test_raster_layout_items_are_windows_labelled_by_their_centre(tmp_path, as_folder):
    path, label_path, labels, _ = write_field_rasters(tmp_path / "data", as_folder=as_folder)
    name = "field_dates" if as_folder else "field_stack.tif"
    source = resolve_source(SourceSpec(layout="raster", root=str(tmp_path / "data"),
                                       raster=name, label_raster=label_path, patch_size=8,
                                       block_size=16, ignore_value=UNLABELLED))
    assert source.classes == ["1", "2"]
    assert set(source.splits) == {"train", "test"}
    items = [item for items in source.splits.values() for item in items]
    for item in items:
        row, col, height, width = item.window
        assert (height, width) == (8, 8) and item.path == path
        assert item.item_id == f"{name}@r{row}_c{col}"
        assert source.classes[item.label] == str(labels[row + 4, col + 4])
    # 64 patches; the 4 of the unlabelled square are left out; blocks align: none straddle.
    patches = source.description["patches"]
    assert (patches["grid"], patches["ignored"], patches["straddling"]) == (64, 4, 0)
    assert patches["train"] + patches["test"] == len(items) == 60
    assert patches["class_values"] == [1, 2]
    assert source.description["label_raster"] == label_path
    assert [item.item_id for item in source.splits["train"]] == \
        sorted(item.item_id for item in source.splits["train"])


@pytest.mark.parametrize("rows, expected_classes, expected_values", [
    ("unlabelled\ncrop\nfallow\n", ["unlabelled", "crop", "fallow"], [0, 1, 2]),
    ("2 fallow\n1 crop\n", ["fallow", "crop"], [2, 1]),
    ("1,crop\n2,fallow\n7,water\n", ["crop", "fallow", "water"], [1, 2, 7]),
])
def test_raster_classes_file_names_label_values(tmp_path, rows, expected_classes,
                                                 expected_values):
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text(rows)
    spec, labels = raster_spec(tmp_path, classes_file=str(classes_file))
    source = resolve_source(spec)
    assert source.classes == expected_classes
    assert source.description["patches"]["class_values"] == expected_values
    item = source.splits["train"][0]
    row, col, *_ = item.window
    assert expected_values[item.label] == labels[row + 4, col + 4]


def test_raster_classes_file_missing_a_value_is_a_user_error(tmp_path):
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("1 crop\n")
    spec, _ = raster_spec(tmp_path, classes_file=str(classes_file))
    with pytest.raises(UserError, match=r"values \[2\] have no row"):
        resolve_source(spec)


def test_label_raster_nodata_is_ignored(tmp_path):
    spec, labels = raster_spec(tmp_path, ignore_value=None)
    write_raster(spec.label_raster, labels, crs=CRS, transform=TRANSFORM, nodata=0)
    source = resolve_source(spec)
    assert source.classes == ["1", "2"] and source.description["patches"]["ignored"] == 4


@pytest.mark.parametrize("shape, transform, match", [
    ((32, 64), TRANSFORM, "grid"),
    ((64, 64), (20.0, 0.0, 500000.0, 0.0, -20.0, 4800000.0), "georeference"),
])
def test_label_raster_off_the_grid_is_a_user_error(tmp_path, shape, transform, match):
    spec, _ = raster_spec(tmp_path)
    write_raster(spec.label_raster, np.ones(shape, np.uint8), crs=CRS, transform=transform)
    with pytest.raises(UserError, match=match):
        resolve_source(spec)


def test_float_label_raster_is_a_user_error(tmp_path):
    spec, labels = raster_spec(tmp_path)
    write_raster(spec.label_raster, labels.astype(np.float32), crs=CRS, transform=TRANSFORM)
    with pytest.raises(UserError, match="integer class values"):
        resolve_source(spec)


@pytest.mark.parametrize("options, match", [
    ({"raster": None}, "needs one root directory"),
    ({"raster": "../elsewhere.tif"}, "inside the root"),
    ({"raster": "absent.tif"}, "does not exist"),
])
def test_raster_layout_mistakes_are_user_errors(tmp_path, options, match):
    spec, _ = raster_spec(tmp_path)
    with pytest.raises(UserError, match=match):
        resolve_source(dataclasses.replace(spec, **options))


@pytest.mark.parametrize("field, value, match", [
    ("label_rule", "mode", "one of"),
    ("test_fraction", 1.5, r"in \[0.0, 1.0\]"),
    ("patch_size", 0, "positive integer"),
])
def test_bad_raster_option_values_are_user_errors(field, value, match):
    with pytest.raises(UserError, match=match):
        SourceSpec(layout="raster", root="data", **{field: value})


def test_raster_options_belong_to_the_raster_layout(tmp_path):
    with pytest.raises(UserError, match="only with the layouts raster"):
        resolve_source(SourceSpec(layout="folders", root=str(tmp_path), patch_size=16))
