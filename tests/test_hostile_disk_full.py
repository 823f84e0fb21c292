"""Checkpoints survive a full disk and kills: each backup is written whole beside the
previous one, resume falls back past any backup that does not load (whatever the error),
and a full disk stops the run with one line, run.json `failed`, and a resume that finishes
once space is freed."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from core import backup_state
from core.disk_full import (NoSpaceLeft, no_space_left, trim_partial_last_line,
                            write_json_in_place)
from core.errors import UserError
from hostile_fixtures import (REPO, assert_one_error_line, fill, quiet_env, run_python,
                              small_disk, tiny_config, tree_bytes)
from training.callbacks import NanLossStop, SafeBackupAndRestore
from training.run_dir import RunDir, read_history


def tiny_model(units=3, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
    model.compile(optimizer="adam", loss="mse")
    return model


def fit(model, backup_dir, epochs, initial_data_seed=0):
    rng = np.random.default_rng(initial_data_seed)
    x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, model.output_shape[-1]))
    callback = SafeBackupAndRestore(backup_dir, NanLossStop())
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=[callback])
    return callback


def weights_after(backup_dir, epochs):
    """The model weights a run of `epochs` epochs backed up (from a run of its own)."""
    model = tiny_model()
    fit(model, backup_dir, epochs)
    return [w.copy() for w in model.get_weights()]


def test_each_epoch_leaves_two_whole_backups_and_resume_takes_the_newest(tmp_path):
    backup = str(tmp_path / "backup")
    model = tiny_model()
    fit(model, backup, 3)
    assert sorted(os.listdir(backup)) == ["latest.weights.h5", "previous.weights.h5",
                                          "previous_metadata.json", "training_metadata.json"]
    backups, skipped = backup_state.find_backups(backup)
    assert [b.epoch for b in backups] == [3, 2] and skipped == []
    resumed = tiny_model(seed=1)
    fit(resumed, backup, 3)  # nothing left to train: the weights are the backup's
    for a, b in zip(model.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    """A backup after 3 epochs, and the weights a 2-epoch run ends with."""
    path = tmp_path_factory.mktemp("three_epochs")
    fit(tiny_model(), str(path / "backup"), 3)
    return {"backup": str(path / "backup"),
            "at_epoch_2": weights_after(str(path / "reference"), 2)}


@pytest.mark.parametrize("damage", [
    "truncated_weights", "garbage_weights", "weights_missing", "metadata_not_json",
    "metadata_half_written", "metadata_epoch_not_a_number", "keras_metadata_other_model"])
def test_resume_falls_back_past_a_broken_newest_backup_on_any_error(three_epochs, tmp_path,
                                                                   damage, caplog):
    backup = str(tmp_path / "backup")
    shutil.copytree(three_epochs["backup"], backup)
    at_epoch_2 = three_epochs["at_epoch_2"]
    weights = os.path.join(backup, "latest.weights.h5")
    metadata = os.path.join(backup, "training_metadata.json")
    if damage == "truncated_weights":
        os.truncate(weights, os.path.getsize(weights) // 2)
    elif damage == "garbage_weights":
        open(weights, "wb").write(os.urandom(4096))
    elif damage == "weights_missing":
        os.remove(weights)
    elif damage == "metadata_not_json":
        open(metadata, "wb").write(b"\x00\xff not json")
    elif damage == "metadata_half_written":
        open(metadata, "w").write('{"epoch": 3, "batch": 0, "weights_sh')
    elif damage == "metadata_epoch_not_a_number":
        open(metadata, "w").write('{"epoch": "three"}')
    else:  # what Keras's own callback wrote (no hash), but of another model: a ValueError
        open(metadata, "w").write('{"epoch": 3, "batch": 0}')
        other = tiny_model(units=5)
        os.remove(weights)
        other.save_weights(weights)
    resumed = tiny_model(seed=7)
    with caplog.at_level("WARNING"):
        callback = fit(resumed, backup, 2)  # resumes after epoch 2: nothing left to run
    assert callback._kept.epoch == 2
    for a, b in zip(at_epoch_2, resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert re.search(r"backup: skipped (latest\.weights\.h5|training_metadata\.json)",
                     caplog.text), caplog.text
    # The next save keeps the pair that loaded as `previous` and drops the broken one.
    fit(resumed, backup, 3)
    assert [b.epoch for b in backup_state.find_backups(backup)[0]] == [3, 2]
    assert backup_state.find_backups(backup)[1] == []


def test_no_backup_that_loads_is_a_user_error_naming_each(tmp_path):
    backup = str(tmp_path / "backup")
    fit(tiny_model(), backup, 2)
    for name in ("latest.weights.h5", "previous.weights.h5"):
        open(os.path.join(backup, name), "wb").write(b"not hdf5")
    with pytest.raises(UserError, match=r"skipped training_metadata\.json \(epoch 2\).*"
                                        r"previous_metadata\.json \(epoch 1\).*Move .* away"):
        fit(tiny_model(), backup, 3)


class Killed(BaseException):
    pass


@pytest.mark.parametrize("kill_at", range(1, 5))  # the four renames of a save
def test_a_kill_between_any_two_renames_leaves_a_whole_backup(tmp_path, monkeypatch, kill_at):
    backup = str(tmp_path / "backup")
    model = tiny_model()
    callback = fit(model, backup, 2)
    real_replace, calls = os.replace, []

    def replace(source, target):
        calls.append(target)
        if len(calls) == kill_at:
            raise Killed
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    callback._current_epoch = 3
    with pytest.raises(Killed):
        callback._save_model()
    monkeypatch.undo()
    backups, _ = backup_state.find_backups(backup)
    assert backups and backups[0].epoch == 2  # the new epoch is not whole yet: epoch 2 is
    resumed = tiny_model(seed=3)
    fit(resumed, backup, 2)
    for a, b in zip(model.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_save_that_fills_the_disk_leaves_the_old_backups_and_no_temporary_file(tmp_path):
    backup = str(tmp_path / "backup")
    fit(tiny_model(), backup, 2)
    before = {n: open(os.path.join(backup, n), "rb").read() for n in os.listdir(backup)}

    def write_weights(path):
        open(path, "wb").write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        backup_state.save_backup(backup, write_weights, {"epoch": 3, "batch": 0})
    after = {n: open(os.path.join(backup, n), "rb").read() for n in os.listdir(backup)}
    assert after == before


def test_no_space_is_found_anywhere_in_the_chain_and_named_once(tmp_path):
    h5_text = ("[Errno 28] Can't synchronously write data (file write failed: filename = "
               "'/runs/a/backup/.tmp-latest.weights.h5', errno = 28, error message = 'No space "
               "left on device')")
    try:
        try:
            raise OSError(errno.ENOSPC, h5_text)
        except OSError as e:
            raise RuntimeError("callback failed") from e
    except RuntimeError as e:
        chained = e
    error = no_space_left(chained, "/runs/a", "python train.py --resume")
    assert isinstance(error, NoSpaceLeft) and isinstance(error, UserError)
    assert str(error) == ("no space left on /runs/a/backup; free some space, then resume "
                          "with: python train.py --resume")
    assert no_space_left(ValueError("bad"), "/x", "") is None
    flushed = no_space_left(OSError(errno.ENOSPC, "No space left on device"), "/runs/b", "r")
    assert str(flushed).startswith("no space left on /runs/b;")


def test_run_json_and_history_repairs(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"status": "running", "pad": "x" * 200}))
    write_json_in_place(str(path), {"status": "failed"})
    assert json.loads(path.read_text()) == {"status": "failed"}
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n0,1.5\n1,1.")
    assert trim_partial_last_line(str(history))
    assert history.read_text() == "epoch,loss\n0,1.5\n"
    assert not trim_partial_last_line(str(history))


@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_and_the_run_resumes_after_space_is_freed(tmp_path):
    """The issue's case: a disk filled mid-run (tmpfs), then freed, then --resume."""
    config = tiny_config(tmp_path, train={"epochs": 8, "steps_per_epoch": 2})
    prepared = run_python(["train.py", "--config", config, "--prepare-only"])
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    with small_disk(str(tmp_path / "disk")) as disk:
        run_dir = RunDir(os.path.join(disk, "run"))
        process = subprocess.Popen(
            [sys.executable, "train.py", "--config", config, "--run-dir", run_dir.path,
             "--quiet"], cwd=REPO, env=quiet_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while backup_state.saved_epoch(run_dir.backup) < 1 and time.time() < deadline:
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.05)
        fill(disk)
        stdout, stderr = process.communicate(timeout=300)
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        line = assert_one_error_line(result, f"error: no space left on {disk}",
                                     "resume with: python train.py")
        assert "Exception ignored" not in stderr and "Logging error" not in stderr, stderr
        info = json.load(open(run_dir.run_info))
        assert info["status"] == "failed" and info["reason"].startswith("no space left on ")
        saved = backup_state.saved_epoch(run_dir.backup)
        assert saved >= 1
        os.remove(os.path.join(disk, "filler"))
        command = line.split("resume with: ", 1)[1].split()
        assert command[:2] == ["python", "train.py"]
        resumed = run_python([*command[1:], "--quiet"], timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert run_dir.is_finished() and not os.path.exists(run_dir.backup)
        assert sorted({row["epoch"] for row in read_history(run_dir)}) == list(range(8))
        assert json.load(open(run_dir.run_info))["status"] == "finished"
        assert f"resuming after epoch {saved}" in open(run_dir.train_log).read()


# --- a full disk under prepare, evaluate and predict ------------------------------------------


@pytest.mark.slow
def test_prepare_on_a_full_disk_is_one_line_keeps_finished_shards_and_resumes(tmp_path):
    """12 items of 12 kB on a 100 kB disk: some are decoded into item files (the Beam
    pipeline's work files), then ENOSPC. After the disk grows the printed command resumes
    from those item files, and the dataset equals a clean run's byte for byte."""
    from data_prep.prepare import WORK_DIR
    from video_fixtures import make_folders_dataset

    make_folders_dataset(tmp_path / "root", classes=("a", "b", "c"), per_class=4, kind="npy")
    arguments = ["-m", "data_prep", "prepare", "--layout", "folders", "--root",
                 str(tmp_path / "root"), "--format", "v1", "--frames", "4", "--size", "32",
                 "--items-per-shard", "1", "--workers", "1", "--no-progress", "--out"]
    clean = run_python([*arguments, str(tmp_path / "clean")])
    assert clean.returncode == 0, clean.stderr[-2000:]
    with small_disk(str(tmp_path / "disk"), size="100k") as disk:
        out = os.path.join(disk, "out")
        full = run_python([*arguments, out])
        line = assert_one_error_line(full, f"error: no space left on {out}",
                                     "resume with: python -m data_prep prepare")
        kept = [name for _, _, names in os.walk(os.path.join(out, WORK_DIR))
                for name in names if name.endswith(".item")]
        assert 0 < len(kept) < 12 and not os.path.exists(os.path.join(out, "manifest.json"))
        assert not [name for _, _, names in os.walk(out) for name in names
                    if name.startswith(".tmp-")]
        subprocess.run(["mount", "-o", "remount,size=2m", disk], check=True)
        resumed = run_python(line.split("resume with: python ", 1)[1].split())
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert f"{len(kept)} item file(s) reused" in resumed.stderr + resumed.stdout
        assert tree_bytes(out) == tree_bytes(str(tmp_path / "clean"))


def test_evaluate_reports_on_a_full_disk_are_one_line_and_leave_no_partial_file(
        run_path, tmp_path, capsys):
    import evaluate

    with small_disk(str(tmp_path / "disk"), size="1m") as disk:
        fill(disk)
        out = os.path.join(disk, "evaluation", "test.json")
        assert evaluate.main(["--run-dir", run_path, "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: no space left on {os.path.dirname(out)}") \
            and err.count("\n") == 1 and "Traceback" not in err, err
        assert os.listdir(os.path.dirname(out)) == []  # nothing half written, no temporary


def test_evaluate_export_on_a_full_disk_is_one_line(run_path, tmp_path, capsys):
    import evaluate

    with small_disk(str(tmp_path / "disk"), size="24m") as disk:
        run = os.path.join(disk, "run")
        shutil.copytree(run_path, run, ignore=shutil.ignore_patterns("export", "tensorboard"))
        fill(disk)
        assert evaluate.main(["--run-dir", run, "--export"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: no space left on {run}") and err.count("\n") == 1, err
        assert not os.path.exists(os.path.join(run, "export"))
        assert not [name for name in os.listdir(run) if name.startswith(".tmp-")]


def test_predict_plot_on_a_full_disk_is_one_line_after_the_results_so_far(run_path, tmp_path,
                                                                           capsys):
    import predict

    item = str(tmp_path / "item.npy")
    np.save(item, np.random.default_rng(0).integers(0, 256, (8, 24, 32, 3), np.uint8))
    with small_disk(str(tmp_path / "disk"), size="1m") as disk:
        plots = os.path.join(disk, "plots")
        os.makedirs(plots)
        fill(disk)
        assert predict.main(["--run-dir", run_path, "--json", "--timeline", "--plot", plots,
                             item]) == 2
        captured = capsys.readouterr()
        assert captured.err == (f"error: no space left on {plots}/item.npy.timeline.png; "
                                "free some space, then run the same command again\n")
        [result] = json.loads(captured.out)["results"]  # what was done is not lost
        assert result["path"] == item and result["predictions"] and result["timeline"]
        assert os.listdir(plots) == []


@pytest.mark.slow
def test_predict_json_into_a_full_disk_is_one_line(run_path, tmp_path):
    item = str(tmp_path / "item.npy")
    np.save(item, np.random.default_rng(0).integers(0, 256, (8, 24, 32, 3), np.uint8))
    with small_disk(str(tmp_path / "disk"), size="1m") as disk:
        fill(disk)
        out = os.path.join(disk, "predictions.json")
        with open(out, "w") as stdout:
            result = subprocess.run([sys.executable, "predict.py", "--run-dir", run_path,
                                     "--json", item], cwd=REPO, env=quiet_env(),
                                    stdout=stdout, stderr=subprocess.PIPE, text=True,
                                    timeout=300)
        result.stdout = ""
        assert_one_error_line(result, f"error: no space left on {out}; free some space")
        assert "Exception ignored" not in result.stderr, result.stderr


# --- run files: atomic, or (TensorBoard's) read past a torn end -------------------------------


class KilledMidWrite(BaseException):
    pass


def test_run_json_status_updates_go_through_a_temporary_file_so_a_kill_keeps_the_old_one(
        tmp_path, monkeypatch):
    from training.run_dir import update_run_status

    run_dir = RunDir(str(tmp_path))
    old = {"status": "running", "classes": ["a", "b"], "note": "x" * 5000}
    open(run_dir.run_info, "w").write(json.dumps(old))
    written = []

    def replace(source, target):  # the kill lands after the new text, before the rename
        written.append(open(source).read())
        raise KilledMidWrite

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KilledMidWrite):
        update_run_status(run_dir, "failed", "no space left on /x")
    assert json.loads(written[0])["status"] == "failed"  # the whole new file was beside it
    assert json.load(open(run_dir.run_info)) == old
    assert os.listdir(tmp_path) == ["run.json"]


def test_a_torn_last_tensorboard_event_is_dropped_by_tensorboards_reader(tmp_path):
    """TensorFlow appends TensorBoard's event files itself (not atomically): a kill or a
    full disk can cut the last record. TensorBoard's reader keeps every whole event before
    it and drops the torn one, without an error."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for step in range(5):
            tf.summary.scalar("loss", float(step), step=step)
    writer.close()
    [events] = [os.path.join(tmp_path, name) for name in os.listdir(tmp_path)]
    os.truncate(events, os.path.getsize(events) - 7)  # into the last event's record
    accumulator = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={
        event_accumulator.TENSORS: 0})
    accumulator.Reload()
    assert [event.step for event in accumulator.Tensors("loss")] == [0, 1, 2, 3]
