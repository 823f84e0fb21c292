"""Tests for data_prep.sources: every layout's split files, as the datasets ship them."""

import dataclasses
import os
import re
import uuid

import pytest

from core import storage
from core.errors import UserError
from core.tensorflow_env import import_tensorflow_quietly
from data_prep.source_spec import DEFAULT_FILENAME_TEMPLATE as DEFAULT_TEMPLATE, SourceSpec
from data_prep.sources import resolve_source
from video_fixtures import copy_to_url, swap_prefix, write_text


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
    source = resolve_source(SourceSpec("folders", str(tmp_path)))
    assert source.classes == ["a_run", "b_walk"]
    assert summary(source) == {"train": [("a_run/frames", "a_run"), ("a_run/x.mp4", "a_run"),
                                         ("b_walk/10.avi", "b_walk"), ("b_walk/2.avi", "b_walk")]}
    assert source.splits["train"][0].path == os.path.join(str(tmp_path), "a_run", "frames")


def test_folders_with_lists_split_items(tmp_path):
    touch(tmp_path, "a/1.avi", "a/2.avi", "b/1.avi")
    train = write_text(tmp_path / "lists/train.txt", "a/1.avi\nb/1.avi,b\n")
    test = write_text(tmp_path / "lists/test.txt", "a/2.avi 0\n", crlf=True)
    source = resolve_source(SourceSpec("folders", str(tmp_path),
                                       lists={"train": train, "test": test}))
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
    source = resolve_source(SourceSpec("ucf101", root, split_dir=splits, split=1))
    assert source.classes == ["ApplyEyeMakeup", "HandstandPushups"]
    assert summary(source) == {
        "train": [("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup"),
                  ("HandstandPushups/v_HandStandPushups_g08_c01.avi", "HandstandPushups")],
        "test": [("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "ApplyEyeMakeup"),
                 ("HandstandPushups/v_HandStandPushups_g01_c01.avi", "HandstandPushups")]}
    assert all(os.path.exists(item.path) for items in source.splits.values() for item in items)


def test_ucf101_split_number_picks_the_lists(tmp_path):
    root, splits = make_ucf101(tmp_path)
    source = resolve_source(SourceSpec("ucf101", root, split_dir=splits, split=2))
    assert [item.item_id for item in source.splits["test"]] == \
        ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"]
    with pytest.raises(UserError, match="trainlist03.txt"):
        resolve_source(SourceSpec("ucf101", root, split_dir=splits, split=3))


def make_hmdb51(tmp_path):
    root, splits = tmp_path / "hmdb51", tmp_path / "splits"
    touch(root, "brush_hair/a_brush_hair_f_nm_np1_ba_goo_0.avi", "brush_hair/b.avi",
          "brush_hair/c.avi", "ride_bike/x_ride_bike_u_cm_np1_fr_med_1.avi", "ride_bike/y.avi")
    write_text(splits / "brush_hair_test_split1.txt",
               "a_brush_hair_f_nm_np1_ba_goo_0.avi 1 \nb.avi 2 \nc.avi 0 \n", crlf=True)
    write_text(splits / "ride_bike_test_split1.txt",
               "x_ride_bike_u_cm_np1_fr_med_1.avi 2 \ny.avi 1 \n")
    write_text(splits / "ride_bike_test_split2.txt", "y.avi 2 \n")
    write_text(splits / "brush_hair_test_split2.txt", "b.avi 1 \n")
    return str(root), str(splits)


def test_hmdb51_underscored_classes_trailing_spaces_and_flags(tmp_path):
    root, splits = make_hmdb51(tmp_path)
    source = resolve_source(SourceSpec("hmdb51", root, split_dir=splits, split=1))
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
    source = resolve_source(SourceSpec("csv", str(tmp_path), lists={"train": train, "test": test}))
    assert source.classes == ["jump", "run"]
    assert summary(source) == {"train": [("v/one, two.avi", "jump"), ("w/c.avi", "run")],
                               "test": [("v/b.avi", "jump")]}


@pytest.mark.parametrize("with_classes", [False, True])
def test_list_layout_zero_based_labels_and_classes_file(tmp_path, with_classes):
    touch(tmp_path, "videos/a.mp4", "videos/b c.mp4", "videos/d.mp4")
    train = write_text(tmp_path / "train_list.txt", "videos/a.mp4 2\nvideos/b c.mp4 0\n")
    classes = write_text(tmp_path / "classes.txt", "abseil\nbake\ncatch\n") \
        if with_classes else None
    source = resolve_source(SourceSpec("list", str(tmp_path), lists={"train": train},
                            classes_file=classes))
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
    source = resolve_source(SourceSpec("kinetics", str(tmp_path),
                            lists={"train": train, "validate": validate}))
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
        resolve_source(SourceSpec(layout, str(root), lists={"train": listing}))
    assert entry in str(raised.value)


def test_symlinked_parent_directory_out_of_root_is_an_error(tmp_path):
    root = tmp_path / "root"
    touch(tmp_path, "outside/secret.avi")
    os.makedirs(root / "a")
    os.symlink(str(tmp_path / "outside"), str(root / "a" / "out"))
    listing = write_text(tmp_path / "list.csv", "a/out/secret.avi,a\n")
    with pytest.raises(UserError, match="resolves to"):
        resolve_source(SourceSpec("csv", str(root), lists={"train": listing}))


def test_missing_listed_files_are_one_error_listing_them(tmp_path):
    touch(tmp_path, "a/here.avi")
    listing = write_text(tmp_path / "train.csv",
                         "a/here.avi,a\na/gone1.avi,a\na/gone2.avi,a\n")
    with pytest.raises(UserError, match="2 are missing.*a/gone1.avi, a/gone2.avi"):
        resolve_source(SourceSpec("csv", str(tmp_path), lists={"train": listing}))


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
        resolve_source(SourceSpec(layout, str(tmp_path), **kwargs))


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(UserError, match="root="):
        resolve_source(SourceSpec("folders", str(tmp_path / "absent")))


@pytest.mark.parametrize("with_offset,row,expected", [
    (False, "clips/jump_1 {total} 1", ("clips/jump_1", (DEFAULT_TEMPLATE, 1, 7), 1)),
    (True, "clips/jump_1 3 {total} 0", ("clips/jump_1@3", (DEFAULT_TEMPLATE, 4, 7), 0)),
])
def test_rawframes_rows_give_template_first_frame_and_count(tmp_path, with_offset, row,
                                                           expected):
    touch(tmp_path, "clips/jump_1/img_00001.jpg", "clips/jump_1/x_00001.jpg")
    listing = write_text(tmp_path / "train.txt", row.format(total=7) + "\n", crlf=True)
    source = resolve_source(SourceSpec("rawframes", str(tmp_path), lists={"train": listing},
                            with_offset=with_offset))
    item, = source.splits["train"]
    assert (item.item_id, item.frame_template, item.label) == expected
    assert source.classes == ["0", "1"][:expected[2] + 1]
    assert source.description["filename_template"] == DEFAULT_TEMPLATE


@pytest.mark.parametrize("layout,row,labels", [
    ("list", "v/test.mp4 0 2 4", (0, 2, 4)),
    ("list", "v/test.mp4 4 4 1", (1, 4)),
    ("rawframes", "v/test.mp4 9 3 0", (0, 3)),
    ("csv", "v/test.mp4,c4;c0 ; c2", (0, 2, 4)),
])
def test_multi_label_rows_give_sorted_label_tuples(tmp_path, layout, row, labels):
    touch(tmp_path, "v/test.mp4")
    listing = write_text(tmp_path / "train.txt", row + "\n")
    classes = write_text(tmp_path / "classes.txt", "".join(f"c{i}\n" for i in range(5)))
    source = resolve_source(SourceSpec(layout, str(tmp_path), lists={"train": listing},
                            classes_file=classes, multi_label=True))
    assert source.multi_label and source.classes == [f"c{i}" for i in range(5)]
    assert [item.label for item in source.splits["train"]] == [labels]


def test_multi_label_list_names_classes_by_num_classes(tmp_path):
    touch(tmp_path, "v/test.mp4")
    listing = write_text(tmp_path / "train.txt", "v/test.mp4 0 2\n")
    source = resolve_source(SourceSpec("list", str(tmp_path), lists={"train": listing},
                            multi_label=True, num_classes=3))
    assert source.classes == ["0", "1", "2"]
    with pytest.raises(UserError, match="--num-classes N or --classes FILE"):
        resolve_source(SourceSpec("list", str(tmp_path), lists={"train": listing},
                                  multi_label=True))
    with pytest.raises(UserError, match=r"labels 0\.\.1 .*train.txt:1.*label=2"):
        resolve_source(SourceSpec("list", str(tmp_path), lists={"train": listing}, multi_label=True,
                       num_classes=2))


@pytest.mark.parametrize("layout,kwargs,row,expected", [
    ("list", {}, "imgs 5 127", "path label"),
    ("list", {}, "v/test.mp4 0 2 4", "path label"),
    ("list", {}, "v/test.mp4", "path label"),
    ("list", {"multi_label": True, "num_classes": 3}, "v/test.mp4", "path label [label"),
    ("rawframes", {}, "imgs 0 5 127", "path total_frames label"),
    ("rawframes", {}, "imgs five 1", "path total_frames label"),
    ("rawframes", {"with_offset": True}, "imgs 5 1", "path offset total_frames label"),
    ("csv", {}, "v/test.mp4", "path,label"),
    ("csv", {"multi_label": True}, "v/test.mp4, ; ", "path,label;label"),
    ("folders", {}, "a/x.avi 5 127", "class/item [label]"),
])
def test_unparsable_rows_name_file_line_and_row_format(tmp_path, layout, kwargs, row,
                                                       expected):
    touch(tmp_path, "v/test.mp4", "a/x.avi", "imgs/img_00001.jpg")
    listing = write_text(tmp_path / "train.txt", "\n" + row + "\n")
    with pytest.raises(UserError, match=re.escape(f"`{expected}") + ".*train.txt:2"
                       "|train.txt:2.*" + re.escape(f"`{expected}")):
        resolve_source(SourceSpec(layout, str(tmp_path), lists={"train": listing}, **kwargs))


@pytest.mark.parametrize("layout,split_file,row", [
    ("ucf101", "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1 2"),
    ("hmdb51", "brush_hair_test_split1.txt", "x_1.avi 5"),
])
def test_unparsable_official_split_rows_name_the_row_format(tmp_path, layout, split_file, row):
    splits = tmp_path / "splits"
    write_text(splits / "classInd.txt", "1 ApplyEyeMakeup\n")
    write_text(splits / split_file, row + "\n")
    write_text(splits / "testlist01.txt", "")
    with pytest.raises(UserError, match=re.escape(split_file) + ":1.*row="):
        resolve_source(SourceSpec(layout, str(tmp_path), split_dir=str(splits)))


@pytest.mark.parametrize("spelling", ["as_given", "real"])
@pytest.mark.parametrize("layout,row", [
    ("csv", "{entry},a"), ("list", "{entry} 0"), ("folders", "{entry}"),
    ("rawframes", "{entry} 4 0")])
def test_absolute_entries_inside_the_root_are_accepted(tmp_path, layout, row, spelling):
    real_root = tmp_path / "real_root"
    touch(real_root, "a/inside.avi")
    os.symlink(str(real_root), str(tmp_path / "root"))  # the root given through a link
    root = tmp_path / "root"
    entry = str((root if spelling == "as_given" else real_root) / "a/inside.avi")
    listing = write_text(tmp_path / "list.txt", row.format(entry=entry) + "\n")
    source = resolve_source(SourceSpec(layout, str(root), lists={"train": listing}))
    assert [item.item_id for item in source.splits["train"]] == ["a/inside.avi"]


def test_absolute_entries_resolve_under_root_slash(tmp_path):
    touch(tmp_path, "a/inside.avi")
    listing = write_text(tmp_path / "list.txt", f"{tmp_path / 'a/inside.avi'} 0\n")
    source = resolve_source(SourceSpec("list", "/", lists={"train": listing}))
    assert source.splits["train"][0].path == str(tmp_path / "a/inside.avi")


def test_absolute_entry_outside_the_root_is_refused_by_name(tmp_path):
    touch(tmp_path, "root/a/in.avi", "elsewhere/a/out.avi")
    entry = str(tmp_path / "elsewhere/a/out.avi")
    listing = write_text(tmp_path / "list.txt", f"{entry} 0\n")
    with pytest.raises(UserError, match="list.txt:1 is an absolute path outside it") as raised:
        resolve_source(SourceSpec("list", str(tmp_path / "root"), lists={"train": listing}))
    assert repr(entry) in str(raised.value)


def make_partial_ucf101(tmp_path, num_classes=101, present=("c003", "c050")):
    """A UCF101-style split of `num_classes` classes, 3 train and 1 test video each, of
    which only the classes in `present` are on disk."""
    root, splits = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    names = [f"c{i:03d}" for i in range(num_classes)]
    write_text(splits / "classInd.txt", "".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    write_text(splits / "trainlist01.txt", "".join(
        f"{n}/v_{n}_g0{g}_c01.avi {i + 1}\n" for i, n in enumerate(names) for g in (1, 2, 3)),
        crlf=True)
    write_text(splits / "testlist01.txt", "".join(f"{n}/v_{n}_g04_c01.avi\n" for n in names))
    for name in present:
        for g in (1, 2, 3, 4):
            touch(root, f"{name}/v_{name}_g0{g}_c01.avi")
    return str(root), str(splits), names


def test_ucf101_with_most_files_absent_is_an_error_unless_only_present(tmp_path):
    root, splits, names = make_partial_ucf101(tmp_path)
    with pytest.raises(UserError, match="396 are missing; only_present"):
        resolve_source(SourceSpec("ucf101", root, split_dir=splits))
    source = resolve_source(SourceSpec("ucf101", root, split_dir=splits, only_present=True))
    assert source.classes == names  # all 101, ids unchanged
    assert {split: sorted({source.classes[item.label] for item in items})
            for split, items in source.splits.items()} == {"train": ["c003", "c050"],
                                                            "test": ["c003", "c050"]}
    assert [len(items) for items in source.splits.values()] == [6, 2]
    assert len(source.absent) == 99 * 4
    assert {"path": "c000/v_c000_g04_c01.avi", "split": "test"} in source.absent
    assert source.description["only_present"] is True


@pytest.mark.parametrize("layout,files,rows,kwargs", [
    ("list", ["v/a.mp4"], "v/a.mp4 0\nv/gone.mp4 1\n", {}),
    ("csv", ["v/a.mp4"], "v/a.mp4,x\nv/gone.mp4,y\n", {}),
    ("folders", ["x/a.mp4", "y/b.mp4"], "x/a.mp4\ny/gone.mp4\n", {}),
    ("rawframes", ["v/a/img_00001.jpg"], "v/a 1 0\nv/gone 3 1\n", {}),
    ("rawframes", ["v/a/img_00001.jpg"], "v/a 1 0 1\nv/gone 3 1\n", {"multi_label": True,
                                                                    "num_classes": 2}),
])
def test_only_present_keeps_existing_items_and_every_class(tmp_path, layout, files, rows,
                                                           kwargs):
    touch(tmp_path, *files)
    listing = write_text(tmp_path / "train.txt", rows)
    with pytest.raises(UserError, match="1 are missing.*gone"):
        resolve_source(SourceSpec(layout, str(tmp_path), lists={"train": listing}, **kwargs))
    source = resolve_source(SourceSpec(layout, str(tmp_path), lists={"train": listing},
                            only_present=True, **kwargs))
    assert len(source.classes) == 2
    assert len(source.splits["train"]) == 1
    assert [entry["split"] for entry in source.absent] == ["train"]
    assert "gone" in source.absent[0]["path"]


def test_hmdb51_only_present(tmp_path):
    touch(tmp_path, "root/brush_hair/x_1.avi")
    splits = tmp_path / "splits"
    write_text(splits / "brush_hair_test_split1.txt", "x_1.avi 1\nx_2.avi 2\n")
    write_text(splits / "ride_bike_test_split1.txt", "y_1.avi 1\n")
    source = resolve_source(SourceSpec("hmdb51", str(tmp_path / "root"), split_dir=str(splits),
                            only_present=True))
    assert source.classes == ["brush_hair", "ride_bike"]
    assert source.absent == [{"path": "brush_hair/x_2.avi", "split": "test"},
                             {"path": "ride_bike/y_1.avi", "split": "train"}]


def test_only_present_with_nothing_present_is_an_error(tmp_path):
    touch(tmp_path, "v/other.mp4")
    listing = write_text(tmp_path / "train.txt", "v/gone.mp4 0\n")
    with pytest.raises(UserError, match="at least one item that exists"):
        resolve_source(SourceSpec("list", str(tmp_path), lists={"train": listing},
                                  only_present=True))


def test_repeated_rows_are_kept_once_with_a_warning(tmp_path, caplog):
    touch(tmp_path, "v/a.mp4", "v/b.mp4")
    listing = write_text(tmp_path / "train.txt", "v/a.mp4 0\nv/b.mp4 1\nv/a.mp4 0\n")
    source = resolve_source(SourceSpec("list", str(tmp_path), lists={"train": listing}))
    assert [item.item_id for item in source.splits["train"]] == ["v/a.mp4", "v/b.mp4"]
    assert "v/a.mp4 is listed twice in split train; keeping it once" in caplog.text


@pytest.mark.parametrize("kwargs,message", [
    (dict(layout="rawframes", filename_template="img.jpg"), "filename_template='img.jpg'"),
    (dict(layout="rawframes", filename_template="{}/../x_{:05}.jpg"), "filename_template="),
    (dict(layout="rawframes", filename_template="{name}.jpg"), "filename_template="),
    (dict(layout="rawframes", start_index=-1), "start_index=-1"),
    (dict(layout="list", start_index=0), "layout='list'"),
    (dict(layout="list", num_classes=0), "num_classes=0"),
    (dict(layout="hmdb51", multi_label=True), "multi_label=True"),
])
def test_bad_list_options_raise_user_error(tmp_path, kwargs, message):
    touch(tmp_path, "v/a.mp4")
    listing = write_text(tmp_path / "train.txt", "v/a.mp4 1 0\n")
    layout = kwargs.pop("layout")
    with pytest.raises(UserError, match="Received:.*" + re.escape(message)):
        resolve_source(SourceSpec(layout, str(tmp_path), lists={"train": listing}, **kwargs))


@pytest.mark.parametrize("row", ["abseiling,abc,10", "abseiling,abc,10,20,train,extra",
                                 "abseiling,abc,ten,20,train"])
def test_unparsable_kinetics_rows_name_file_line_and_row_format(tmp_path, row):
    touch(tmp_path, "abc_000010_000020.mp4")
    listing = write_text(tmp_path / "train.csv",
                         "label,youtube_id,time_start,time_end,split\n" + row + "\n")
    with pytest.raises(UserError, match=r"`label,youtube_id,time_start,time_end,.*train.csv:2"):
        resolve_source(SourceSpec("kinetics", str(tmp_path), lists={"train": listing}))


def test_folders_leave_out_files_that_are_not_media_and_count_them(tmp_path):
    """FFmpeg's `ansi` decoder renders text as frames: a notes.txt must not become an item."""
    touch(tmp_path, "a/1.avi", "a/notes.txt", "b/README", "b/2.npy", "b/frames/0.png",
          "b/poster.jpg")
    source = resolve_source(SourceSpec("folders", str(tmp_path)))
    assert summary(source) == {"train": [("a/1.avi", "a"), ("b/2.npy", "b"),
                                         ("b/frames", "b")]}
    assert sorted(entry["path"] for entry in source.ignored) == ["a/notes.txt", "b/README",
                                                                 "b/poster.jpg"]
    assert {entry["split"] for entry in source.ignored} == {"train"}


def test_listed_files_that_are_not_media_are_left_out_too(tmp_path):
    touch(tmp_path, "v/a.mp4", "v/readme.txt")
    listing = write_text(tmp_path / "train.txt", "v/a.mp4 0\nv/readme.txt 1\n")
    source = resolve_source(SourceSpec("list", str(tmp_path), lists={"train": listing}))
    assert [item.item_id for item in source.splits["train"]] == ["v/a.mp4"]
    assert source.ignored == [{"path": "v/readme.txt", "split": "train"}]


def test_kinetics_clip_is_never_a_text_file_with_its_stem(tmp_path):
    touch(tmp_path, "abc_000001_000011.txt", "def_000002_000012.mp4")
    listing = write_text(tmp_path / "train.csv", "label,youtube_id,time_start,time_end,split\n"
                         "jump,abc,1,11,train\nrun,def,2,12,train\n")
    source = resolve_source(SourceSpec("kinetics", str(tmp_path), lists={"train": listing}))
    assert [item.item_id for item in source.splits["train"]] == ["def_000002_000012.mp4"]
    assert [entry["path"] for entry in source.skipped] == ["abc_000001_000011"]


def test_per_split_roots_resolve_each_list_under_its_own_root(tmp_path):
    touch(tmp_path, "train/v/1.avi", "train/v/2.avi", "val/v/1.avi")
    lists = {"train": write_text(tmp_path / "train.txt", "v/1.avi 0\nv/2.avi 1\n"),
             "val": write_text(tmp_path / "val.txt", "v/1.avi 1\n")}
    roots = {"train": str(tmp_path / "train"), "val": str(tmp_path / "val")}
    source = resolve_source(SourceSpec("list", roots, lists=lists))
    assert [item.path for item in source.splits["val"]] == [str(tmp_path / "val/v/1.avi")]
    assert [item.item_id for item in source.splits["train"]] == ["v/1.avi", "v/2.avi"]
    assert source.description["root"] == roots


def test_per_split_root_still_refuses_entries_that_leave_it(tmp_path):
    touch(tmp_path, "train/v/1.avi", "val/v/1.avi")
    lists = {"train": write_text(tmp_path / "train.txt", "../val/v/1.avi 0\n"),
             "val": write_text(tmp_path / "val.txt", "v/1.avi 0\n")}
    roots = {"train": str(tmp_path / "train"), "val": str(tmp_path / "val")}
    with pytest.raises(UserError, match=r"stay inside the root .*train.*train.txt:1"):
        resolve_source(SourceSpec("list", roots, lists=lists))


@pytest.mark.parametrize("layout,roots,kwargs", [
    ("list", ("train",), {"lists": ("train", "val")}),
    ("list", ("train", "val", "test"), {"lists": ("train", "val")}),
    ("ucf101", ("train", "val"), {}),
])
def test_per_split_roots_must_name_the_splits_of_the_source(tmp_path, layout, roots, kwargs):
    touch(tmp_path, "v/1.avi")
    if "lists" in kwargs:
        kwargs = {"lists": {name: write_text(tmp_path / f"{name}.txt", "v/1.avi 0\n")
                            for name in kwargs["lists"]}}
    else:
        kwargs = {"split_dir": str(tmp_path)}
    with pytest.raises(UserError, match="Expected a root for each split"):
        resolve_source(SourceSpec(layout, {name: str(tmp_path) for name in roots}, **kwargs))


def test_folders_with_a_root_per_split_and_no_lists(tmp_path):
    touch(tmp_path, "train/a/1.avi", "train/b/1.avi", "val/b/2.avi")
    roots = {"train": str(tmp_path / "train"), "val": str(tmp_path / "val")}
    source = resolve_source(SourceSpec("folders", roots))
    assert summary(source) == {"train": [("a/1.avi", "a"), ("b/1.avi", "b")],
                               "val": [("b/2.avi", "b")]}


@pytest.mark.parametrize("kwargs,message", [
    (dict(layout="folders", num_classes=3), "Expected `num_classes` only with the layouts "
                                            "csv, list, rawframes"),
    (dict(layout="kinetics", with_offset=True), "only with the layouts rawframes"),
    (dict(layout="list", root={"train": 3}), "root="),
])
def test_options_a_layout_does_not_read_are_errors(tmp_path, kwargs, message):
    touch(tmp_path, "v/a.mp4")
    listing = write_text(tmp_path / "train.txt", "v/a.mp4 0\n")
    layout = kwargs.pop("layout")
    with pytest.raises(UserError, match=re.escape(message)):
        resolve_source(SourceSpec(layout, kwargs.pop("root", str(tmp_path)),
                                  lists={"train": listing}, **kwargs))



def test_date_sidecars_beside_items_are_neither_items_nor_counted_as_ignored(tmp_path):
    touch(tmp_path, "a/1.npy", "a/1.dates.json", "b/2.npy", "b/2.npy.dates.csv",
          "b/notes.txt")
    source = resolve_source(SourceSpec("folders", str(tmp_path)))
    assert summary(source) == {"train": [("a/1.npy", "a"), ("b/2.npy", "b")]}
    assert [entry["path"] for entry in source.ignored] == ["b/notes.txt"]


# --- a URL root: TensorFlow's in-process ram:// file system stands for gs:// ---------------


@pytest.fixture(scope="module")
def gfile():
    import_tensorflow_quietly()  # only these tests need TensorFlow
    import tensorflow as tf

    return tf.io.gfile


@pytest.fixture
def ram_copy(gfile):
    """copy(local directory) -> a fresh ram:// URL holding the same tree."""
    made = []

    def copy(local):
        url = copy_to_url(local, f"ram://{uuid.uuid4().hex}/{os.path.basename(local)}")
        made.append(url)
        return url

    yield copy
    for url in made:
        gfile.rmtree(url)


def source_as_values(source):
    return {"classes": source.classes, "skipped": source.skipped, "absent": source.absent,
            "ignored": source.ignored, "description": source.description,
            "splits": {split: [dataclasses.astuple(item) for item in items]
                       for split, items in source.splits.items()}}


def folders_tree(data):
    touch(data, "root/b_walk/2.avi", "root/b_walk/notes.txt", "root/a_run/x.mp4",
          "root/a_run/frames/0.png", "root/a_run/1.npy", "root/a_run/1.dates.json",
          "root/.hidden/a.mp4")
    return dict(layout="folders", root=str(data / "root"))


def folders_lists_tree(data):
    touch(data, "root/a/1.avi", "root/a/2.avi", "root/b/1.avi", "root/b/readme.txt")
    lists = {"train": write_text(data / "lists/train.txt", "a/1.avi\nb/1.avi,b\nb/readme.txt\n"),
             "test": write_text(data / "lists/test.txt", "a/2.avi 0\nb/gone.avi\n", crlf=True)}
    return dict(layout="folders", root=str(data / "root"), lists=lists, only_present=True)


def ucf101_tree(data):
    root, splits = make_ucf101(data)
    return dict(layout="ucf101", root=root, split_dir=splits)


def hmdb51_tree(data):
    root, splits = make_hmdb51(data)
    return dict(layout="hmdb51", root=root, split_dir=splits)


def csv_tree(data):
    touch(data, "root/v/one, two.avi", "root/v/b.avi", "root/w/c.avi")
    lists = {"train": write_text(data / "train.csv", 'path,label\n"v/one, two.avi",jump\n'
                                                     "w/c.avi,run\n", crlf=True),
             "test": write_text(data / "test.csv", "v/b.avi,jump\n")}
    return dict(layout="csv", root=str(data / "root"), lists=lists)


def list_tree(data):
    touch(data, "root/videos/a.mp4", "root/videos/b c.mp4", "root/videos/d.mp4")
    lists = {"train": write_text(data / "train_list.txt", "videos/a.mp4 2\nvideos/b c.mp4 0\n"),
             "val": write_text(data / "val_list.txt", "videos/d.mp4 1\n")}
    classes = write_text(data / "classes.txt", "abseil\nbake\ncatch\n")
    return dict(layout="list", root=str(data / "root"), lists=lists, classes_file=classes)


def list_per_split_roots_tree(data):
    touch(data, "train/v/1.avi", "train/v/2.avi", "val/v/1.avi")
    lists = {"train": write_text(data / "train.txt", "v/1.avi 0\nv/2.avi 1\n"),
             "val": write_text(data / "val.txt", "v/1.avi 1\n")}
    return dict(layout="list", root={"train": str(data / "train"), "val": str(data / "val")},
                lists=lists)


def rawframes_tree(data):
    touch(data, "root/clips/jump_1/img_00001.jpg", "root/clips/jump_1/x_00001.jpg",
          "root/clips/run_2/img_00001.jpg")
    lists = {"train": write_text(data / "train.txt", "clips/jump_1 3 7 0\nclips/run_2 0 4 1\n"
                                                     "clips/jump_1 0 3 0\n")}
    return dict(layout="rawframes", root=str(data / "root"), lists=lists, with_offset=True)


def kinetics_tree(data):
    touch(data, "root/train/abseiling/abc_000010_000020.mp4", "root/part2/zzz_000001_000011.webm",
          "root/elsewhere/qqq_000005_000015.mkv", "root/def_000002_000012.txt",
          "root/.trash/gone_000003_000013.mp4")  # a hidden folder is never searched
    header = "label,youtube_id,time_start,time_end,split\n"
    lists = {"train": write_text(data / "train.csv", header + "abseiling,abc,10,20,train\n"
                                 '"passing American football (in game)",zzz,1,11,train\n'
                                 "abseiling,gone,3,13,train\nabseiling,def,2,12,train\n"),
             "validate": write_text(data / "validate.csv",
                                    header + "abseiling,qqq,5,15,validate\n")}
    return dict(layout="kinetics", root=str(data / "root"), lists=lists)


@pytest.mark.parametrize("make_tree", [
    folders_tree, folders_lists_tree, ucf101_tree, hmdb51_tree, csv_tree, list_tree,
    list_per_split_roots_tree, rawframes_tree, kinetics_tree], ids=lambda make: make.__name__)
def test_a_url_root_lists_what_the_same_local_tree_lists(tmp_path, ram_copy, make_tree):
    data = tmp_path / "data"
    local_spec = make_tree(data)
    url = ram_copy(str(data))
    url_spec = swap_prefix(local_spec, str(data), url)
    local = resolve_source(SourceSpec(**local_spec))
    assert any(local.splits.values())
    assert source_as_values(resolve_source(SourceSpec(**url_spec))) == \
        swap_prefix(source_as_values(local), str(data), url)


def test_a_url_root_gives_url_paths_and_root_relative_ids(tmp_path, ram_copy):
    touch(tmp_path / "data", "root/a/1.avi")
    url = ram_copy(str(tmp_path / "data"))
    item, = resolve_source(SourceSpec("folders", f"{url}/root")).splits["train"]
    assert (item.path, item.item_id) == (f"{url}/root/a/1.avi", "a/1.avi")


@pytest.mark.parametrize("entry,message", [
    ("a/../../outside/a/secret.avi", "resolves to ram://"),
    ("/tmp/a/secret.avi", "is an absolute path outside it"),
    ("{url}/outside/a/secret.avi", "is a URL outside it"),
    ("{url}/root/../outside/a/secret.avi", "is a URL outside it"),
    ("ram://another-bucket/root/a/inside.avi", "is a URL outside it"),
    ("gs://bucket/root/a/inside.avi", "is a URL outside it"),
])
def test_entries_leading_outside_a_url_root_are_errors(tmp_path, ram_copy, entry, message):
    touch(tmp_path / "data", "root/a/inside.avi", "outside/a/secret.avi")
    url = ram_copy(str(tmp_path / "data"))
    entry = entry.format(url=url)
    listing = write_text(tmp_path / "list.csv", f"{entry},a\n")
    with pytest.raises(UserError, match=re.escape(f"list.csv:1 {message}")) as raised:
        resolve_source(SourceSpec("csv", f"{url}/root", lists={"train": listing}))
    assert str(raised.value).startswith(
        f"Expected list entries to stay inside the root {url}/root;")
    assert f"Received: entry={entry!r}" in str(raised.value)


def test_a_full_url_inside_a_url_root_is_accepted(tmp_path, ram_copy):
    touch(tmp_path / "data", "root/a/inside.avi")
    url = ram_copy(str(tmp_path / "data"))
    listing = write_text(tmp_path / "list.txt", f"{url}/root/a/./inside.avi 0\n")
    source = resolve_source(SourceSpec("list", f"{url}/root/", lists={"train": listing}))
    assert [(item.item_id, item.path) for item in source.splits["train"]] == \
        [("a/inside.avi", f"{url}/root/a/inside.avi")]


@pytest.mark.parametrize("paths", [
    dict(root="gs://bucket/fields"),
    dict(root="{local}", label_raster="gs://bucket/labels.tif"),
    dict(root="{local}", raster="gs://bucket/fields/stack.tif"),
])
def test_the_raster_layout_refuses_a_url_in_one_line(tmp_path, paths):
    paths = {key: value.format(local=tmp_path) for key, value in paths.items()}
    spec = SourceSpec("raster", **{"raster": "stack.tif", "label_raster": "labels.tif", **paths})
    with pytest.raises(UserError, match=r"^Expected a local \(or mounted\) root for the raster "
                                        r"layout: ") as raised:
        resolve_source(spec)
    name, value = next((key, value) for key, value in paths.items() if "://" in value)
    message = str(raised.value)
    assert message.endswith(f"Received: {name}={value!r}") and "\n" not in message



@pytest.mark.parametrize("layout,row", [("list", "v/{i}.mp4 0"), ("csv", "v/{i}.mp4,a"),
                                        ("folders", "v/{i}.mp4")])
def test_a_url_root_is_listed_per_folder_not_checked_per_item(tmp_path, ram_copy, monkeypatch,
                                                              layout, row):
    """On an object store each exists/isdir is a request: 30 items in one folder must not
    cost 30 of them."""
    touch(tmp_path / "data", *(f"root/v/{i}.mp4" for i in range(30)))
    url = ram_copy(str(tmp_path / "data"))
    listing = write_text(tmp_path / "list.txt", "".join(row.format(i=i) + "\n" for i in range(30)))
    asked = []
    for name in ("exists", "isdir", "isfile"):
        def counted(path, ask=getattr(storage, name)):
            asked.append(path)
            return ask(path)
        monkeypatch.setattr(storage, name, counted)
    source = resolve_source(SourceSpec(layout, f"{url}/root", lists={"train": listing}))
    assert len(source.splits["train"]) == 30
    assert len([path for path in asked if "://" in path]) <= 3, asked
