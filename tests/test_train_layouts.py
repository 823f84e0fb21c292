"""Every layout and list option, from a fresh state, through train.py (issue 18).

Each case writes a tiny dataset (2 classes, 2-3 real items a split: MJPG videos from
cv2.VideoWriter, frame folders, rawframe folders) and the `data:` section a user would write
for it, with no prepared directory yet. Three tiers:

- in-process, fast: train.py's early check (`check_data_sources`, the one that dropped
  `multi_label` and `with_offset` before `SourceSpec`) accepts every case, before TensorFlow;
- `train.py --config X` in a subprocess (slow), one run per distinct path: single-label
  folders, multi-label MMAction2 list, rawframes with offsets (the two failures of issue 18);
- `train.main(["--config", X, "--prepare-only"])` in-process for every other case: the CLI's
  early check, then the data step of a run. Every case checks the manifest's classes, items
  per split, and what was skipped, absent or ignored.

A subprocess costs a TensorFlow import (~3 s of CPU), a full run ~5 s more; so only the three
trained cases start one (the process a user runs), and the data step of the others runs in
this process, whose TensorFlow is already loaded.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

import train
from core import storage
from training.config import load_config
from training.prepared_data import check_data_sources
from video_fixtures import copy_to_url, swap_prefix, write_rawframes, write_text, write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = 6  # frames of every generated item


def _videos(root, paths):
    for path in paths:
        write_video(os.path.join(root, path), FRAMES)


def folders(tmp_path):
    root = str(tmp_path / "videos")
    _videos(root, ["a/1.avi", "a/2.avi", "b/1.avi", "b/2.avi"])
    write_text(os.path.join(root, "a", "notes.txt"), "not a video\n")  # never an item
    # Without lists everything is split `train`: the run validates on it too.
    return {"layout": "folders", "root": root, "test_split": "train"}, \
        {"classes": ["a", "b"], "videos": {"train": 4}, "ignored": 1}


def folders_with_lists(tmp_path):
    root = str(tmp_path / "videos")
    _videos(root, ["a/1.avi", "a/2.avi", "b/1.avi", "b/2.avi"])
    lists = {"train": write_text(tmp_path / "train.txt", "a/1.avi\nb/1.avi\n"),
             "test": write_text(tmp_path / "test.txt", "a/2.avi 0\nb/2.avi 1\n")}
    return {"layout": "folders", "root": root, "lists": lists}, \
        {"classes": ["a", "b"], "videos": {"train": 2, "test": 2}}


def ucf101(tmp_path):
    root = str(tmp_path / "UCF-101")
    _videos(root, ["Jump/v_Jump_g01_c01.avi", "Jump/v_Jump_g02_c01.avi",
                   "Run/v_Run_g01_c01.avi", "Run/v_Run_g02_c01.avi"])
    splits = tmp_path / "splits"
    write_text(splits / "classInd.txt", "1 Jump\n2 Run\n")
    write_text(splits / "trainlist01.txt", "Jump/v_Jump_g02_c01.avi 1\nRun/v_Run_g02_c01.avi 2\n")
    write_text(splits / "testlist01.txt", "Jump/v_Jump_g01_c01.avi\nRun/v_Run_g01_c01.avi\n")
    return {"layout": "ucf101", "root": root, "split_dir": str(splits), "split": 1}, \
        {"classes": ["Jump", "Run"], "videos": {"train": 2, "test": 2}}


def hmdb51(tmp_path):
    root = str(tmp_path / "hmdb51")
    _videos(root, ["brush_hair/x1.avi", "brush_hair/x2.avi", "cartwheel/y1.avi",
                   "cartwheel/y2.avi"])
    splits = tmp_path / "splits"
    write_text(splits / "brush_hair_test_split1.txt", "x1.avi 1\nx2.avi 2\n")
    write_text(splits / "cartwheel_test_split1.txt", "y1.avi 1\ny2.avi 2\n")
    return {"layout": "hmdb51", "root": root, "split_dir": str(splits)}, \
        {"classes": ["brush_hair", "cartwheel"], "videos": {"train": 2, "test": 2}}


def csv(tmp_path):
    root = str(tmp_path / "videos")
    _videos(root, ["v/1.avi", "v/2.avi", "v/3.avi", "v/4.avi"])
    lists = {"train": write_text(tmp_path / "train.csv", "path,label\nv/1.avi,cat\nv/2.avi,dog\n"),
             "test": write_text(tmp_path / "test.csv", "v/3.avi,cat\nv/4.avi,dog\n")}
    return {"layout": "csv", "root": root, "lists": lists}, \
        {"classes": ["cat", "dog"], "videos": {"train": 2, "test": 2}}


def csv_multi_label(tmp_path):
    root = str(tmp_path / "videos")
    _videos(root, ["v/1.avi", "v/2.avi", "v/3.avi", "v/4.avi"])
    lists = {"train": write_text(tmp_path / "train.csv", "v/1.avi,cat;dog\nv/2.avi,dog\n"),
             "test": write_text(tmp_path / "test.csv", "v/3.avi,cat\nv/4.avi,dog;cat\n")}
    return {"layout": "csv", "root": root, "lists": lists, "multi_label": True}, \
        {"classes": ["cat", "dog"], "videos": {"train": 2, "test": 2}, "multi_label": True}


def mmaction_list(tmp_path):
    root = str(tmp_path / "videos")
    _videos(root, ["v/1.avi", "v/2.avi", "v/3.avi", "v/4.avi"])
    lists = {"train": write_text(tmp_path / "train_list.txt", "v/1.avi 0\nv/2.avi 1\n"),
             "test": write_text(tmp_path / "val_list.txt", "v/3.avi 0\nv/4.avi 1\n")}
    return {"layout": "list", "root": root, "lists": lists}, \
        {"classes": ["0", "1"], "videos": {"train": 2, "test": 2}}


def list_multi_label(tmp_path):
    root = str(tmp_path / "videos")
    _videos(root, ["v/1.avi", "v/2.avi", "v/3.avi", "v/4.avi"])
    lists = {"train": write_text(tmp_path / "train_list.txt", "v/1.avi 0 1\nv/2.avi 1\n"),
             "test": write_text(tmp_path / "val_list.txt", "v/3.avi 0\nv/4.avi 1 0\n")}
    return {"layout": "list", "root": root, "lists": lists, "multi_label": True,
            "num_classes": 2}, \
        {"classes": ["0", "1"], "videos": {"train": 2, "test": 2}, "multi_label": True}


def kinetics(tmp_path):
    root = str(tmp_path / "kinetics")
    _videos(root, ["train/abc_000001_000011.mp4", "train/def_000002_000012.mp4",
                   "val/ghi_000003_000013.mp4", "val/jkl_000004_000014.mp4"])
    # A caption file with a clip's stem is not the clip.
    write_text(os.path.join(root, "train", "abc_000001_000011.txt"), "caption\n")
    header = "label,youtube_id,time_start,time_end,split\n"
    lists = {"train": write_text(tmp_path / "train.csv", header + "jumping,abc,1,11,train\n"
                                 "running,def,2,12,train\nrunning,gone,5,15,train\n"),
             "test": write_text(tmp_path / "val.csv", header + "jumping,ghi,3,13,val\n"
                                "running,jkl,4,14,val\n")}
    return {"layout": "kinetics", "root": root, "lists": lists}, \
        {"classes": ["jumping", "running"], "videos": {"train": 2, "test": 2}, "skipped": 1}


def _rawframe_dirs(root, names, template="img_{:05}.jpg", start_index=1, count=FRAMES):
    for name in names:
        write_rawframes(os.path.join(root, name), count, template=template,
                        start_index=start_index, flow=False)


def rawframes(tmp_path):
    root = str(tmp_path / "rawframes")
    _rawframe_dirs(root, ["c1", "c2", "c3", "c4"])
    lists = {"train": write_text(tmp_path / "train.txt", f"c1 {FRAMES} 0\nc2 {FRAMES} 1\n"),
             "test": write_text(tmp_path / "val.txt", f"c3 {FRAMES} 0\nc4 {FRAMES} 1\n")}
    return {"layout": "rawframes", "root": root, "lists": lists}, \
        {"classes": ["0", "1"], "videos": {"train": 2, "test": 2}}


def rawframes_with_offsets(tmp_path):
    root = str(tmp_path / "rawframes")
    _rawframe_dirs(root, ["c1", "c2"], count=2 * FRAMES)
    # Two segments of one folder are two items (`c1@0`, `c1@6`).
    lists = {"train": write_text(tmp_path / "train.txt",
                                 f"c1 0 {FRAMES} 0\nc2 0 {FRAMES} 1\n"),
             "test": write_text(tmp_path / "val.txt",
                                f"c1 {FRAMES} {FRAMES} 0\nc2 {FRAMES} {FRAMES} 1\n")}
    return {"layout": "rawframes", "root": root, "lists": lists, "with_offset": True}, \
        {"classes": ["0", "1"], "videos": {"train": 2, "test": 2}}


def rawframes_multi_label(tmp_path):
    root = str(tmp_path / "rawframes")
    _rawframe_dirs(root, ["c1", "c2", "c3", "c4"])
    lists = {"train": write_text(tmp_path / "train.txt", f"c1 {FRAMES} 0 1\nc2 {FRAMES} 1\n"),
             "test": write_text(tmp_path / "val.txt", f"c3 {FRAMES} 0\nc4 {FRAMES} 1 0\n")}
    classes = write_text(tmp_path / "classes.txt", "open\nclose\n")
    return {"layout": "rawframes", "root": root, "lists": lists, "multi_label": True,
            "classes_file": classes}, \
        {"classes": ["open", "close"], "videos": {"train": 2, "test": 2}, "multi_label": True}


def templates_and_start_index(tmp_path):
    root = str(tmp_path / "rawframes")
    _rawframe_dirs(root, ["c1", "c2", "c3", "c4"], template="frame_{:04d}.png", start_index=0)
    lists = {"train": write_text(tmp_path / "train.txt", f"c1 {FRAMES} 0\nc2 {FRAMES} 1\n"),
             "test": write_text(tmp_path / "val.txt", f"c3 {FRAMES} 0\nc4 {FRAMES} 1\n")}
    return {"layout": "rawframes", "root": root, "lists": lists,
            "filename_template": "frame_{:04d}.png", "start_index": 0}, \
        {"classes": ["0", "1"], "videos": {"train": 2, "test": 2}}


def only_present(tmp_path):
    root = str(tmp_path / "videos")
    _videos(root, ["v/1.avi", "v/2.avi", "v/3.avi", "v/4.avi"])
    lists = {"train": write_text(tmp_path / "train_list.txt",
                                 "v/1.avi 0\nv/2.avi 1\nv/gone.avi 1\n"),
             "test": write_text(tmp_path / "val_list.txt", "v/3.avi 0\nv/4.avi 1\n")}
    return {"layout": "list", "root": root, "lists": lists, "only_present": True}, \
        {"classes": ["0", "1"], "videos": {"train": 2, "test": 2}, "absent": 1}


def per_split_roots(tmp_path):
    # MMAction2's data_prefix per split: each list relative to its own folder.
    roots = {"train": str(tmp_path / "train"), "test": str(tmp_path / "val")}
    _videos(roots["train"], ["1.avi", "2.avi"])
    _videos(roots["test"], ["1.avi", "2.avi"])
    lists = {"train": write_text(tmp_path / "train_list.txt", "1.avi 0\n2.avi 1\n"),
             "test": write_text(tmp_path / "val_list.txt", "1.avi 0\n2.avi 1\n")}
    return {"layout": "list", "root": roots, "lists": lists}, \
        {"classes": ["0", "1"], "videos": {"train": 2, "test": 2}}


CASES = [folders, folders_with_lists, ucf101, hmdb51, csv, csv_multi_label, mmaction_list,
         list_multi_label, kinetics, rawframes, rawframes_with_offsets, rawframes_multi_label,
         templates_and_start_index, only_present, per_split_roots]
# One full run per distinct path: single-label, and the two failures of issue 18; the
# others stop after the data step (--prepare-only), which is where layouts differ.
TRAINED = [folders, list_multi_label, rawframes_with_offsets]
PREPARED_ONLY = [case for case in CASES if case not in TRAINED]


def write_config(tmp_path, data):
    config = {
        "data": {**data, "prepared_dir": str(tmp_path / "prepared"), "frames": 4, "size": 16,
                 "workers": 1},
        "model": {"name": "small3d"},
        "augment": {"horizontal_flip": False, "random_crop": False},
        "train": {"epochs": 1, "batch_size": 2, "optimizer": "adam", "learning_rate": 0.001},
        "tensorboard": {"histograms": False, "graph": False, "clip_images": 0,
                        "confusion_matrix": False, "deform_offsets": False},
        "evaluate": {"views": "1x1"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def run_train(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)


def assert_manifest(prepared_dir, expected):
    manifest = storage.read_json(storage.join(str(prepared_dir), "manifest.json"))
    assert manifest["classes"] == expected["classes"]
    assert {split: info["videos"] for split, info in manifest["splits"].items()} \
        == expected["videos"]
    assert manifest.get("multi_label", False) is expected.get("multi_label", False)
    assert len(manifest["skipped"]) == expected.get("skipped", 0)
    assert manifest.get("absent", {}).get("count", 0) == expected.get("absent", 0)
    assert manifest.get("ignored", {}).get("count", 0) == expected.get("ignored", 0)
    return manifest


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_early_check_accepts_every_layout_with_its_options(tmp_path, case):
    data, _ = case(tmp_path)
    config = load_config(write_config(tmp_path, data))
    check_data_sources(config.data)  # raised for list+multi_label, rawframes+with_offset


@pytest.mark.parametrize("case", PREPARED_ONLY, ids=lambda case: case.__name__)
def test_prepare_only_from_a_fresh_state(tmp_path, case, capsys):
    data, expected = case(tmp_path)
    assert train.main(["--config", write_config(tmp_path, data), "--prepare-only"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"wrote {tmp_path / 'prepared' / 'manifest.json'}: ") and \
        "error:" not in err, (out, err)
    manifest = assert_manifest(tmp_path / "prepared", expected)
    if isinstance(data["root"], dict):
        assert manifest["source"]["root"] == {split: os.path.abspath(root)
                                              for split, root in data["root"].items()}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_prepare_only_from_a_fresh_state_behind_a_url(tmp_path, case, capsys):
    # The same tree uploaded whole (videos, frame folders, lists) to ram://, TensorFlow's
    # in-process file system (the tf.io.gfile calls of gs://), and prepared there.
    data, expected = case(tmp_path / "local")
    url = copy_to_url(tmp_path / "local", f"ram://layouts-{tmp_path.name}")
    data = swap_prefix(data, str(tmp_path / "local"), url)
    config_path = write_config(tmp_path, data)
    config = yaml.safe_load(open(config_path))
    config["data"]["prepared_dir"] = f"{url}/prepared"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert train.main(["--config", config_path, "--prepare-only"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"wrote {url}/prepared/manifest.json: ") and "error:" not in err, \
        (out, err)
    assert_manifest(f"{url}/prepared", expected)


@pytest.mark.slow
@pytest.mark.parametrize("case", TRAINED, ids=lambda case: case.__name__)
def test_train_from_a_fresh_state(tmp_path, case):
    data, expected = case(tmp_path)
    result = run_train("--config", write_config(tmp_path, data), "--run-dir",
                       str(tmp_path / "run"), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "error:" not in result.stderr
    assert_manifest(tmp_path / "prepared", expected)
    metrics = json.loads(result.stdout.strip().splitlines()[-2])
    assert metrics["videos"] == expected["videos"][data.get("test_split", "test")]


def test_a_dataset_behind_a_url_prepares_trains_and_evaluates_from_there(tmp_path, capsys):
    # ram:// is TensorFlow's in-process file system: the same tf.io.gfile calls as gs://.
    import evaluate
    from core import storage

    data, expected = folders_with_lists(tmp_path)
    url = f"ram://train-layouts-{os.getpid()}"
    data = {**data, "root": copy_to_url(data["root"], f"{url}/videos"),
            "lists": {split: copy_to_url(path, f"{url}/{split}.txt")
                      for split, path in data["lists"].items()}}
    config_path = write_config(tmp_path, data)
    config = yaml.safe_load(open(config_path))
    config["data"]["prepared_dir"] = f"{url}/prepared"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = str(tmp_path / "run")
    assert train.main(["--config", config_path, "--run-dir", run, "--quiet"]) == 0
    manifest = storage.read_json(f"{url}/prepared/manifest.json")
    assert manifest["classes"] == expected["classes"]
    assert {split: info["videos"] for split, info in manifest["splits"].items()} \
        == expected["videos"]
    assert manifest["source"]["root"] == f"{url}/videos"
    assert not os.path.exists(os.path.join(REPO, "ram:"))  # never a local folder
    with open(os.path.join(run, "run.json")) as file:
        assert json.load(file)["prepared_dir"] == f"{url}/prepared"
    capsys.readouterr()
    assert evaluate.main(["--run-dir", run]) == 0
    assert "views 1x1 (shards)" in capsys.readouterr().out
    with open(os.path.join(run, "evaluation", "test-1x1.json")) as file:
        assert json.load(file)["videos"] == 2
