"""Prepared data v2 (whole items, clips drawn while training) through everything that reads
it: train, multi-view evaluation, a new clip length without preparing again, inspect."""

import json
import os

import numpy as np
import pytest

from core.errors import UserError
import data_prep
from data_prep.contact_sheet import write_contact_sheet
from run_fixtures import _tiny_config, toy_csv_source
from training import evaluation
from training.run_dir import open_run_dir, open_trained_run
from training.scoring import load_run_model
from training.trainer import run_experiment


@pytest.fixture(scope="module")
def v2_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("v2_run")
    data = {**toy_csv_source(base / "videos", per_class=4, train_per_class=3),
            "format": "v2", "prepared_dir": str(base / "prepared")}
    config = _tiny_config("tiny_v2", data, steps_per_epoch=3, views="3x2", clip_images=1)
    run_experiment(config, open_run_dir(str(base / "run")), verbose=0)
    return base, data


def test_v2_run_trains_and_keeps_the_clips_it_drew(v2_run):
    base, _ = v2_run
    prepared = data_prep.read_manifest(str(base / "prepared"))
    assert prepared["format_version"] == 2 and "clip_shape" not in prepared
    run_manifest = json.loads((base / "run" / "data_manifest.json").read_text())
    assert run_manifest["clip_shape"] == [4, 16, 16, 3]
    assert run_manifest["sampling"]["frames"] == 4 and run_manifest["clips_per_video"] == 2
    metrics = json.loads((base / "run" / "metrics.json").read_text())
    assert metrics["videos"] == 2 and metrics["clips"] == 4  # 2 test items x 2 views


def test_v2_input_clips_reach_tensorboard(v2_run):
    import glob

    import tensorflow as tf

    base, _ = v2_run
    tags = {value.tag for path in glob.glob(str(base / "run" / "tensorboard" / "**" /
                                                "events.out.tfevents.*"), recursive=True)
            for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value}
    assert {"input_clips/train", "input_clips/validation"} <= tags


def test_v2_multi_view_evaluation_reads_the_shards(v2_run):
    base, _ = v2_run
    run = open_trained_run(str(base / "run"))
    results = evaluation.evaluate_run(run, load_run_model(run), "test", (3, 2))
    assert results["source"] == "shards" and results["views"] == "3x2"
    assert results["videos"] == 2 and results["clips"] == 12


def test_v2_new_frames_and_views_need_no_new_prepare(v2_run):
    base, data = v2_run
    shard = base / "prepared" / "train" / "shard-00000-of-00001.tfrecord"
    before = os.path.getmtime(shard)
    config = _tiny_config("tiny_v2_frames", data, steps_per_epoch=2, views="1x1")
    config.data.frames, config.data.clips_per_video, config.data.sampling = 6, 3, "stride"
    config.train.epochs = 1
    run_experiment(config, open_run_dir(str(base / "run6")), verbose=0)
    assert os.path.getmtime(shard) == before
    run_manifest = json.loads((base / "run6" / "data_manifest.json").read_text())
    assert run_manifest["clip_shape"][0] == 6 and run_manifest["sampling"]["method"] == "stride"
    metrics = json.loads((base / "run6" / "metrics.json").read_text())
    assert metrics["clips"] == 2 * 3


def test_v2_training_clips_differ_between_epochs_and_repeat_with_the_seed(v2_run):
    base, _ = v2_run
    from training import input_pipeline

    def epochs(seed):
        dataset = input_pipeline.train_dataset(
            str(base / "prepared"), "train", clip_shape=[4, 16, 16, 3], num_classes=2,
            batch_size=6, crop_size=16, random_crop_enabled=False, seed=seed)
        return [np.concatenate([batch[0].numpy() for batch in dataset]) for _ in range(2)]

    first, second = epochs(1)
    again = epochs(1)
    assert first.shape == (6, 4, 16, 16, 3)
    np.testing.assert_array_equal(first, again[0])
    assert not np.array_equal(first, second)


def test_v2_contact_sheet_draws_evenly_spaced_frames(v2_run, tmp_path):
    base, _ = v2_run
    sheet = write_contact_sheet(str(base / "prepared"), tmp_path / "sheet.png", max_frames=5)
    assert sheet["frames_per_row"] == 5 and sheet["clips_shown"] >= 2
    assert os.path.isfile(tmp_path / "sheet.png")


# --- data.layout: tfrecord (records written by Model Garden's / DMVR's generators) ----------


@pytest.mark.parametrize("where", ["local", "url"])
def test_dmvr_style_records_train_and_evaluate_with_no_prepare(tmp_path, where):
    from sequence_fixtures import write_dmvr_style_records
    from video_fixtures import copy_to_url

    records = tmp_path / "records"
    records.mkdir()
    lengths = [9, 12, 7, 10, 8, 11]
    write_dmvr_style_records(records / "train-00000-of-00002.tfrecord", lengths[:3],
                             labels=[0, 1, 0])
    write_dmvr_style_records(records / "train-00001-of-00002.tfrecord", lengths[3:],
                             labels=[1, 0, 1])
    write_dmvr_style_records(records / "test.tfrecord", [9, 10], labels=[0, 1])
    (tmp_path / "classes.txt").write_text("class0\nclass1\n")
    base = str(tmp_path)
    if where == "url":  # ram://: TensorFlow's in-process file system, the calls of gs://
        base = f"ram://dmvr-{os.getpid()}"
        copy_to_url(tmp_path / "classes.txt", f"{base}/classes.txt")
        copy_to_url(records, f"{base}/records")
    data = {"layout": "tfrecord", "prepared_dir": str(tmp_path / "index"),
            "classes_file": f"{base}/classes.txt",
            "lists": {"train": f"{base}/records/train-*.tfrecord",
                      "test": f"{base}/records/test.tfrecord"}}
    config = _tiny_config("tiny_tfrecord", data, steps_per_epoch=2, views="2x1")
    config.train.epochs = 1
    run_experiment(config, open_run_dir(str(tmp_path / "run")), verbose=0)
    manifest = data_prep.read_manifest(str(tmp_path / "index"))
    assert manifest["classes"] == ["class0", "class1"] and manifest["frame_shape"] == [16, 20, 3]
    assert manifest["splits"]["train"]["videos"] == 6
    assert manifest["splits"]["test"]["shards"] == [
        f"{base}/records/test.tfrecord" if where == "url" else str(records / "test.tfrecord")]
    assert not (tmp_path / "index" / "train").exists()  # indexed where they are, nothing copied
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["videos"] == 2 and metrics["clips"] == 4
    run = open_trained_run(str(tmp_path / "run"))
    results = evaluation.evaluate_run(run, load_run_model(run), "test", (2, 1))
    assert results["videos"] == 2 and results["source"] == "shards"


def test_tfrecord_layout_names_a_pattern_without_files(tmp_path):
    from data_prep.record_index import record_files

    with pytest.raises(UserError, match="data.lists.train=.*matches no file"):
        record_files(str(tmp_path / "none-*.tfrecord"), "train")


def test_v2_multi_label_items_read_as_multi_hot_in_training_and_evaluation(tmp_path):
    import tensorflow as tf

    from data_prep.prepare import prepare_dataset
    from data_prep.source_spec import SourceSpec
    from video_fixtures import make_folders_dataset, write_text

    root = tmp_path / "root"
    make_folders_dataset(root, classes=("a", "b"), per_class=2, num_frames=6, kind="avi")
    listing = write_text(tmp_path / "train.txt",
                         "a/item0.avi 3 0\na/item1.avi 2\nb/item0.avi 0 1 2 3\nb/item1.avi 1\n")
    spec = SourceSpec("list", str(root), lists={"train": listing}, multi_label=True,
                      num_classes=4)
    out = str(tmp_path / "out")
    manifest = prepare_dataset(spec, out, None, 8, format="v2", workers=1,
                               show_progress=False, items_per_shard=3)
    assert manifest["multi_label"] is True and manifest["format_version"] == 2
    expected = [{0, 3}, {2}, {0, 1, 2, 3}, {1}]
    views = data_prep.load_split(out, "train", with_item_index=True, num_frames=3, num_clips=2)
    assert views.element_spec[1] == tf.TensorSpec((4,), tf.float32)
    seen = {}
    for clip, multi_hot, index in views.as_numpy_iterator():
        assert clip.shape == (3, 8, 8, 3)
        seen.setdefault(int(index), []).append(set(np.flatnonzero(multi_hot).tolist()))
    items = {item_id: labels for item_id, labels in zip(
        ["a/item0.avi", "a/item1.avi", "b/item0.avi", "b/item1.avi"], expected)}
    assert sorted(len(labels) for labels in seen.values()) == [2, 2, 2, 2]
    assert sorted(map(sorted, (labels[0] for labels in seen.values()))) == \
        sorted(map(sorted, items.values()))
    clips = list(data_prep.load_split(out, "train", clip_selection="random", num_frames=3,
                                      seed=0).as_numpy_iterator())
    assert len(clips) == 4 and all(label.dtype == np.float32 for _, label in clips)
    with pytest.raises(UserError, match="with_item_index only with clip_selection='all'"):
        data_prep.load_split(out, "train", clip_selection="random", with_item_index=True,
                             num_frames=3)


# --- sensor data: values as measured, from the item to the stored record (issue 20) --------

import cv2  # noqa: E402
import tensorflow as tf  # noqa: E402

from data_prep.band_statistics import (combine_partials, finish_statistics,  # noqa: E402
                                       item_partial)
from data_prep.prepare import prepare_dataset  # noqa: E402
from data_prep.rasters import write_raster  # noqa: E402
from data_prep.sequence_records import (decode_frame, decode_mask,  # noqa: E402
                                        parse_sequence_record)
from data_prep.source_spec import SourceSpec  # noqa: E402


def _stored_items(out):
    """{item id: parsed record with frames and masks decoded by NumPy/OpenCV}."""
    manifest = data_prep.read_manifest(str(out))
    items = {}
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            for record in tf.data.TFRecordDataset(os.path.join(str(out), shard)):
                parsed = parse_sequence_record(record)
                shape = [int(parsed[key]) for key in ("height", "width", "channels")]
                dtype, encoding = parsed["dtype"].numpy().decode(), \
                    parsed["format"].numpy().decode()
                items[parsed["item_id"].numpy().decode()] = {
                    "split": split, "encoding": encoding, "dtype": dtype,
                    "frames": np.stack([decode_frame(data, encoding, shape, dtype)
                                        for data in parsed["frames"].numpy()]),
                    "masks": [decode_mask(data) for data in parsed["masks"].numpy()],
                    "valid_fraction": parsed["valid_fraction"].numpy(),
                    "dates": parsed["dates"].numpy().tolist()}
    return manifest, items


def _prepare(root, out, size, resize_short=None, encoding=None, **options):
    return prepare_dataset(SourceSpec("folders", str(root), **options), str(out), None, size,
                           resize_short=resize_short, encoding=encoding, workers=1,
                           show_progress=False)


def _sensor_array(dtype, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        values = rng.normal(0.4, 0.3, (3, 6, 7, 4)).astype(dtype)
        values[1, 2, 3, 0] = np.nan
        return values
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, (3, 6, 7, 4)).astype(dtype)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float16", "float32"])
def test_npy_items_of_each_dtype_read_back_bit_identical(tmp_path, dtype):
    arrays = {}
    for index, name in enumerate(["a/x.npy", "a/y.npy", "b/z.npy"]):
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        arrays[name] = _sensor_array(dtype, index)
        np.save(tmp_path / "src" / name, arrays[name])
    manifest, items = _stored_items_after(tmp_path, arrays)
    # 4 bands: png for uint16 (16 bits, lossless), raw for the others.
    assert manifest["dtype"] == dtype
    assert manifest["encoding"] == ("png" if dtype == "uint16" else "raw")
    for name, values in arrays.items():
        stored = items[name]["frames"]
        assert stored.dtype == values.dtype
        bits = f"u{values.itemsize}"
        np.testing.assert_array_equal(stored.view(bits), values.view(bits))
    floats = np.dtype(dtype).kind == "f"
    assert manifest["mask"] is floats
    if floats:  # NaN kept in the frame, invalid in the mask
        masks = items["a/x.npy"]["masks"]
        assert not masks[1][2, 3] and masks[1].sum() == 6 * 7 - 1
        assert items["a/x.npy"]["valid_fraction"][1] == pytest.approx(1 - 1 / 42)


def _stored_items_after(tmp_path, arrays):
    height, width = next(iter(arrays.values())).shape[1:3]
    # `size` alone resizes to S x S: resize_short = the short side keeps the items as they
    # are (no crop, no resampling).
    prepare_dataset(SourceSpec("folders", str(tmp_path / "src")), str(tmp_path / "out"),
                    None, min(height, width), resize_short=min(height, width), workers=1,
                    show_progress=False)
    return _stored_items(tmp_path / "out")


def test_statistics_are_the_training_splits_valid_values(tmp_path):
    rng = np.random.default_rng(5)
    arrays = {}
    for split in ("train", "test"):
        for name in ("a/p.npy", "b/q.npy"):
            values = rng.normal(1000 if split == "train" else 5000, 50, (2, 4, 4, 3))
            values = values.astype(np.float32)
            values[0, 0, 0, 1] = -9999.0
            path = tmp_path / split / name
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, values)
            arrays[(split, name)] = values
    manifest = prepare_dataset(
        SourceSpec("folders", {"train": str(tmp_path / "train"),
                               "test": str(tmp_path / "test")}, nodata=-9999.0),
        str(tmp_path / "out"), None, 4, workers=1, show_progress=False)
    stats = manifest["statistics"]
    assert stats["split"] == "train" and manifest["nodata"] == -9999.0 and manifest["mask"]
    train = [arrays[("train", name)] for name in ("a/p.npy", "b/q.npy")]
    expected = finish_statistics(combine_partials(
        item_partial(values, ~np.any(values == -9999.0, axis=3), item_id=name)
        for values, name in zip(train, ("a/p.npy", "b/q.npy"))), "train")
    assert stats == expected
    valid = np.concatenate([v[~np.any(v == -9999.0, axis=3)] for v in train]).astype(float)
    np.testing.assert_allclose(stats["mean"], valid.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], valid.std(axis=0), rtol=1e-6)
    assert stats["count"] == [len(valid)] * 3
    assert data_prep.read_manifest(str(tmp_path / "out"))["statistics"] == stats


def test_eight_bit_video_records_carry_no_mask_and_gain_statistics(tmp_path):
    from video_fixtures import write_video

    for name in ("a/v.avi", "b/w.avi"):
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(tmp_path / "src" / name, 5)
    manifest = _prepare(tmp_path / "src", tmp_path / "out", 16)
    assert manifest["dtype"] == "uint8" and manifest["encoding"] == "jpeg"
    assert manifest["mask"] is False and manifest["dated"] is False
    assert manifest["to_uint8"] is None and "geo" not in manifest
    assert manifest["statistics"]["count"] == [2 * 5 * 16 * 16] * 3
    _, items = _stored_items(tmp_path / "out")
    assert all(item["masks"] == [] and item["dates"] == [] for item in items.values())


def _write_dated_folder(folder, frames, dates, *, band_names=None, nodata=None):
    folder.mkdir(parents=True, exist_ok=True)
    for frame, date in zip(frames, dates):
        write_raster(str(folder / f"S2_{date}_L2A.tif"), frame, band_names=band_names,
                     nodata=nodata, crs="EPSG:32631",
                     transform=(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0))


def test_a_13_band_geotiff_per_date_folder_prepares_in_date_order(tmp_path):
    rng = np.random.default_rng(7)
    names = [f"B{k:02d}" for k in range(1, 14)]
    folders = {}
    for item in ("crop/f1", "forest/f2"):
        frames = rng.integers(0, 10001, (3, 8, 8, 13)).astype(np.uint16)
        frames[2, 0, :3] = 0  # nodata of the rasters themselves
        # Names sort against the dates: natural order would be 2024-03-21, -01, -11.
        dates = ["20240321", "20240301", "20240311"]
        _write_dated_folder(tmp_path / "src" / item, frames, dates, band_names=names,
                            nodata=0)
        folders[item] = frames
    manifest = _prepare(tmp_path / "src", tmp_path / "out", 8,
                        date_pattern=r"S2_(\d{8})_")
    assert manifest["dtype"] == "uint16" and manifest["frame_shape"] == [8, 8, 13]
    assert manifest["band_names"] == names and manifest["nodata"] == 0.0
    assert manifest["dated"] and manifest["mask"]
    geo = manifest["geo"]["crop/f1"]
    assert geo["transform"] == [10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0]
    assert (geo["height"], geo["width"]) == (8, 8) and "32631" in geo["crs"]
    _, items = _stored_items(tmp_path / "out")
    stored = items["crop/f1"]
    # Files in natural order: 20240301 (index 1), 20240311 (2), 20240321 (0).
    assert stored["dates"] == [19783, 19793, 19803]
    np.testing.assert_array_equal(stored["frames"], folders["crop/f1"][[1, 2, 0]])
    assert not stored["masks"][1][0, :3].any() and stored["masks"][1][0, 3:].all()


def test_a_multi_date_stack_with_bands_per_date_prepares(tmp_path):
    rng = np.random.default_rng(8)
    stacks = {}
    for item in ("a/s1.tif", "b/s2.tif"):
        values = rng.integers(0, 10001, (6, 9, 26)).astype(np.uint16)  # 2 dates x 13 bands
        (tmp_path / "src" / item).parent.mkdir(parents=True, exist_ok=True)
        write_raster(str(tmp_path / "src" / item), values)
        stacks[item] = values
    (tmp_path / "src" / "a" / "s1.tif.dates.json").write_text(
        json.dumps(["2024-05-02", "2024-04-20"]))
    manifest = _prepare(tmp_path / "src", tmp_path / "out", 6, resize_short=6,
                        bands_per_date=13)
    assert manifest["frame_shape"] == [6, 9, 13] and manifest["dtype"] == "uint16"
    _, items = _stored_items(tmp_path / "out")
    values = stacks["a/s1.tif"]
    expected = np.stack([values[:, :, 13:], values[:, :, :13]])  # by date
    np.testing.assert_array_equal(items["a/s1.tif"]["frames"], expected)
    assert items["a/s1.tif"]["dates"] == [19833, 19845]
    assert items["b/s2.tif"]["dates"] == []


def test_masks_from_mask_files_and_a_validity_band(tmp_path):
    rng = np.random.default_rng(9)
    for item in ("a/f", "b/g"):
        folder = tmp_path / "src" / item
        folder.mkdir(parents=True)
        for index in range(2):
            frame = rng.integers(1, 60000, (6, 6, 3)).astype(np.uint16)
            frame[:, :, 2] = 1
            frame[0, 0, 2] = 0  # the validity band says: invalid
            cv2.imwrite(str(folder / f"{index}.png"), frame)  # BGR: band 2 is stored first
        mask = np.full((6, 6), 255, np.uint8)
        mask[5] = 0
        cv2.imwrite(str(folder / "1.mask.png"), mask)
    manifest = _prepare(tmp_path / "src", tmp_path / "out", 6, validity_band=0)
    assert manifest["frame_shape"] == [6, 6, 2] and manifest["mask"]
    _, items = _stored_items(tmp_path / "out")
    masks = items["a/f"]["masks"]
    assert not masks[0][0, 0] and masks[0].sum() == 35
    assert not masks[1][5].any() and not masks[1][0, 0] and masks[1].sum() == 29
    assert items["a/f"]["encoding"] == "raw"  # 2 bands: no image codec


def test_to_uint8_is_the_only_8_bit_rule_and_is_recorded(tmp_path):
    values = np.array([0, 2500, 5000, 10000, 20000], np.uint16).reshape(1, 1, 5, 1)
    values = np.repeat(np.repeat(values, 2, axis=0), 5, axis=1)
    for name in ("a/x.npy", "b/y.npy"):
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "src" / name, values)
    manifest = _prepare(tmp_path / "src", tmp_path / "out", 5, encoding="png",
                        to_uint8=[0, 10000])
    assert manifest["dtype"] == "uint8"
    assert manifest["to_uint8"] == {"low": [0.0], "high": [10000.0]}
    _, items = _stored_items(tmp_path / "out")
    assert items["a/x.npy"]["frames"][0, 0, :, 0].tolist() == [0, 64, 128, 255, 255]


def test_sensor_options_need_format_v2(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    np.save(tmp_path / "src" / "a" / "x.npy", np.zeros((2, 4, 4, 1), np.uint16))
    with pytest.raises(UserError, match="only with format v2"):
        prepare_dataset(SourceSpec("folders", str(tmp_path / "src"), nodata=0.0),
                        str(tmp_path / "out"), 2, 4, workers=1, show_progress=False)


def test_once_one_item_has_a_mask_every_record_carries_masks(tmp_path):
    rng = np.random.default_rng(10)
    for index, item in enumerate(("a/f", "a/g", "b/h", "b/k")):
        folder = tmp_path / "src" / item
        folder.mkdir(parents=True)
        for frame in range(2):
            cv2.imwrite(str(folder / f"{frame}.png"),
                        rng.integers(0, 60000, (4, 4)).astype(np.uint16))
        if index == 2:  # one cloudy frame in one item
            cv2.imwrite(str(folder / "1.mask.png"), np.eye(4, dtype=np.uint8))
    manifest = _prepare(tmp_path / "src", tmp_path / "out", 4)
    assert manifest["mask"] and manifest["encoding"] == "png"
    _, items = _stored_items(tmp_path / "out")
    for item_id, item in items.items():
        assert len(item["masks"]) == 2, item_id
        expected = [1.0, 0.25] if item_id == "b/h" else [1.0, 1.0]
        assert item["valid_fraction"].tolist() == expected
    assert items["b/h"]["masks"][1].tolist() == np.eye(4, dtype=bool).tolist()


def test_a_per_band_rule_of_another_band_count_is_one_error(tmp_path):
    for name in ("a/x.npy", "b/y.npy"):
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "src" / name, np.zeros((2, 4, 4, 3), np.uint16))
    with pytest.raises(UserError, match="one low and high per stored band"):
        _prepare(tmp_path / "src", tmp_path / "out", 4,
                 to_uint8={"low": [0, 0], "high": [10, 10]})
