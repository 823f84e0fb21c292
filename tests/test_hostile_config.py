"""Config, list and manifest files that cannot be bombed: every hostile file ends in one
error naming the file (and the line), in bounded time, and nothing is left behind."""

import json
import os
import time

import pytest

from core.errors import UserError
from data_prep.reader import read_manifest
from data_prep.shards import FORMAT_VERSION, MANIFEST_NAME
from data_prep.source_spec import SourceSpec
from data_prep.sources import resolve_source
from hostile_fixtures import REPO, assert_one_error_line, run_python, tiny_config
from training.config import ConfigError, load_config

DEMO = os.path.join(REPO, "configs", "demo.yaml")


def alias_bomb(levels=30, width=10):
    """A billion-laughs YAML: `levels` anchors, each a list of `width` aliases of the last."""
    lines = ["    a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"    a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return lines


CONFIG_CASES = {
    # name: (bytes of the file after its `_base_` line, words the error must contain)
    "alias_bomb_under_data_synth": (
        ("data:\n  synth:\n" + "\n".join(alias_bomb()) + "\n").encode(),
        ["line 5", "alias *a0 is refused"]),
    "alias_bomb_under_model_options": (
        ("model:\n  options:\n" + "\n".join(alias_bomb()) + "\n").encode(),
        ["line 5", "alias *a0 is refused"]),
    "alias_as_epochs": (b"_x: &big [1, 2, 3]\ntrain:\n  epochs: *big\n",
                        ["line 4", "alias *big is refused"]),
    "nul_byte": (b"train:\n  epochs: 3\x00\n", ["line 3", "control character '\\x00'"]),
    "control_character": (b"name: a\ntrain:\n  optimizer: s\x1bgd\n",
                          ["line 4", "control character '\\x1b'"]),
    "latin_1": ("name: café\n".encode("latin-1"), ["line 2 is not UTF-8", "0xe9"]),
    "binary_garbage": (bytes(range(128, 256)) * 8, ["line 1 is not UTF-8"]),
    "deep_flow_nesting": (("model:\n  options:\n    a: " + "[" * 5000 + "]" * 5000 + "\n")
                          .encode(), ["line 4", "nesting deeper than 32 levels"]),
    "deep_block_nesting": ("".join(f"{'  ' * i}k{i}:\n" for i in range(60)).encode(),
                           ["nesting deeper than 32 levels"]),
    "nan_learning_rate": (b"train:\n  learning_rate: .nan\n",
                          ["train.learning_rate expects a number", "=nan"]),
    "inf_learning_rate": (b"train:\n  learning_rate: .inf\n",
                          ["train.learning_rate expects a number", "=inf"]),
    "nan_momentum": (b"train:\n  momentum: .NaN\n", ["train.momentum expects", "=nan"]),
    "frames_1e8": (b"data:\n  frames: 100000000\n",
                   ["data.frames expects an integer >= 1 and <= 1024"]),
    "a_huge_value_quoted_short": (
        ("train:\n  epochs: [" + ", ".join(["12345"] * 20000) + "]\n").encode(),
        ["train.epochs expects an integer", "<list of 20000 items>"]),
    "oversized_file": (b"# " + b"x" * (300 << 10) + b"\n", ["more than 262144 bytes"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_hostile_config_is_one_config_error_naming_file_and_line_in_under_a_second(
        tmp_path, case):
    content, words = CONFIG_CASES[case]
    path = tmp_path / "hostile.yaml"
    path.write_bytes(b"_base_: " + DEMO.encode() + b"\n" + content
                     if not content.startswith((b"\x80", b"# ")) else content)
    started = time.perf_counter()
    with pytest.raises(ConfigError) as raised:
        load_config(str(path))
    seconds = time.perf_counter() - started
    message = str(raised.value)
    assert message.startswith(f"{path}: ") or str(path) in message, message
    for word in words:
        assert word in message, message
    assert "\n" not in message and len(message) < 500, message[:600]
    # PyYAML parses ~100 kB/s: the 120 kB list takes its time, a bomb must not.
    assert seconds < (5.0 if case == "a_huge_value_quoted_short" else 1.0), seconds


def test_a_config_with_a_bom_reads_like_one_without(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf_base_: " + DEMO.encode() + b"\ntrain:\n  epochs: 2\n")
    assert load_config(str(path)).train.epochs == 2


@pytest.mark.parametrize("override, words", [
    ("data.synth.seed=abc", ["data.synth.seed expects an integer >= 0", "'abc'"]),
    ("data.synth.test_fraction=.nan", ["data.synth.test_fraction expects a finite number"]),
    ("data.synth.frame_size=[64]", ["data.synth.frame_size expects a list of 2"]),
    ("model.options={a: &x [1], b: *x}", ["model"]),  # an alias in --set: never expanded
    ("train.learning_rate=-.inf", ["train.learning_rate expects a number"]),
])
def test_a_hostile_override_is_one_config_error(override, words):
    with pytest.raises(ConfigError) as raised:
        load_config(DEMO, overrides=[override])
    for word in words:
        assert word in str(raised.value), str(raised.value)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["set_seed_abc", "alias_bomb"])
def test_train_py_answers_one_line_at_once_and_leaves_no_run_dir(tmp_path, case):
    config = tiny_config(tmp_path)
    args = ["--set", "data.synth.seed=abc"]
    if case == "alias_bomb":
        bomb = tmp_path / "bomb.yaml"
        bomb.write_text(f"_base_: {config}\ndata:\n  synth:\n" + "\n".join(alias_bomb()) + "\n")
        config, args = str(bomb), []
    run_path = tmp_path / "run"
    result = run_python(["train.py", "--config", config, "--run-dir", str(run_path), *args])
    assert_one_error_line(result, "error: ")
    assert result.seconds < 15, result.seconds  # no TensorFlow import, no expansion
    assert not run_path.exists()
    assert not (tmp_path / "videos").exists()


# --- list files -------------------------------------------------------------------------


def csv_dataset(tmp_path, listing):
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "a" / "v.avi").write_bytes(b"x")
    path = tmp_path / "train.csv"
    path.write_bytes(listing)
    return str(path)


LIST_CASES = {
    "binary_garbage": (os.urandom(64).replace(b"\n", b"") + b"\xff\xfe", "line 1 is not UTF-8"),
    "latin_1": ("a/v.avi,a\na/café.avi,a\n".encode("latin-1"), "line 2 is not UTF-8"),
    "nul_byte": (b"a/v.avi,a\na/v.avi\x00,a\n", "line 2 holds the control character '\\x00'"),
    "field_over_131072_characters": (b"a/v.avi,a\n\"" + b"x" * 140000 + b"\",a\n",
                                     "field larger than field limit"),
}


@pytest.mark.parametrize("case", sorted(LIST_CASES))
def test_a_hostile_list_file_is_one_user_error_naming_file_and_line(tmp_path, case):
    listing, words = LIST_CASES[case]
    path = csv_dataset(tmp_path, listing)
    with pytest.raises(UserError) as raised:
        resolve_source(SourceSpec("csv", str(tmp_path), lists={"train": path}))
    message = str(raised.value)
    assert path in message and words in message, message
    assert "\n" not in message and len(message) < 500


def test_a_list_file_with_a_bom_reads_like_one_without(tmp_path):
    path = csv_dataset(tmp_path, b"\xef\xbb\xbfa/v.avi,a\n")
    source = resolve_source(SourceSpec("csv", str(tmp_path), lists={"train": path}))
    assert source.classes == ["a"]


# --- manifests --------------------------------------------------------------------------


def write_manifest(tmp_path, **changes):
    manifest = {"format_version": FORMAT_VERSION, "classes": ["a", "b"],
                "clip_shape": [4, 16, 16, 3], "encoding": "raw", "clips_per_video": 1,
                "splits": {"train": {"videos": 1, "clips": 1, "shards": ["train/s.tfrecord"]}}}
    manifest.update(changes)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    return str(tmp_path)


@pytest.mark.parametrize("changes, words", [
    (dict(classes=["same"] * 8), "Expected distinct class names"),
    (dict(clip_shape=[4, 16, 16, "3"]), "clip_shape"),
    (dict(clip_shape=[100000, 100000, 100000, 3]), "clip_shape"),
    (dict(encoding="webp"), "encoding"),
    (dict(clips_per_video=0), "clips_per_video"),
    (dict(splits={"train": {"shards": ["../../etc/passwd"]}}), "names another file"),
    (dict(splits={"train": {"shards": ["/data/train/s.tfrecord"]}}), "named relative to"),
])
def test_a_hand_edited_manifest_is_one_user_error_naming_the_key(tmp_path, changes, words):
    with pytest.raises(UserError, match="manifest.json") as raised:
        read_manifest(write_manifest(tmp_path, **changes))
    assert words in str(raised.value)


def test_a_written_manifest_passes(tmp_path):
    assert read_manifest(write_manifest(tmp_path))["classes"] == ["a", "b"]
