"""Tests for training.config: merging, overrides, validation and every error path."""

import dataclasses
import glob
import os
import re
import subprocess
import sys
import textwrap

import pytest

from core.errors import UserError
from training import config as config_lib
from training import config_docs, config_files
from training.config import ConfigError, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINIMAL = "data:\n  prepared_dir: prepared\n"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))
    return str(path)


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml"))), ids=os.path.basename
)
def test_shipped_configs_validate_and_round_trip(path, tmp_path):
    config = load_config(path)
    assert config.name == os.path.splitext(os.path.basename(path))[0]
    dumped = str(tmp_path / "config.yaml")
    config_lib.dump_config(config, dumped)
    assert load_config(dumped) == config
    # Configs open with a comment saying what they run.
    with open(path, encoding="utf-8") as f:
        assert f.readline().startswith("# python train.py --config configs/")


def test_shipped_base_pieces_are_one_level_deep():
    for path in glob.glob(os.path.join(REPO, "configs", "_base_", "*.yaml")):
        assert "_base_" not in config_files.read_yaml_file(path), path


def test_defaults_fill_missing_keys(tmp_path):
    config = load_config(write(tmp_path / "c.yaml", MINIMAL))
    assert config.train == config_lib.TrainConfig()
    assert config.data.prepared_dir == "prepared"
    assert config.name == "c"


def test_bases_merge_depth_first_and_later_wins(tmp_path):
    write(tmp_path / "_base_" / "a.yaml", """\
        data:
          prepared_dir: from_a
          frames: 4
        train:
          epochs: 5
          batch_size: 2
    """)
    write(tmp_path / "_base_" / "b.yaml", """\
        train:
          epochs: 7
        model:
          options: {offset_groups: 8, dropout: 0.5}
    """)
    path = write(tmp_path / "top.yaml", """\
        _base_: [_base_/a.yaml, _base_/b.yaml]
        data:
          frames: 6
        model:
          options: {offset_groups: 16}
    """)
    config = load_config(path)
    assert config.data.prepared_dir == "from_a"
    assert config.data.frames == 6  # own key beats the base
    assert config.train.epochs == 7  # the later base beats the earlier
    assert config.train.batch_size == 2
    assert config.model.options == {"offset_groups": 16, "dropout": 0.5}  # mappings merge by key


def test_single_base_as_string(tmp_path):
    write(tmp_path / "base.yaml", MINIMAL + "train:\n  epochs: 3\n")
    config = load_config(write(tmp_path / "top.yaml", "_base_: base.yaml\n"))
    assert config.train.epochs == 3


@pytest.mark.parametrize(
    "override, attribute, expected",
    [
        ("train.epochs=3", ("train", "epochs"), 3),
        ("augment.horizontal_flip=false", ("augment", "horizontal_flip"), False),
        ("train.learning_rate=1e-3", ("train", "learning_rate"), 0.001),
        ("train.learning_rate=2", ("train", "learning_rate"), 2.0),
        ("model.name=r3d_18", ("model", "name"), "r3d_18"),
        ("augment.crop_size=null", ("augment", "crop_size"), None),
        ("data.resize_short=", ("data", "resize_short"), None),
        ("train.step_epochs=[10, 20]", ("train", "step_epochs"), [10, 20]),
        ("model.options.deformable_stages=[3, 4]", ("model", "options"),
         {"deformable_stages": [3, 4]}),
    ],
)
def test_overrides_are_parsed_as_yaml(tmp_path, override, attribute, expected):
    config = load_config(write(tmp_path / "c.yaml", MINIMAL + "train:\n  epochs: 30\n"),
                         overrides=[override])
    section, name = attribute
    assert getattr(getattr(config, section), name) == expected


def test_later_override_wins(tmp_path):
    config = load_config(write(tmp_path / "c.yaml", MINIMAL),
                         overrides=["train.epochs=3", "train.epochs=4"])
    assert config.train.epochs == 4


@pytest.mark.parametrize(
    "files, overrides, message",
    [
        ({"c.yaml": MINIMAL + "train:\n  epochz: 3\n"}, [],
         "c.yaml: unknown key train.epochz — did you mean train.epochs?"),
        ({"c.yaml": MINIMAL + "trian:\n  epochs: 3\n"}, [],
         "c.yaml: unknown key trian — did you mean train?"),
        ({"c.yaml": MINIMAL + "augment:\n  zoom: true\n"}, [],
         "c.yaml: unknown key augment.zoom — valid keys in augment: horizontal_flip"),
        ({"base.yaml": "data:\n  prepared_dir: p\n  frams: 3\n", "c.yaml": "_base_: base.yaml\n"}, [],
         "base.yaml: unknown key data.frams — did you mean data.frames?"),
        ({"c.yaml": MINIMAL + "train:\n  horizontal_flip: false\n"}, [],
         "c.yaml: unknown key train.horizontal_flip — did you mean augment.horizontal_flip?"),
        ({"c.yaml": MINIMAL + "  synth:\n    videos_per_klass: 3\n"}, [],
         "c.yaml: unknown key data.synth.videos_per_klass — did you mean "
         "data.synth.videos_per_class?"),
        ({"c.yaml": MINIMAL}, ["train.batchsize=4"],
         "--set: unknown key train.batchsize — did you mean train.batch_size?"),
        ({"c.yaml": MINIMAL + "train:\n  epochs: ten\n"}, [],
         "c.yaml: train.epochs expects an integer >= 1. Received: train.epochs='ten'"),
        ({"c.yaml": MINIMAL + "train:\n  epochs: 0\n"}, [],
         "train.epochs expects an integer >= 1. Received: train.epochs=0"),
        ({"c.yaml": MINIMAL + "train:\n  epochs: 2.5\n"}, [], "train.epochs expects an integer"),
        ({"c.yaml": MINIMAL + "augment:\n  horizontal_flip: 1\n"}, [],
         "augment.horizontal_flip expects true or false. Received: augment.horizontal_flip=1"),
        ({"c.yaml": MINIMAL}, ["train.optimizer=rmsprop"],
         "--set: train.optimizer expects one of sgd, adam, adamw. "
         "Received: train.optimizer='rmsprop'"),
        ({"c.yaml": MINIMAL}, ["train.label_smoothing=1.0"],
         "train.label_smoothing expects a number >= 0.0 and < 1.0"),
        ({"c.yaml": MINIMAL}, ["data.layout=youtube"], "data.layout expects one of synth, folders"),
        ({"c.yaml": MINIMAL}, ["data.split=4"], "data.split expects an integer >= 1 and <= 3"),
        ({"c.yaml": MINIMAL + "train: 3\n"}, [], "c.yaml: train expects a mapping of keys"),
        ({"c.yaml": "- a\n- b\n"}, [], "c.yaml: expected a mapping of sections at the top"),
        ({"c.yaml": "train:\n  epochs: 3\n"}, [], "data.prepared_dir is required"),
        ({"c.yaml": MINIMAL + "train:\n  epochs: 2\n  warmup_epochs: 3\n"}, [],
         "train.warmup_epochs expects a value <= train.epochs"),
        ({"c.yaml": MINIMAL + "train:\n  schedule: step\n"}, [],
         "train.step_epochs expects increasing integers"),
        ({"c.yaml": "data:\n  prepared_dir: p\n  size: 16\naugment:\n  crop_size: 20\n"}, [],
         "augment.crop_size expects a value <= data.size"),
        ({"c.yaml": MINIMAL + "train:\n  epochs: 3\n  epochs: 4\n"}, [],
         "c.yaml: duplicate key 'epochs' at line 5 (first at line 4)"),
        ({"c.yaml": MINIMAL + "train:\n\tepochs: 3\n"}, [], "c.yaml: tab character at line 4"),
        ({"c.yaml": MINIMAL + "train: [1, 2\n"}, [], "c.yaml: invalid YAML"),
        ({"c.yaml": "_base_: missing.yaml\n"}, [], "c.yaml: _base_ file not found"),
        ({"c.yaml": "_base_: 3\n"}, [], "c.yaml: _base_ expects a path or a list of paths"),
        ({"c.yaml": "_base_: d.yaml\n", "d.yaml": "_base_: c.yaml\n"}, [], "_base_ cycle:"),
        ({"c.yaml": "_base_: c.yaml\n"}, [], "c.yaml: _base_ cycle:"),
        ({"c.yaml": MINIMAL}, ["train.epochs"], "--set expects key.path=value"),
        ({"c.yaml": MINIMAL}, ["train..epochs=3"], "--set expects key.path=value"),
        ({"c.yaml": MINIMAL}, ["train.epochs.x=3"], "--set: train.epochs expects an integer"),
        ({"c.yaml": MINIMAL}, ["data.prepared_dir.x=3"],
         "--set: data.prepared_dir is a value, not a section"),
        ({"c.yaml": MINIMAL}, ["data.multi_label=true"],
         "data.multi_label expects data.layout one of synth, csv, list, rawframes, tfrecord. "
         "Received: data.layout=folders"),
        ({"c.yaml": MINIMAL + "  layout: synth\n  multi_label: true\n  synth:\n"
                   "    multi_label: false\n"}, [],
         "Received: data.multi_label=True, data.synth.multi_label=False"),
        ({"c.yaml": MINIMAL}, ["data.num_classes=0"], "data.num_classes expects an integer >= 1"),
        ({"c.yaml": MINIMAL}, ["data.start_index=-1"], "data.start_index expects an integer >= 0"),
        ({"c.yaml": MINIMAL}, ["train.lr_multipliers={backbon: 0.1}"],
         "--set: train.lr_multipliers expects groups among head, backbone, offsets — did you "
         "mean backbone?. Received: train.lr_multipliers.backbon=0.1"),
        ({"c.yaml": MINIMAL}, ["train.lr_multipliers.offsets=-1"],
         "--set: train.lr_multipliers.offsets expects a number >= 0. "
         "Received: train.lr_multipliers.offsets=-1"),
        ({"c.yaml": MINIMAL}, ["train.freeze_stages=-1"],
         "train.freeze_stages expects an integer >= 0 (or null)"),
        ({"c.yaml": MINIMAL}, ["model.weights=3"], "model.weights expects a string (or null)"),
        ({"c.yaml": MINIMAL}, ["model.weights=a.pth", "model.options.weights=b.pth"],
         "--set: give the weights once, as model.weights"),
        ({"c.yaml": MINIMAL}, ["model.name=r3d18"],
         "--set: model: Unknown model name — did you mean r3d_18? Expected one of"),
        ({"c.yaml": MINIMAL + "model:\n  name: c3d\n  options:\n    dropuot: 0.1\n"}, [],
         "c.yaml: model: Unknown option(s) ['dropuot'] for model 'c3d' — did you mean dropout?"),
        ({"c.yaml": MINIMAL}, ["model.name=s3d", "model.options.modulated=true"],
         "--set: model: Unknown option(s) ['modulated'] for model 's3d'. Expected any of"),
    ],
)
def test_mistakes_raise_config_error_naming_file_and_key(tmp_path, files, overrides, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError) as info:
        # Run from tmp_path so the file names in messages are short and predictable.
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            load_config("c.yaml", overrides=overrides)
        finally:
            os.chdir(cwd)
    assert message in str(info.value)
    assert "\n" not in str(info.value)  # the CLI prints it as one line


def test_fine_tuning_keys_from_set(tmp_path):
    config = load_config(write(tmp_path / "c.yaml", MINIMAL), overrides=[
        "model.weights=r2plus1d_18-91a641e6.pth", "train.freeze_stages=1", "train.freeze_bn=true",
        "train.lr_multipliers.backbone=0.1", "train.lr_multipliers.offsets=0.1"])
    assert config.model.weights == "r2plus1d_18-91a641e6.pth"
    assert (config.train.freeze_stages, config.train.freeze_bn) == (1, True)
    assert config.train.lr_multipliers == {"backbone": 0.1, "offsets": 0.1}


def test_model_mistakes_are_found_without_tensorflow(tmp_path):
    """The model check reads models.catalog (no Keras): a typo answers before TensorFlow loads."""
    path = write(tmp_path / "c.yaml", MINIMAL + "model:\n  name: r3d18\n")
    code = ("import sys\nfrom training.config import ConfigError, load_config\n"
            f"try:\n    load_config({path!r})\nexcept ConfigError as e:\n    print(e)\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'models.build') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert "did you mean r3d_18?" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found. Received: path="):
        load_config(str(tmp_path / "nope.yaml"))


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)


def test_dump_round_trip_keeps_overrides_and_name(tmp_path):
    config = load_config(write(tmp_path / "exp.yaml", MINIMAL),
                         overrides=["train.epochs=2", "model.options.offset_groups=4"])
    dumped = str(tmp_path / "run" / "config.yaml")
    os.makedirs(os.path.dirname(dumped))
    config_lib.dump_config(config, dumped)
    again = load_config(dumped)
    assert again == config and again.name == "exp"


def test_config_reference_lists_every_leaf_key():
    keys = [row[0] for row in config_lib.config_reference()]
    assert "train.epochs" in keys and "data.layout" in keys and "distribute.strategy" in keys
    assert len(keys) == len(set(keys))
    defaults = config_lib.ExperimentConfig()
    assert len(keys) == sum(
        len(dataclasses.fields(getattr(defaults, f.name)))
        if dataclasses.is_dataclass(getattr(defaults, f.name)) else 1
        for f in dataclasses.fields(defaults)
    )


def test_docs_config_table_is_the_schema():
    """docs/TRAINING.md's key table is generated: `python -m training.config_docs` rewrites
    it after a key, default or help changes."""
    assert config_docs.documented_table() == config_docs.reference_table()


def test_writing_the_reference_table_replaces_only_the_table(tmp_path):
    path = tmp_path / "TRAINING.md"
    stale = config_docs.reference_table()[:5] + ["| `train.gone` | `1` | an integer |  |"]
    path.write_text("# T\n\nbefore\n\n" + "\n".join(stale) + "\n\nafter\n", encoding="utf-8")
    assert config_docs.write_reference_table(str(path)) is True
    assert config_docs.documented_table(str(path)) == config_docs.reference_table()
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# T\n\nbefore\n\n| key |") and text.endswith("|\n\nafter\n")
    assert "train.gone" not in text
    assert config_docs.write_reference_table(str(path)) is False  # up to date: untouched


def test_data_prep_options_reach_the_config(tmp_path):
    path = write(tmp_path / "c.yaml", MINIMAL + (
        "  layout: rawframes\n  multi_label: true\n  num_classes: 4\n  only_present: true\n"
        "  filename_template: '{:06}.png'\n  start_index: 0\n  with_offset: true\n"))
    data = load_config(path).data
    assert (data.layout, data.multi_label, data.num_classes, data.only_present) == \
        ("rawframes", True, 4, True)
    assert (data.filename_template, data.start_index, data.with_offset) == ("{:06}.png", 0, True)
    assert "rawframes" in config_lib.LAYOUTS
    defaults = config_lib.DataConfig()
    assert (defaults.multi_label, defaults.num_classes, defaults.filename_template,
            defaults.start_index, defaults.with_offset) == (False, None, "img_{:05}.jpg", 1, False)


def test_source_spec_carries_every_source_key_of_the_config(tmp_path):
    """train.py's early check once passed 4 of the 10 source keys; the spec passes them all."""
    from data_prep.source_spec import SourceSpec

    path = write(tmp_path / "c.yaml", MINIMAL + (
        "  layout: rawframes\n  root: {train: frames/train, val: frames/val}\n"
        "  lists: {train: a.txt, val: b.txt}\n  classes_file: c.txt\n  multi_label: true\n"
        "  num_classes: 4\n  only_present: true\n  filename_template: '{:06}.png'\n"
        "  start_index: 0\n  with_offset: true\n"))
    data = load_config(path).data
    spec = data.source_spec()
    for field in dataclasses.fields(SourceSpec):
        assert getattr(spec, field.name) == getattr(data, field.name), field.name
    assert spec.root_of("val") == "frames/val"


@pytest.mark.parametrize("value,message", [
    ("3", "data.root expects a string or a mapping (or null). Received: data.root=3"),
    ("{train: 3}", "data.root expects a directory or {split name: directory}"),
])
def test_data_root_is_a_directory_or_one_per_split(tmp_path, value, message):
    path = write(tmp_path / "c.yaml", MINIMAL + f"  root: {value}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


@pytest.mark.parametrize("keys", ["  multi_label: true\n", "  synth:\n    multi_label: true\n"])
def test_either_multi_label_key_makes_the_synthetic_demo_multi_label(tmp_path, keys):
    path = write(tmp_path / "c.yaml", MINIMAL + "  layout: synth\n" + keys)
    config = load_config(path)
    assert config.data.multi_label is True and config.data.synth["multi_label"] is True
    config_lib.dump_config(config, str(tmp_path / "resolved.yaml"))
    assert load_config(str(tmp_path / "resolved.yaml")).data == config.data


@pytest.mark.parametrize(
    "child, overrides, expected",
    [
        ("", ["data.size=112"], 98),  # 28 of 32 stays 7/8 of the size
        ("", ["data.size=112", "augment.crop_size=100"], 100),  # chosen in the same place
        ("", ["augment.crop_size=20", "data.size=64"], 20),
        ("data:\n  size: 64\n", [], 56),  # a later file changes the size
        ("data:\n  size: 64\naugment:\n  crop_size: 30\n", [], 30),
        ("data:\n  size: 64\n", ["data.size=16"], 14),  # 56 of 64 -> 14 of 16
        ("", [], 28),
        ("data:\n  size: 32\n", [], 28),  # the same size: nothing to follow
    ],
)
def test_base_crop_follows_a_later_size_change(tmp_path, child, overrides, expected, caplog):
    write(tmp_path / "base.yaml", "data:\n  prepared_dir: p\n  size: 32\naugment:\n  crop_size: 28\n")
    path = write(tmp_path / "c.yaml", "_base_: base.yaml\n" + child)
    with caplog.at_level("INFO", logger="training.config_files"):
        config = load_config(path, overrides=overrides)
    assert config.augment.crop_size == expected
    if expected not in (28, 30, 100, 20):
        assert "augment.crop_size follows: " in caplog.text and f"-> {expected}" in caplog.text
