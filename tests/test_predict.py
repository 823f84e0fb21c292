"""Tests for predict.py on the tiny trained run of run_fixtures (moving vs still videos)."""

import json
import os
import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf

import predict
from run_fixtures import CLASSES, toy_frames, write_toy_video
from training.run_dir import open_trained_run
from training.scoring import load_run_model


@pytest.fixture(scope="module")
def fresh_videos(tmp_path_factory):
    """Videos written now, never seen in training, one per class (seeds unused by the run)."""
    folder = tmp_path_factory.mktemp("fresh")
    return {name: write_toy_video(folder / f"new_{name}.avi", name, seed=1000 + i)
            for i, name in enumerate(CLASSES)}


@pytest.mark.parametrize("name", CLASSES)
def test_fresh_video_gets_its_class(run_path, fresh_videos, capsys, name):
    assert predict.main(["--run-dir", run_path, fresh_videos[name]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == fresh_videos[name]
    assert lines[1].split()[:2] == ["1.", name]
    assert len(lines) == 3  # top-5 is capped at the 2 classes


@pytest.fixture(scope="module")
def untrained_run(run_path, tmp_path_factory):
    """The tiny run's directory with a freshly initialised model.keras: its probabilities are
    far from 0 and 1, so a wrong frame or crop shows in them (the trained one saturates)."""
    import keras

    import models

    folder = tmp_path_factory.mktemp("untrained") / "run"
    folder.mkdir()
    for name in ("run.json", "data_manifest.json", "classes.txt", "config.yaml"):
        shutil.copy(os.path.join(run_path, name), folder / name)
    keras.utils.set_random_seed(3)
    models.build_model("small3d", 2, (4, 12, 12, 3)).save(str(folder / "model.keras"))
    return str(folder)


def test_json_probabilities_are_the_models_mean_softmax_over_the_clips(untrained_run,
                                                                     tmp_path, capsys):
    """A lossless .npy item, preprocessed by hand: resize straight to 16x16 (INTER_AREA), the
    uniform frames of 2 clips of 4 out of 8, centre 12x12 crop; then the model's own output."""
    array = np.random.default_rng(5).integers(0, 256, (8, 24, 32, 3), np.uint8)
    path = str(tmp_path / "item.npy")
    np.save(path, array)
    assert predict.main(["--run-dir", untrained_run, "--json", "--top-k", "2", path]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["errors"] == []
    result = output["results"]
    assert [entry["path"] for entry in result] == [path]
    predictions = result[0]["predictions"]
    assert predictions[0]["probability"] >= predictions[1]["probability"]

    run = open_trained_run(untrained_run)
    model = load_run_model(run)
    resized = np.stack([cv2.resize(frame, (16, 16), interpolation=cv2.INTER_AREA)
                        for frame in array])

    def mean_softmax(frame_indices, top, left):
        clips = resized[frame_indices][:, :, top:top + 12, left:left + 12]
        return tf.nn.softmax(model(clips, training=False)).numpy().mean(axis=0)

    expected = mean_softmax([[0, 2, 4, 6], [1, 3, 5, 7]], 2, 2)
    # The check can see a mistake: one pixel or one frame off moves the answer well past it.
    for wrong in (mean_softmax([[0, 2, 4, 6], [1, 3, 5, 7]], 2, 3),
                  mean_softmax([[1, 3, 5, 7], [1, 3, 5, 7]], 2, 2)):
        assert np.abs(wrong - expected).max() > 1e-4
    got = {p["label"]: p["probability"] for p in predictions}
    for index, name in enumerate(run.class_names):
        assert got[name] == pytest.approx(float(expected[index]), abs=1e-6)


def test_broken_items_get_an_error_line_and_the_rest_still_run(run_path, fresh_videos,
                                                                tmp_path, capsys):
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video at all")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    grey = tmp_path / "grey.npy"
    np.save(grey, np.zeros((8, 24, 32), np.uint8))  # 1 band; the run was trained on 3
    missing = str(tmp_path / "missing.avi")
    items = [str(broken), fresh_videos["moving"], str(empty), missing, str(grey),
             fresh_videos["still"]]
    assert predict.main(["--run-dir", run_path, "--json", *items]) == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 4
    for line, path, reason in zip(errors, [broken, empty, missing, grey], [
            "not a video", "zero-byte", "no such file", "Expected items with 3 band(s)"]):
        assert line.startswith(f"error: {path}: ") and reason in line
    output = json.loads(captured.out)
    assert [entry["path"] for entry in output["results"]] == [items[1], items[5]]
    assert output["results"][0]["predictions"][0]["label"] == "moving"
    assert output["results"][1]["predictions"][0]["label"] == "still"
    assert [entry["path"] for entry in output["errors"]] == [str(broken), str(empty), missing,
                                                             str(grey)]
    assert [line.split(": ", 2)[2] for line in errors] == [
        entry["error"] for entry in output["errors"]]


def test_directories_frame_folders_and_top_k(run_path, fresh_videos, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(toy_frames("moving", seed=2000)):  # a frame folder: one item
        cv2.imwrite(str(folder / f"{t}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    videos = os.path.dirname(fresh_videos["moving"])  # a directory of videos: each an item
    assert predict.main(["--run-dir", run_path, "--top-k", "1", str(folder), videos]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [str(folder), lines[1], fresh_videos["moving"], lines[3],
                     fresh_videos["still"], lines[5]]
    assert [line.split()[:2] for line in lines[1::2]] == [["1.", "moving"], ["1.", "moving"],
                                                          ["1.", "still"]]


def test_folder_walk_skips_and_counts_files_that_are_not_media(tmp_path, capsys):
    """FFmpeg's `ansi` decoder renders text as video: a README beside the videos must not
    be classified (it was: `README.txt  typing 0.9556`)."""
    write_toy_video(str(tmp_path / "clip.avi"), "moving", seed=5)
    np.save(str(tmp_path / "array.npy"), np.zeros((4, 8, 8, 3), np.uint8))
    os.makedirs(tmp_path / "frames")
    cv2.imwrite(str(tmp_path / "frames" / "0.png"), np.zeros((8, 8, 3), np.uint8))
    for name in ("README.txt", "notes", "labels.json"):
        (tmp_path / name).write_text("not a video\n")
    assert predict.expand_items([str(tmp_path)]) == [
        str(tmp_path / name) for name in ("array.npy", "clip.avi", "frames")]
    assert capsys.readouterr().err == (
        f"skipped 3 file(s) in {tmp_path} that are not videos, frame folders or arrays: "
        "labels.json, notes, README.txt\n")


def write_joined_video(path, parts, fps=25):
    """One MJPG video of the toy clips `parts` [(label, seed)] one after the other."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (32, 24))
    assert writer.isOpened()
    for label, seed in parts:
        for frame in toy_frames(label, seed):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def test_timeline_of_joined_videos_names_each_part(run_path, tmp_path, capsys):
    """moving, moving, still, still (8 frames each, unseen seeds) at 25 fps: 8-frame windows
    (the length of a training video) every 4 frames. The windows inside one part (every
    other one, the first and the last among them) name its class; a window across a cut
    sees a jump of bar and background, which this toy model may call either."""
    parts = [("moving", 3001), ("moving", 3002), ("still", 3003), ("still", 3004)]
    path = write_joined_video(tmp_path / "joined.avi", parts)
    plots = tmp_path / "plots"
    argv = ["--run-dir", run_path, "--json", "--timeline", "--window-seconds", "0.32",
            "--window-stride", "0.16", "--plot", str(plots), path]
    assert predict.main(argv) == 0
    [result] = json.loads(capsys.readouterr().out)["results"]
    timeline = result["timeline"]
    assert [(w["start_s"], w["end_s"]) for w in timeline] == [
        (round(0.16 * i, 3), round(0.16 * i + 0.32, 3)) for i in range(7)]
    top1 = [w["top_k"][0]["class"] for w in timeline]
    assert top1[0::2] == ["moving", "moving", "still", "still"], top1
    for window in timeline:
        assert [t["class"] for t in window["top_k"]] != [] and len(window["top_k"]) == 2
        assert sum(t["probability"] for t in window["top_k"]) == pytest.approx(1, abs=1e-5)
    assert result["predictions"][0]["label"] in CLASSES  # the video-level answer stays
    image = cv2.imread(str(plots / "joined.avi.timeline.png"))
    assert image is not None and image.shape[1] >= 600


def test_timeline_default_window_is_the_clip_span_and_text_lists_windows(run_path, tmp_path,
                                                                        capsys):
    """The tiny run samples 4 frames uniformly: a window of 4 frames, every 2 frames; a
    16-frame video has windows at 0, 2, ..., 12 (0.08 s apart at 25 fps)."""
    path = write_joined_video(tmp_path / "two.avi", [("moving", 3005), ("still", 3006)])
    assert predict.main(["--run-dir", run_path, "--timeline", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == path and len(lines) == 3 + 7
    assert [line.split()[0] for line in lines[3:]] == [
        f"{0.08 * i:.2f}-{0.08 * i + 0.16:.2f}" for i in range(7)]


@pytest.mark.parametrize("arguments, message", [
    (["--top-k", "0"], "Received: --top-k 0"),
    (["--run-dir", "/nonexistent/run"], "Received: --run-dir /nonexistent/run"),
    (["--timeline", "--window-stride", "0"], "Received: --window-stride 0"),
    (["--plot", "somewhere"], "Expected --timeline with --plot"),
    (["--item-timeout", "0"], "Received: --item-timeout 0"),
])
def test_usage_mistakes_are_one_line_exit_2(run_path, fresh_videos, capsys, arguments,
                                            message):
    argv = ["--run-dir", run_path, *arguments, fresh_videos["moving"]]
    assert predict.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


# --- multi-label ----------------------------------------------------------------------------


def test_multi_label_prints_the_labels_above_the_threshold(multi_label_run_path, tmp_path,
                                                           capsys):
    array = np.random.default_rng(3).integers(0, 256, (8, 24, 24, 3), np.uint8)
    path = str(tmp_path / "item.npy")
    np.save(path, array)
    assert predict.main(["--run-dir", multi_label_run_path, "--json", "--threshold", "0",
                         path]) == 0
    every = json.loads(capsys.readouterr().out)["results"][0]["predictions"]
    run = open_trained_run(multi_label_run_path)
    assert sorted(p["label"] for p in every) == sorted(run.class_names)  # all above 0
    scores = [p["probability"] for p in every]
    assert scores == sorted(scores, reverse=True) and sum(scores) != pytest.approx(1.0)
    # The mean sigmoid over the 2 clips: resize to 16x16, frames 0,2,4,6 / 1,3,5,7, crop 12.
    model = load_run_model(run)
    resized = np.stack([cv2.resize(frame, (16, 16), interpolation=cv2.INTER_AREA)
                        for frame in array])
    clips = resized[[[0, 2, 4, 6], [1, 3, 5, 7]]][:, :, 2:14, 2:14]
    expected = tf.sigmoid(model(clips, training=False)).numpy().mean(axis=0)
    # bfloat16 (auto, on a CPU with it) logits round to 2^-8 relative, differently per batch.
    bfloat16 = any(layer.compute_dtype == "bfloat16" for layer in model.layers)
    for prediction in every:
        index = run.class_names.index(prediction["label"])
        assert prediction["probability"] == pytest.approx(float(expected[index]),
                                                          abs=1e-2 if bfloat16 else 1e-6)
    # A threshold between the scores keeps exactly those above it, in the text output too.
    threshold = (scores[2] + scores[3]) / 2
    assert predict.main(["--run-dir", multi_label_run_path, "--threshold", str(threshold),
                         path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == path and [line.split()[0] for line in lines[1:]] == \
        [p["label"] for p in every[:3]]
    assert predict.main(["--run-dir", multi_label_run_path, "--threshold", "1", path]) == 0
    assert "(no label above 1.0)" in capsys.readouterr().out


def test_threshold_outside_zero_one_is_a_usage_error(multi_label_run_path, tmp_path, capsys):
    assert predict.main(["--run-dir", multi_label_run_path, "--threshold", "1.5", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Received: --threshold 1.5" in err


# --- without a run: --model NAME --weights FILE ------------------------------------------

TINY_TORCHVISION = os.path.join(os.path.dirname(__file__), "data", "torchvision_tiny")


@pytest.fixture
def tiny_r3d_18(monkeypatch):
    """build_model's r3d_18 narrowed to the fixture checkpoints' widths (5 classes)."""
    import dataclasses
    import functools

    from models.catalog import MODELS
    from models.resnet3d import r3d_18
    narrow = functools.partial(r3d_18, stem_planes=8, stem_midplanes=6, stage_planes=(8, 16, 24, 32),
                               blocks_per_stage=(2, 1, 1, 1))
    monkeypatch.setitem(MODELS, "r3d_18", dataclasses.replace(MODELS["r3d_18"], builder=narrow))


def test_torchvision_views_resize_to_128x171_and_crop_112(fresh_videos):
    from training.views import torchvision_views
    views = torchvision_views(fresh_videos["moving"], frames=16, resize=(128, 171), crop_size=112,
                              num_clips=2)
    assert views.shape == (2, 16, 112, 112, 3) and views.dtype == np.uint8
    # The reference: every decoded frame resized to exactly 128x171 (aspect not kept, here
    # enlarged: bilinear), its centre 112; the 8-frame video loops to fill 16 frames, clip 1
    # starting at frame 8 * 1 // 2.
    from data_prep.decode import decode_video
    decoded = decode_video(fresh_videos["moving"])
    for clip, start in ((0, 0), (1, 4)):
        for frame in (0, 9):
            source = decoded[(start + frame) % len(decoded)]
            expected = cv2.resize(source, (171, 128), interpolation=cv2.INTER_LINEAR)[8:120, 29:141]
            np.testing.assert_array_equal(views[clip, frame], expected)


def test_kinetics_checkpoint_prints_kinetics_names(tiny_r3d_18, fresh_videos, tmp_path, capsys):
    import keras

    from models import build_model
    from models.pretrained import kinetics400_classes
    keras.utils.set_random_seed(5)
    weights = tmp_path / "kinetics.weights.h5"
    build_model("r3d_18", 400, (16, 112, 112, 3)).save_weights(weights)
    argv = ["--model", "r3d_18", "--weights", str(weights), "--top-k", "3"]
    assert predict.main([*argv, fresh_videos["moving"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == fresh_videos["moving"] and len(lines) == 4
    assert all(line.split()[1] in kinetics400_classes() for line in lines[1:])
    assert predict.main([*argv, "--json", fresh_videos["moving"]]) == 0
    [result] = json.loads(capsys.readouterr().out)["results"]
    assert [p["label"] for p in result["predictions"]] == [line.split()[1] for line in lines[1:]]


def test_torchvision_checkpoint_gives_the_models_softmax(tiny_r3d_18, fresh_videos, tmp_path, capsys):
    from models import build_model
    from training.views import torchvision_views
    names = [f"class_{i}" for i in range(5)]
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(names) + "\n")
    weights = os.path.join(TINY_TORCHVISION, "r3d_18.pth")
    path = fresh_videos["still"]
    assert predict.main(["--model", "r3d_18", "--weights", weights, "--num-classes", "5",
                         "--classes", str(classes), "--clips", "2", "--json", path]) == 0
    [result] = json.loads(capsys.readouterr().out)["results"]
    model = build_model("r3d_18", 5, (16, 112, 112, 3), weights=weights)
    clips = torchvision_views(path, frames=16, resize=(128, 171), crop_size=112, num_clips=2)
    expected = tf.nn.softmax(model(clips, training=False)).numpy().mean(axis=0)
    got = {p["label"]: p["probability"] for p in result["predictions"]}
    np.testing.assert_allclose([got[name] for name in names], expected, rtol=1e-5)


@pytest.mark.parametrize("arguments, message", [
    (["--model", "r3d_18"], "Expected --run-dir, or --model NAME with --weights FILE"),
    (["--model", "c3d", "--weights", "x.pth"], "Expected --model one of r3d_18, mc3_18, r2plus1d_18, s3d"),
    (["--model", "r3d_18", "--weights", "r3d_18.pth"],
     "r3d_18.pth: its classifier does not have --num-classes 400 classes"),
    (["--model", "r3d_18", "--weights", "r3d_18.pth", "--num-classes", "5", "--classes", "two.txt"],
     "Expected 5 class names in --classes"),
    (["--model", "mc3_18", "--weights", "r3d_18.pth", "--num-classes", "5"],
     "the weights do not fit model 'mc3_18'"),
    (["--model", "r3d_18", "--weights", "logits.npz", "--num-classes", "5"], "logits.npz"),
    (["--model", "r3d_18", "--weights", "missing.pth"], "cannot open the weights file"),
])
def test_pretrained_mode_mistakes_are_one_line_exit_2(tiny_r3d_18, fresh_videos, capsys, tmp_path,
                                                      monkeypatch, arguments, message):
    import dataclasses
    import functools

    from models.catalog import MODELS
    from models.resnet3d import mc3_18
    narrow = functools.partial(mc3_18, stem_planes=8, stem_midplanes=6, stage_planes=(8, 16, 24, 32),
                               blocks_per_stage=(2, 1, 1, 1))
    monkeypatch.setitem(MODELS, "mc3_18", dataclasses.replace(MODELS["mc3_18"], builder=narrow))
    (tmp_path / "two.txt").write_text("a\nb\n")
    monkeypatch.chdir(tmp_path)
    for name in ("r3d_18.pth", "logits.npz"):
        shutil.copy(os.path.join(TINY_TORCHVISION, name), tmp_path / name)
    assert predict.main([*arguments, fresh_videos["moving"]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
