"""End-to-end tests of train.py: a tiny run from nothing, its run directory and TensorBoard
records, resume after SIGKILL, and the error paths (exit 2, one line, no traceback)."""

import collections
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml

import train
import data_prep
from cluster_fixtures import free_ports, worker_env
from metric_reference import reference_metrics_of
from video_fixtures import make_folders_dataset, write_text
from tensorboard.plugins.hparams import api_pb2
from training import input_pipeline, summaries
from training.config import load_config
from training.precision import choose_policy
from training.run_dir import RunDir, read_history
from training.schedules import WarmupSchedule
from training.trainer import resumed_input_seed

TINY_TORCHVISION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torchvision_tiny")

# Multi-process or subprocess runs: the slow tier (`pytest -m "not slow"` skips them).
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(tmp_path, name="tiny", **sections):
    """A 4x16x16 synthetic run: 8 classes x 3 videos, small3d with a deformable last group."""
    config = {
        "data": {"layout": "synth", "root": str(tmp_path / "videos"),
                 "prepared_dir": str(tmp_path / "prepared"), "format": "v1", "frames": 4,
                 "size": 16,
                 "clips_per_video": 2, "workers": 1,
                 "synth": {"videos_per_class": 4, "num_frames": 8, "frame_size": [24, 24]}},
        "model": {"name": "small3d", "options": {"deformable_stages": [5]}},
        "augment": {"horizontal_flip": False, "crop_size": 14},
        "train": {"epochs": 1, "batch_size": 8, "optimizer": "adam", "learning_rate": 0.003,
                  "warmup_epochs": 0.5},
        "tensorboard": {"clip_images": 2},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def assert_video_level(metrics):
    """top-1 and top-5 count whole videos (k of them right), and the loss is finite."""
    for key in ("top1", "top5"):
        hits = metrics[key] * metrics["videos"]
        assert hits == pytest.approx(round(hits)) and 0 <= round(hits) <= metrics["videos"], key
    assert np.isfinite(metrics["loss"]) and metrics["loss"] > 0


def read_events(log_dir):
    """{run: {"scalars": {tag: [(step, value)]}, "images": set, "image_sizes": {tag: [(step,
    width, height)]}, "histograms": set, "hparams": {tag: plugin data}, "graph": bool}} from
    every event file under log_dir."""
    runs = collections.defaultdict(lambda: {"scalars": collections.defaultdict(list),
                                            "images": set(), "histograms": set(),
                                            "image_sizes": collections.defaultdict(list),
                                            "hparams": {}, "graph": False})
    for path in glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True):
        run = os.path.relpath(os.path.dirname(path), log_dir)
        for event in tf.compat.v1.train.summary_iterator(path):
            if event.graph_def:
                runs[run]["graph"] = True
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "scalars":
                    runs[run]["scalars"][value.tag].append(
                        (event.step, float(tf.make_ndarray(value.tensor))))
                elif plugin == "images":
                    runs[run]["images"].add(value.tag)
                    width, height = tf.make_ndarray(value.tensor)[:2]
                    assert int(width) > 0 and int(height) > 0
                    runs[run]["image_sizes"][value.tag].append(
                        (event.step, int(width), int(height)))
                elif plugin == "histograms":
                    runs[run]["histograms"].add(value.tag)
                elif plugin == "hparams":
                    runs[run]["hparams"][value.tag] = summaries.parse_hparams_plugin_data(
                        value.metadata.plugin_data.content)
    return runs


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("e2e")
    config_path = tiny_config(tmp_path)
    run_path = str(tmp_path / "run")
    assert train.main(["--config", config_path, "--run-dir", run_path, "--quiet"]) == 0
    return tmp_path, config_path, RunDir(run_path)


def test_run_writes_every_artifact(finished_run):
    import keras

    tmp_path, config_path, run_dir = finished_run
    for path in (run_dir.config, run_dir.run_info, run_dir.data_manifest, run_dir.classes,
                 run_dir.train_log, run_dir.history, run_dir.curves, run_dir.model,
                 run_dir.metrics,
                 os.path.join(run_dir.checkpoints, "best.keras"),
                 os.path.join(run_dir.checkpoints, "best.json"),
                 os.path.join(run_dir.checkpoints, "last.keras")):
        assert os.path.getsize(path) > 0, path
    assert not os.path.exists(run_dir.backup)  # only kept while a run is unfinished
    # The resolved config reproduces the run's config.
    assert load_config(run_dir.config) == load_config(config_path)
    info = json.load(open(run_dir.run_info))
    manifest = json.load(open(run_dir.data_manifest))
    assert info["status"] == "finished" and info["classes"] == manifest["classes"]
    assert info["input_shape"] == [4, 14, 14, 3]
    assert info["precision"] == choose_policy("auto").policy  # the config's default: auto
    assert f"precision {info['precision']} (train.mixed_precision=auto" in \
        open(run_dir.train_log).read()
    assert open(run_dir.classes).read().split() == manifest["classes"]
    assert "epoch 1/1" in open(run_dir.train_log).read()
    metrics = json.load(open(run_dir.metrics))
    test_videos = manifest["splits"]["test"]["videos"]
    assert metrics["videos"] == test_videos and metrics["clips"] == 2 * test_videos
    assert metrics["top5"] >= metrics["top1"] and metrics["loss"] > 0
    # model.keras reloads (safe mode) and reproduces the video-level metrics, computed again
    # by the loop reference from its clip probabilities.
    model = keras.saving.load_model(run_dir.model, safe_mode=True)
    dataset = input_pipeline.eval_dataset(
        os.path.join(tmp_path, "prepared"), "test",
        clip_shape=manifest["clip_shape"], num_classes=8, batch_size=16, crop_size=14,
        with_item_index=True)
    again = reference_metrics_of(model, dataset, 8)
    for key in ("top1", "top5", "mean_class_accuracy", "clip_top1"):
        assert again[key] == pytest.approx(metrics[key]), key
    # bfloat16 (auto, on a CPU with it) rounds differently with the batch size (16 here).
    assert again["loss"] == pytest.approx(
        metrics["loss"], rel=1e-4 if info["precision"] == "float32" else 1e-3)
    assert data_prep.read_manifest(os.path.join(tmp_path, "prepared")) == manifest


def test_tensorboard_records_read_back(finished_run):
    _, _, run_dir = finished_run
    runs = read_events(run_dir.tensorboard)
    train_run, validation, root = runs["train"], runs["validation"], runs["."]
    for tag in ("epoch_loss", "epoch_top1", "epoch_top5", "learning_rate", "epoch_seconds",
                "clips_per_second"):
        assert [step for step, _ in train_run["scalars"][tag]] == [1], tag
    assert train_run["scalars"]["learning_rate"][0][1] == pytest.approx(0.0)  # cosine's end
    assert train_run["scalars"]["clips_per_second"][0][1] > 0
    # The rate per step, so the half-epoch warmup shows: rising, then the cosine decay.
    steps, rates = zip(*train_run["scalars"]["step_learning_rate"])
    assert list(steps) == list(range(len(steps))) and len(steps) >= 2
    schedule = WarmupSchedule(0.003, total_steps=len(steps),
                              warmup_steps=int(round(0.5 * len(steps))), decay="cosine")
    np.testing.assert_allclose(rates, [float(schedule(step)) for step in steps], rtol=1e-5)
    assert rates[0] < max(rates)
    for tag in ("epoch_loss", "epoch_top1", "epoch_top5"):
        assert len(validation["scalars"][tag]) == 1, tag
    assert {"input_clips/train"} <= train_run["images"]
    assert {"input_clips/validation", "confusion_matrix"} <= validation["images"]
    # Clips of 4 frames of 14 px, enlarged 7x to 98 px under a caption band (1 line, then 2
    # with the prediction after the epoch).
    assert train_run["image_sizes"]["input_clips/train"] == [(0, 4 * 98 + 3 * 2, 98 + 26)]
    assert validation["image_sizes"]["input_clips/validation"] == [
        (0, 4 * 98 + 3 * 2, 98 + 26), (1, 4 * 98 + 3 * 2, 98 + 46)]
    assert train_run["graph"]
    assert any(tag.endswith("/kernel") for tag in train_run["histograms"])
    # The deformable group: offset magnitudes (scalars, histogram) and the field image,
    # at step 0 (initial model) and after the epoch.
    offset_scalars = [t for t in train_run["scalars"] if t.startswith("offsets/")]
    assert offset_scalars and all(len(train_run["scalars"][t]) == 2 for t in offset_scalars)
    assert any(t.startswith("offsets/") for t in train_run["histograms"])
    assert any(t.startswith("offsets/") and t.endswith("/field") for t in train_run["images"])
    # HParams: experiment, session start with the config's values, a successful end, and the
    # final test metrics as scalars of the same run.
    hparams = root["hparams"]
    experiment = hparams[summaries.EXPERIMENT_TAG].experiment
    infos = {info.name: info for info in experiment.hparam_infos}
    # The comparison keys come first and are flagged `differs`: the dashboard sorts those
    # first and ticks the first five.
    shown = ["model.name", "train.learning_rate", "train.batch_size", "train.epochs",
             "data.frames", "train.optimizer", "train.schedule", "train.warmup_epochs",
             "data.size", "augment.crop_size", "model.weights", "model.options.deformable_stages"]
    assert [info.name for info in experiment.hparam_infos][:len(shown)] == shown
    assert all(infos[name].differs for name in shown)
    assert not infos["train.seed"].differs and not infos["augment.horizontal_flip"].differs
    assert infos["train.learning_rate"].type == api_pb2.DATA_TYPE_FLOAT64
    assert infos["train.batch_size"].type == api_pb2.DATA_TYPE_STRING
    assert infos["augment.horizontal_flip"].type == api_pb2.DATA_TYPE_BOOL
    assert ("", "test/top1") in [(m.name.group, m.name.tag) for m in experiment.metric_infos]
    start = hparams[summaries.SESSION_START_TAG].session_start_info
    assert set(start.hparams) == set(infos)
    assert start.hparams["train.learning_rate"].number_value == pytest.approx(0.003)
    assert start.hparams["model.name"].string_value == "small3d"
    assert start.hparams["train.mixed_precision"].string_value == "auto"
    assert start.hparams["train.precision_policy"].string_value == choose_policy("auto").policy
    # Integers as integers (the table prints numbers with 5 digits: 8 would be 8.0000).
    assert start.hparams["train.batch_size"].string_value == "8"
    assert start.hparams["data.frames"].string_value == "4"
    assert start.hparams["model.options.deformable_stages"].string_value == "[5]"
    assert start.hparams["augment.horizontal_flip"].bool_value is False
    assert start.group_name == "tiny/run"  # <config name>/<run directory name>
    assert hparams[summaries.SESSION_END_TAG].session_end_info.status == summaries.STATUS_SUCCESS
    metrics = json.load(open(run_dir.metrics))
    assert root["scalars"]["test/top1"][0][1] == pytest.approx(metrics["top1"])


def run_cli(args, timeout=120):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_resume_after_sigkill_continues_schedule_and_finishes(finished_run):
    tmp_path, config_path, _ = finished_run
    run_path = str(tmp_path / "killed")
    run_dir = RunDir(run_path)
    overrides = ["--set", "train.epochs=3", "--set", "model.options.deformable_stages=[]",
                 "--set", "train.schedule=cosine", "--set", "train.warmup_epochs=1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train.py"), "--config", config_path, "--run-dir",
         run_path, "--quiet", *overrides],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metadata = os.path.join(run_dir.backup, "training_metadata.json")
    deadline = time.time() + 150
    try:
        while time.time() < deadline and process.poll() is None:
            if os.path.exists(metadata) and json.load(open(metadata))["epoch"] >= 1:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        assert os.path.exists(metadata), "no epoch finished in time"
        process.send_signal(signal.SIGKILL)  # mid-epoch 2 (or between epochs), no cleanup
    finally:
        process.kill()
        process.wait()
    assert not run_dir.is_finished()
    killed_after = json.load(open(metadata))["epoch"]

    assert train.main(["--run-dir", run_path, "--resume", "--quiet"]) == 0
    assert run_dir.is_finished() and not os.path.exists(run_dir.backup)
    history = read_history(run_dir)
    epochs = sorted({row["epoch"] for row in history})
    assert epochs == [0, 1, 2]
    # The rate at every epoch end is the uninterrupted schedule at that step: the resumed
    # attempt continued from optimizer.iterations, not from step 0.
    manifest = json.load(open(run_dir.data_manifest))
    steps = int(np.ceil(manifest["splits"]["train"]["videos"] / 8))
    schedule = WarmupSchedule(0.003, 3 * steps, steps, "cosine")
    for row in history:
        expected = float(schedule((row["epoch"] + 1) * steps))
        assert row["learning_rate"] == pytest.approx(expected, rel=1e-5), row
    log = open(run_dir.train_log).read()
    assert "resuming run" in log and killed_after >= 1
    # The resumed epochs read the data in a new seeded order, not the first epoch's again.
    seed = yaml.safe_load(open(run_dir.config))["train"]["seed"]
    assert (f"resuming after epoch {killed_after}: the training input continues with seed "
            f"{resumed_input_seed(seed, killed_after)}") in log
    assert resumed_input_seed(seed, killed_after) != seed
    # Resuming a finished run is a clear one-line error.
    result = run_cli(["--run-dir", run_path, "--resume"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: Run ")
    assert "already finished" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "train.epochz=3"], "unknown key train.epochz — did you mean train.epochs?"),
        (["--set", "distribute.strategy=multi_worker"], "expects the TF_CONFIG environment"),
        (["--set", "model.name=resnet_9000"], "error: --set: model: Unknown model name"),
        (["--set", "model.options.wings=2"], "error: --set: model: Unknown option(s) ['wings']"),
        (["--set", "data.frames=6"], "was prepared with data.frames=4"),
        (["--set", "data.synth.videos=3"], "--set: unknown key data.synth.videos — valid keys: seed"),
        # Weights that are not a checkpoint, do not fit, or are missing; a stage count too high.
        (["--set", f"model.weights={TINY_TORCHVISION}/r3d_18.pth"],
         "error: model: " + f"{TINY_TORCHVISION}/r3d_18.pth: the weights do not fit model 'small3d'"),
        (["--set", f"model.weights={TINY_TORCHVISION}/logits.npz"], "a zip file but not a torch checkpoint"),
        (["--set", "model.weights=/nonexistent/k400.pth"], "model.weights: cannot read the weights file /nonexistent/k400.pth: No such file"),
        (["--set", "train.freeze_stages=6"], "train.freeze_stages: `stages` must be None or an int in 0..5"),
    ],
)
def test_user_errors_exit_2_with_one_line(finished_run, capsys, tmp_path, monkeypatch, extra,
                                          message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    _, config_path, _ = finished_run
    run_path = str(tmp_path / "run")
    if "data.synth" in message:
        extra = [*extra, "--set", f"data.prepared_dir={tmp_path / 'unprepared'}",
                 "--set", f"data.root={tmp_path / 'videos'}"]
    code = train.main(["--config", config_path, "--run-dir", run_path, "--quiet", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert not os.path.exists(run_path)  # found before the run directory is made


def test_cli_errors_print_no_traceback(finished_run, tmp_path):
    _, config_path, run_dir = finished_run
    bad = tmp_path / "bad.yaml"
    bad.write_text("_base_: " + config_path + "\ntrain:\n  epochs: 1\n  epochs: 2\n")
    for args, message in [
        (["--config", str(bad)], "duplicate key 'epochs'"),
        (["--config", config_path, "--run-dir", run_dir.path], "already exists: pass --resume"),
        (["--resume"], "--resume needs the run to continue"),
        (["--config", config_path, "--run-dir", str(tmp_path / "x"), "--resume",
          "--overwrite"], "exclude each other"),
    ]:
        result = run_cli(args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, (args, last)


@pytest.mark.parametrize("case", ["under_a_file", "read_only_parent"])
def test_run_dir_that_cannot_be_written_exits_2_naming_it(finished_run, tmp_path, capsys, case):
    if case == "read_only_parent" and os.geteuid() == 0:
        pytest.skip("root writes into read-only directories; under_a_file covers root")
    _, config_path, _ = finished_run
    parent = tmp_path / "parent"
    if case == "under_a_file":
        parent.write_text("not a directory")
    else:
        parent.mkdir(mode=0o500)
    try:
        code = train.main(["--config", config_path, "--run-dir", str(parent / "run"), "--quiet"])
    finally:
        if case == "read_only_parent":
            os.chmod(parent, 0o700)  # so that pytest can delete tmp_path
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: Expected --run-dir to be a directory that can be created "
                             "and written: ") and err[0].endswith(f"--run-dir {parent / 'run'}")
    assert not os.path.exists(parent / "run")


def test_labels_outside_the_classes_fail_before_training(finished_run, tmp_path, capsys):
    import shutil

    source, config_path, _ = finished_run
    prepared = tmp_path / "prepared"
    shutil.copytree(source / "prepared", prepared)
    manifest = json.load(open(prepared / "manifest.json"))
    manifest["classes"] = manifest["classes"][:5]
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    code = train.main(["--config", config_path, "--run-dir", str(tmp_path / "run"),
                       "--set", f"data.prepared_dir={prepared}"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "labels outside [0, 5)" in err and "Received: labels=[5, 6, 7]" in err
    assert not os.path.exists(tmp_path / "run" / "history.csv")


def test_nan_loss_stops_with_a_clear_message(finished_run, tmp_path, capsys):
    _, config_path, _ = finished_run
    run_path = tmp_path / "nan"
    code = train.main(["--config", config_path, "--run-dir", str(run_path), "--quiet",
                       "--set", "train.optimizer=sgd", "--set", "train.learning_rate=1e30",
                       "--set", "train.warmup_epochs=0", "--set", "train.epochs=2",
                       "--set", "model.options.deformable_stages=[]"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert re.match(r"error: loss became (nan|inf|-inf) at epoch 1, batch \d+; training stopped",
                    err), err
    assert not os.path.exists(run_path / "checkpoints" / "last.keras")
    assert not os.path.exists(run_path / "metrics.json")
    assert not glob.glob(str(run_path / "backup" / "*.h5"))
    # run.json and train.log say how the run ended, in one line.
    info = json.load(open(run_path / "run.json"))
    assert info["status"] == "failed" and info["reason"] == err[len("error: "):]
    assert f"run failed: {info['reason']}" in open(run_path / "train.log").read()


def test_mirrored_strategy_with_mixed_precision_runs(finished_run, tmp_path):
    import keras

    _, config_path, _ = finished_run
    run_dir = RunDir(str(tmp_path / "run"))
    # Its own process, as a user runs it: in this test process, after the NaN and labels
    # tests' in-process runs, the bfloat16 run's loss became NaN at its second step (not
    # reproduced in a fresh process; see the report).
    result = run_cli(["--config", config_path, "--run-dir", run_dir.path, "--quiet",
                      "--set", "distribute.strategy=mirrored",
                      "--set", "train.mixed_precision=true",
                      "--set", "model.options.deformable_stages=[]",
                      "--set", "tensorboard.clip_images=0"])
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.load(open(run_dir.metrics))
    assert_video_level(metrics)
    model = keras.saving.load_model(run_dir.model)
    assert model.layers[-1].name == "logits_float32"  # float32 logits for softmax and top-k
    assert any(layer.compute_dtype == "bfloat16" for layer in model.layers)  # CPU: bfloat16


# By element (v1, one shard) and by file (v2). v1 by file would repeat the by-file cluster
# path; how v1 shard files split between input pipelines is test_reader.py's
# test_input_pipelines_split_the_shard_files_between_them.
@pytest.mark.parametrize("items_per_shard, data_format", [(None, "v1"), (4, "v2")])
def test_two_workers_train_together_and_only_the_chief_writes(finished_run, tmp_path,
                                                               items_per_shard, data_format):
    e2e_path, config_path, _ = finished_run
    run_path = tmp_path / "run"
    # The tiny run's data is one shard per split, so the workers share it by element; with
    # 4 items per shard (6 training shards) each worker reads its own files.
    data_overrides = []
    if items_per_shard:
        from data_prep.prepare import prepare_dataset
        from data_prep.source_spec import SourceSpec

        videos = e2e_path / "videos"
        spec = SourceSpec("csv", str(videos), lists={split: str(videos / f"{split}.csv")
                                                     for split in ("train", "test")})
        # v2: whole items, so each worker draws its clips from the files it reads.
        prepare_dataset(spec, str(tmp_path / "prepared"), None, 16, clips_per_video=2,
                        items_per_shard=items_per_shard, workers=1, show_progress=False,
                        format=data_format)
        data_overrides = ["--set", f"data.prepared_dir={tmp_path / 'prepared'}",
                          "--set", f"data.format={data_format}"]
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        worker_tmp = tmp_path / f"tmp{index}"
        worker_tmp.mkdir()
        env = worker_env(addresses, index, TMPDIR=str(worker_tmp))
        processes.append(subprocess.Popen(
            [sys.executable, os.path.join(REPO, "train.py"), "--config", config_path,
             "--run-dir", str(run_path), "--quiet", "--set", "distribute.strategy=multi_worker",
             "--set", "model.options.deformable_stages=[]", "--set", "tensorboard.clip_images=0",
             # 16 validation clips in batches of 3: the last (1 clip) leaves worker 1 empty.
             "--set", "train.eval_batch_size=3", *data_overrides],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=150))
    finally:
        for process in processes:  # a hung collective fails the test instead of blocking it
            process.kill()
            process.wait()
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, "\n".join([line[:300] for line in err.splitlines()
                                         if "File" in line or "Error" in line][-12:])
    run_dir = RunDir(str(run_path))
    for path in (run_dir.config, run_dir.metrics, run_dir.model, run_dir.history,
                 os.path.join(run_dir.checkpoints, "last.keras"),
                 os.path.join(run_dir.checkpoints, "best.keras")):
        assert os.path.getsize(path) > 0, path
    # Exactly a finished run's files: no backup/, no half-written export or checkpoint.
    assert sorted(os.listdir(run_path)) == [
        "checkpoints", "classes.txt", "config.yaml", "curves.png", "data_manifest.json",
        "export", "history.csv", "metrics.json", "model.keras", "run.json", "tensorboard",
        "train.log"]
    metrics = json.load(open(run_dir.metrics))
    assert_video_level(metrics)
    # Both workers end with one model (BatchNorm statistics averaged too): worker 1's
    # evaluation of the test split, printed on its stdout, is the chief's.
    worker_metrics = json.loads(outputs[1][0].splitlines()[-2])
    for key in ("top1", "top5", "mean_class_accuracy", "loss"):
        assert worker_metrics[key] == pytest.approx(metrics[key], rel=1e-6), key
    # TensorBoard: the epoch's train and validation scalars and the test metrics, once each.
    runs = read_events(run_dir.tensorboard)
    assert [step for step, _ in runs["train"]["scalars"]["epoch_loss"]] == [1]
    assert [step for step, _ in runs["validation"]["scalars"]["epoch_loss"]] == [1]
    assert runs["."]["scalars"]["test/top1"] == [(1, pytest.approx(metrics["top1"]))]
    # The chief's log is the chief's alone: one start, one task line, no worker 1.
    log = open(run_dir.train_log).read()
    assert log.count("starting run") == 1 and "task worker:0 of 2 workers (chief)" in log
    assert "worker:1" not in log
    if items_per_shard:
        assert "sharding the training input by file: 6 shard files over 2 workers" in log
    else:
        assert "1 shard files for 2 workers: sharding by element (DATA)" in log
    assert len(read_history(run_dir)) == 1  # one epoch, one row: nobody appended a second
    # Worker 1 said where it wrote, and that directory is gone; its TMPDIR is empty again.
    worker_out = outputs[1][0]
    assert "run directory of worker:1 (temporary" in worker_out
    worker_dir = worker_out.split("deleted at the end): ")[1].split()[0]
    assert worker_dir.startswith(str(tmp_path / "tmp1")) and not os.path.exists(worker_dir)
    assert os.listdir(tmp_path / "tmp1") == []


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("not json", "TF_CONFIG expects JSON like"),
        ('{"cluster": {"worker": ["h:1"]}}', "TF_CONFIG expects JSON like"),
        ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 1}}',
         "task expects a type (chief or worker) and an index inside"),
        ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "at least one worker"),
    ],
)
def test_bad_tf_config_exits_2_before_any_run_dir(finished_run, capsys, tmp_path, monkeypatch,
                                                  tf_config, message):
    _, config_path, _ = finished_run
    monkeypatch.setenv("TF_CONFIG", tf_config)
    code = train.main(["--config", config_path, "--run-dir", str(tmp_path / "run"),
                       "--set", "distribute.strategy=multi_worker"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and message in err[-1], err
    assert not os.path.exists(tmp_path / "run")


def test_same_config_and_seed_give_the_same_metrics_on_cpu(finished_run, tmp_path):
    _, config_path, _ = finished_run
    metrics = []
    for attempt in range(2):
        run_dir = RunDir(str(tmp_path / f"run{attempt}"))
        # Separate processes, as a user reruns a config: no state carried between the runs.
        result = run_cli(["--config", config_path, "--run-dir", run_dir.path, "--quiet",
                          "--set", "train.epochs=2", "--set", "tensorboard.clip_images=0",
                          "--set", "model.options.deformable_stages=[]"])
        assert result.returncode == 0, result.stderr[-2000:]
        values = json.load(open(run_dir.metrics))
        metrics.append({k: v for k, v in values.items() if "seconds" not in k})
    assert metrics[0] == metrics[1]


# --- train.py --prepare-only: the data step alone, through the one config loader ----------


def test_prepare_only_reads_base_files_and_set_overrides(tmp_path, capsys, caplog):
    make_folders_dataset(tmp_path / "root", per_class=1)
    write_text(tmp_path / "configs/_base_/data.yaml",
               f"data:\n  layout: folders\n  root: {tmp_path / 'root'}\n  format: v1\n"
               "  frames: 3\n")
    config = write_text(tmp_path / "configs/experiment.yaml",
                        "_base_: _base_/data.yaml\n"
                        f"data:\n  prepared_dir: {tmp_path / 'out'}\n  size: 8\n"
                        "  workers: 1\n  train_split: train\n  test_split: train\n"
                        "model:\n  name: small3d\n")
    caplog.set_level("INFO")
    assert train.main(["--config", config, "--set", "data.size=12", "--prepare-only"]) == 0
    with open(tmp_path / "out/manifest.json") as file:
        assert json.load(file)["clip_shape"] == [3, 12, 12, 3]
    assert "frames/s" in caplog.text
    assert "manifest.json" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists() and not os.path.exists("runs/experiment")


def test_prepare_only_generates_the_demo_and_rejects_a_typo_under_data(tmp_path, capsys):
    config = write_text(tmp_path / "demo.yaml",
                        f"data:\n  layout: synth\n  root: {tmp_path / 'videos'}\n"
                        f"  prepared_dir: {tmp_path / 'out'}\n  frames: 3\n  size: 8\n"
                        "  workers: 1\n  synth:\n    seed: 0\n    videos_per_class: 2\n"
                        "    num_frames: 4\n    frame_size: [16, 16]\n    test_fraction: 0.5\n")
    assert train.main(["--config", config, "--prepare-only"]) == 0
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["source"]["layout"] == "csv"
    classes = len(manifest["classes"])
    assert {split: info["videos"] for split, info in manifest["splits"].items()} == \
        {"train": classes, "test": classes}
    capsys.readouterr()
    # `python -m data_prep prepare --config` used to ignore this key; now it is an error.
    assert train.main(["--config", config, "--set", "data.frame=4", "--prepare-only"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "data.frame" in lines[0] and "data.frames" in lines[0], lines


# --- multi-label ----------------------------------------------------------------------------


def test_multi_label_run_reports_mean_average_precision(multi_label_run_path):
    import keras
    from metric_reference import reference_mean_average_precision

    run_dir = RunDir(multi_label_run_path)
    metrics = json.load(open(run_dir.metrics))
    manifest = json.load(open(run_dir.data_manifest))
    assert manifest["multi_label"] is True and metrics["multi_label"] is True
    assert "top1" not in metrics and len(metrics["per_class_ap"]) == 8
    assert metrics["videos"] == manifest["splits"]["test"]["videos"]
    assert 0 <= metrics["mean_average_precision"] <= 1 and metrics["loss"] > 0
    # model.keras reproduces it: sigmoid scores averaged per video, the loop reference's mAP.
    model = keras.saving.load_model(run_dir.model, safe_mode=True)
    dataset = input_pipeline.eval_dataset(
        os.path.dirname(multi_label_run_path) + "/prepared", "test",
        clip_shape=manifest["clip_shape"], num_classes=8, batch_size=16, crop_size=12,
        with_item_index=True)
    sums, targets = {}, {}
    for clips, labels, items in dataset:
        for scores, label, item in zip(tf.sigmoid(model(clips, training=False)).numpy(),
                                       labels.numpy(), items.numpy()):
            sums.setdefault(int(item), []).append(scores)
            targets[int(item)] = label
    video_scores = [np.mean(sums[item], axis=0).tolist() for item in sorted(sums)]
    video_targets = [targets[item].tolist() for item in sorted(sums)]
    assert metrics["mean_average_precision"] == pytest.approx(
        reference_mean_average_precision(video_scores, video_targets), abs=1e-5)
    assert json.load(open(os.path.join(run_dir.checkpoints, "best.json")))["monitor"] == \
        "val_mean_average_precision"
    # TensorBoard: the epoch mAP of both runs, the per-class AP, the test mAP.
    runs = read_events(run_dir.tensorboard)
    assert len(runs["validation"]["scalars"]["epoch_mean_average_precision"]) == 2
    assert len(runs["train"]["scalars"]["epoch_mean_average_precision"]) == 2
    per_class = [tag for tag in runs["validation"]["scalars"] if tag.startswith("per_class_ap/")]
    assert per_class and all(tag.split("/")[1] in manifest["classes"] for tag in per_class)
    assert runs["."]["scalars"]["test/mean_average_precision"][0][1] == pytest.approx(
        metrics["mean_average_precision"])
    assert "confusion_matrix" not in runs["validation"]["images"]


@pytest.mark.parametrize("override, message", [
    ({"multi_label": False}, "prepared with multi_label=true but the config asks for "
                             "data.multi_label=false"),
    ({"num_classes": 5}, "prepared with num_classes=8 but the config asks for "
                         "data.num_classes=5"),
])
def test_prepared_data_that_disagrees_on_multi_label_is_a_user_error(multi_label_run_path,
                                                                     override, message):
    from core.errors import UserError
    from training.config import config_from_dict
    from training.prepared_data import ensure_prepared

    prepared = os.path.join(os.path.dirname(multi_label_run_path), "prepared")
    data = {"layout": "csv", "prepared_dir": prepared, "frames": 4, "size": 16,
            "clips_per_video": 2, "multi_label": True, **override}
    config = config_from_dict({"data": data})
    with pytest.raises(UserError, match=re.escape(message)):
        ensure_prepared(config.data)


# What TensorFlow and Keras wrote to stderr on this CPU machine before the CLIs filtered it,
# and the export's temporary path.
NOISE_MARKS = ("absl::InitializeLog", "Could not find cuda drivers", "cuInit",
               "Assets written to", ".export-")


def quiet_env():
    """The environment a user has: no TF_CPP_MIN_LOG_LEVEL of ours to hide anything."""
    return {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}


def assert_no_noise(stderr):
    for mark in NOISE_MARKS:
        assert mark not in stderr, (mark, stderr[-3000:])


def wait_for_finished_epoch(process, backup, timeout=150):
    metadata = os.path.join(backup, "training_metadata.json")
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(metadata) and json.load(open(metadata))["epoch"] >= 1:
            return
        time.sleep(0.05)
    raise AssertionError("no epoch finished before the run ended or the timeout")


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_cleanly_and_the_printed_resume_finishes(finished_run, number):
    tmp_path, config_path, _ = finished_run
    run_path = str(tmp_path / f"signalled-{number}")
    run_dir = RunDir(run_path)
    overrides = ["--set", "train.epochs=5", "--set", "train.steps_per_epoch=15",
                 "--set", "model.options.deformable_stages=[]", "--set", "tensorboard.clip_images=0"]
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train.py"), "--config", config_path, "--run-dir",
         run_path, *overrides], cwd=REPO, env=quiet_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        wait_for_finished_epoch(process, run_dir.backup)
        process.send_signal(number)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 128 + number, stderr[-3000:]
    epochs = json.load(open(os.path.join(run_dir.backup, "training_metadata.json")))["epoch"]
    message = (f"interrupted after epoch {epochs}; resume with: python train.py --config "
               f"{run_dir.config} --run-dir {run_path} --resume")
    assert stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in stderr and not run_dir.is_finished()
    assert_no_noise(stderr)
    # Not a terminal: no bar, one compact line per finished epoch.
    assert "\r" not in stderr
    for epoch in range(1, epochs + 1):
        lines = [line for line in stderr.splitlines() if f"epoch {epoch}/5: loss " in line]
        assert len(lines) == 1 and len(lines[0]) < 160, lines
    info = json.load(open(run_dir.run_info))
    assert info["status"] == "interrupted" and info["reason"] == message
    assert message in open(run_dir.train_log).read()
    if number != signal.SIGINT:
        return  # one handler stops the run on either signal: SIGINT's case resumes it

    command = message.partition("resume with: ")[2].split()
    result = subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=quiet_env(),
                            capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    assert run_dir.is_finished() and json.load(open(run_dir.run_info))["status"] == "finished"
    assert sorted({row["epoch"] for row in read_history(run_dir)}) == list(range(5))
    assert_no_noise(result.stderr)
    # The run's model loads in a fresh process that has only `models` register its layers.
    code = ("import keras, numpy as np, models\n"
            "models.register_layers()\n"
            f"model = keras.models.load_model({run_dir.model!r})\n"
            "print(model(np.zeros((1, *model.input_shape[1:]), 'uint8')).shape)")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=quiet_env(),
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip() == "(1, 8)"  # (a user's script imports TensorFlow plainly)
    # evaluate.py (its decoding workers load TensorFlow too) and predict.py: quiet as well.
    video = sorted(glob.glob(os.path.join(tmp_path, "videos", "grow", "*")))[0]
    for script, args in (("evaluate.py", ["--views", "2x1", "--workers", "1"]),
                         ("predict.py", [video])):
        result = subprocess.run(
            [sys.executable, os.path.join(REPO, script), "--run-dir", run_path, *args],
            cwd=REPO, env=quiet_env(), capture_output=True, text=True, timeout=150)
        assert result.returncode == 0, result.stderr[-3000:]
        assert_no_noise(result.stderr)


def test_a_terminal_shows_the_bar_moving_within_an_epoch(finished_run):
    import pty

    tmp_path, config_path, _ = finished_run
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train.py"), "--config", config_path, "--run-dir",
         str(tmp_path / "terminal"), "--set", "train.epochs=1", "--set",
         "train.steps_per_epoch=12", "--set", "tensorboard.clip_images=0"],
        cwd=REPO, env=quiet_env(), stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        process.wait(timeout=150)
    text = output.decode("utf-8", "replace")
    assert process.returncode == 0, text[-3000:]
    end_of_epoch = text.index("epoch 1/1: loss ")
    steps = {int(n) for n in re.findall(r"epoch 1/1:\s+\d+%\S*\s+(\d+)/12", text[:end_of_epoch])}
    assert len(steps - {0}) >= 2, text[:end_of_epoch]  # it moved before the epoch ended
    assert "clips/s" in text[:end_of_epoch] and "validation" in text[:end_of_epoch]
    assert_no_noise(text)


@pytest.mark.parametrize("extra, message", [
    (["--set", "model.name=r3d18"], "did you mean r3d_18?"),
    (["--set", "model.options.frame_diferences=true"], "did you mean frame_differences?"),
    (["--set", "data.layout=folders", "--set", "data.root=no/such/videos"], "no/such/videos"),
])
def test_a_config_mistake_answers_before_tensorflow_and_leaves_no_run(finished_run, tmp_path,
                                                                      extra, message):
    _, config_path, _ = finished_run
    if "data.layout=folders" in extra:
        extra = [*extra, "--set", f"data.prepared_dir={tmp_path / 'unprepared'}"]
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), "--config", config_path, *extra],
        cwd=tmp_path, env=quiet_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not os.path.exists(tmp_path / "runs")
