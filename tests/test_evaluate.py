"""Tests for evaluate.py and training.evaluation: views, the shared preprocessing, multi-view
evaluation of a tiny real run (trained here with the trainer on generated videos).

The tiny run (`run_fixtures.tiny_run`, conftest's `run_path`) is shared with test_predict.py
and test_export.py: it is trained once per session."""

import csv
import json
import os

import cv2
import numpy as np
import pytest

import evaluate
from core.errors import UserError
from metric_reference import reference_metrics_of
from training import input_pipeline
from training import evaluation
from training import views as training_views
from training.run_dir import open_trained_run
from training.scoring import load_run_model

@pytest.fixture(scope="module")
def trained(run_path):
    run = open_trained_run(run_path)
    return run, load_run_model(run)


# --- views and crops ----------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [("10x3", (10, 3)), ("1x1", (1, 1)),
                                            (" 2 X 5 ", (2, 5))])
def test_parse_views(text, expected):
    assert training_views.parse_views(text) == expected


@pytest.mark.parametrize("text", ["10", "0x3", "3x0", "ax3", "10x3x1", "", "-1x2"])
def test_parse_views_rejects_with_the_expected_form(text):
    with pytest.raises(ValueError, match=r"CLIPSxCROPS .* Received: views="):
        training_views.parse_views(text)


@pytest.mark.parametrize("length, side, count, expected", [
    (40, 24, 3, [0, 8, 16]),  # MMAction2's ThreeCrop: start, centre, end
    (41, 24, 3, [0, 8, 17]),
    (40, 24, 1, [8]),
    (24, 24, 3, [0, 0, 0]),  # a square frame has one square
    (40, 24, 5, [0, 4, 8, 12, 16]),
])
def test_crop_offsets_spread_along_the_long_side(length, side, count, expected):
    assert training_views.crop_offsets(length, side, count) == expected


def test_spatial_crops_are_squares_along_the_long_side(tmp_path):
    """.npy item (lossless): frame t holds value t in band 0 and the column index in band 1;
    the stored size equals the short side, so each view is a plain window of the frames."""
    frames, height, width = 8, 24, 40
    array = np.zeros((frames, height, width, 2), np.uint8)
    array[..., 0] = np.arange(frames)[:, None, None] * 10
    array[..., 1] = np.arange(width)[None, None, :]
    path = str(tmp_path / "item.npy")
    np.save(path, array)
    manifest = {"sampling": {"method": "uniform", "frames": 4, "frame_stride": 1},
                "resize": {"size": 24, "resize_short": None}, "clips_per_video": 2}
    views = training_views.preprocess_item(path, manifest, (4, 20, 20, 2), num_clips=2, num_crops=3)
    assert views.shape == (6, 4, 20, 20, 2)
    clip_frames = [[0, 2, 4, 6], [1, 3, 5, 7]]  # uniform sampling of 8 frames, 2 clips of 4
    for clip in range(2):
        for crop, left in enumerate([0, 8, 16]):
            view = views[clip * 3 + crop]
            expected = array[clip_frames[clip]][:, 2:22, left + 2:left + 22]
            np.testing.assert_array_equal(view, expected)


def test_one_crop_is_exactly_what_was_stored(trained):
    """predict's and the decoded evaluation's path equals the prepared shards' clips."""
    import data_prep

    run, _ = trained
    items = evaluation.split_items(run.prepared_dir, run.manifest, "test")
    stored = {}
    for clip, _, index in data_prep.load_split(run.prepared_dir, "test",
                                               with_item_index=True):
        stored.setdefault(int(index), []).append(clip.numpy())
    assert sorted(stored) == list(range(len(items))) and len(items) == 4
    root = run.manifest["source"]["root"]
    for index, (item_id, label) in enumerate(items):
        assert item_id.split("/")[0] == run.class_names[label]
        views = training_views.preprocess_item(os.path.join(root, item_id), run.manifest,
                                           run.input_shape)
        expected = training_views.center_crop_numpy(np.stack(stored[index]), 12)
        np.testing.assert_array_equal(views, expected)


# --- evaluation ---------------------------------------------------------------------------


def test_stored_views_reproduce_the_trainers_metrics(trained, run_path):
    run, model = trained
    results = evaluation.evaluate_run(run, model, "test", (2, 1))
    with open(os.path.join(run_path, "metrics.json")) as f:
        metrics = json.load(f)
    assert results["source"] == "shards"
    for key in ("top1", "top5", "mean_class_accuracy", "clip_top1", "videos", "clips"):
        assert results[key] == pytest.approx(metrics[key], abs=1e-6), key
    assert results["loss"] == pytest.approx(metrics["loss"], rel=1e-4, abs=1e-6)
    # Not only the same function twice: the loop reference over the model's clip softmax.
    dataset = input_pipeline.eval_dataset(
        run.prepared_dir, "test", clip_shape=run.manifest["clip_shape"],
        num_classes=len(run.class_names), batch_size=8, crop_size=run.input_shape[1],
        with_item_index=True)
    expected = reference_metrics_of(model, dataset, len(run.class_names))
    for key in ("top1", "top5", "mean_class_accuracy", "clip_top1", "videos", "clips"):
        assert results[key] == pytest.approx(expected[key], abs=1e-6), key
    assert results["confusion_matrix"] == expected["confusion_matrix"]
    # In bfloat16 (auto, on a CPU with it) the batch size (8 here) changes the rounding: a
    # loss near 0 (-log p, p close to 1) keeps only a few bits of 1 - p.
    bfloat16 = any(layer.compute_dtype == "bfloat16" for layer in model.layers)
    assert results["loss"] == pytest.approx(expected["loss"], rel=2e-2 if bfloat16 else 1e-4,
                                            abs=1e-6)
    decoded = evaluation.evaluate_run(run, model, "test", (2, 1), force_decode=True)
    assert decoded["source"] == "decoded"
    for key in ("top1", "clip_top1", "videos", "clips", "confusion_matrix"):
        assert decoded[key] == results[key], key
    assert decoded["loss"] == pytest.approx(results["loss"], rel=1e-4, abs=1e-6)


def test_decoding_workers_give_the_same_results(trained):
    run, model = trained
    one = evaluation.evaluate_run(run, model, "test", (3, 2), workers=1)
    two = evaluation.evaluate_run(run, model, "test", (3, 2), workers=2)
    assert one["source"] == two["source"] == "decoded" and one["clips"] == 24
    for key in ("top1", "clip_top1", "videos", "clips", "confusion_matrix", "skipped"):
        assert two[key] == one[key], key
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)


def test_decode_task_reports_broken_items_and_band_mismatches(trained, tmp_path):
    run, _ = trained
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"not a video" * 100)
    kind, reason = evaluation.decode_item_views(
        (str(garbage), run.manifest, run.input_shape, 3, 2))
    assert kind == "skipped" and reason and "\n" not in reason
    series = tmp_path / "five_bands.npy"
    np.save(series, np.random.default_rng(0).random((8, 16, 16, 5)).astype(np.float32))
    kind, message = evaluation.decode_item_views(
        (str(series), run.manifest, run.input_shape, 3, 2))
    assert kind == "user_error" and "Received: band=5" in message


def test_a_user_error_while_decoding_stops_the_evaluation(trained, monkeypatch):
    """The decoding runs in a worker process (one here): the decoder is replaced by a
    module-level function it can import."""
    from hostile_fixtures import views_of_five_bands

    run, model = trained
    monkeypatch.setattr(evaluation, "decode_item_views", views_of_five_bands)
    with pytest.raises(UserError, match="Received: band=5"):
        evaluation.evaluate_run(run, model, "test", (3, 2), workers=1)


def test_cli_multi_view_writes_json_csv_png(run_path, tmp_path, capsys):
    out = tmp_path / "eval" / "result.json"
    assert evaluate.main(["--run-dir", run_path, "--views", "3x3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "views 3x3 (decoded), 4 videos, 36 views scored" in printed
    assert "mean class accuracy" in printed and "clip top-1" in printed
    summary = json.loads(out.read_text())
    assert summary["views"] == "3x3" and summary["videos"] == 4 and summary["clips"] == 36
    # Moving vs still: a trained model does not confuse them.
    assert summary["top1"] == 1.0 and summary["mean_class_accuracy"] == 1.0
    assert summary["top5"] == 1.0 and summary["top5_k"] == 2
    assert np.asarray(summary["confusion_matrix"]).sum() == 4
    with open(tmp_path / "eval" / "result-per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["class"] for row in rows] == ["moving", "still"]
    assert [int(row["videos"]) for row in rows] == [2, 2]
    image = cv2.imread(str(tmp_path / "eval" / "result-confusion.png"))
    assert image is not None and image.shape[0] > 40


def test_cli_default_views_and_out_come_from_the_run(run_path, capsys):
    assert evaluate.main(["--run-dir", run_path]) == 0
    assert "views 3x2 (decoded)" in capsys.readouterr().out  # evaluate.views of the config
    path = os.path.join(run_path, "evaluation", "test-3x2.json")
    assert json.load(open(path))["clips"] == 4 * 6


@pytest.mark.parametrize("arguments, message", [
    (["--views", "10"], "Received: views='10'"),
    (["--split", "nope"], "Received: --split nope"),
    (["--batch-size", "0"], "Received: --batch-size 0"),
    (["--workers", "0"], "Received: --workers 0"),
])
def test_cli_user_errors_are_one_line_exit_2(run_path, capsys, arguments, message):
    assert evaluate.main(["--run-dir", run_path, *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_split_items_read_the_same_from_shards_behind_a_url(trained):
    # ram:// is TensorFlow's in-process file system: the same tf.io.gfile calls as gs://.
    from video_fixtures import copy_to_url

    run, _ = trained
    url = copy_to_url(run.prepared_dir, f"ram://evaluate-{os.getpid()}/prepared")
    assert evaluation.split_items(url, run.manifest, "test") == evaluation.split_items(
        run.prepared_dir, run.manifest, "test")


def test_views_to_decode_again_from_a_url_root_are_one_line_exit_2(run_path, tmp_path, capsys):
    import shutil

    copy = str(tmp_path / "run")
    shutil.copytree(run_path, copy)
    manifest_path = os.path.join(copy, "data_manifest.json")
    manifest = json.load(open(manifest_path))
    manifest["source"]["root"] = "gs://bucket/videos"  # never reached: refused before
    json.dump(manifest, open(manifest_path, "w"))
    assert evaluate.main(["--run-dir", copy, "--views", "3x3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Views 3x3 differ from the stored") and err.count("\n") == 1
    assert "lie behind a URL" in err and "Received: root='gs://bucket/videos'" in err


def test_cli_missing_run_dir_is_exit_2(tmp_path, capsys):
    assert evaluate.main(["--run-dir", str(tmp_path / "none")]) == 2
    assert "Received: --run-dir" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert evaluate.main(["--run-dir", str(tmp_path / "empty")]) == 2
    assert "run.json" in capsys.readouterr().err


# --- multi-label ----------------------------------------------------------------------------


def test_multi_label_stored_views_reproduce_the_trainers_map(multi_label_run_path, tmp_path,
                                                             capsys):
    out = tmp_path / "stored.json"
    assert evaluate.main(["--run-dir", multi_label_run_path, "--views", "2x1",
                          "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "views 2x1 (shards)" in printed and "mean average precision" in printed
    summary = json.loads(out.read_text())
    metrics = json.load(open(os.path.join(multi_label_run_path, "metrics.json")))
    for key in ("mean_average_precision", "micro_f1", "macro_f1", "videos", "clips"):
        assert summary[key] == pytest.approx(metrics[key], abs=1e-6), key
    assert summary["multi_label"] is True and "top1" not in summary
    with open(tmp_path / "stored-per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["class"] for row in rows] == summary["classes"]
    assert [int(row["videos"]) for row in rows] == summary["positives"]
    for row, value in zip(rows, summary["per_class_ap"]):
        assert (row["average_precision"] == "") == (value is None)
        if value is not None:
            assert float(row["average_precision"]) == pytest.approx(value, abs=1e-6)
    assert not (tmp_path / "stored-confusion.png").exists()


def test_multi_label_decoded_views_average_sigmoid_scores(multi_label_run_path):
    run = open_trained_run(multi_label_run_path)
    model = load_run_model(run)
    results = evaluation.evaluate_run(run, model, "test", (3, 1), batch_size=8, workers=1)
    assert results["source"] == "decoded" and results["clips"] == 3 * results["videos"]
    # Decoding the two stored clips again scores like the shards (the same preprocessing).
    decoded = evaluation.evaluate_run(run, model, "test", (2, 1), force_decode=True, workers=1)
    stored = evaluation.evaluate_run(run, model, "test", (2, 1))
    assert decoded["mean_average_precision"] == pytest.approx(
        stored["mean_average_precision"], abs=1e-4)
    assert decoded["positives"] == stored["positives"] and sum(stored["positives"]) > 0
