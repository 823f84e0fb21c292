"""Tests for data_prep.prepare: every layout end to end on real files, skips, resume."""

import dataclasses
import filecmp
import json
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from core.errors import UserError
from data_prep.__main__ import main
from data_prep.prepare import prepare_dataset
from data_prep.source_spec import SourceSpec
from data_prep.sampling import sample_frame_indices
from video_fixtures import (FFMPEG, frame_index_of, make_folders_dataset, raw_clip,
                            read_records, write_array, write_broken, write_frame_folder,
                            write_rawframes, write_text, write_video)

SOURCE_KEYS = {field.name for field in dataclasses.fields(SourceSpec)}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prepare(root, out, frames=4, size=16, **kwargs):
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("show_progress", False)
    spec = SourceSpec(root=str(root), **{key: kwargs.pop(key) for key in list(kwargs)
                                          if key in SOURCE_KEYS})
    return prepare_dataset(spec, str(out), frames, size, **kwargs)


def labelled_ids(manifest, records):
    return sorted({(r["item_id"], manifest["classes"][r["label"]]) for r in records})


def make_layout(tmp_path, layout):
    """Real MJPG videos in `layout`; returns (prepare kwargs, expected {split: [(id, class)]})."""
    root = tmp_path / "root"
    if layout == "folders":
        make_folders_dataset(root)
        return {}, {"train": [("a/item0.avi", "a"), ("a/item1.avi", "a"),
                              ("b/item0.avi", "b"), ("b/item1.avi", "b")]}
    if layout == "ucf101":
        for name in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
                     "HandstandPushups/v_HandStandPushups_g08_c01.avi",
                     "HandstandPushups/v_HandStandPushups_g01_c01.avi"):
            write_video(root / name, 9)
        splits = tmp_path / "splits"
        write_text(splits / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n", crlf=True)
        write_text(splits / "trainlist01.txt",
                   "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                   "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n", crlf=True)
        write_text(splits / "testlist01.txt",
                   "HandstandPushups/v_HandStandPushups_g01_c01.avi\n", crlf=True)
        return {"split_dir": str(splits)}, {
            "train": [("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup"),
                      ("HandstandPushups/v_HandStandPushups_g08_c01.avi", "HandstandPushups")],
            "test": [("HandstandPushups/v_HandStandPushups_g01_c01.avi", "HandstandPushups")]}
    if layout == "hmdb51":
        for name in ("brush_hair/x_1.avi", "brush_hair/x_2.avi", "ride_bike/y_1.avi"):
            write_video(root / name, 9)
        splits = tmp_path / "splits"
        write_text(splits / "brush_hair_test_split1.txt", "x_1.avi 1 \nx_2.avi 2 \n", crlf=True)
        write_text(splits / "ride_bike_test_split1.txt", "y_1.avi 1 \n")
        return {"split_dir": str(splits)}, {
            "train": [("brush_hair/x_1.avi", "brush_hair"), ("ride_bike/y_1.avi", "ride_bike")],
            "test": [("brush_hair/x_2.avi", "brush_hair")]}
    if layout in ("csv", "list"):
        make_folders_dataset(root, per_class=1)
        rows = ("v/a/item0.avi,jump\nv/b/item0.avi,run\n" if layout == "csv"
                else "v/a/item0.avi 1\nv/b/item0.avi 0\n")
        os.rename(root, tmp_path / "v")
        os.makedirs(root)
        os.rename(tmp_path / "v", root / "v")
        train = write_text(tmp_path / "train.txt", rows, crlf=True)
        first = "jump" if layout == "csv" else "1"
        second = "run" if layout == "csv" else "0"
        return {"lists": {"train": train}}, {
            "train": [("v/a/item0.avi", first), ("v/b/item0.avi", second)]}
    write_video(root / "k400/abseiling/abc_000010_000020.avi", 9)
    write_video(root / "k400/zumba/zzz_000001_000011.mp4", 9)
    train = write_text(tmp_path / "train.csv", "label,youtube_id,time_start,time_end,split\n"
                       "abseiling,abc,10,20,train\nzumba,zzz,1,11,train\n"
                       "zumba,deleted,0,10,train\n")
    return {"lists": {"train": train}}, {
        "train": [("k400/abseiling/abc_000010_000020.avi", "abseiling"),
                  ("k400/zumba/zzz_000001_000011.mp4", "zumba")]}


@pytest.mark.parametrize("layout", ["folders", "ucf101", "hmdb51", "csv", "list", "kinetics"])
def test_every_layout_prepares_labelled_clips(tmp_path, layout):
    kwargs, expected = make_layout(tmp_path, layout)
    manifest = prepare(tmp_path / "root", tmp_path / "out", layout=layout, **kwargs)
    assert manifest["clip_shape"] == [4, 16, 16, 3]
    assert set(manifest["splits"]) == set(expected)
    for split, items in expected.items():
        on_disk, records = read_records(tmp_path / "out", split)
        assert on_disk == manifest
        assert labelled_ids(manifest, records) == items
        assert manifest["splits"][split]["videos"] == len(items)
        assert manifest["splits"][split]["clips"] == len(records) == len(items)
        assert sorted(r["item_index"] for r in records) == list(range(len(items)))
    if layout == "kinetics":
        assert manifest["skipped"] == [{"path": "deleted_000000_000010", "split": "train",
                                        "reason": "missing file (no such clip under the root)"}]
    else:
        assert manifest["skipped"] == []


@pytest.mark.parametrize("kind", ["avi", "mp4", "frames", "npy"])
@pytest.mark.parametrize("sampling,stride", [("uniform", 1), ("stride", 3)])
def test_clips_hold_the_sampled_frames_in_rgb(tmp_path, kind, sampling, stride):
    make_folders_dataset(tmp_path / "root", classes=("a",), per_class=1, num_frames=11,
                         kind=kind)
    manifest = prepare(tmp_path / "root", tmp_path / "out", frames=5, size=8,
                       clips_per_video=3, sampling=sampling, frame_stride=stride)
    _, records = read_records(tmp_path / "out", "train")
    assert [r["clip_index"] for r in records] == [0, 1, 2]
    clips = np.stack([raw_clip(r, manifest["clip_shape"]) for r in records])
    assert clips.shape == (3, 5, 8, 8, 3) and clips.dtype == np.uint8
    expected = sample_frame_indices(11, 5, method=sampling, stride=stride, num_clips=3)
    np.testing.assert_array_equal(frame_index_of(clips), expected)
    if kind != "npy":  # the npy fixture codes frames differently; RGB order is for images
        first_frame = clips[0, 0].reshape(-1, 3).mean(axis=0) if expected[0, 0] == 0 else \
            None
        if first_frame is not None:
            assert first_frame[0] > 200 and first_frame[2] < 30


@pytest.mark.parametrize("bands", [1, 3, 10])
def test_npy_items_keep_their_band_count(tmp_path, bands):
    for name in ("a/x.npy", "b/y.npy"):
        write_array(tmp_path / "root" / name, 6, bands)
    manifest = prepare(tmp_path / "root", tmp_path / "out", frames=3, size=8)
    assert manifest["clip_shape"] == [3, 8, 8, bands]
    _, records = read_records(tmp_path / "out", "train")
    clip = raw_clip(records[0], manifest["clip_shape"])
    expected_frames = sample_frame_indices(6, 3)[0]
    np.testing.assert_array_equal(clip[:, 0, 0, :], 12 * expected_frames[:, None]
                                  + np.arange(bands)[None, :])


def test_grey_frame_folders_keep_one_band(tmp_path):
    write_frame_folder(tmp_path / "root/a/x", 5, grey=True)
    assert prepare(tmp_path / "root", tmp_path / "out")["clip_shape"] == [4, 16, 16, 1]


def test_mixed_band_counts_are_an_error(tmp_path):
    write_array(tmp_path / "root/a/x.npy", 5, 3)
    write_array(tmp_path / "root/b/y.npy", 5, 4)
    with pytest.raises(UserError, match=r"one band count\. Received: band=[34]"):
        prepare(tmp_path / "root", tmp_path / "out")
    assert not os.path.exists(tmp_path / "out/manifest.json")
    assert not [n for n in os.listdir(tmp_path / "out/train") if is_temporary(n)]


@pytest.mark.parametrize("encoding,bands,ok", [
    ("png", 1, True), ("png", 3, True), ("png", 4, True), ("png", 10, False),
    ("jpeg", 3, True), ("jpeg", 4, False)])
def test_png_jpeg_only_for_band_counts_the_codec_holds(tmp_path, encoding, bands, ok):
    write_array(tmp_path / "root/a/x.npy", 5, bands)
    if not ok:
        with pytest.raises(UserError, match="--encoding raw"):
            prepare(tmp_path / "root", tmp_path / "out", encoding=encoding)
        return
    manifest = prepare(tmp_path / "root", tmp_path / "out", encoding=encoding)
    _, records = read_records(tmp_path / "out", "train")
    assert manifest["encoding"] == encoding and len(records[0]["clip"]) == 4


BROKEN = ["zero-byte", "garbage", "truncated"]


def make_dataset_with_broken_items(root):
    make_folders_dataset(root, per_class=1)
    for kind in BROKEN:
        write_broken(root / "b" / f"{kind}.mp4", kind)
    os.makedirs(root / "a" / "empty_folder")


def test_broken_items_are_skipped_with_reasons(tmp_path):
    make_dataset_with_broken_items(tmp_path / "root")
    manifest = prepare(tmp_path / "root", tmp_path / "out")
    reasons = {entry["path"]: entry["reason"] for entry in manifest["skipped"]}
    assert sorted(reasons) == ["a/empty_folder", "b/garbage.mp4", "b/truncated.mp4",
                               "b/zero-byte.mp4"]
    assert reasons["b/zero-byte.mp4"] == "zero-byte file"
    assert manifest["splits"]["train"]["videos"] == 2
    _, records = read_records(tmp_path / "out", "train")
    assert labelled_ids(manifest, records) == [("a/item0.avi", "a"), ("b/item0.avi", "b")]


def test_strict_makes_a_skip_an_error(tmp_path):
    make_dataset_with_broken_items(tmp_path / "root")
    with pytest.raises(UserError, match="--strict"):
        prepare(tmp_path / "root", tmp_path / "out", strict=True)
    assert not os.path.exists(tmp_path / "out/manifest.json")


def test_strict_kinetics_missing_clip_is_an_error(tmp_path):
    kwargs, _ = make_layout(tmp_path, "kinetics")
    with pytest.raises(UserError, match="deleted_000000_000010"):
        prepare(tmp_path / "root", tmp_path / "out", layout="kinetics", strict=True, **kwargs)


def test_nothing_decodes_is_an_error(tmp_path):
    write_broken(tmp_path / "root/a/x.mp4", "garbage")
    with pytest.raises(UserError, match="at least one item"):
        prepare(tmp_path / "root", tmp_path / "out")


@pytest.mark.parametrize("kwargs,message", [
    (dict(frames=0), "frames=0"), (dict(size=16, resize_short=8), "resize_short=8"),
    (dict(encoding="webp"), "encoding='webp'"), (dict(sampling="dense"), "sampling='dense'"),
    (dict(workers=0), "workers=0"), (dict(clips_per_video=0), "clips_per_video=0"),
    (dict(out_inside_root=True), "out=")])
def test_bad_arguments_raise_user_error(tmp_path, kwargs, message):
    make_folders_dataset(tmp_path / "root", per_class=1)
    out = tmp_path / "root" / "prepared" if kwargs.pop("out_inside_root", False) \
        else tmp_path / "out"
    with pytest.raises(UserError, match=f"Received: {message}"):
        prepare(tmp_path / "root", out, **kwargs)


def is_temporary(path):
    """A half-written file: `.tmp-<name>` (core.atomic), or `<name>.tmp` (older runs)."""
    name = os.path.basename(path)
    return name.startswith(".tmp-") or name.endswith(".tmp")


def shard_files(out):
    return sorted(os.path.relpath(os.path.join(d, n), out)
                  for d, _, names in os.walk(out) for n in names)


def assert_same_prepared(left, right):
    assert shard_files(left) == shard_files(right)
    for name in shard_files(left):
        assert filecmp.cmp(os.path.join(left, name), os.path.join(right, name),
                           shallow=False), name


@pytest.mark.slow
def test_two_workers_write_the_same_bytes_as_one(tmp_path):
    make_folders_dataset(tmp_path / "root", per_class=3)
    prepare(tmp_path / "root", tmp_path / "one", items_per_shard=2, workers=1)
    prepare(tmp_path / "root", tmp_path / "two", items_per_shard=2, workers=2)
    assert_same_prepared(tmp_path / "one", tmp_path / "two")


def test_rerun_redoes_only_missing_shards_and_removes_temporary_files(tmp_path, caplog):
    make_folders_dataset(tmp_path / "root", per_class=3)
    prepare(tmp_path / "root", tmp_path / "clean", items_per_shard=2)
    prepare(tmp_path / "root", tmp_path / "out", items_per_shard=2)
    os.remove(tmp_path / "out/train/shard-00001-of-00003.tfrecord")
    os.remove(tmp_path / "out/train/shard-00002-of-00003.json")
    with open(tmp_path / "out/train/shard-00001-of-00003.tfrecord.tmp", "wb") as file:
        file.write(b"half a shard")
    caplog.set_level("INFO")
    prepare(tmp_path / "root", tmp_path / "out", items_per_shard=2)
    assert "1 of 3 shard(s) reused" in caplog.text
    assert_same_prepared(tmp_path / "clean", tmp_path / "out")


def test_rerun_with_other_parameters_replaces_every_shard(tmp_path):
    make_folders_dataset(tmp_path / "root", per_class=3)
    prepare(tmp_path / "root", tmp_path / "out", items_per_shard=2)
    manifest = prepare(tmp_path / "root", tmp_path / "out", items_per_shard=4, size=8)
    prepare(tmp_path / "root", tmp_path / "clean", items_per_shard=4, size=8)
    assert manifest["clip_shape"] == [4, 8, 8, 3]
    assert_same_prepared(tmp_path / "clean", tmp_path / "out")


def run_cli(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "data_prep", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, **kwargs)


def interrupt_a_running_prepare(tmp_path, signal_number, workers):
    """Start `python -m data_prep prepare`, send a signal once a shard is published."""
    # Larger videos than elsewhere: each item takes tens of ms, so the signal lands mid-run.
    for index in range(12):
        write_video(tmp_path / "root" / "ab"[index % 2] / f"v{index}.avi", 48, height=120,
                    width=160)
    arguments = ["prepare", "--layout", "folders", "--root", tmp_path / "root", "--frames", 4,
                 "--size", 16, "--items-per-shard", 1, "--workers", workers, "--no-progress",
                 "--out", tmp_path / "out"]
    # PYTHONFAULTHANDLER: should it ever hang, SIGABRT prints where.
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", PYTHONFAULTHANDLER="1")
    process = subprocess.Popen([sys.executable, "-m", "data_prep", *map(str, arguments)],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    split_dir = tmp_path / "out" / "train"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.isdir(split_dir) and any(n.endswith(".json") for n in os.listdir(split_dir)):
            break
        time.sleep(0.01)
    process.send_signal(signal_number)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _, stderr = process.communicate()
        pytest.fail(f"prepare did not stop within 60 s of signal {signal_number}:\n{stderr}")
    assert not os.path.exists(tmp_path / "out/manifest.json"), \
        f"signalled too late to test: {stderr}"
    return arguments, process.returncode, stderr


@pytest.mark.slow
def test_resume_after_sigkill_equals_a_clean_run(tmp_path):
    arguments, returncode, _ = interrupt_a_running_prepare(tmp_path, signal.SIGKILL, 1)
    assert returncode == -signal.SIGKILL
    result = run_cli(*arguments)
    assert result.returncode == 0, result.stderr
    assert "shard(s) reused" in result.stderr
    prepare(tmp_path / "root", tmp_path / "clean", items_per_shard=1)
    assert_same_prepared(tmp_path / "clean", tmp_path / "out")
    assert not [name for name in shard_files(tmp_path / "out") if is_temporary(name)]


@pytest.mark.slow
def test_ctrl_c_exits_130_without_half_written_files_then_resumes(tmp_path):
    _, returncode, stderr = interrupt_a_running_prepare(tmp_path, signal.SIGINT, 2)
    assert returncode == 130, stderr
    assert "interrupted (rerun the same command to resume)" in stderr.splitlines(), stderr
    assert "Traceback" not in stderr, stderr
    assert not [name for name in shard_files(tmp_path / "out") if is_temporary(name)]
    prepare(tmp_path / "root", tmp_path / "out", items_per_shard=1)
    prepare(tmp_path / "root", tmp_path / "clean", items_per_shard=1)
    assert_same_prepared(tmp_path / "clean", tmp_path / "out")


def test_cli_config_points_to_the_one_config_loader(tmp_path, capsys):
    config = write_text(tmp_path / "experiment.yaml", "data:\n  layout: folders\n")
    assert main(["prepare", "--config", config, "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"python train.py --config {config} --prepare-only" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["dotdot", "absolute", "missing", "bad-flag", "no-root"])
def test_cli_user_errors_are_one_line_exit_2(tmp_path, case):
    make_folders_dataset(tmp_path / "root", per_class=1)
    entry = {"dotdot": "../outside/a.avi", "absolute": "/etc/passwd",
             "missing": "a/absent.avi"}.get(case, "a/item0.avi")
    listing = write_text(tmp_path / "train.csv", f"{entry},a\n")
    arguments = ["prepare", "--layout", "csv", "--root", tmp_path / "root", "--list",
                 f"train={listing}", "--out", tmp_path / "out", "--frames", 4, "--size", 8]
    if case == "bad-flag":
        arguments += ["--sampling", "dense"]
    if case == "no-root":
        arguments[arguments.index("--root") + 1] = tmp_path / "absent"
    result = run_cli(*arguments)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    if case in ("dotdot", "absolute", "missing"):
        assert entry in lines[0]


@pytest.mark.slow
def test_workers_started_from_a_tensorflow_script_do_not_load_it(tmp_path):
    script = write_text(tmp_path / "train_like.py",
                        "import sys\nimport tensorflow\n"
                        "from data_prep.workers import worker_pool\n"
                        "if __name__ == '__main__':\n"
                        "    with worker_pool(2) as pool:\n"
                        "        print(*pool.map_ordered(eval, [\"'tensorflow' in "
                        "__import__('sys').modules\"] * 2, on_crash=None))\n")
    result = subprocess.run([sys.executable, script], cwd=REPO, capture_output=True,
                            text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.stdout.strip() == "False False", result.stderr


@pytest.mark.slow
def test_data_prep_modules_do_not_import_tensorflow():
    code = ("import sys, data_prep, data_prep.prepare, data_prep.decode, data_prep.sources; "
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")
def test_h264_and_ffv1_videos_prepare(tmp_path):
    write_video(tmp_path / "root/a/x.h264.mp4", 9)
    write_video(tmp_path / "root/b/y.mkv", 9)
    manifest = prepare(tmp_path / "root", tmp_path / "out")
    assert manifest["splits"]["train"]["videos"] == 2 and manifest["skipped"] == []


# --- data faults (docs/RELIABILITY.md) ----------------------------------------------------


def test_unreadable_image_inside_a_frame_folder_skips_that_item(tmp_path):
    make_folders_dataset(tmp_path / "root", per_class=1, kind="frames")
    broken = tmp_path / "root/b/item0"
    for name in os.listdir(broken):  # every frame unreadable, so a sampled one surely is
        with open(broken / name, "wb") as file:
            file.write(b"not a png")
    manifest = prepare(tmp_path / "root", tmp_path / "out")
    assert [entry["path"] for entry in manifest["skipped"]] == ["b/item0"]
    assert manifest["skipped"][0]["reason"]
    assert manifest["splits"]["train"]["videos"] == 1


@pytest.mark.parametrize("shape", [(8,), (8, 6), (2, 8, 6, 3, 1)])
def test_npy_of_the_wrong_rank_is_skipped_with_its_shape(tmp_path, shape):
    make_folders_dataset(tmp_path / "root", per_class=1, kind="npy")
    np.save(tmp_path / "root/b/bad.npy", np.zeros(shape, np.uint8))
    manifest = prepare(tmp_path / "root", tmp_path / "out")
    assert [entry["path"] for entry in manifest["skipped"]] == ["b/bad.npy"]
    assert manifest["splits"]["train"]["videos"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("case", ["under_a_file", "read_only_parent", "split_is_a_file"])
def test_out_that_cannot_be_written_is_one_line_exit_2(tmp_path, case):
    if case == "read_only_parent" and os.geteuid() == 0:
        pytest.skip("root writes into read-only directories; the other cases cover root")
    make_folders_dataset(tmp_path / "root", per_class=1)
    (tmp_path / "a_file").write_text("not a directory")
    out, named = {"under_a_file": (tmp_path / "a_file" / "out", "a_file"),
                  "read_only_parent": (tmp_path / "read_only" / "out", "read_only"),
                  "split_is_a_file": (tmp_path / "out", "out/train")}[case]
    if case == "read_only_parent":
        (tmp_path / "read_only").mkdir(mode=0o500)
    if case == "split_is_a_file":
        out.mkdir()
        (out / "train").write_text("not a directory")
    try:
        result = run_cli("prepare", "--layout", "folders", "--root", tmp_path / "root",
                         "--frames", 4, "--size", 16, "--workers", 1, "--no-progress",
                         "--out", out)
    finally:
        if case == "read_only_parent":
            os.chmod(tmp_path / "read_only", 0o700)  # so that pytest can delete tmp_path
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Expected `out"), result.stderr
    assert named in lines[0] and "Received: out" in lines[0]
    # Nothing touched: the file stays, no directory appeared.
    assert (tmp_path / "a_file").read_text() == "not a directory"
    if case == "read_only_parent":
        assert os.listdir(tmp_path / "read_only") == []
    if case == "split_is_a_file":
        assert sorted(os.listdir(out)) == ["train"]
        assert (out / "train").read_text() == "not a directory"


def make_rawframes(tmp_path, template="img_{:05}.jpg", start_index=1):
    """A rawframe tree of RGB and grey flow frames, as MMAction2's extract_frames writes it:
    `jump/a` holds 12 RGB frames (and 12 x/y flow frames of another size)."""
    root = tmp_path / "rawframes"
    write_rawframes(root / "jump/a", 12, template=template, start_index=start_index)
    write_rawframes(root / "run/b", 9, template=template, start_index=start_index)
    return root


@pytest.mark.parametrize("form,template,start_index", [
    ("plain", "img_{:05}.jpg", 1),
    ("offset", "img_{:05}.jpg", 1),
    ("plain", "frame{:04d}.png", 0),
    ("multi", "img_{:05}.jpg", 1),
])
def test_rawframes_clips_hold_the_listed_frames_through_the_template(
        tmp_path, form, template, start_index):
    root = make_rawframes(tmp_path, template, start_index)
    rows = {"plain": "jump/a 10 0\nrun/b 9 1\n",  # total_frames 10 < the 12 on disk
            "offset": "jump/a 2 10 0\njump/a 0 4 1\n",
            "multi": "jump/a 10 0 1\nrun/b 9 1\n"}[form]
    listing = write_text(tmp_path / "train.txt", rows, crlf=True)
    extra = {"multi": {"multi_label": True, "num_classes": 2},
             "offset": {"with_offset": True}}.get(form, {})
    manifest = prepare(root, tmp_path / "out", frames=5, size=8, layout="rawframes",
                       lists={"train": listing}, filename_template=template,
                       start_index=start_index, clips_per_video=2, **extra)
    assert manifest["clip_shape"] == [5, 8, 8, 3] and manifest["skipped"] == []
    _, records = read_records(tmp_path / "out", "train")
    by_item = {}
    for record in records:
        by_item.setdefault(record["item_id"], []).append(raw_clip(record,
                                                                  manifest["clip_shape"]))
    # Frame t of a folder is frame_rgb(t - start_index): the sampled indices plus the offset.
    expected = {"plain": {"jump/a": (10, 0), "run/b": (9, 0)},
                "offset": {"jump/a@2": (10, 2), "jump/a@0": (4, 0)},
                "multi": {"jump/a": (10, 0), "run/b": (9, 0)}}[form]
    assert sorted(by_item) == sorted(expected)
    for item_id, (total, offset) in expected.items():
        np.testing.assert_array_equal(
            frame_index_of(np.stack(by_item[item_id])),
            sample_frame_indices(total, 5, num_clips=2) + offset)
    frames = sum(total for total, _ in expected.values())
    assert manifest["splits"]["train"]["frames_decoded"] == frames
    labels = {record["item_id"]: record["label"] for record in records}
    if form == "multi":
        assert manifest["multi_label"] is True and manifest["num_classes"] == 2
        assert labels == {"jump/a": (0, 1), "run/b": (1,)}
        assert manifest["splits"]["train"]["items_per_class"] == {"0": 1, "1": 2}
    else:
        assert "multi_label" not in manifest
        assert all(isinstance(label, int) for label in labels.values())


@pytest.mark.parametrize("case,reason", [
    ("frame_missing", "1 of the 12 frames img_{:05}.jpg from 1 are not in the folder "
                      "(first: img_00007.jpg)"),
    ("too_many", "2 of the 14 frames img_{:05}.jpg from 1 are not in the folder "
                 "(first: img_00013.jpg)"),
    ("sizes_differ", "frame images differ in size or band count (img_00001.jpg 24x32x3, "
                     "img_00003.jpg 10x10x3)"),
    ("bands_differ", "frame images differ in size or band count (img_00001.jpg 24x32x3, "
                     "img_00005.jpg 24x32x1)"),
    ("zero_frames", "the list gives total_frames 0"),
    ("a_file", "not a frame folder"),
])
def test_rawframe_folders_that_do_not_match_the_list_are_skipped_with_a_reason(
        tmp_path, case, reason):
    root = make_rawframes(tmp_path)
    row = {"too_many": "jump/a 14 0", "zero_frames": "jump/a 0 0"}.get(case, "jump/a 12 0")
    if case == "frame_missing":
        os.remove(root / "jump/a/img_00007.jpg")
    elif case == "sizes_differ":
        cv2.imwrite(str(root / "jump/a/img_00003.jpg"), np.zeros((10, 10, 3), np.uint8))
    elif case == "bands_differ":
        cv2.imwrite(str(root / "jump/a/img_00005.jpg"), np.zeros((24, 32), np.uint8))
    elif case == "a_file":
        row = "jump/file 3 0"
        write_text(root / "jump/file", "not frames")
    listing = write_text(tmp_path / "train.txt", f"{row}\nrun/b 9 1\n")
    manifest = prepare(root, tmp_path / "out", frames=12, size=8, layout="rawframes",
                       lists={"train": listing})
    assert manifest["skipped"] == [{"path": row.split()[0], "reason": reason,
                                    "split": "train"}]
    assert manifest["splits"]["train"]["videos"] == 1
    assert manifest["splits"]["train"]["items_per_class"] == {"1": 1}


def test_multi_label_video_list_prepares_labels_records(tmp_path):
    make_folders_dataset(tmp_path / "root", per_class=1, kind="mp4")
    classes = write_text(tmp_path / "classes.txt", "a\nb\nc\n")
    listing = write_text(tmp_path / "train.txt", "a/item0.mp4 0 2\nb/item0.mp4 1\n")
    manifest = prepare(tmp_path / "root", tmp_path / "out", layout="list",
                       lists={"train": listing}, classes_file=classes, multi_label=True)
    assert manifest["multi_label"] is True and manifest["num_classes"] == 3
    _, records = read_records(tmp_path / "out", "train")
    assert sorted((r["item_id"], r["label"]) for r in records) == [
        ("a/item0.mp4", (0, 2)), ("b/item0.mp4", (1,))]
    assert manifest["splits"]["train"]["items_per_class"] == {"a": 1, "b": 1, "c": 1}


def test_only_present_prepares_what_is_there_and_reports_the_rest(tmp_path, caplog):
    root, splits = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    names = [f"c{i:03d}" for i in range(101)]
    write_text(splits / "classInd.txt", "".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    write_text(splits / "trainlist01.txt", "".join(
        f"{n}/v_{n}_g0{g}_c01.avi {i + 1}\n" for i, n in enumerate(names) for g in (1, 2)))
    write_text(splits / "testlist01.txt", "".join(f"{n}/v_{n}_g03_c01.avi\n" for n in names))
    for name in ("c007", "c100"):
        for g in (1, 2, 3):
            write_video(root / f"{name}/v_{name}_g0{g}_c01.avi", 6)
    with pytest.raises(UserError, match="297 are missing"):
        prepare(root, tmp_path / "out", layout="ucf101", split_dir=str(splits))
    caplog.set_level("INFO")
    manifest = prepare(root, tmp_path / "out", layout="ucf101", split_dir=str(splits),
                       only_present=True)
    assert manifest["classes"] == names
    assert [manifest["splits"][s]["videos"] for s in ("train", "test")] == [4, 2]
    assert manifest["splits"]["test"]["items_per_class"] == {"c007": 1, "c100": 1}
    absent = manifest["absent"]
    assert absent["count"] == 297 and absent["splits"] == {"train": 198, "test": 99}
    assert len(absent["items"]) == 100
    assert absent["items"][0] == {"path": "c000/v_c000_g01_c01.avi", "split": "train"}
    assert manifest["source"]["only_present"] is True
    assert manifest["skipped"] == []
    assert "297 listed item(s) not on disk were left out" in caplog.text
    assert re.search(r"test\s+2\s+2\s+0\s+1\s+99", caplog.text)
    _, records = read_records(tmp_path / "out", "test")
    assert sorted(manifest["classes"][r["label"]] for r in records) == ["c007", "c100"]


def test_cli_rawframes_flags(tmp_path, capsys):
    root = make_rawframes(tmp_path, "rgb_{:03d}.png", 0)
    listing = write_text(tmp_path / "val.txt", "jump/a 1 6 0 1\nrun/b 0 9 2\nrun/gone 0 3 1\n")
    classes = write_text(tmp_path / "classes.txt", "jump\nrun\nswim\n")
    assert main(["prepare", "--layout", "rawframes", "--root", str(root), "--list",
                 f"val={listing}", "--with-offset", "--filename-template", "rgb_{:03d}.png",
                 "--start-index", "0", "--multi-label", "--classes", classes,
                 "--only-present", "--out", str(tmp_path / "out"), "--frames", "3", "--size",
                 "8", "--workers", "1", "--no-progress"]) == 0
    with open(tmp_path / "out/manifest.json") as file:
        manifest = json.load(file)
    assert manifest["splits"]["val"]["videos"] == 2 and manifest["absent"]["count"] == 1
    assert manifest["source"]["filename_template"] == "rgb_{:03d}.png"
    assert manifest["multi_label"] is True
    printed = capsys.readouterr().out
    assert "manifest.json" in printed and "0 skipped, 1 absent (--only-present)" in printed


def test_cli_root_per_split_records_each_root(tmp_path, capsys):
    make_folders_dataset(tmp_path / "train", per_class=1, num_frames=5)
    make_folders_dataset(tmp_path / "val", per_class=1, num_frames=5)
    lists = {name: write_text(tmp_path / f"{name}.txt", "a/item0.avi 0\nb/item0.avi 1\n")
             for name in ("train", "val")}
    assert main(["prepare", "--layout", "list", "--root", f"train={tmp_path / 'train'}",
                 "--root", f"val={tmp_path / 'val'}", "--list", f"train={lists['train']}",
                 "--list", f"val={lists['val']}", "--out", str(tmp_path / "out"),
                 "--frames", "3", "--size", "8", "--workers", "1", "--no-progress"]) == 0
    with open(tmp_path / "out/manifest.json") as file:
        manifest = json.load(file)
    assert manifest["source"]["root"] == {"train": str(tmp_path / "train"),
                                          "val": str(tmp_path / "val")}
    assert {split: info["videos"] for split, info in manifest["splits"].items()} == {
        "train": 2, "val": 2}


def test_cli_refuses_one_root_mixed_with_roots_per_split(tmp_path, capsys):
    make_folders_dataset(tmp_path / "root", per_class=1, num_frames=5)
    assert main(["prepare", "--layout", "folders", "--root", str(tmp_path / "root"),
                 "--root", f"val={tmp_path / 'root'}", "--out", str(tmp_path / "out"),
                 "--frames", "3", "--size", "8"]) == 2
    assert "Expected one --root DIR, or --root SPLIT=DIR for each split" in \
        capsys.readouterr().err


def test_files_that_are_not_media_are_counted_in_the_manifest_and_inspect(tmp_path, caplog):
    from data_prep.contact_sheet import format_manifest_summary

    make_folders_dataset(tmp_path / "root", per_class=1, num_frames=5)
    write_text(tmp_path / "root/a/notes.txt", "FFmpeg would render this text as video\n")
    with caplog.at_level("INFO"):
        manifest = prepare(tmp_path / "root", tmp_path / "out", 3, 8)
    assert manifest["splits"]["train"]["videos"] == 2 and manifest["skipped"] == []
    assert manifest["ignored"] == {"count": 1, "splits": {"train": 1},
                                   "items": [{"path": "a/notes.txt", "split": "train"}]}
    assert "1 file(s) that are not videos, frame folders or arrays were left out" \
        in caplog.text
    assert "ignored (not videos, frame folders or arrays): 1 (train 1): a/notes.txt" in \
        format_manifest_summary(manifest, str(tmp_path / "out"))


# --- format v2: whole items ---------------------------------------------------------------


def _v2_records(out, split="train"):
    import tensorflow as tf

    from data_prep.sequence_records import parse_sequence_record

    manifest = json.load(open(os.path.join(out, "manifest.json")))
    paths = [os.path.join(out, shard) for shard in manifest["splits"][split]["shards"]]
    return manifest, [parse_sequence_record(record) for record in tf.data.TFRecordDataset(paths)]


def test_v2_stores_every_frame_of_each_item_with_the_plan_manifest(tmp_path):
    make_folders_dataset(tmp_path / "root")  # item j of each class: 10 + j frames
    manifest = prepare(tmp_path / "root", tmp_path / "out", frames=None, format="v2")
    assert manifest["format_version"] == 2 and manifest["encoding"] == "jpeg"
    assert manifest["frame_shape"] == [16, 16, 3]
    assert {"fps", "max_frames", "resize"} <= set(manifest)
    assert not {"clip_shape", "clips_per_video", "sampling"} & set(manifest)
    split = manifest["splits"]["train"]
    assert split["videos"] == 4 and split["frames_stored"] == 42 and "clips" not in split
    _, records = _v2_records(tmp_path / "out")
    by_id = {r["item_id"].numpy().decode(): r for r in records}
    assert sorted(by_id) == ["a/item0.avi", "a/item1.avi", "b/item0.avi", "b/item1.avi"]
    assert int(by_id["a/item1.avi"]["num_frames"]) == 11
    assert sorted(int(r["item_index"]) for r in records) == [0, 1, 2, 3]
    assert {manifest["classes"][int(r["labels"][0])] for r in records} == {"a", "b"}


def test_v2_max_frames_and_resize_short_keep_the_aspect(tmp_path):
    make_folders_dataset(tmp_path / "root")
    manifest = prepare(tmp_path / "root", tmp_path / "out", frames=None, format="v2",
                       max_frames=5, resize_short=20, encoding="png")
    _, records = _v2_records(tmp_path / "out")
    assert {int(r["num_frames"]) for r in records} == {5}
    assert manifest["encoding"] == "png" and manifest["resize"] == {"size": None,
                                                                    "resize_short": 20}
    assert manifest["frame_shape"][0] == 20 and manifest["frame_shape"][1] > 20


def test_v2_rerun_reuses_shards_byte_identical(tmp_path):
    make_folders_dataset(tmp_path / "root")
    prepare(tmp_path / "root", tmp_path / "out", frames=None, format="v2")
    shard = tmp_path / "out" / "train" / "shard-00000-of-00001.tfrecord"
    first = shard.read_bytes()
    prepare(tmp_path / "root", tmp_path / "out2", frames=None, format="v2")
    assert (tmp_path / "out2" / "train" / "shard-00000-of-00001.tfrecord").read_bytes() == first
    mtime = os.path.getmtime(shard)
    prepare(tmp_path / "root", tmp_path / "out", frames=None, format="v2")
    assert os.path.getmtime(shard) == mtime  # kept: same fingerprint
    prepare(tmp_path / "root", tmp_path / "out", frames=None, format="v2", max_frames=4)
    assert shard.read_bytes() != first  # max_frames is in the fingerprint


def test_v2_cli_rejects_clip_flags_and_v1_rejects_fps(tmp_path, capsys):
    make_folders_dataset(tmp_path / "root")
    code = main(["prepare", "--layout", "folders", "--root", str(tmp_path / "root"),
                 "--out", str(tmp_path / "out"), "--size", "16", "--format", "v2",
                 "--frames", "8", "--no-progress"])
    assert code == 2 and "--frames only with --format v1" in capsys.readouterr().err
    with pytest.raises(UserError, match="only with format v2"):
        prepare(tmp_path / "root", tmp_path / "out", fps=5.0)
    assert main(["prepare", "--layout", "folders", "--root", str(tmp_path / "root"),
                 "--out", str(tmp_path / "out"), "--size", "16", "--format", "v2",
                 "--workers", "1", "--no-progress"]) == 0
    assert "whole items, frame shape [16, 16, 3], jpeg" in capsys.readouterr().out


@pytest.mark.parametrize("flags, version", [([], 2), (["--frames", "4"], 1),
                                            (["--format", "v1", "--frames", "4"], 1)])
def test_cli_prepares_v2_by_default_and_v1_when_it_names_clips(tmp_path, flags, version):
    make_folders_dataset(tmp_path / "root", per_class=1)
    assert main(["prepare", "--layout", "folders", "--root", str(tmp_path / "root"),
                 "--out", str(tmp_path / "out"), "--size", "16", "--workers", "1",
                 "--no-progress", *flags]) == 0
    manifest = json.load(open(tmp_path / "out" / "manifest.json"))
    assert manifest["format_version"] == version
    assert manifest["encoding"] == ("jpeg" if version == 2 else "raw")


# --- sensor data (format v2, issue 20) --------------------------------------------------------

def _write_sensor_items(root, count=6, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    for index in range(count):
        path = root / ("a" if index % 2 else "b") / f"item{index}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        values = rng.integers(0, 4000, (3, 5, 5, 2)).astype(dtype)
        values[0, 0, 0] = 9999
        np.save(path, values)


def test_a_rerun_reuses_v2_shards_and_their_statistics(tmp_path):
    _write_sensor_items(tmp_path / "root")
    first = prepare(tmp_path / "root", tmp_path / "out", frames=None, size=5,
                    items_per_shard=2)
    stamps = {path: os.path.getmtime(path) for path in (tmp_path / "out" / "train").iterdir()}
    again = prepare(tmp_path / "root", tmp_path / "out", frames=None, size=5,
                    items_per_shard=2)
    assert again["statistics"] == first["statistics"]
    assert stamps == {path: os.path.getmtime(path)
                      for path in (tmp_path / "out" / "train").iterdir()}


def test_items_of_two_dtypes_are_one_error(tmp_path):
    _write_sensor_items(tmp_path / "root", count=2, dtype=np.uint16)
    np.save(tmp_path / "root" / "a" / "float.npy", np.zeros((2, 5, 5, 2), np.float32))
    with pytest.raises(UserError, match="one dtype"):
        prepare(tmp_path / "root", tmp_path / "out", frames=None, size=5)


def test_prepare_flags_of_sensor_data(tmp_path, capsys):
    _write_sensor_items(tmp_path / "root", count=2)
    code = main(["prepare", "--layout", "folders", "--root", str(tmp_path / "root"),
                 "--out", str(tmp_path / "out"), "--size", "5", "--workers", "1",
                 "--no-progress", "--nodata", "9999", "--bands", "1,0",
                 "--to-uint8", "0,4000", "--encoding", "raw"])
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "out" / "manifest.json") as file:
        manifest = json.load(file)
    assert manifest["dtype"] == "uint8" and manifest["frame_shape"] == [5, 5, 2]
    assert manifest["to_uint8"] == {"low": [0.0, 0.0], "high": [4000.0, 4000.0]}
    assert manifest["source"]["bands"] == [1, 0] and manifest["source"]["nodata"] == 9999.0
