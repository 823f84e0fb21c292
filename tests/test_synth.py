"""Tests for data_prep.synth: the synthetic motion dataset, checked on the decoded files."""

import argparse
import datetime
import itertools
import json
import math
import os

import cv2
import numpy as np
import pytest

from core.errors import UserError
from data_prep import synth, synth_multispectral
from data_prep.source_spec import SourceSpec
from data_prep.sources import resolve_source
from video_fixtures import read_records

SMALL = dict(videos_per_class=2, num_frames=6, frame_size=(32, 32), show_progress=False)


def decode(path):
    """All frames of a video as uint8 (T, H, W, 3) RGB, counted by decoding."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


def read_list(path):
    lines = path.read_text().splitlines()
    return [tuple(line.split(",")) for line in lines]


def shape_mask(frame_rgb):
    """Pixels of the shape: saturated colour (the background clutter is low-saturation)."""
    hsv = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2HSV)
    mask = ((hsv[..., 1] > 120) & (hsv[..., 2] > 40)).astype(np.uint8)
    # Where the two stripe hues blend, saturation dips; closing fills those seams, and
    # filling each outer contour fills the hole of the (white) marker.
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(mask, contours, -1, 1, thickness=cv2.FILLED)
    return mask.astype(bool)


def circular_centroid(mask, axis):
    """Centroid of a mask along an axis of a torus (moving shapes wrap around the edges)."""
    size = mask.shape[1 - axis]
    weights = mask.sum(axis=axis).astype(np.float64)
    angles = 2 * np.pi * (np.arange(size) + 0.5) / size
    angle = math.atan2((weights * np.sin(angles)).sum(), (weights * np.cos(angles)).sum())
    return (angle % (2 * np.pi)) * size / (2 * np.pi)


def total_displacement(frames, axis):
    """Sum of frame-to-frame centroid steps, each unwrapped to the shortest way round."""
    size = frames.shape[2 - axis]
    centroids = [circular_centroid(shape_mask(frame), axis) for frame in frames]
    steps = np.diff(centroids)
    return float(((steps + size / 2) % size - size / 2).sum())


def orientation_change(frames):
    """Summed change of the mask's principal-axis angle, in degrees; + is clockwise on screen."""
    angles = []
    for frame in frames:
        moments = cv2.moments(shape_mask(frame).astype(np.uint8), binaryImage=True)
        axis_angle = math.atan2(2 * moments["mu11"], moments["mu20"] - moments["mu02"])
        angles.append(0.5 * math.degrees(axis_angle))
    steps = np.diff(angles)
    return float(((steps + 90) % 180 - 90).sum())


@pytest.fixture(scope="module")
def motion_dataset(tmp_path_factory):
    """The default frame size at fewer, shorter videos: enough to measure the motions."""
    out = tmp_path_factory.mktemp("synth_motion")
    summary = synth.generate_dataset(
        out, seed=3, videos_per_class=10, num_frames=16, frame_size=(64, 64), show_progress=False
    )
    return out, summary


def videos_of(out, class_name):
    return sorted(p for p in (out / class_name).iterdir() if p.suffix in (".avi", ".mp4"))


def test_same_seed_gives_identical_decoded_frames_and_another_seed_does_not(tmp_path):
    synth.generate_dataset(tmp_path / "a", seed=7, **SMALL)
    synth.generate_dataset(tmp_path / "b", seed=7, **SMALL)
    synth.generate_dataset(tmp_path / "c", seed=8, **SMALL)
    for class_name in synth.CLASSES:
        for path_a in videos_of(tmp_path / "a", class_name):
            relative = path_a.relative_to(tmp_path / "a")
            np.testing.assert_array_equal(decode(path_a), decode(tmp_path / "b" / relative))
            assert not np.array_equal(decode(path_a), decode(tmp_path / "c" / relative))
    assert read_list(tmp_path / "a" / "train.csv") == read_list(tmp_path / "b" / "train.csv")


def test_writes_class_folders_and_headerless_csv_lists(motion_dataset):
    out, summary = motion_dataset
    class_dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert class_dirs == sorted(synth.CLASSES)
    train, test = read_list(out / "train.csv"), read_list(out / "test.csv")
    assert (summary["train"], summary["test"]) == (len(train), len(test)) == (8 * 8, 8 * 2)
    for path, label in train + test:  # no header row: every row names a real video
        assert (out / path).is_file()
        assert path.split("/")[0] == label
    listed = {path for path, _ in train + test}
    assert len(listed) == len(train) + len(test)  # disjoint
    on_disk = {str(p.relative_to(out)) for c in synth.CLASSES for p in videos_of(out, c)}
    assert listed == on_disk
    for class_name in synth.CLASSES:
        assert sum(label == class_name for _, label in test) == 2
    assert {p.suffix for p in map(out.joinpath, listed)} == {".avi", ".mp4"}


@pytest.mark.parametrize("frame_size", [(48, 32), (32, 48)])
def test_videos_decode_to_the_expected_frame_count_and_size(tmp_path, frame_size):
    synth.generate_dataset(tmp_path, **{**SMALL, "num_frames": 10, "frame_size": frame_size})
    width, height = frame_size
    for class_name in synth.CLASSES:
        for path in videos_of(tmp_path, class_name):
            assert decode(path).shape == (10, height, width, 3), path


def test_video_writer_keeps_rgb_order(tmp_path):
    red = np.zeros((4, 32, 32, 3), np.uint8)
    red[..., 0] = 255
    for fourcc, extension in synth.CONTAINERS:
        path = tmp_path / f"red{extension}"
        synth.write_video_atomically(path, red, fourcc)
        mean = decode(path).reshape(-1, 3).mean(axis=0)
        assert mean[0] > 200 and mean[1] < 40 and mean[2] < 40, (fourcc, mean)
        assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("seed", range(4))
def test_first_frame_is_the_same_for_every_motion(seed):
    appearance = synth.draw_appearance(np.random.default_rng(seed), (64, 48))
    first_frames = [synth.render_clip(appearance, motion, 4)[0] for motion in synth.CLASSES]
    for motion, frame in zip(synth.CLASSES[1:], first_frames[1:]):
        np.testing.assert_array_equal(frame, first_frames[0], err_msg=motion)
    last_frames = [synth.render_clip(appearance, motion, 4)[-1] for motion in synth.CLASSES]
    assert len({frame.tobytes() for frame in last_frames}) == len(synth.CLASSES)


def welch_t(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return abs(a.mean() - b.mean()) / math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))


@pytest.mark.parametrize(
    "class_a, class_b, statistic",
    [
        ("move_left", "move_right", lambda frame: circular_centroid(shape_mask(frame), axis=0)),
        ("move_up", "move_down", lambda frame: circular_centroid(shape_mask(frame), axis=1)),
        ("grow", "shrink", lambda frame: shape_mask(frame).sum()),
    ],
)
def test_first_frame_statistics_do_not_separate_opposite_motions(
    motion_dataset, class_a, class_b, statistic
):
    out, _ = motion_dataset
    first_a = [statistic(decode(p)[0]) for p in videos_of(out, class_a)]
    first_b = [statistic(decode(p)[0]) for p in videos_of(out, class_b)]
    last_a = [statistic(decode(p)[-1]) for p in videos_of(out, class_a)]
    last_b = [statistic(decode(p)[-1]) for p in videos_of(out, class_b)]
    assert welch_t(first_a, first_b) < 2.5
    if class_a == "grow":  # the clip does separate them
        assert welch_t(last_a, last_b) > 4


@pytest.mark.parametrize(
    "class_name, axis, sign",
    [("move_left", 0, -1), ("move_right", 0, 1), ("move_up", 1, -1), ("move_down", 1, 1)],
)
def test_shape_moves_in_the_labelled_direction(motion_dataset, class_name, axis, sign):
    out, _ = motion_dataset
    for path in videos_of(out, class_name):
        frames = decode(path)
        size = frames.shape[2 - axis]
        along = total_displacement(frames, axis) / size
        across = total_displacement(frames, 1 - axis) / frames.shape[1 + axis]
        low, high = synth.TRAVEL_FRACTION
        assert low - 0.05 < sign * along < high + 0.05, (path.name, along)
        assert abs(across) < 0.05, (path.name, across)


@pytest.mark.parametrize("class_name, sign", [("grow", 1), ("shrink", -1)])
def test_shape_area_grows_or_shrinks(motion_dataset, class_name, sign):
    out, _ = motion_dataset
    low, high = synth.SCALE_FACTOR
    for path in videos_of(out, class_name):
        areas = np.array([shape_mask(frame).sum() for frame in decode(path)], np.float64)
        ratio = (areas[-3:].mean() / areas[:3].mean()) ** sign
        # Area goes with the square of the scale (frames 1 and 14 of 16 are 13/15 apart);
        # a grown shape may be clipped by an edge, and the mask is noisy frame to frame.
        assert 0.8 * low ** (2 * 13 / 15) < ratio < 1.25 * high**2, (path.name, areas)
        assert sign * np.corrcoef(np.arange(len(areas)), areas)[0, 1] > 0.75, (path.name, areas)


@pytest.mark.parametrize("class_name, sign", [("rotate_cw", 1), ("rotate_ccw", -1)])
def test_shape_turns_in_the_labelled_direction(motion_dataset, class_name, sign):
    out, _ = motion_dataset
    turns = [orientation_change(decode(path)) for path in videos_of(out, class_name)]
    # The principal axis of a near-round mask is noisy, so ask most videos, not all.
    low, high = synth.SPIN_DEGREES
    assert sum(low * 0.6 < sign * turn < high * 1.4 for turn in turns) >= 0.8 * len(turns), turns
    for path in videos_of(out, class_name):
        # It turns about a point of the outline, not its centroid: the centroid moves a
        # little, far less than the smallest travel of a move_* class.
        frames = decode(path)
        for axis in (0, 1):
            assert abs(total_displacement(frames, axis)) < 0.15 * 64, path.name


def test_rerun_finishes_an_interrupted_run_without_redoing_finished_videos(tmp_path):
    reference = tmp_path / "reference"
    synth.generate_dataset(reference, **SMALL)
    out = tmp_path / "out"
    synth.generate_dataset(out, **SMALL)
    # An interrupted run: one video unfinished (only its temporary file), lists not written.
    missing = out / "grow" / "grow_001.mp4"
    missing.rename(missing.with_name(".tmp-grow_001.mp4"))
    (out / "train.csv").unlink()
    (out / "test.csv").unlink()
    kept = out / "move_up" / "move_up_000.avi"
    kept_mtime = kept.stat().st_mtime_ns

    summary = synth.generate_dataset(out, **SMALL)

    assert summary["written"] == 1 and summary["already_present"] == 8 * 2 - 1
    assert kept.stat().st_mtime_ns == kept_mtime
    assert not list(out.rglob(".tmp-*"))
    for path in sorted(reference.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (out / path.relative_to(reference)).read_bytes(), path


def test_rerun_with_other_parameters_into_the_same_directory_is_an_error(tmp_path):
    synth.generate_dataset(tmp_path, **SMALL)
    with pytest.raises(UserError, match="same parameters"):
        synth.generate_dataset(tmp_path, **{**SMALL, "num_frames": 7})


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"frame_size": (33, 32)}, "even frame width and height"),
        ({"frame_size": (8, 8)}, "at least 16 pixels"),
        ({"num_frames": 1}, "at least 2 frames"),
        ({"test_fraction": 0.0}, "test fraction between 0 and 1"),
        ({"test_fraction": 1.0}, "test fraction between 0 and 1"),
        ({"videos_per_class": 1}, "at least 2 videos per class"),
    ],
)
def test_bad_arguments_raise_user_error(tmp_path, overrides, match):
    with pytest.raises(UserError, match=match):
        synth.generate_dataset(tmp_path, **{**SMALL, **overrides})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "text, expected", [("64x48", (64, 48)), ("80", (80, 80)), ("32X32", (32, 32))]
)
def test_parse_frame_size(text, expected):
    assert synth.parse_frame_size(text) == expected


@pytest.mark.parametrize("text", ["", "64x", "ax64", "64x48x3"])
def test_parse_frame_size_rejects_malformed_text(text):
    with pytest.raises(UserError, match="Received: size="):
        synth.parse_frame_size(text)


def test_registered_subcommand_writes_the_dataset(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="data_prep")
    synth.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["synth", "--out", str(tmp_path), "--videos-per-class", "2", "--frames", "5",
         "--size", "32x32", "--seed", "1", "--no-progress"]
    )
    assert args.func(args) == 0
    assert "16 videos" in capsys.readouterr().out
    assert len(read_list(tmp_path / "train.csv")) == 8
    assert decode(tmp_path / "shrink" / "shrink_001.mp4").shape == (5, 32, 32, 3)


# --- multi-label: each video combines a translation, a rotation and a scaling -------------

MULTI = dict(SMALL, multi_label=True)


def label_sets_of(rows):
    return {path: tuple(labels.split(";")) for path, labels in rows}


@pytest.fixture(scope="module")
def multi_label_dataset(tmp_path_factory):
    """20 videos of 16 frames at 64x64 (each label on 3 train and 1 test video)."""
    out = tmp_path_factory.mktemp("synth_multi_label")
    summary = synth.generate_dataset(
        out, seed=5, videos_per_class=4, num_frames=16, frame_size=(64, 64), multi_label=True,
        show_progress=False,
    )
    return out, summary


@pytest.mark.parametrize("num_videos, seed", [(5, 0), (5, 1), (10, 2), (45, 3), (300, 4)])
def test_label_sets_put_every_label_on_a_fifth_of_the_videos(num_videos, seed):
    label_sets = synth.draw_label_sets(np.random.default_rng(seed), num_videos)
    assert len(label_sets) == num_videos
    for name in synth.CLASSES:
        assert sum(name in labels for labels in label_sets) == num_videos // 5, name
    for labels in label_sets:
        assert 1 <= len(labels) <= 3, labels
        assert list(labels) == [name for name in synth.CLASSES if name in labels]
        for group in synth.MOTION_GROUPS:
            assert sum(name in group for name in labels) <= 1, labels
    if num_videos >= 45:  # combinations of 1, 2 and 3 motions all occur
        assert {len(labels) for labels in label_sets} == {1, 2, 3}


@pytest.mark.parametrize("num_videos", [5, 10, 15])
def test_label_sets_of_small_splits_always_find_a_motion_for_every_video(num_videos):
    for seed in range(200):
        label_sets = synth.draw_label_sets(np.random.default_rng(seed), num_videos)
        assert all(label_sets), (seed, label_sets)
        counts = [sum(name in labels for labels in label_sets) for name in synth.CLASSES]
        assert counts == [num_videos // 5] * 8, (seed, label_sets)


def test_multi_label_rows_list_the_drawn_motions_and_the_videos_show_them(multi_label_dataset):
    out, summary = multi_label_dataset
    for split_index, split in enumerate(synth.SPLITS):
        rows = read_list(out / f"{split}.csv")
        stream = len(synth.CLASSES) + split_index
        drawn = synth.draw_label_sets(np.random.default_rng([5, stream]), len(rows))
        assert [tuple(labels.split(";")) for _, labels in rows] == drawn
        assert len(rows) == summary[split] == {"train": 15, "test": 5}[split]
        assert summary["label_counts"][split] == {
            name: len(rows) // 5 for name in synth.CLASSES}
        for video_index, (path, _) in enumerate(rows):
            assert path.startswith(f"{split}/video_")
            frames = decode(out / path)
            appearance = synth.draw_appearance(synth.video_rng(5, stream, video_index), (64, 64))
            # The decoded video is close to its own motions' rendering (MJPG and mp4v lose a
            # few levels on the clutter), farther from other motions'.
            error = {}
            for labels in {drawn[video_index], *drawn[:4]}:
                rendered = synth.render_clip(appearance, labels, 16,
                                             synth.MULTI_LABEL_TRAVEL_FRACTION)
                error[labels] = np.abs(frames - rendered.astype(np.float64)).mean()
            own = error.pop(drawn[video_index])
            assert own < 8.0 and all(other > 1.5 * own for other in error.values()), (path, error)


@pytest.mark.parametrize("group", synth.MOTION_GROUPS, ids=["translation", "rotation", "scale"])
def test_multi_label_videos_move_as_labelled(multi_label_dataset, group):
    out, _ = multi_label_dataset
    rows = read_list(out / "train.csv") + read_list(out / "test.csv")
    turned = []
    for path, labels in rows:
        frames = decode(out / path)
        motion = next((name for name in labels.split(";") if name in group), None)
        if group[0] == "move_left":
            shift = [total_displacement(frames, axis) / 64 for axis in (0, 1)]
            expected = {None: (0, 0), "move_left": (-1, 0), "move_right": (1, 0),
                        "move_up": (0, -1), "move_down": (0, 1)}[motion]
            for axis in (0, 1):
                if expected[axis]:  # turning and scaling move the centroid too, a little
                    low = synth.MULTI_LABEL_TRAVEL_FRACTION[0]
                    assert expected[axis] * shift[axis] > 0.6 * low, (path, labels, shift)
                else:
                    assert abs(shift[axis]) < 0.1, (path, labels, shift)
        elif group[0] == "grow":
            areas = np.array([shape_mask(frame).sum() for frame in frames], np.float64)
            log_ratio = math.log(areas[-3:].mean() / areas[:3].mean())
            sign = {None: 0, "grow": 1, "shrink": -1}[motion]
            if sign:
                assert sign * log_ratio > math.log(1.3), (path, labels, areas)
            else:
                assert abs(log_ratio) < math.log(1.3), (path, labels, areas)
        elif motion is not None:
            turned.append({"rotate_cw": 1, "rotate_ccw": -1}[motion] * orientation_change(frames))
    if group[0] == "rotate_cw":
        # The principal axis of a near-round mask is noisy: most videos, not all.
        low = synth.SPIN_DEGREES[0]
        assert sum(turn > 0.6 * low for turn in turned) >= 0.75 * len(turned), turned


@pytest.mark.parametrize("seed", range(3))
def test_first_frame_is_the_same_for_every_set_of_motions(seed):
    appearance = synth.draw_appearance(np.random.default_rng(seed), (48, 32))
    # Every combination of at most one motion per group, the empty one included.
    label_sets = [tuple(name for name in combination if name)
                  for combination in itertools.product(*[(None, *g) for g in synth.MOTION_GROUPS])]
    assert len(label_sets) == 5 * 3 * 3
    clips = [synth.render_clip(appearance, labels, 3) for labels in label_sets]
    for labels, clip in zip(label_sets, clips):
        np.testing.assert_array_equal(clip[0], clips[0][0], err_msg=str(labels))
    assert len({clip[-1].tobytes() for clip in clips}) == len(label_sets)


@pytest.mark.parametrize("motion", [("move_left", "move_up"), ("grow", "shrink"), ("jump",)])
def test_motions_of_one_group_or_unknown_ones_are_refused(motion):
    appearance = synth.draw_appearance(np.random.default_rng(0), (32, 32))
    with pytest.raises(ValueError, match="Expected"):
        synth.render_clip(appearance, motion, 3)


def test_multi_label_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    synth.generate_dataset(tmp_path / "a", seed=7, **MULTI)
    synth.generate_dataset(tmp_path / "b", seed=7, **MULTI)
    synth.generate_dataset(tmp_path / "c", seed=8, **MULTI)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len([f for f in files if f.suffix in (".avi", ".mp4")]) == 10
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
    for relative in files:
        if relative.suffix in (".avi", ".mp4"):
            assert not np.array_equal(decode(tmp_path / "a" / relative),
                                      decode(tmp_path / "c" / relative)), relative


def test_multi_label_rerun_finishes_an_interrupted_run(tmp_path):
    synth.generate_dataset(tmp_path / "reference", **MULTI)
    out = tmp_path / "out"
    synth.generate_dataset(out, **MULTI)
    missing = out / "train" / "video_0003.mp4"
    missing.rename(missing.with_name(".tmp-video_0003.mp4"))
    (out / "train.csv").unlink()
    summary = synth.generate_dataset(out, **MULTI)
    assert summary["written"] == 1 and summary["already_present"] == 9
    assert not list(out.rglob(".tmp-*"))
    reference = tmp_path / "reference"
    for path in sorted(reference.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (out / path.relative_to(reference)).read_bytes(), path


@pytest.mark.parametrize("first, second", [(False, True), (True, False)])
def test_rerun_in_the_other_mode_is_refused(tmp_path, first, second):
    synth.generate_dataset(tmp_path, **{**SMALL, "multi_label": first})
    with pytest.raises(UserError, match=f"multi_label={first}.*Received: multi_label={second}"):
        synth.generate_dataset(tmp_path, **{**SMALL, "multi_label": second})


def test_parameters_file_without_the_mode_is_a_single_label_one(tmp_path):
    synth.generate_dataset(tmp_path, **SMALL)
    parameters_path = tmp_path / synth.PARAMETERS_FILE
    parameters = json.loads(parameters_path.read_text())
    assert parameters["multi_label"] is False
    del parameters["multi_label"]  # as written before the multi-label mode existed
    parameters_path.write_text(json.dumps(parameters))
    assert synth.generate_dataset(tmp_path, **SMALL)["written"] == 0
    with pytest.raises(UserError, match="multi_label=False"):
        synth.generate_dataset(tmp_path, **MULTI)


def test_multi_label_lists_read_through_the_csv_source(tmp_path):
    synth.generate_dataset(tmp_path, seed=2, **MULTI)
    arguments = synth.prepare_arguments(tmp_path)
    lists = {split: str(tmp_path / f"{split}.csv") for split in ("train", "test")}
    assert arguments == {"layout": "csv", "multi_label": True, "lists": lists}
    source = resolve_source(SourceSpec("csv", str(tmp_path), lists=arguments["lists"],
                                       multi_label=True))
    assert source.classes == sorted(synth.CLASSES)
    for split in synth.SPLITS:
        expected = {path: tuple(sorted(source.classes.index(name) for name in labels))
                    for path, labels in label_sets_of(read_list(tmp_path / f"{split}.csv")).items()}
        items = {os.path.relpath(item.path, tmp_path): item.label for item in source.splits[split]}
        assert items == expected


def test_prepare_only_with_layout_synth_prepares_multi_label_records(tmp_path):
    import train

    synth.generate_dataset(tmp_path / "videos", seed=1, **MULTI)
    config = tmp_path / "demo.yaml"
    # The trainer regenerates (resumes) the videos, so the config names the same parameters.
    synth_keys = {key: value for key, value in MULTI.items() if key != "show_progress"}
    config.write_text(json.dumps({"data": {
        "layout": "synth", "root": str(tmp_path / "videos"), "format": "v1", "frames": 3,
        "size": 16,
        "workers": 1, "prepared_dir": str(tmp_path / "out"), "synth": dict(synth_keys, seed=1)}}))
    assert train.main(["--config", str(config), "--prepare-only"]) == 0
    manifest, records = read_records(tmp_path / "out", "test")
    assert manifest["multi_label"] is True and manifest["num_classes"] == 8
    assert manifest["source"]["layout"] == "csv"
    expected = {path: tuple(sorted(manifest["classes"].index(name) for name in labels))
                for path, labels in label_sets_of(read_list(tmp_path / "videos/test.csv")).items()}
    assert {record["item_id"]: record["label"] for record in records} == expected


def test_registered_subcommand_writes_a_multi_label_dataset(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="data_prep")
    synth.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["synth", "--out", str(tmp_path), "--videos-per-class", "2", "--frames", "3",
         "--size", "32x32", "--multi-label", "--no-progress"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "10 videos" in printed and "move_left 1/1" in printed
    assert json.loads((tmp_path / synth.PARAMETERS_FILE).read_text())["multi_label"] is True
    assert len(read_list(tmp_path / "test.csv")) == 5


def test_video_parameters_file_names_no_kind(tmp_path):
    """The motion videos' synth.json is as it was before other kinds existed."""
    synth.generate_dataset(tmp_path, **SMALL)
    assert "kind" not in json.loads((tmp_path / synth.PARAMETERS_FILE).read_text())


# --- kind multispectral: 10-band uint16 field time series (data_prep.synth_multispectral) ---

FIELDS = dict(videos_per_class=2, num_frames=12, frame_size=(6, 4), kind="multispectral",
              show_progress=False)


def items_of(out):
    return sorted(out.rglob("*.npy"))


def read_dates(item_path):
    text = (item_path.parent / item_path.name.replace(".npy", ".dates.json")).read_text()
    return [datetime.date.fromisoformat(value) for value in json.loads(text)]


def per_item_min_max(item):
    """The per-item, per-band min-max scaling to 0..255 that `.npy` items met before."""
    values = item.astype(np.float64)
    low, high = values.min(axis=(0, 1, 2)), values.max(axis=(0, 1, 2))
    return np.rint((values - low) / np.where(high > low, high - low, 1) * 255)


@pytest.fixture(scope="module")
def fields_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_fields")
    return out, synth.generate_dataset(out, seed=4, **{**FIELDS, "videos_per_class": 3})


def test_multispectral_items_are_uint16_reflectance_of_the_asked_shape(fields_dataset):
    out, summary = fields_dataset
    classes = synth_multispectral.CLASSES
    assert summary["classes"] == list(classes) and summary["videos"] == 3 * len(classes)
    train, test = read_list(out / "train.csv"), read_list(out / "test.csv")
    assert (len(train), len(test)) == (2 * len(classes), len(classes))
    assert {path for path, _ in train + test} == {str(p.relative_to(out)) for p in items_of(out)}
    for path, label in train + test:
        assert path.split("/")[0] == label and path.endswith(".npy")
        item = np.load(out / path)
        assert item.dtype == np.uint16
        assert item.shape == (12, 4, 6, len(synth_multispectral.BAND_NAMES))
        assert item.max() <= synth_multispectral.MAX_REFLECTANCE


def test_multispectral_dates_are_sorted_irregular_revisits_one_per_frame(fields_dataset):
    out, _ = fields_dataset
    gaps = set()
    for path in items_of(out):
        dates = read_dates(path)
        assert len(dates) == np.load(path, mmap_mode="r").shape[0]
        days = np.array([(date - dates[0]).days for date in dates])
        assert (np.diff(days) > 0).all() and (days % synth_multispectral.REVISIT_DAYS == 0).all()
        assert {date.year for date in dates} == {synth_multispectral.YEAR}
        gaps.update(np.diff(days).tolist())
    assert len(gaps) >= 3, gaps


@pytest.mark.parametrize("class_name", synth_multispectral.CLASSES)
def test_cloudy_pixels_are_nodata_in_every_band_and_clear_ones_never(class_name):
    frames, dates = synth_multispectral.render_item(
        np.random.default_rng(11), class_name, 40, (8, 8))
    nodata = frames == synth_multispectral.NODATA
    np.testing.assert_array_equal(nodata.any(axis=-1), nodata.all(axis=-1))
    cloudy_share = nodata.all(axis=-1).mean(axis=(1, 2))
    assert (cloudy_share == 0).sum() >= 10 and (cloudy_share == 1).any()
    assert ((cloudy_share > 0) & (cloudy_share < 1)).any()  # partial clouds too
    assert len(dates) == 40


def test_same_seed_gives_identical_fields_and_another_seed_does_not(tmp_path):
    synth.generate_dataset(tmp_path / "a", seed=1, **FIELDS)
    synth.generate_dataset(tmp_path / "b", seed=1, **FIELDS)
    synth.generate_dataset(tmp_path / "c", seed=2, **FIELDS)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len([f for f in files if f.suffix == ".json" and f.name != "synth.json"]) == 14
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
        if relative.suffix == ".npy":
            assert not np.array_equal(np.load(tmp_path / "a" / relative),
                                      np.load(tmp_path / "c" / relative))


@pytest.mark.parametrize("seed", range(3))
def test_urban_classes_differ_only_in_level_so_per_item_scaling_erases_them(seed):
    # The same stream draws the same field, texture, noise and clouds for both classes.
    bright, _ = synth_multispectral.render_item(np.random.default_rng(seed), "urban_bright",
                                                24, (8, 8))
    dark, _ = synth_multispectral.render_item(np.random.default_rng(seed), "urban_dark",
                                              24, (8, 8))
    clear = bright != 0
    np.testing.assert_array_equal(clear, dark != 0)
    ratio = dark[clear] / bright[clear].astype(np.float64)
    np.testing.assert_allclose(ratio, synth_multispectral.URBAN_DARK_LEVEL, atol=0.004)
    # Measured values tell them apart by far; scaled per item they are the same to a level.
    assert bright[clear].mean() > 1.8 * dark[clear].mean()
    assert np.abs(per_item_min_max(bright) - per_item_min_max(dark)).max() <= 1


@pytest.mark.parametrize("rate, days_10_to_90", [(0.2, 22), (0.04, 110)])
def test_green_up_speed_is_the_logistic_rate(rate, days_10_to_90):
    days = np.arange(0.0, 366.0, 0.5)
    fraction = synth_multispectral.green_fraction(days, 150.0, rate, 1000.0)
    rise = days[np.argmax(fraction >= 0.9)] - days[np.argmax(fraction >= 0.1)]
    assert abs(rise - days_10_to_90) <= 1.0


@pytest.mark.parametrize("early, late", [("early_fast", "late_fast"), ("early_slow", "late_slow")])
def test_early_crops_are_greener_than_late_ones_in_spring(early, late):
    def ndvi_by_month(class_name, seed):
        frames, dates = synth_multispectral.render_item(
            np.random.default_rng(seed), class_name, 36, (4, 4))
        values = frames.astype(np.float64)
        nir, red = values[..., 6], values[..., 2]
        ndvi = np.where(nir + red > 0, (nir - red) / np.maximum(nir + red, 1), np.nan)
        return {date.month: np.nanmean(frame) for date, frame in zip(dates, ndvi)
                if (frame == frame).any()}

    for seed in range(4):
        early_ndvi, late_ndvi = ndvi_by_month(early, seed), ndvi_by_month(late, seed)
        assert early_ndvi[5] > late_ndvi[5] + 0.15, (early_ndvi, late_ndvi)
        assert early_ndvi[1] < 0.3 and late_ndvi[1] < 0.3  # bare soil in winter


def test_multispectral_rerun_finishes_an_interrupted_run(tmp_path):
    synth.generate_dataset(tmp_path / "reference", **FIELDS)
    out = tmp_path / "out"
    synth.generate_dataset(out, **FIELDS)
    missing = out / "water" / "water_001.npy"
    missing.rename(missing.with_name(".tmp-water_001.npy"))
    (out / "train.csv").unlink()
    kept = out / "late_slow" / "late_slow_000.npy"
    kept_mtime = kept.stat().st_mtime_ns
    summary = synth.generate_dataset(out, **FIELDS)
    assert summary["written"] == 1 and summary["already_present"] == 13
    assert kept.stat().st_mtime_ns == kept_mtime
    assert not list(out.rglob(".tmp-*"))
    reference = tmp_path / "reference"
    for path in sorted(reference.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (out / path.relative_to(reference)).read_bytes(), path


@pytest.mark.parametrize(
    "first, second, match",
    [({}, {"kind": "multispectral"}, "kind=video.*Received: kind=multispectral"),
     ({"kind": "multispectral"}, {}, "kind=multispectral.*Received: kind=video")],
)
def test_rerun_as_the_other_kind_is_refused(tmp_path, first, second, match):
    synth.generate_dataset(tmp_path, **{**SMALL, "num_frames": 4, **first})
    with pytest.raises(UserError, match=match):
        synth.generate_dataset(tmp_path, **{**SMALL, "num_frames": 4, **second})


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"kind": "radar"}, "kind among"),
        ({"multi_label": True}, "multi_label false for kind multispectral"),
        ({"num_frames": synth_multispectral.MAX_DATES + 1}, "dates per item"),
        ({"frame_size": (3, 8)}, "at least 4 pixels"),
    ],
)
def test_bad_multispectral_arguments_raise_user_error(tmp_path, overrides, match):
    with pytest.raises(UserError, match=match):
        synth.generate_dataset(tmp_path, **{**FIELDS, **overrides})
    assert not list(tmp_path.iterdir())


def test_multispectral_lists_read_through_the_csv_source(fields_dataset):
    out, _ = fields_dataset
    arguments = synth.prepare_arguments(out)
    assert arguments["layout"] == "csv" and "multi_label" not in arguments
    source = resolve_source(SourceSpec("csv", str(out), lists=arguments["lists"]))
    assert source.classes == sorted(synth_multispectral.CLASSES)
    items = {os.path.relpath(item.path, out): source.classes[item.label]
             for split in synth.SPLITS for item in source.splits[split]}
    assert items == {path: label for split in synth.SPLITS
                     for path, label in read_list(out / f"{split}.csv")}


def test_registered_subcommand_writes_fields_at_their_default_size(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="data_prep")
    synth.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["synth", "--kind", "multispectral", "--out", str(tmp_path),
                              "--videos-per-class", "2", "--frames", "5", "--no-progress"])
    assert args.func(args) == 0
    assert "14 items" in capsys.readouterr().out
    assert np.load(tmp_path / "water" / "water_001.npy").shape == (5, 16, 16, 10)
