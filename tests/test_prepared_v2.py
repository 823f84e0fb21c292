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


def test_dmvr_style_records_train_and_evaluate_with_no_prepare(tmp_path):
    from sequence_fixtures import write_dmvr_style_records

    records = tmp_path / "records"
    records.mkdir()
    lengths = [9, 12, 7, 10, 8, 11]
    write_dmvr_style_records(records / "train-00000-of-00002.tfrecord", lengths[:3],
                             labels=[0, 1, 0])
    write_dmvr_style_records(records / "train-00001-of-00002.tfrecord", lengths[3:],
                             labels=[1, 0, 1])
    write_dmvr_style_records(records / "test.tfrecord", [9, 10], labels=[0, 1])
    (tmp_path / "classes.txt").write_text("class0\nclass1\n")
    data = {"layout": "tfrecord", "prepared_dir": str(tmp_path / "index"),
            "classes_file": str(tmp_path / "classes.txt"),
            "lists": {"train": str(records / "train-*.tfrecord"),
                      "test": str(records / "test.tfrecord")}}
    config = _tiny_config("tiny_tfrecord", data, steps_per_epoch=2, views="2x1")
    config.train.epochs = 1
    run_experiment(config, open_run_dir(str(tmp_path / "run")), verbose=0)
    manifest = data_prep.read_manifest(str(tmp_path / "index"))
    assert manifest["classes"] == ["class0", "class1"] and manifest["frame_shape"] == [16, 20, 3]
    assert manifest["splits"]["train"]["videos"] == 6
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
