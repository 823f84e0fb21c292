"""Tests for data_prep.contact_sheet (`inspect`), on shards written by hand per DESIGN.md."""

import argparse
import json

import cv2
import numpy as np
import pytest
import tensorflow as tf

from core.errors import UserError
from data_prep import contact_sheet

RED, GREEN = (255, 0, 0), (0, 255, 0)


def make_clip(label, item_index, clip_shape):
    """Solid frames: frame 0 red, frame 1 green, later frames grey levels that encode
    (label, item, frame), so the sheet can be checked tile by tile."""
    frames, height, width, bands = clip_shape
    clip = np.empty(clip_shape, np.uint8)
    for f in range(frames):
        if bands >= 3 and f < 2:
            colour = np.zeros(bands, np.uint8)
            colour[:3] = RED if f == 0 else GREEN
        else:
            colour = np.full(bands, 40 + (label * 31 + item_index * 7 + f * 3) % 200, np.uint8)
        clip[f] = colour
    return clip


def write_prepared(root, classes, items_per_class, clip_shape, *, encoding="raw",
                   clips_per_video=1, skipped=(), split_names=("train", "test"), labels=None):
    """A prepared dataset by hand: manifest.json and one shard per split, per DESIGN.md
    (as written before manifests counted items per class). `labels`: the label ids that
    have items (default: all)."""
    frames, height, width, bands = clip_shape
    splits = {}
    for split in split_names:
        (root / split).mkdir(parents=True)
        shard = f"{split}/shard-00000-of-00001.tfrecord"
        item_index = 0
        with tf.io.TFRecordWriter(str(root / shard)) as writer:
            for label, name in enumerate(classes):
                if labels is not None and label not in labels:
                    continue
                for _ in range(items_per_class):
                    for clip_index in range(clips_per_video):
                        clip = make_clip(label, item_index, clip_shape)
                        if encoding == "raw":
                            data = [clip.tobytes()]
                        else:
                            data = [tf.io.encode_png(frame).numpy() for frame in clip]
                        feature = {
                            "clip": tf.train.Feature(bytes_list=tf.train.BytesList(value=data)),
                            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                            "item_id": tf.train.Feature(bytes_list=tf.train.BytesList(
                                value=[f"{name}/{item_index}.avi".encode()])),
                            "item_index": tf.train.Feature(
                                int64_list=tf.train.Int64List(value=[item_index])),
                            "clip_index": tf.train.Feature(
                                int64_list=tf.train.Int64List(value=[clip_index])),
                        }
                        example = tf.train.Example(features=tf.train.Features(feature=feature))
                        writer.write(example.SerializeToString())
                    item_index += 1
        splits[split] = {"videos": item_index, "clips": item_index * clips_per_video,
                         "shards": [shard]}
    manifest = {
        "format_version": 1,
        "classes": list(classes),
        "clip_shape": list(clip_shape),
        "encoding": encoding,
        "clips_per_video": clips_per_video,
        "sampling": {"method": "uniform", "frames": frames, "frame_stride": 1,
                     "clips_per_video": clips_per_video},
        "resize": {"size": height, "resize_short": None},
        "source": {"layout": "folders", "root": "videos"},
        "splits": splits,
        "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def read_png_rgb(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.dtype == np.uint8 and image.ndim == 3
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def tile_centre(sheet, row, column, tile_h, tile_w):
    top = contact_sheet.HEADER_HEIGHT + row * (tile_h + contact_sheet.GAP)
    left = contact_sheet.LABEL_WIDTH + column * (tile_w + contact_sheet.GAP)
    return sheet[top + tile_h // 2, left + tile_w // 2]


def run_inspect(argv):
    parser = argparse.ArgumentParser(prog="data_prep")
    contact_sheet.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["inspect", *argv])
    return args.func(args)


CLASSES = ["jump", "run", "swim"]


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_inspect_prints_the_summary_and_writes_the_sheet(tmp_path, capsys, encoding):
    write_prepared(tmp_path, CLASSES, items_per_class=4, clip_shape=(5, 12, 10, 3),
                   encoding=encoding,
                   skipped=[("run/broken.avi", "zero-byte file"), ("swim/x.txt", "not a video")])

    assert run_inspect([str(tmp_path)]) == 0

    printed = capsys.readouterr().out
    assert "classes (3): jump, run, swim" in printed
    assert "[5, 12, 10, 3]" in printed
    assert "skipped: 2" in printed and "run/broken.avi: zero-byte file" in printed
    assert any(line.split() == ["train", "12", "12", "1"] for line in printed.splitlines())
    sheet = read_png_rgb(tmp_path / "contact_sheet.png")
    # 12x10 frames scale by 6 to 72x60 tiles; 3 classes x 3 clips, 5 frames per row.
    tile_h, tile_w = 72, 60
    assert sheet.shape == (contact_sheet.HEADER_HEIGHT + 9 * (tile_h + contact_sheet.GAP),
                           contact_sheet.LABEL_WIDTH + 5 * (tile_w + contact_sheet.GAP), 3)
    for row in range(9):  # RGB order survives: frame 0 red, frame 1 green
        np.testing.assert_array_equal(tile_centre(sheet, row, 0, tile_h, tile_w), RED)
        np.testing.assert_array_equal(tile_centre(sheet, row, 1, tile_h, tile_w), GREEN)
    # Rows go class by class, each from a different item of that class.
    for row in range(9):
        label, item_index = row // 3, (row // 3) * 4 + row % 3
        grey = 40 + (label * 31 + item_index * 7 + 4 * 3) % 200
        np.testing.assert_array_equal(tile_centre(sheet, row, 4, tile_h, tile_w), [grey] * 3)


@pytest.mark.parametrize(
    "bands, shows, note",
    [
        (1, "grey", None),
        (2, "band0", "showing band 0 of 2 as grey"),
        (4, "rgb", "showing bands 0-2 of 4 as RGB"),
        (10, "rgb", "showing bands 0-2 of 10 as RGB"),
    ],
)
def test_band_counts_are_shown_as_rgb_or_grey_and_say_so(tmp_path, capsys, bands, shows, note):
    write_prepared(tmp_path / "ds", CLASSES, items_per_class=1, clip_shape=(6, 8, 8, bands))
    out = tmp_path / "sheets" / "sheet.png"

    assert run_inspect([str(tmp_path / "ds"), "--out", str(out)]) == 0

    printed = capsys.readouterr().out
    assert (f"note: {note}" in printed) == (note is not None)
    sheet = read_png_rgb(out)
    tile = 64  # 8-pixel frames scale by 8
    assert sheet.shape == (contact_sheet.HEADER_HEIGHT + 3 * (tile + contact_sheet.GAP),
                           contact_sheet.LABEL_WIDTH + 6 * (tile + contact_sheet.GAP), 3)
    centre = tile_centre(sheet, 0, 0, tile, tile)
    if shows == "rgb":
        np.testing.assert_array_equal(centre, RED)
    else:
        expected = 40 + (0 * 31 + 0 * 7 + 0) % 200
        np.testing.assert_array_equal(centre, [expected] * 3)


def test_a_narrow_sheet_widens_to_show_the_band_note(tmp_path):
    write_prepared(tmp_path, CLASSES, items_per_class=1, clip_shape=(1, 8, 8, 10))
    result = contact_sheet.write_contact_sheet(tmp_path)
    grid_width = contact_sheet.LABEL_WIDTH + 64 + contact_sheet.GAP
    note_width = cv2.getTextSize(result["note"], contact_sheet.FONT, 0.45, 1)[0][0]
    assert result["size"][0] > max(grid_width, note_width)


def test_one_row_per_item_when_items_store_several_clips(tmp_path):
    write_prepared(tmp_path, CLASSES, items_per_class=2, clip_shape=(4, 8, 8, 3),
                   clips_per_video=3)
    result = contact_sheet.write_contact_sheet(tmp_path, clips_per_class=5)
    assert result["clips_shown"] == 3 * 2  # two items per class, not six clips
    assert result["classes_shown"] == 3


def test_long_clips_show_evenly_spaced_frames_and_large_frames_shrink(tmp_path):
    write_prepared(tmp_path, CLASSES[:2], items_per_class=1, clip_shape=(20, 256, 320, 3))
    result = contact_sheet.write_contact_sheet(tmp_path, split="test", max_frames=4,
                                               clips_per_class=1)
    assert result["frames_per_row"] == 4 and result["split"] == "test"
    tile_h, tile_w = 128, 160  # 256 x 320 halves into the tile height range
    sheet = read_png_rgb(result["path"])
    assert result["size"] == (sheet.shape[1], sheet.shape[0]) == (
        contact_sheet.LABEL_WIDTH + 4 * (tile_w + contact_sheet.GAP),
        contact_sheet.HEADER_HEIGHT + 2 * (tile_h + contact_sheet.GAP),
    )
    np.testing.assert_array_equal(tile_centre(sheet, 0, 0, tile_h, tile_w), RED)
    last = 40 + (0 * 31 + 0 * 7 + 19 * 3) % 200  # the last column is the last frame
    np.testing.assert_array_equal(tile_centre(sheet, 0, 3, tile_h, tile_w), [last] * 3)


def test_many_classes_are_capped(tmp_path):
    names = [f"class_{i:02d}_with_a_rather_long_name" for i in range(30)]
    write_prepared(tmp_path, names, items_per_class=1, clip_shape=(2, 8, 8, 3),
                   split_names=("train",))
    result = contact_sheet.write_contact_sheet(tmp_path, max_classes=5)
    assert result["classes_shown"] == 5
    summary = contact_sheet.format_manifest_summary(
        json.loads((tmp_path / "manifest.json").read_text()), tmp_path)
    assert "classes (30): class_00_with_a_rather_long_name" in summary
    assert "(10 more)" in summary


@pytest.mark.parametrize(
    "setup, kwargs, match",
    [
        ("none", {}, "manifest.json"),
        ("prepared", {"split": "val"}, "Received: split='val'"),
        ("prepared", {"clips_per_class": 0}, "clips_per_class=0"),
        ("empty", {}, "has none"),
    ],
)
def test_user_mistakes_raise_user_error(tmp_path, setup, kwargs, match):
    if setup != "none":
        manifest = write_prepared(tmp_path, CLASSES, items_per_class=1, clip_shape=(2, 8, 8, 3))
        if setup == "empty":
            manifest["splits"]["train"].update(videos=0, clips=0, shards=[])
            (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=match):
        contact_sheet.write_contact_sheet(tmp_path, **kwargs)
    assert not (tmp_path / "contact_sheet.png").exists()


def test_cli_reports_a_missing_dataset_in_one_line_and_exits_2(tmp_path, capsys):
    from data_prep.__main__ import main

    assert main(["inspect", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "manifest.json" in err


def prepare_sparse(tmp_path, multi_label):
    """A real prepared list dataset with the 400 names of a class file but items of only
    three classes (ids 150, 151 and 399), as a Kinetics subset is."""
    from data_prep.prepare import prepare_dataset
    from data_prep.source_spec import SourceSpec
    from video_fixtures import write_text
    from video_fixtures import make_folders_dataset

    root = tmp_path / "root"
    make_folders_dataset(root, classes=("x", "y", "z"), per_class=2, num_frames=6)
    names = [f"class{i:03d}" for i in range(400)]
    classes = write_text(tmp_path / "classes.txt", "".join(n + "\n" for n in names))
    second = " 151" if multi_label else ""
    train = write_text(tmp_path / "train.txt", f"x/item0.avi 150{second}\nx/item1.avi 150\n"
                       "y/item0.avi 399\ny/item1.avi 399\nz/item0.avi 151\n")
    test = write_text(tmp_path / "test.txt", "z/item1.avi 399\n")
    out = tmp_path / "out"
    spec = SourceSpec("list", str(root), lists={"train": train, "test": test},
                      classes_file=classes, multi_label=multi_label)
    prepare_dataset(spec, str(out), 3, 8, workers=1, show_progress=False)
    return out


@pytest.mark.parametrize("multi_label", [False, True])
def test_sparse_label_space_shows_the_classes_present(tmp_path, capsys, multi_label):
    out = prepare_sparse(tmp_path, multi_label)
    assert run_inspect([str(out), "--max-classes", "2", "--clips-per-class", "1"]) == 0
    printed = capsys.readouterr().out
    both = 2 if multi_label else 1  # x/item0.avi is also class 151
    assert (f"train: 3 of 400 classes present: class150 (2), class151 ({both}), "
            "class399 (2)" in printed)
    assert "test: 1 of 400 classes present: class399 (1)" in printed
    assert ("multi-label: 400 classes" in printed) == multi_label
    assert "contact sheet:" in printed and "2 classes, 2 clips" in printed
    result = contact_sheet.write_contact_sheet(out, split="test")
    assert (result["classes_shown"], result["clips_shown"]) == (1, 1)
    result = contact_sheet.write_contact_sheet(out, clips_per_class=5)
    assert (result["classes_shown"], result["clips_shown"]) == (3, 5)


def test_old_manifest_without_class_counts_shows_the_classes_that_turn_up(tmp_path):
    names = [f"class{i:03d}" for i in range(400)]
    write_prepared(tmp_path, names, items_per_class=2, clip_shape=(2, 8, 8, 3),
                   split_names=("train",), labels={7, 250, 399})
    result = contact_sheet.write_contact_sheet(tmp_path, max_classes=20)
    assert (result["classes_shown"], result["clips_shown"]) == (3, 6)


# --- issue 20: any dtype, statistics, false colour, histograms -----------------------------

def write_reflectances(directory):
    """A v2 uint16 5-band dataset (contract keys, written by hand): item i of class c holds
    band b = 1000 * b + 100 * c + i everywhere, frame 0 of every item has a NaN-free cloud
    of 9000 in band 0."""
    from sequence_fixtures import write_prepared_v2

    splits = {}
    for split in ("train", "test"):
        items = []
        for label in range(2):
            for index in range(2):
                frames = np.empty((4, 6, 6, 5), np.uint16)
                frames[:] = 1000 * np.arange(5) + 100 * label + index
                frames[0, :2, :2, 0] = 9000
                items.append({"frames": frames, "label": label})
        splits[split] = items
    return write_prepared_v2(directory, splits, classes=["water", "forest"],
                             band_names=["B2", "B3", "B4", "B8", "B11"])


def test_inspect_prints_the_band_statistics_and_draws_false_colour(tmp_path, capsys):
    prepared = write_reflectances(tmp_path / "s2")
    assert run_inspect([prepared, "--rgb-bands", "3,2,1", "--max-frames", "4"]) == 0
    printed = capsys.readouterr().out
    assert "values: dtype uint16" in printed
    assert "band statistics (split train, stored units):" in printed
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines()
            if line.startswith("  B")}
    assert list(rows) == ["B2", "B3", "B4", "B8", "B11"]
    assert float(rows["B8"][0]) == pytest.approx(3050.5)  # the mean of 3000, 3001, 3100, 3101
    assert "note: showing bands 3, 2, 1 of 5 as RGB" in printed
    sheet = read_png_rgb(tmp_path / "s2" / "contact_sheet.png")
    # 6-pixel frames scale by 11; the first row is water item 0: its values sit at the
    # low end of each band's p2..p98, the forest rows at the high end.
    tile = 66
    water = tile_centre(sheet, 0, 1, tile, tile)
    forest = tile_centre(sheet, 3, 1, tile, tile)
    assert (water < 20).all() and (forest > 235).all()
    histograms = read_png_rgb(tmp_path / "s2" / "band_histograms.png")
    assert histograms.shape[0] > 100 and histograms.shape[1] >= 4 * 272


def test_without_rgb_bands_the_first_three_are_shown(tmp_path, capsys):
    prepared = write_reflectances(tmp_path / "s2")
    out = tmp_path / "hist.png"
    assert run_inspect([prepared, "--histograms", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "note: showing bands 0-2 of 5 as RGB" in printed
    assert f"band histograms: {out}" in printed and out.exists()


def test_rgb_bands_outside_the_data_are_refused(tmp_path):
    prepared = write_reflectances(tmp_path / "s2")
    with pytest.raises(UserError, match="among 0..4"):
        run_inspect([prepared, "--rgb-bands", "5,2,1"])
    with pytest.raises(UserError, match="1 or 3"):
        run_inspect([prepared, "--rgb-bands", "1,2"])
