"""Tests for data_prep.reader: read_manifest and load_split on shards prepare wrote."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from core.errors import UserError
import data_prep
from data_prep.prepare import prepare_dataset
from data_prep.source_spec import SourceSpec
from data_prep.sampling import sample_frame_indices
from video_fixtures import write_text
from video_fixtures import (frame_index_of, make_folders_dataset, raw_clip, read_records,
                            write_rawframes)

CLIPS = 3


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """5 items (2 classes), 3 clips each, two items per shard; one raw, one png copy."""
    root = tmp_path_factory.mktemp("root")
    make_folders_dataset(root, classes=("a", "b"), per_class=3, num_frames=9)
    os.remove(os.path.join(str(root), "b", "item2.avi"))
    outs = {}
    for encoding in ("raw", "png"):
        out = str(tmp_path_factory.mktemp(encoding))
        prepare_dataset(SourceSpec("folders", str(root)), out, 4, 8, clips_per_video=CLIPS,
                        encoding=encoding, workers=1, show_progress=False, items_per_shard=2)
        outs[encoding] = out
    return outs


def as_numpy(dataset):
    return [tuple(part.numpy() for part in element) for element in dataset]


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_all_clips_in_record_order_with_labels(prepared, encoding):
    manifest, records = read_records(prepared[encoding], "train")
    dataset = data_prep.load_split(prepared[encoding], "train", num_parallel_reads=1)
    assert dataset.element_spec == (tf.TensorSpec((4, 8, 8, 3), tf.uint8),
                                    tf.TensorSpec((), tf.int32))
    elements = as_numpy(dataset)
    assert len(elements) == len(records) == 5 * CLIPS
    reference = raw_clip(records[0], manifest["clip_shape"]) if encoding == "raw" else None
    for (clip, label), record in zip(elements, records):
        assert label == record["label"] and clip.dtype == np.uint8
        expected = sample_frame_indices(9 + int(record["item_id"][-5]), 4,
                                        num_clips=CLIPS)[record["clip_index"]]
        np.testing.assert_array_equal(frame_index_of(clip), expected)
        assert clip[0, ..., 0].min() > 200  # red channel first: RGB order survives
    if reference is not None:
        np.testing.assert_array_equal(elements[0][0], reference)


def test_with_item_index_groups_the_clips_of_each_item(prepared):
    elements = as_numpy(data_prep.load_split(prepared["raw"], "train", with_item_index=True))
    by_item = {}
    for _, label, item_index in elements:
        by_item.setdefault(int(item_index), set()).add(int(label))
    assert sorted(by_item) == list(range(5))
    assert all(len(labels) == 1 for labels in by_item.values())
    counts = np.bincount([int(index) for _, _, index in elements])
    assert list(counts) == [CLIPS] * 5


def test_random_selection_gives_one_clip_per_item_redrawn_each_epoch(prepared):
    dataset = data_prep.load_split(prepared["raw"], "train", clip_selection="random", seed=3,
                                   with_item_index=True)
    epochs = []
    for _ in range(4):
        elements = as_numpy(dataset)
        assert sorted(int(index) for _, _, index in elements) == list(range(5))
        # Which stored clip: its first frame index tells (clips interleave in time).
        epochs.append(tuple(int(frame_index_of(clip)[0]) for clip, _, _ in elements))
    assert len(set(epochs)) > 1, "the same clips every epoch"
    again = data_prep.load_split(prepared["raw"], "train", clip_selection="random", seed=3,
                                 with_item_index=True)
    first = tuple(int(frame_index_of(clip)[0]) for clip, _, _ in as_numpy(again))
    assert first == epochs[0], "a seed must fix the draws"


def test_shuffled_shards_still_hold_every_clip(prepared):
    dataset = data_prep.load_split(prepared["raw"], "train", shuffle_shards=True, seed=0,
                                   with_item_index=True)
    assert sorted(int(index) for *_, index in as_numpy(dataset)) == \
        sorted(list(range(5)) * CLIPS)


@pytest.mark.parametrize("num_input_pipelines", [2, 3])
def test_input_pipelines_split_the_shard_files_between_them(prepared, num_input_pipelines):
    # 5 items in 3 shards of 2, 2, 1: each pipeline reads whole shards, none twice.
    manifest = data_prep.read_manifest(prepared["raw"])
    shard_items = []
    for pipeline_id in range(num_input_pipelines):
        dataset = data_prep.load_split(
            prepared["raw"], "train", with_item_index=True, shuffle_shards=True, seed=1,
            num_input_pipelines=num_input_pipelines, input_pipeline_id=pipeline_id)
        shard_items.append(sorted({int(index) for *_, index in as_numpy(dataset)}))
    assert all(shard_items)
    assert sorted(sum(shard_items, [])) == list(range(manifest["splits"]["train"]["videos"]))
    # Pipeline i reads the manifest's shards i, i + N, ...: whole shards of 2 items.
    assert shard_items[0][:2] == [0, 1]


@pytest.mark.parametrize("kwargs", [dict(num_input_pipelines=4, input_pipeline_id=0),
                                    dict(num_input_pipelines=2, input_pipeline_id=2)])
def test_more_input_pipelines_than_shard_files_is_a_user_error(prepared, kwargs):
    with pytest.raises(UserError, match="at least one shard file per input pipeline"):
        data_prep.load_split(prepared["raw"], "train", **kwargs)


def test_reader_works_inside_a_batched_pipeline(prepared):
    dataset = data_prep.load_split(prepared["png"], "train", clip_selection="random", seed=0)
    clips, labels = next(iter(dataset.batch(4)))
    assert clips.shape == (4, 4, 8, 8, 3) and labels.dtype == tf.int32


def test_read_manifest_returns_the_manifest(prepared):
    manifest = data_prep.read_manifest(prepared["raw"])
    assert manifest["classes"] == ["a", "b"] and manifest["splits"]["train"]["videos"] == 5


@pytest.mark.parametrize("content,message", [
    (None, "manifest.json"), ("{not json", "readable JSON"), ('{"classes": []}', "missing="),
    (json.dumps({"format_version": 9, "classes": [], "clip_shape": [1, 1, 1, 1],
                 "encoding": "raw", "clips_per_video": 1, "splits": {}}), "format_version=9")])
def test_bad_manifest_is_a_user_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(UserError, match=message):
        data_prep.read_manifest(str(tmp_path))


@pytest.mark.parametrize("kwargs,message", [
    (dict(split="validation"), "split='validation'"),
    (dict(split="train", clip_selection="first"), "clip_selection='first'")])
def test_bad_arguments_are_user_errors(prepared, kwargs, message):
    with pytest.raises(UserError, match=message):
        data_prep.load_split(prepared["raw"], **kwargs)


@pytest.mark.parametrize("encoding", ["raw", "png"])
@pytest.mark.parametrize("kind", ["list", "rawframes"])
def test_multi_label_datasets_yield_float_multi_hot_labels(tmp_path, encoding, kind):
    root = tmp_path / "root"
    if kind == "list":
        make_folders_dataset(root, classes=("a", "b"), per_class=2, num_frames=6, kind="mp4")
        rows = "a/item0.mp4 3 0\na/item1.mp4 2\nb/item0.mp4 0 1 2 3\nb/item1.mp4 1\n"
    else:
        for name in ("a/item0", "a/item1", "b/item0", "b/item1"):
            write_rawframes(root / name, 6)
        rows = "a/item0 6 3 0\na/item1 5 2\nb/item0 6 0 1 2 3\nb/item1 4 1\n"
    listing = write_text(tmp_path / "train.txt", rows)
    out = str(tmp_path / "out")
    spec = SourceSpec(kind, str(root), lists={"train": listing}, multi_label=True,
                      num_classes=4)
    manifest = prepare_dataset(spec, out, 3, 8, clips_per_video=2,
                               encoding=encoding, workers=1, show_progress=False,
                               items_per_shard=3)
    assert data_prep.read_manifest(out)["multi_label"] is True
    for selection, clips_per_item in (("all", 2), ("random", 1)):
        dataset = data_prep.load_split(out, "train", clip_selection=selection,
                                       with_item_index=True, seed=0)
        assert dataset.element_spec[1] == tf.TensorSpec((4,), tf.float32)
        elements = as_numpy(dataset)
        assert len(elements) == 4 * clips_per_item
        _, records = read_records(out, "train")
        ids = {record["item_index"]: record["label"] for record in records}
        for clip, multi_hot, item_index in elements:
            expected = np.zeros(4, np.float32)
            expected[list(ids[item_index])] = 1.0
            np.testing.assert_array_equal(multi_hot, expected)
            assert clip.shape == tuple(manifest["clip_shape"])
    # In tf.data.Dataset.map too, batched as training will take it.
    batch = next(iter(data_prep.load_split(out, "train").batch(8)))[1].numpy()
    assert batch.shape == (8, 4) and batch.dtype == np.float32
    assert sorted(batch.sum(axis=1).tolist()) == [1, 1, 1, 1, 2, 2, 4, 4]


def test_single_label_datasets_have_no_multi_label_key_and_int_labels(prepared):
    manifest = data_prep.read_manifest(prepared["raw"])
    assert "multi_label" not in manifest and "num_classes" not in manifest
    assert data_prep.load_split(prepared["raw"], "train").element_spec[1] == \
        tf.TensorSpec((), tf.int32)


def _v2_manifest(**keys):
    return {"format_version": 2, "classes": ["a", "b"], "frame_shape": [8, 8, 3],
            "encoding": "raw", "splits": {"train": {"videos": 1, "shards": []}}, **keys}


def test_a_manifest_older_than_sensor_data_reads_with_its_meaning(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(_v2_manifest()))
    manifest = data_prep.read_manifest(str(tmp_path))
    assert (manifest["dtype"], manifest["band_names"], manifest["nodata"], manifest["mask"],
            manifest["dated"], manifest["to_uint8"]) == ("uint8", None, None, False, False,
                                                         None)
    assert "statistics" not in manifest and "geo" not in manifest


STATISTICS = {"split": "train", **{key: [1.0, 2.0, 3.0] for key in (
    "count", "mean", "std", "min", "max", "p2", "p98", "valid_fraction")}}


@pytest.mark.parametrize("keys,message", [
    (dict(dtype="float64"), "dtype="), (dict(band_names=["r", "g"]), "band_names="),
    (dict(nodata="zero"), "nodata="), (dict(mask="yes"), "mask="),
    (dict(to_uint8={"low": [0], "high": [1]}), "to_uint8="),
    (dict(to_uint8={"low": [0] * 3, "high": [9] * 3}, dtype="uint16"), "dtype="),
    (dict(statistics={**STATISTICS, "mean": [1.0]}), "statistics="),
    (dict(geo={"x.tif": {"crs": "EPSG:4326", "transform": [1, 0, 0, 0, -1],
                         "height": 8, "width": 8}}), "geo=")])
def test_damaged_sensor_keys_are_named(tmp_path, keys, message):
    (tmp_path / "manifest.json").write_text(json.dumps(_v2_manifest(**keys)))
    with pytest.raises(UserError, match=message):
        data_prep.read_manifest(str(tmp_path))


def test_sensor_keys_as_prepare_writes_them_read(tmp_path):
    keys = dict(dtype="uint8", band_names=["nir", "r", "g"], nodata=0, mask=True,
                dated=True, to_uint8={"low": [0] * 3, "high": [9000] * 3},
                statistics=STATISTICS,
                geo={"x.tif": {"crs": "EPSG:4326", "transform": [1, 0, 0, 0, -1, 0],
                               "height": 8, "width": 8}})
    (tmp_path / "manifest.json").write_text(json.dumps(_v2_manifest(**keys)))
    manifest = data_prep.read_manifest(str(tmp_path))
    assert {key: manifest[key] for key in keys} == keys
