"""Tests for data_prep.sources: every layout's split files, as the datasets ship them."""

import os

import pytest

from data_prep.errors import UserError
from data_prep.sources import resolve_source
from video_fixtures import write_text


def touch(root, *relative_paths):
    for relative in relative_paths:
        path = os.path.join(str(root), relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(b"x")


def summary(source):
    return {split: [(item.item_id, source.classes[item.label]) for item in items]
            for split, items in source.splits.items()}


def test_folders_sorted_classes_everything_in_train(tmp_path):
    touch(tmp_path, "b_walk/2.avi", "b_walk/10.avi", "a_run/x.mp4", "a_run/frames/0.png")
    (tmp_path / ".hidden").mkdir()
    touch(tmp_path, "train.csv")
    source = resolve_source("folders", str(tmp_path))
    assert source.classes == ["a_run", "b_walk"]
    assert summary(source) == {"train": [("a_run/frames", "a_run"), ("a_run/x.mp4", "a_run"),
                                         ("b_walk/10.avi", "b_walk"), ("b_walk/2.avi", "b_walk")]}
    assert source.splits["train"][0].path == os.path.join(str(tmp_path), "a_run", "frames")


def test_folders_with_lists_split_items(tmp_path):
    touch(tmp_path, "a/1.avi", "a/2.avi", "b/1.avi")
    train = write_text(tmp_path / "lists/train.txt", "a/1.avi\nb/1.avi,b\n")
    test = write_text(tmp_path / "lists/test.txt", "a/2.avi 0\n", crlf=True)
    source = resolve_source("folders", str(tmp_path), lists={"train": train, "test": test})
    assert summary(source) == {"train": [("a/1.avi", "a"), ("b/1.avi", "b")],
                               "test": [("a/2.avi", "a")]}


def make_ucf101(tmp_path, crlf=True):
    root, splits = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    touch(root, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
          "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
          "HandstandPushups/v_HandStandPushups_g08_c01.avi",
          "HandstandPushups/v_HandStandPushups_g01_c01.avi")
    write_text(splits / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n", crlf)
    write_text(splits / "trainlist01.txt",
               "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
               "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n", crlf)
    write_text(splits / "testlist01.txt",
               "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
               "HandstandPushups/v_HandStandPushups_g01_c01.avi\n", crlf)
    write_text(splits / "trainlist02.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\n")
    write_text(splits / "testlist02.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi\n")
    return str(root), str(splits)


@pytest.mark.parametrize("crlf", [False, True])
def test_ucf101_labels_from_folder_not_stem(tmp_path, crlf):
    root, splits = make_ucf101(tmp_path, crlf)
    source = resolve_source("ucf101", root, split_dir=splits, split=1)
    assert source.classes == ["ApplyEyeMakeup", "HandstandPushups"]
    assert summary(source) == {
        "train": [("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup"),
                  ("HandstandPushups/v_HandStandPushups_g08_c01.avi", "HandstandPushups")],
        "test": [("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "ApplyEyeMakeup"),
                 ("HandstandPushups/v_HandStandPushups_g01_c01.avi", "HandstandPushups")]}
    assert all(os.path.exists(item.path) for items in source.splits.values() for item in items)


def test_ucf101_split_number_picks_the_lists(tmp_path):
    root, splits = make_ucf101(tmp_path)
    source = resolve_source("ucf101", root, split_dir=splits, split=2)
    assert [item.item_id for item in source.splits["test"]] == \
        ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"]
    with pytest.raises(UserError, match="trainlist03.txt"):
        resolve_source("ucf101", root, split_dir=splits, split=3)


def test_hmdb51_underscored_classes_trailing_spaces_and_flags(tmp_path):
    root, splits = tmp_path / "hmdb51", tmp_path / "splits"
    touch(root, "brush_hair/a_brush_hair_f_nm_np1_ba_goo_0.avi", "brush_hair/b.avi",
          "brush_hair/c.avi", "ride_bike/x_ride_bike_u_cm_np1_fr_med_1.avi", "ride_bike/y.avi")
    write_text(splits / "brush_hair_test_split1.txt",
               "a_brush_hair_f_nm_np1_ba_goo_0.avi 1 \nb.avi 2 \nc.avi 0 \n", crlf=True)
    write_text(splits / "ride_bike_test_split1.txt",
               "x_ride_bike_u_cm_np1_fr_med_1.avi 2 \ny.avi 1 \n")
    write_text(splits / "ride_bike_test_split2.txt", "y.avi 2 \n")
    write_text(splits / "brush_hair_test_split2.txt", "b.avi 1 \n")
    source = resolve_source("hmdb51", str(root), split_dir=str(splits), split=1)
    assert source.classes == ["brush_hair", "ride_bike"]
    assert summary(source) == {
        "train": [("brush_hair/a_brush_hair_f_nm_np1_ba_goo_0.avi", "brush_hair"),
                  ("ride_bike/y.avi", "ride_bike")],
        "test": [("brush_hair/b.avi", "brush_hair"),
                 ("ride_bike/x_ride_bike_u_cm_np1_fr_med_1.avi", "ride_bike")]}


@pytest.mark.parametrize("header", ["", "path,label\n"])
def test_csv_rows_path_label_with_optional_header(tmp_path, header):
    touch(tmp_path, "v/one, two.avi", "v/b.avi", "w/c.avi")
    train = write_text(tmp_path / "train.csv", header + '"v/one, two.avi",jump\nw/c.avi,run\n',
                       crlf=True)
    test = write_text(tmp_path / "test.csv", header + "v/b.avi,jump\n")
    source = resolve_source("csv", str(tmp_path), lists={"train": train, "test": test})
    assert source.classes == ["jump", "run"]
    assert summary(source) == {"train": [("v/one, two.avi", "jump"), ("w/c.avi", "run")],
                               "test": [("v/b.avi", "jump")]}


@pytest.mark.parametrize("with_classes", [False, True])
def test_list_layout_zero_based_labels_and_classes_file(tmp_path, with_classes):
    touch(tmp_path, "videos/a.mp4", "videos/b c.mp4", "videos/d.mp4")
    train = write_text(tmp_path / "train_list.txt", "videos/a.mp4 2\nvideos/b c.mp4 0\n")
    classes = write_text(tmp_path / "classes.txt", "abseil\nbake\ncatch\n") \
        if with_classes else None
    source = resolve_source("list", str(tmp_path), lists={"train": train},
                            classes_file=classes)
    names = ["abseil", "bake", "catch"] if with_classes else ["0", "1", "2"]
    assert source.classes == names
    assert summary(source) == {"train": [("videos/a.mp4", names[2]),
                                         ("videos/b c.mp4", names[0])]}


def test_kinetics_indexes_the_tree_and_skips_missing_clips(tmp_path):
    touch(tmp_path, "train/abseiling/abc_000010_000020.mp4",
          "part2/zzz_000001_000011.webm", "elsewhere/qqq_000005_000015.mkv")
    train = write_text(tmp_path / "train.csv",
                       "label,youtube_id,time_start,time_end,split\n"
                       "abseiling,abc,10,20,train\n"
                       '"passing American football (in game)",zzz,1,11,train\n'
                       "abseiling,gone,3,13,train\n", crlf=True)
    validate = write_text(tmp_path / "validate.csv",
                          "label,youtube_id,time_start,time_end,split\n"
                          "abseiling,qqq,5,15,validate\n")
    source = resolve_source("kinetics", str(tmp_path),
                            lists={"train": train, "validate": validate})
    assert source.classes == ["abseiling", "passing American football (in game)"]
    assert summary(source) == {
        "train": [("part2/zzz_000001_000011.webm", "passing American football (in game)"),
                  ("train/abseiling/abc_000010_000020.mp4", "abseiling")],
        "validate": [("elsewhere/qqq_000005_000015.mkv", "abseiling")]}
    assert source.skipped == [{"path": "gone_000003_000013", "split": "train",
                               "reason": "missing file (no such clip under the root)"}]


@pytest.mark.parametrize("layout,row", [
    ("csv", "{entry},a"), ("list", "{entry} 0"), ("folders", "{entry}")])
@pytest.mark.parametrize("entry_kind", ["dotdot", "absolute", "symlink"])
def test_entries_leading_outside_root_are_errors(tmp_path, layout, row, entry_kind):
    root = tmp_path / "root"
    touch(root, "a/inside.avi")
    touch(tmp_path, "outside/a/secret.avi")
    if entry_kind == "dotdot":
        entry = "a/../../outside/a/secret.avi"
    elif entry_kind == "absolute":
        entry = str(tmp_path / "outside/a/secret.avi")
    else:
        os.symlink(str(tmp_path / "outside/a/secret.avi"), str(root / "a/link.avi"))
        entry = "a/link.avi"
    listing = write_text(tmp_path / "list.txt", row.format(entry=entry) + "\n")
    with pytest.raises(UserError, match="list.txt:1") as raised:
        resolve_source(layout, str(root), lists={"train": listing})
    assert entry in str(raised.value)


def test_symlinked_parent_directory_out_of_root_is_an_error(tmp_path):
    root = tmp_path / "root"
    touch(tmp_path, "outside/secret.avi")
    os.makedirs(root / "a")
    os.symlink(str(tmp_path / "outside"), str(root / "a" / "out"))
    listing = write_text(tmp_path / "list.csv", "a/out/secret.avi,a\n")
    with pytest.raises(UserError, match="resolves to"):
        resolve_source("csv", str(root), lists={"train": listing})


def test_missing_listed_files_are_one_error_listing_them(tmp_path):
    touch(tmp_path, "a/here.avi")
    listing = write_text(tmp_path / "train.csv",
                         "a/here.avi,a\na/gone1.avi,a\na/gone2.avi,a\n")
    with pytest.raises(UserError, match="2 are missing.*a/gone1.avi, a/gone2.avi"):
        resolve_source("csv", str(tmp_path), lists={"train": listing})


@pytest.mark.parametrize("kwargs,message", [
    (dict(layout="youtube"), "layout='youtube'"),
    (dict(layout="csv"), "lists=None"),
    (dict(layout="ucf101"), "split_dir=None"),
    (dict(layout="hmdb51", split_dir="."), "split_dir='.'"),
    (dict(layout="csv", lists={"../x": "train.csv"}), "split='../x'"),
    (dict(layout="csv", lists={"train": "absent.csv"}), "absent.csv"),
    (dict(layout="folders", split=0), "split=0"),
])
def test_bad_arguments_raise_user_error(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "a/x.avi")
    write_text(tmp_path / "train.csv", "a/x.avi,a\n")
    layout = kwargs.pop("layout")
    with pytest.raises(UserError, match="Received:.*" + message.replace(".", r"\.")
                       .replace("(", r"\(").replace("[", r"\[")):
        resolve_source(layout, str(tmp_path), **kwargs)


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(UserError, match="root="):
        resolve_source("folders", str(tmp_path / "absent"))
