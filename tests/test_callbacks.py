"""Tests for training.callbacks: the epoch line, the progress bar and the signal stop.

(Checkpoints, backup and TensorBoard are exercised by whole runs in tests/test_train.py.)
"""

import io
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from training import callbacks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_compact_epoch_summary_is_one_short_line():
    logs = {"loss": 1.23456, "top1": 0.5, "top5": 0.9, "mean_class_accuracy": 0.4,
            "val_loss": 1.1, "val_top1": 0.55, "val_top5": 0.91,
            "val_mean_class_accuracy": 0.5, "learning_rate": 0.003, "epoch_seconds": 27.34,
            "clips_per_second": 150.23}
    line = callbacks.compact_epoch_summary(logs)
    assert line == ("loss 1.23 top1 0.5 | val loss 1.1 top1 0.55 top5 0.91 mca 0.5 | "
                    "lr 0.003 27.3 s 150.2 clips/s")
    assert len(line) < 120
    assert callbacks.compact_epoch_summary({"loss": 2.0}) == "loss 2"


def tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


class SignalAt(keras.callbacks.Callback):
    """Sends `number` to this process at the end of batch `batch` of epoch `epoch`."""

    def __init__(self, number, epoch, batch):
        super().__init__()
        self.number, self.epoch, self.batch = number, epoch, batch
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self._epoch, batch) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.number)


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches, self.epochs = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(batch)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.mark.parametrize("number, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_in_fit_stops_at_the_batch_end_before_the_epoch_counts(number, exit_code):
    stop, recorder = callbacks.StopOnSignal(), Recorder()
    previous = signal.getsignal(number)
    stop.install()
    try:
        with pytest.raises(callbacks.RunInterrupted) as info:
            tiny_model().fit(np.zeros((40, 3)), np.zeros((40, 2)), batch_size=4, epochs=3,
                             verbose=0, callbacks=[SignalAt(number, 1, 2), recorder, stop])
    finally:
        stop.uninstall()
    assert info.value.exit_code == exit_code
    # Epoch 1 (10 batches) finished; epoch 2 stopped after its third batch, unrecorded.
    assert recorder.epochs == [0] and recorder.batches[-1] == 2
    assert signal.getsignal(number) == previous


def test_a_signal_outside_fit_raises_at_once():
    stop = callbacks.StopOnSignal()
    stop.install()
    try:
        with pytest.raises(callbacks.RunInterrupted) as info:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
    finally:
        stop.uninstall()
    assert info.value.signal_number == signal.SIGINT


def test_progress_bar_moves_within_the_epoch():
    out = io.StringIO()
    bar = callbacks.ProgressBar(batch_size=4, steps_per_epoch=10, validation_steps=2, file=out,
                                mininterval=0)
    tiny_model().fit(np.zeros((40, 3)), np.zeros((40, 2)), batch_size=4, epochs=1, verbose=0,
                     validation_data=(np.zeros((8, 3)), np.zeros((8, 2))), callbacks=[bar])
    text = out.getvalue()
    assert [f"{step}/10" in text for step in range(1, 11)] == [True] * 10  # every step drawn
    assert "epoch 1/1" in text and "2/2" in text and "validation" in text
    assert "loss" in text and "clips/s" in text


def test_a_second_signal_quits_at_once():
    code = ("import os, signal, time\n"
            "from training.callbacks import StopOnSignal\n"
            "stop = StopOnSignal()\nstop.install()\nstop.on_train_begin()  # inside fit\n"
            "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(0.2)\n"
            "print('the first one waits for the step to end', flush=True)\n"
            "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(30)\nprint('not reached')\n")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 143
    assert result.stdout.split("\n")[0] == "the first one waits for the step to end"
    assert "not reached" not in result.stdout
    assert "SIGTERM: stopping at the end of this step" in result.stderr
    assert "interrupted again: quitting now" in result.stderr


def fit_with(history_callbacks, epochs, initial_epoch=0, validation=True):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    keras.utils.set_random_seed(0)
    model = tiny_model()
    model.fit(x, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=4, verbose=0,
              validation_data=(x, y) if validation else None, callbacks=history_callbacks)


def read_rows(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("validation", [True, False])
def test_history_csv_has_keras_csv_loggers_rows(tmp_path, validation):
    ours, theirs = str(tmp_path / "ours.csv"), str(tmp_path / "keras.csv")
    fit_with([callbacks.HistoryCSV(ours), keras.callbacks.CSVLogger(theirs)], 3,
             validation=validation)
    assert read_rows(ours) == read_rows(theirs) and len(read_rows(ours)) == 3


class Killed(BaseException):
    pass


def test_history_csv_is_rewritten_atomically_so_a_kill_mid_write_leaves_the_last_whole_file(
        tmp_path, monkeypatch):
    """Each epoch's file goes to a temporary name and is renamed over history.csv: a kill
    before the rename (here, at epoch 3's) leaves epoch 2's file whole, no torn row."""
    path = str(tmp_path / "history.csv")
    real_replace, calls = os.replace, []

    def replace(source, target):
        calls.append((os.path.basename(source), os.path.basename(target)))
        if len(calls) == 3:
            assert open(source).read().count("\n") == 4  # the new file, whole, beside
            raise Killed
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        fit_with([callbacks.HistoryCSV(path)], 5)
    assert calls == [(".tmp-history.csv", "history.csv")] * 3
    text = open(path).read()
    assert text.endswith("\n") and [row["epoch"] for row in read_rows(path)] == ["0", "1"]
    assert sorted(os.listdir(tmp_path)) == ["history.csv"]


def test_history_csv_on_resume_keeps_earlier_rows_and_replaces_a_redone_epoch(tmp_path):
    path = str(tmp_path / "history.csv")
    fit_with([callbacks.HistoryCSV(path)], 3)
    first = read_rows(path)
    fit_with([callbacks.HistoryCSV(path)], 4, initial_epoch=2)  # epoch 2 again, then 3
    rows = read_rows(path)
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"]
    assert rows[:2] == first[:2] and open(path).read().count("epoch") == 1
